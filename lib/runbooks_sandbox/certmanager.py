"""A cert-manager controller for the sandbox: Certificates are issued, renewed and get stuck.

The default scenario plants cert-manager's objects as a real cluster has them;
this controller keeps them alive the way cert-manager's certificates
controllers (trigger, key manager, requestmanager, issuing, readiness) do, so
that a runbook which renews a certificate sees the same objects change as on
a real cluster:

* **Trigger.** A Certificate whose Secret is missing, holds no usable key
  pair, does not match the spec, or whose ``renewalTime`` has passed gets the
  ``Issuing`` condition set to True, unless cert-manager is backing off after
  failed issuances (``failedIssuanceAttempts``/``lastFailureTime``: 1 h after
  the first failure, doubling, at most 32 h). Setting ``Issuing`` by hand
  through the status subresource (what ``cmctl renew`` does) skips the back-off.
* **Issuance.** For an issuing Certificate the controller creates the
  CertificateRequest of the next revision and solves the "DNS-01 challenge"
  of each name. A name that has a pending ACME Challenge in the cluster whose
  presentation fails (``status.presented: false`` with a ``reason``) keeps
  failing: the request stays Pending and the Certificate stays Issuing, exactly
  the stuck state an SRE must diagnose rather than wait for. Otherwise the
  certificate is signed by the issuer's sandbox CA, written to the Secret
  (leaf + intermediate in ``tls.crt``, ``tls.key``, ``ca.crt``, cert-manager's
  annotations), and the Certificate's status gets the new revision,
  ``notBefore``/``notAfter``/``renewalTime`` and ``Ready``; Events tell the story.
* **Readiness.** ``Ready`` follows the Secret (``DoesNotExist``, ``Expired``, ``Ready``).
* **ingress-shim.** Ingresses annotated with ``cert-manager.io/cluster-issuer``
  or ``cert-manager.io/issuer`` (or ``kubernetes.io/tls-acme`` with a default
  issuer) get one Certificate per TLS entry, kept up to date and owned by the
  Ingress: see :mod:`runbooks_sandbox.ingressshim`.

The issuer's CA key comes from :func:`runbooks_sandbox.pki.known_ca`: the
scenario loader remembers the CAs it creates, and the controller recognises
them in the chain of a Secret that issuer signed before. An issuer with no
known CA gets a fresh one (``<issuer> (sandbox)``).

It works on the store in-process, like :mod:`runbooks_sandbox.controllers`,
on its own thread (woken by store changes, and on a tick for time-based
renewals). Used as a sandbox add-on::

    box = Sandbox(state_dir, "default")
    box.add(CertManager(box))
    box.start()
"""

from __future__ import annotations

import base64
import copy
import logging
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import pki
from .ingressshim import IngressShim
from .scenario import rfc1123
from .store import ApiError, Change, rfc3339
from .workloop import stop_worker

log = logging.getLogger(__name__)

COMPONENT = "cert-manager-certificates"
ISSUING_MANAGER = "cert-manager-certificates-issuing"
DEFAULT_DURATION = timedelta(days=90)
MAX_BACKOFF = timedelta(hours=32)
ISSUER_ANNOTATIONS = ("cert-manager.io/issuer-name", "cert-manager.io/issuer-kind",
                      "cert-manager.io/issuer-group")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def _duration(text: str | None) -> timedelta | None:
    """Go durations as cert-manager writes them: ``2160h``, ``168h0m0s``, ``720h30m``."""
    if not text:
        return None
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            return None
    return timedelta(seconds=total) if not number else None


def backoff(failed_attempts: int) -> timedelta:
    """cert-manager's delay after ``failed_attempts`` failed issuances: 1 h doubling, at most 32 h."""
    if failed_attempts <= 0:
        return timedelta(0)
    return min(timedelta(hours=math.pow(2, failed_attempts - 1)), MAX_BACKOFF)


def _cond(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _set_cond(status: dict, type_: str, value: str, reason: str, message: str, now: str,
              generation: int | None) -> None:
    conds = status.setdefault("conditions", [])
    old = next((c for c in conds if c.get("type") == type_), None)
    new = {"type": type_, "status": value, "reason": reason, "message": message,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value
           and old.get("lastTransitionTime") else now}
    if generation is not None:
        new["observedGeneration"] = generation
    if old is None:
        conds.append(new)
    else:
        conds[conds.index(old)] = new


class CertManager:
    """The sandbox's cert-manager (an add-on: ``start()``/``stop()``).

    Args:
        sandbox: the :class:`runbooks_sandbox.launch.Sandbox` to run in (its
            store, registry, controllers for Events, and clock).
        tick: seconds between time-based passes (renewal times, expiry).
    """

    def __init__(self, sandbox: Any, *, tick: float = 1.0, ingress_shim: IngressShim | None = None) -> None:
        self.sandbox = sandbox
        self.shim = ingress_shim or IngressShim(sandbox)
        self._ingresses: set[tuple[str, str]] = set()  # Ingresses for the shim to sync
        self.store = sandbox.store
        self.registry = sandbox.registry
        self.tick = tick
        self.passes = 0
        """Timed passes over every Certificate so far (a test waits for one to say "nothing changed")."""
        self._cond = threading.Condition()
        self._queue: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signers: dict[str, tuple[pki.CertKey, pki.CertKey]] = {}  # issuer -> (root, signer)
        self._listening = False

    # ---- add-on interface ----------------------------------------------------

    def _rt(self, kind: str) -> Any:
        group = {"Certificate": "cert-manager.io", "CertificateRequest": "cert-manager.io",
                 "Challenge": "acme.cert-manager.io", "Secret": ""}.get(kind)
        return self.registry.by_kind_any_version(kind, group)

    def start(self) -> None:
        if self._rt("Certificate") is None:
            log.info("cert-manager CRDs are not installed: the sandbox cert-manager stays idle")
            return None
        if not self._listening:
            self.store.add_listener(self._on_change)
            self._listening = True
        self._stop.clear()
        self.enqueue_all()
        self._thread = threading.Thread(target=self._run, name="sandbox-cert-manager", daemon=True)
        self._thread.start()
        return None

    def stop(self) -> None:
        stop_worker(self._stop, self._cond, self._thread)
        self._thread = None

    # ---- work queue -----------------------------------------------------------

    def _on_change(self, change: Change) -> None:
        if self._stop.is_set():
            return
        obj = change.entry.obj
        kind, meta = obj.get("kind"), obj["metadata"]
        ns = meta.get("namespace", "")
        work: set[tuple[str, str]] = set()
        ingresses: set[tuple[str, str]] = set()
        if kind == "Ingress" and obj.get("apiVersion", "").startswith("networking.k8s.io/"):
            if change.type != "DELETED":
                ingresses.add((ns, meta["name"]))
        if kind == "Certificate" and obj.get("apiVersion", "").startswith("cert-manager.io/"):
            work.add((ns, meta["name"]))
            owner = self.shim.owner_of(obj)
            if owner:
                ingresses.add(owner)
        elif kind == "Secret" and obj.get("type") == "kubernetes.io/tls":
            for cert in self.store.items(self._rt("Certificate"), ns):
                if (cert.get("spec") or {}).get("secretName") == meta["name"]:
                    work.add((ns, cert["metadata"]["name"]))
        if work or ingresses:
            with self._cond:
                self._queue |= work
                self._ingresses |= ingresses
                self._cond.notify()

    def enqueue_all(self) -> None:
        with self._cond:
            for cert in self.store.items(self._rt("Certificate")):
                self._queue.add((cert["metadata"].get("namespace", ""), cert["metadata"]["name"]))
            self._ingresses |= set(self.shim.ingresses())
            self._cond.notify()

    def _run(self) -> None:
        last_tick = time.monotonic()
        while not self._stop.is_set():
            with self._cond:
                if not self._queue and not self._ingresses:
                    self._cond.wait(timeout=max(0.05, self.tick - (time.monotonic() - last_tick)))
                work, self._queue = self._queue, set()
                ingresses, self._ingresses = self._ingresses, set()
            full = time.monotonic() - last_tick >= self.tick
            if full:
                last_tick = time.monotonic()
                work |= {(c["metadata"].get("namespace", ""), c["metadata"]["name"])
                         for c in self.store.items(self._rt("Certificate"))}
                # Ingresses are synced when they (or their Certificates) change, not on the tick:
                # a refused one would otherwise repeat its BadConfig Event every second
            for ns, name in sorted(ingresses):  # ingress-shim first: its Certificates are issued below
                if self._stop.is_set():
                    return
                try:
                    self.shim.sync(ns, name)
                except ApiError as e:
                    if e.code == 409:
                        with self._cond:
                            self._ingresses.add((ns, name))
                    elif e.code != 404:
                        log.warning("cert-manager ingress-shim %s/%s: %s", ns, name, e.message)
                except Exception:  # keep the controller alive; a bug shows in the log
                    log.exception("cert-manager ingress-shim %s/%s failed", ns, name)
            for ns, name in sorted(work):
                if self._stop.is_set():
                    return
                try:
                    self.reconcile(ns, name)
                except ApiError as e:
                    if e.code == 409:  # somebody wrote in between: try again on the next pass
                        with self._cond:
                            self._queue.add((ns, name))
                    elif e.code != 404:
                        log.warning("cert-manager %s/%s: %s", ns, name, e.message)
                except Exception:  # keep the controller alive; a bug shows in the log
                    log.exception("cert-manager %s/%s failed", ns, name)
            if full:
                self.passes += 1

    # ---- reconcile ------------------------------------------------------------

    def reconcile(self, ns: str, name: str) -> None:
        """One pass over a Certificate: readiness, trigger, issuance (idempotent)."""
        now = self.store.clock().replace(microsecond=0)
        cert = self.store.find(self._rt("Certificate"), ns, name)
        if cert is None:
            return
        spec = cert.get("spec") or {}
        secret = self.store.find(self._rt("Secret"), ns, spec.get("secretName", ""))
        cert = self._readiness(cert, secret, now)
        if _cond(cert, "Issuing").get("status") != "True":
            reason, message = self.trigger_reason(cert, secret, now)
            if not reason or self.backing_off(cert, now):
                return
            status = copy.deepcopy(cert.get("status") or {})
            _set_cond(status, "Issuing", "True", reason, message, rfc3339(now),
                      cert["metadata"].get("generation"))
            cert = self._write_status(cert, status)
            self._event(cert, "Normal", "Issuing", message)
        self._issue(cert, secret, now)

    def trigger_reason(self, cert: dict, secret: dict | None, now: datetime) -> tuple[str, str]:
        """Why the Certificate needs (re-)issuing now, as cert-manager's trigger says it; ("", "") if not."""
        spec, status = cert.get("spec") or {}, cert.get("status") or {}
        if secret is None:
            return "DoesNotExist", "Issuing certificate as Secret does not exist"
        data = secret.get("data") or {}
        if not data.get("tls.crt") or not data.get("tls.key"):
            return "MissingData", "Issuing certificate as Secret does not contain a certificate"
        try:
            leaf = x509.load_pem_x509_certificates(base64.b64decode(data["tls.crt"]))[0]
            key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), None,
                                                     unsafe_skip_rsa_key_validation=True)
        except ValueError:
            return "InvalidCertificate", "Issuing certificate as Secret contains an invalid certificate"
        if key.public_key() != leaf.public_key():
            return "InvalidKeyPair", "Issuing certificate as Secret contains a private key that does not match the certificate"
        if sorted(_sans(leaf)) != sorted(spec.get("dnsNames") or []):
            return "SecretMismatch", ("Issuing certificate as Existing issued Secret is not up to date "
                                      "with spec: [spec.dnsNames]")
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        issuer_name = annotations.get("cert-manager.io/issuer-name")
        if issuer_name and issuer_name != (spec.get("issuerRef") or {}).get("name"):
            return "IncorrectIssuer", (f"Issuing certificate as Secret was previously issued by "
                                       f"{annotations.get('cert-manager.io/issuer-kind', 'Issuer')}.cert-manager.io/{issuer_name}")
        renewal = _parse_time(status.get("renewalTime"))
        if renewal is None:
            renewal = leaf.not_valid_after_utc - self._renew_before(spec, leaf)
        if renewal <= now:
            return "Renewing", f"Renewing certificate as renewal was scheduled at {rfc3339(renewal)}"
        return "", ""

    def backing_off(self, cert: dict, now: datetime) -> bool:
        """After failed issuances cert-manager waits before it tries again by itself."""
        status = cert.get("status") or {}
        last = _parse_time(status.get("lastFailureTime"))
        if last is None:
            return False
        return now < last + backoff(int(status.get("failedIssuanceAttempts") or 1))

    def _readiness(self, cert: dict, secret: dict | None, now: datetime) -> dict:
        status = copy.deepcopy(cert.get("status") or {})
        ready = _cond(cert, "Ready")
        leaf = _leaf(secret)
        if leaf is None:
            want = ("False", "DoesNotExist", "Issuing certificate as Secret does not exist")
        elif leaf.not_valid_after_utc <= now:
            want = ("False", "Expired", f"Certificate expired on {rfc1123(leaf.not_valid_after_utc)}")
        elif sorted(_sans(leaf)) != sorted((cert.get("spec") or {}).get("dnsNames") or []):
            want = ("False", "SecretMismatch",
                    "Existing issued Secret is not up to date with spec: [spec.dnsNames]")
        else:
            want = ("True", "Ready", "Certificate is up to date and has not expired")
        if (ready.get("status"), ready.get("reason"), ready.get("message")) == want:
            return cert
        _set_cond(status, "Ready", *want, rfc3339(now), cert["metadata"].get("generation"))
        return self._write_status(cert, status)

    # ---- issuance ---------------------------------------------------------------

    def _issue(self, cert: dict, secret: dict | None, now: datetime) -> None:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        status = cert.get("status") or {}
        revision = int(status.get("revision") or 0) + 1
        cr_rt = self._rt("CertificateRequest")
        request = self.store.find(cr_rt, ns, f"{name}-{revision}")
        failing = self.failing_challenge(ns, spec.get("dnsNames") or [])
        if request is not None and _cond(request, "Ready").get("reason") == "Pending":
            return  # a request is in flight (or stuck on its challenge): nothing new to do
        if failing is not None:
            if request is None:
                request = self._create_request(cert, revision, secret, now)
                self._set_request_status(request, "False", "Pending",
                                         f"Waiting on certificate issuance from order {ns}/{name}-{revision}: "
                                         '"pending"', now)
                self._event(cert, "Normal", "Requested",
                            f'Created new CertificateRequest resource "{name}-{revision}"')
            return
        issuer = (spec.get("issuerRef") or {}).get("name", "")
        root, signer = self.signer(issuer, ns, (spec.get("issuerRef") or {}).get("kind", "Issuer"))
        key = self._private_key(spec, secret)
        if request is None:
            request = self._create_request(cert, revision, secret, now, key=key)
            self._event(cert, "Normal", "Requested", f'Created new CertificateRequest resource "{name}-{revision}"')
        dns_names = list(spec.get("dnsNames") or [])
        duration = _duration(spec.get("duration")) or DEFAULT_DURATION
        leaf = pki.issue(signer, common_name=spec.get("commonName") or (dns_names[0] if dns_names else name),
                         dns_names=dns_names, not_before=now, not_after=now + duration, key=key)
        chain = leaf.cert_pem + (signer.cert_pem if signer is not root else b"")
        self._set_request_status(request, "True", "Issued", "Certificate fetched from issuer successfully",
                                 now, certificate=chain)
        self._write_secret(cert, secret, chain, leaf.key_pem, root.cert_pem, now)
        renew_before = self._renew_before(spec, leaf.cert)
        new_status = copy.deepcopy(status)
        for stale in ("failedIssuanceAttempts", "lastFailureTime", "nextPrivateKeySecretName"):
            new_status.pop(stale, None)
        new_status["conditions"] = [c for c in new_status.get("conditions") or [] if c.get("type") != "Issuing"]
        _set_cond(new_status, "Ready", "True", "Ready", "Certificate is up to date and has not expired",
                  rfc3339(now), meta.get("generation"))
        new_status.update(revision=revision, notBefore=rfc3339(now), notAfter=rfc3339(now + duration),
                          renewalTime=rfc3339(now + duration - renew_before))
        current = self.store.find(self._rt("Certificate"), ns, name) or cert
        self._write_status(current, new_status)
        self._event(cert, "Normal", "Issuing", "The certificate has been successfully issued")

    def failing_challenge(self, ns: str, dns_names: list[str]) -> dict | None:
        """A pending ACME Challenge for one of these names whose presentation keeps failing."""
        rt = self._rt("Challenge")
        if rt is None:
            return None
        for ch in self.store.items(rt, ns):
            st, sp = ch.get("status") or {}, ch.get("spec") or {}
            if sp.get("dnsName") in dns_names and st.get("state") in ("pending", "") \
                    and st.get("presented") is False and st.get("reason"):
                return ch
        return None

    def signer(self, issuer: str, ns: str, kind: str = "ClusterIssuer") -> tuple[pki.CertKey, pki.CertKey]:
        """(root, signing CA) behind an issuer: the scenario's CA if a Secret shows it, else a new one."""
        if issuer in self._signers:
            return self._signers[issuer]
        found: tuple[pki.CertKey, pki.CertKey] | None = None
        for secret in self.store.items(self._rt("Secret")):
            annotations = secret["metadata"].get("annotations") or {}
            if secret.get("type") != "kubernetes.io/tls" or annotations.get("cert-manager.io/issuer-name") != issuer:
                continue
            data = secret.get("data") or {}
            try:
                chain = x509.load_pem_x509_certificates(base64.b64decode(data.get("tls.crt", "")))
                roots = x509.load_pem_x509_certificates(base64.b64decode(data["ca.crt"])) \
                    if data.get("ca.crt") else []
            except (ValueError, KeyError):
                continue
            cas = [pki.known_ca(c) for c in chain[1:] + roots]
            cas = [c for c in cas if c is not None]
            if cas:
                signer = cas[0]
                root = next((c for c in cas if c.cert.subject == c.cert.issuer), signer)
                found = (root, signer)
                break
        if found is None:
            now = self.store.clock()
            root = pki.new_ca(f"{issuer} (sandbox)", not_before=now - timedelta(days=1),
                              not_after=now + timedelta(days=3650))
            pki.remember_ca(root)
            found = (root, root)
        self._signers[issuer] = found
        return found

    def _private_key(self, spec: dict, secret: dict | None) -> pki.PrivateKey:
        """The key to certify: the Secret's (rotationPolicy Never, cert-manager < 1.18's default) or new."""
        pk = spec.get("privateKey") or {}
        algorithm = (pk.get("algorithm") or "RSA").upper()
        size = int(pk.get("size") or (256 if algorithm == "ECDSA" else 2048))
        if pk.get("rotationPolicy", "Never") == "Never" and secret is not None:
            try:
                key = serialization.load_pem_private_key(
                    base64.b64decode((secret.get("data") or {}).get("tls.key", "")), None,
                    unsafe_skip_rsa_key_validation=True)
            except ValueError:
                key = None
            if algorithm == "ECDSA" and isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == size:
                return key
            if algorithm == "RSA" and isinstance(key, rsa.RSAPrivateKey) and key.key_size == size:
                return key
        if algorithm == "ECDSA":
            curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}.get(size, ec.SECP256R1())
            return ec.generate_private_key(curve)
        return rsa.generate_private_key(public_exponent=65537, key_size=size if size in pki.RSA_KEY_SIZES else 2048)

    @staticmethod
    def _renew_before(spec: dict, leaf: x509.Certificate) -> timedelta:
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        explicit = _duration(spec.get("renewBefore"))
        if explicit:
            return explicit
        if spec.get("renewBeforePercentage"):
            return lifetime * int(spec["renewBeforePercentage"]) / 100
        return lifetime / 3

    # ---- writes -------------------------------------------------------------------

    def _write_status(self, cert: dict, status: dict) -> dict:
        new = copy.deepcopy(cert)
        new["status"] = status
        return self.store.update(self._rt("Certificate"), new, subresource="status")

    def _create_request(self, cert: dict, revision: int, secret: dict | None, now: datetime,
                        key: pki.PrivateKey | None = None) -> dict:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        name = f"{meta['name']}-{revision}"
        dns_names = list(spec.get("dnsNames") or [])
        csr = pki.csr_pem(key or pki.generate_key("ec"),
                          common_name=spec.get("commonName") or (dns_names[0] if dns_names else meta["name"]),
                          dns_names=dns_names)
        request = {
            "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {
                "name": name, "namespace": meta["namespace"], "labels": dict(meta.get("labels") or {}),
                "annotations": {"cert-manager.io/certificate-name": meta["name"],
                                "cert-manager.io/certificate-revision": str(revision),
                                "cert-manager.io/private-key-secret-name": spec.get("secretName", "")},
                "ownerReferences": [{"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                                     "name": meta["name"], "uid": meta.get("uid"), "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": {"issuerRef": dict(spec.get("issuerRef") or {}),
                     "request": base64.b64encode(csr).decode(),
                     "usages": list(spec.get("usages") or ["digital signature", "key encipherment"]),
                     "username": "system:serviceaccount:cert-manager:cert-manager",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:cert-manager",
                                "system:authenticated"]},
        }
        rt = self._rt("CertificateRequest")
        created = self.store.create(rt, request, created=now)
        approved = copy.deepcopy(created)
        approved["status"] = {"conditions": [{
            "type": "Approved", "status": "True", "reason": "cert-manager.io",
            "message": "Certificate request has been approved by cert-manager.io",
            "lastTransitionTime": rfc3339(now)}]}
        return self.store.update(rt, approved, subresource="status")

    def _set_request_status(self, request: dict, value: str, reason: str, message: str, now: datetime,
                            certificate: bytes | None = None) -> None:
        status = copy.deepcopy(request.get("status") or {})
        _set_cond(status, "Ready", value, reason, message, rfc3339(now), None)
        if certificate is not None:
            status["certificate"] = base64.b64encode(certificate).decode()
        new = copy.deepcopy(request)
        new["status"] = status
        self.store.update(self._rt("CertificateRequest"), new, subresource="status", check_rv=False)
        if value == "True":
            self.sandbox.controllers.event(request, "Normal", "CertificateIssued", message,
                                           "cert-manager-certificaterequests-issuer-acme")

    def _write_secret(self, cert: dict, secret: dict | None, chain: bytes, key_pem: bytes, ca_pem: bytes,
                      now: datetime) -> None:
        meta, spec = cert["metadata"], cert.get("spec") or {}
        issuer = spec.get("issuerRef") or {}
        dns_names = list(spec.get("dnsNames") or [])
        annotations = {
            "cert-manager.io/alt-names": ",".join(dns_names),
            "cert-manager.io/certificate-name": meta["name"],
            "cert-manager.io/common-name": spec.get("commonName") or (dns_names[0] if dns_names else ""),
            "cert-manager.io/ip-sans": "",
            "cert-manager.io/issuer-group": issuer.get("group", "cert-manager.io"),
            "cert-manager.io/issuer-kind": issuer.get("kind", "Issuer"),
            "cert-manager.io/issuer-name": issuer.get("name", ""),
            "cert-manager.io/uri-sans": "",
        }
        data = {"tls.crt": base64.b64encode(chain).decode(), "tls.key": base64.b64encode(key_pem).decode(),
                "ca.crt": base64.b64encode(ca_pem).decode()}
        managed = {"manager": ISSUING_MANAGER, "operation": "Apply", "apiVersion": "v1",
                   "time": rfc3339(now), "fieldsType": "FieldsV1",
                   "fieldsV1": {"f:data": {"f:ca.crt": {}, "f:tls.crt": {}, "f:tls.key": {}},
                                "f:metadata": {"f:annotations": {f"f:{k}": {} for k in annotations},
                                               "f:labels": {"f:controller.cert-manager.io/fao": {}}},
                                "f:type": {}}}
        rt = self._rt("Secret")
        if secret is None:
            self.store.create(rt, {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": spec["secretName"], "namespace": meta["namespace"],
                             "labels": {"controller.cert-manager.io/fao": "true"},
                             "annotations": annotations, "managedFields": [managed]},
                "data": data}, created=now)
            return
        new = copy.deepcopy(secret)
        new_meta = new["metadata"]
        new_meta.setdefault("labels", {})["controller.cert-manager.io/fao"] = "true"
        new_meta.setdefault("annotations", {}).update(annotations)
        new_meta["managedFields"] = [m for m in new_meta.get("managedFields") or []
                                     if m.get("manager") != ISSUING_MANAGER] + [managed]
        new["data"] = {**(new.get("data") or {}), **data}
        self.store.update(rt, new)

    def _event(self, cert: dict, type_: str, reason: str, message: str) -> None:
        self.sandbox.controllers.event(cert, type_, reason, message, COMPONENT)


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(ext.get_values_for_type(x509.DNSName))


def _leaf(secret: dict | None) -> x509.Certificate | None:
    if secret is None:
        return None
    try:
        return x509.load_pem_x509_certificates(base64.b64decode((secret.get("data") or {}).get("tls.crt", "")))[0]
    except (ValueError, IndexError):
        return None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint (hex) of a certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()
