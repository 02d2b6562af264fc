"""Load a sandbox scenario: real Kubernetes manifests plus sandbox-only instructions.

A scenario is data, not code, so that what the sandbox serves reads like the
YAML an SRE would find in a real cluster.  It lives in
``scenarios/<name>/manifests/*.yaml`` (multi-document files, read in file-name
order); ``scenarios/<name>/logs.yaml`` holds the pod log templates
(:mod:`runbooks_sandbox.podlogs`).

Everything is relative to the moment the sandbox starts, so a scenario never
goes stale: a certificate "expiring in 5 days" expires in 5 days whenever the
sandbox runs.  Two mechanisms express that:

* A top-level ``sandbox:`` key on any document carries sandbox-only
  instructions; the loader acts on it and removes it.  ``age`` (every kind)
  sets ``metadata.creationTimestamp``; the other keys are per kind, see
  ``SANDBOX_KEYS`` and the helpers below.
* A string ``now-<duration>`` or ``now+<duration>`` anywhere in an object
  becomes an RFC 3339 time (e.g. a condition's ``lastTransitionTime``).

What the loader materialises, so that the store and controllers receive
ordinary objects:

* Deployments get one ReplicaSet per revision (``sandbox.revisions`` lists
  older pod templates; ``spec.template`` is the newest), named and labelled
  the way the Deployment controller names them.  As in Kubernetes, the
  pod-template-hash is taken over the template *after* the API server's
  defaulting, so Deployments and ReplicaSets are returned defaulted; the
  controllers then recognise the planted ReplicaSets instead of rolling out
  new ones.  Pods are left to the controllers.
* A StatefulSet with ``sandbox.previousTemplate`` comes out twice: with that template, then
  as written. The loader creates the first and applies the second as an update once the
  first pods run (its new pods back-dated like every scenario pod, so Prometheus holds their
  history), so the controller rolls the update as it would
  (see sessions in 58-shop-sessions.yaml).
* ``kubernetes.io/tls`` Secrets described by ``sandbox.certificate`` get real
  certificates from :mod:`runbooks_sandbox.pki`, signed by the CA that a
  ClusterIssuer's ``sandbox.ca`` declares (or self-signed).
* cert-manager Certificates get ``notBefore``/``notAfter``/``renewalTime``
  and a ``Ready`` condition computed from their Secret's certificate.

uid, resourceVersion and generation are left to the store.
"""

from __future__ import annotations

import base64
import copy
import importlib.resources
import math
import re
from datetime import UTC, datetime, timedelta
from importlib.resources.abc import Traversable
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from runbooks_sandbox import admission, pki
from runbooks_sandbox.controllers import pod_template_hash
from runbooks_sandbox.resources import BUILTIN

DEFAULT_AGE = "30d"

# Kinds that must exist before anything else; the rest keep their file order.
KIND_ORDER = {"CustomResourceDefinition": 0, "Namespace": 1, "Node": 2}

# Sandbox keys each kind accepts (besides "age", which every kind accepts).
SANDBOX_KEYS = {
    "Deployment": {"revision", "rolloutAge", "replicas", "revisions"},
    "StatefulSet": {"previousTemplate"},
    "Secret": {"certificate", "privateKey"},
    "ClusterIssuer": {"ca"},
    "Issuer": {"ca"},
    "CertificateRequest": {"csr"},
    "Order": {"csr"},
}

SELF_SIGNED = "self-signed"
KEY_ALGORITHMS = ("ECDSA", "RSA")

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_RELATIVE_TIME = re.compile(r"^now([+-])(\S+)$")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

try:  # libyaml is much faster when present
    _YAML_LOADER: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _YAML_LOADER = yaml.SafeLoader


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``2h``, ``90m``, ``45s`` or a combination such as ``1h30m`` / ``168h0m0s``."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(
            f"invalid duration {text!r}: expected a whole number followed by d, h, m or s "
            "(e.g. '30d', '2h', '90m', '45s', or combined largest unit first: '1h30m')"
        )
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp form, whole seconds in UTC: ``2026-01-02T03:04:05Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc1123(moment: datetime) -> str:
    """Go's ``time.RFC1123`` in UTC, as cert-manager writes it in messages."""
    moment = moment.astimezone(UTC)
    return (
        f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
        f"{moment.year} {moment:%H:%M:%S} UTC"
    )


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    root = importlib.resources.files("runbooks_sandbox").joinpath("scenarios")
    return sorted(item.name for item in root.iterdir() if item.joinpath("manifests").is_dir())


def scenario_dir(name: str) -> Traversable:
    """The directory of scenario ``name``; ValueError naming the available ones if unknown."""
    available = list_scenarios()
    if name not in available:
        raise ValueError(f"unknown sandbox scenario {name!r}; available: {', '.join(available)}")
    return importlib.resources.files("runbooks_sandbox").joinpath("scenarios", name)


def load_scenario(name: str = "default", *, now: datetime) -> list[dict]:
    """The scenario's objects, fully materialised, in creation order."""
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    now = now.astimezone(UTC).replace(microsecond=0)
    documents = _read_documents(scenario_dir(name))
    build = _Build(now)

    for where, doc in documents:  # CAs first: Secrets anywhere may refer to them
        if doc["kind"] in ("ClusterIssuer", "Issuer") and "ca" in doc["sandbox"]:
            _in(where, build.add_ca, doc["metadata"]["name"], doc["sandbox"]["ca"])

    objects: list[dict] = []
    for where, doc in documents:
        objects.extend(_in(where, build.materialise, doc))
    for obj in objects:
        if obj["kind"] == "Certificate" and obj["apiVersion"].startswith("cert-manager.io/"):
            _in(f"Certificate {obj['metadata'].get('namespace')}/{obj['metadata']['name']}",
                build.certificate_status, obj)

    return sorted(objects, key=lambda obj: KIND_ORDER.get(obj["kind"], len(KIND_ORDER)))


def _read_documents(root: Traversable) -> list[tuple[str, dict]]:
    """(where, document) for every non-empty document, with its ``sandbox`` key split off."""
    files = sorted(
        (item for item in root.joinpath("manifests").iterdir() if item.name.endswith((".yaml", ".yml"))),
        key=lambda item: item.name,
    )
    out = []
    for item in files:
        docs = yaml.load_all(item.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            where = f"{root.name}/manifests/{item.name} document {index}"
            _check_document(where, doc)
            doc["sandbox"] = doc.pop("sandbox", None) or {}
            out.append((where, doc))
    return out


def _check_document(where: str, doc: Any) -> None:
    """ValueError unless ``doc`` is an object with a name and only allowed sandbox keys."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a mapping (a Kubernetes object), got {type(doc).__name__}")
    for field in ("apiVersion", "kind"):
        if not isinstance(doc.get(field), str):
            raise ValueError(f"{where}: missing or non-string {field!r}")
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        raise ValueError(f"{where}: {doc['kind']} has no metadata.name")
    sandbox = doc.get("sandbox") or {}
    if not isinstance(sandbox, dict):
        raise ValueError(f"{where}: 'sandbox' must be a mapping, got {type(sandbox).__name__}")
    allowed = {"age"} | SANDBOX_KEYS.get(doc["kind"], set())
    unknown = sorted(set(sandbox) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: sandbox key(s) {', '.join(unknown)} not allowed on {doc['kind']}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _in(where: str, func, *args):
    """Call ``func`` and prefix any ValueError with the document it concerns."""
    try:
        return func(*args)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


class _Build:
    """State shared while materialising one scenario start."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.cas: dict[str, tuple[pki.CertKey, pki.CertKey]] = {}  # issuer -> (root, signer)
        self.certs: dict[tuple[str, str], pki.CertKey] = {}  # (namespace, secret) -> leaf
        self.csrs: dict[tuple[str, ...], bytes] = {}  # dnsNames -> PEM CSR
        self.rsa_slots = 0

    def ago(self, text: str) -> datetime:
        return self.now - parse_duration(text)

    # -- objects -------------------------------------------------------------

    def materialise(self, doc: dict) -> list[dict]:
        """The object(s) one document stands for."""
        sandbox = doc["sandbox"]
        obj = _resolve_times({key: value for key, value in doc.items() if key != "sandbox"}, self.now)
        created = self.ago(sandbox.get("age", DEFAULT_AGE))
        obj["metadata"]["creationTimestamp"] = rfc3339(created)
        kind = obj["kind"]
        if kind == "Secret" and "certificate" in sandbox:
            obj["data"] = self.tls_data(obj, sandbox["certificate"])
        if kind == "Secret" and "privateKey" in sandbox:
            obj["data"] = self.private_key_data(sandbox["privateKey"])
        if kind in ("CertificateRequest", "Order") and "csr" in sandbox:
            obj["spec"]["request"] = self.request(kind, sandbox["csr"])
        if kind == "Deployment":
            obj = _server_defaults(obj)
            return [obj, *self.replica_sets(obj, sandbox, created)]
        if kind == "StatefulSet" and "previousTemplate" in sandbox:
            # created with the previous template; the same object again is the update the loader applies
            before = copy.deepcopy(obj)
            before["spec"]["template"] = _resolve_times(copy.deepcopy(sandbox["previousTemplate"]), self.now)
            return [before, obj]
        return [obj]

    def replica_sets(self, deploy: dict, sandbox: dict, created: datetime) -> list[dict]:
        """One ReplicaSet per revision, oldest first, as the Deployment controller leaves them."""
        spec = deploy["spec"]
        replicas = spec.get("replicas", 1)
        history = sandbox.get("revisions", [])
        for entry in history:
            _need(entry, ("revision", "age", "template"), "each sandbox.revisions entry")
        history = sorted(history, key=lambda entry: entry["revision"])
        current = sandbox.get("revision", history[-1]["revision"] + 1 if history else 1)
        rollout_age = sandbox.get("rolloutAge", sandbox.get("age", DEFAULT_AGE))
        # ReplicaSet sizes are data: `sandbox.replicas` for the newest revision (default: all
        # replicas) and `revisions[].replicas` for older ones (default 0, as the controller leaves
        # superseded ReplicaSets). A stuck rollout states both; see checkout in 50-shop.yaml.
        revisions = [
            (entry["revision"], entry["age"], entry.get("replicas", 0), _defaulted_template(entry["template"], self.now))
            for entry in history
        ] + [(current, rollout_age, sandbox.get("replicas", replicas), spec["template"])]

        last_revision, last_created = 0, created
        for revision, age, _, _ in revisions:
            when = self.ago(age)
            if revision <= last_revision:
                raise ValueError(f"revision {revision} must be greater than revision {last_revision} before it")
            if when < last_created:
                raise ValueError(
                    f"revision {revision} (age {age}) would predate the Deployment or the revision before it"
                )
            last_revision, last_created = revision, when

        deploy["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/revision"] = str(current)
        surge = _max_surge(spec, replicas)
        return [
            self.replica_set(deploy, revision, rs_replicas, template, self.ago(age), replicas + surge)
            for revision, age, rs_replicas, template in revisions
        ]

    def replica_set(
        self, deploy: dict, revision: int, replicas: int, template: dict, created: datetime, max_replicas: int
    ) -> dict:
        """The ReplicaSet of one revision: ``<deployment>-<pod-template-hash>``."""
        meta = deploy["metadata"]
        selector = deploy["spec"]["selector"].get("matchLabels", {})
        labels = template.get("metadata", {}).get("labels", {})
        mismatch = {k: v for k, v in selector.items() if labels.get(k) != v}
        if mismatch:
            raise ValueError(
                f"revision {revision} pod template labels do not match the selector {mismatch}"
            )
        template_hash = pod_template_hash(template)  # hashed without the pod-template-hash label
        rs_template = copy.deepcopy(template)
        rs_template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = template_hash
        rs_selector = copy.deepcopy(deploy["spec"]["selector"])
        rs_selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
        rs_spec = {"replicas": replicas}
        if "minReadySeconds" in deploy["spec"]:
            rs_spec["minReadySeconds"] = deploy["spec"]["minReadySeconds"]
        rs_spec |= {"selector": rs_selector, "template": rs_template}
        return {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{template_hash}",
                "namespace": meta.get("namespace", "default"),
                "labels": dict(rs_template["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(deploy["spec"].get("replicas", 1)),
                    "deployment.kubernetes.io/max-replicas": str(max_replicas),
                    "deployment.kubernetes.io/revision": str(revision),
                },
                # no uid: the store resolves owners by kind + name in the namespace
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
                "creationTimestamp": rfc3339(created),
            },
            "spec": rs_spec,
        }

    # -- certificates --------------------------------------------------------

    def add_ca(self, issuer: str, spec: dict) -> None:
        """Create the CA (root, optional intermediate) standing in for ``issuer``."""
        if issuer in self.cas:
            raise ValueError(f"issuer name {issuer!r} declares a sandbox CA twice")
        _need(spec, ("root",), "sandbox.ca")
        root = self.ca_cert(None, spec["root"])
        signer = self.ca_cert(root, spec["intermediate"]) if "intermediate" in spec else root
        self.cas[issuer] = (root, signer)
        for ca in (root,) if signer is root else (root, signer):  # renewals are signed with these
            pki.remember_ca(ca)

    def ca_cert(self, parent: pki.CertKey | None, spec: dict) -> pki.CertKey:
        _need(spec, ("commonName", "notBeforeAge", "validFor"), "a sandbox.ca root or intermediate")
        not_before = self.ago(spec["notBeforeAge"])
        return pki.issue(
            parent,
            common_name=spec["commonName"],
            organization=spec.get("organization"),
            not_before=not_before,
            not_after=not_before + parse_duration(spec["validFor"]),
            key_type="ec",
            is_ca=True,
            path_length=None if parent is None else 0,
        )

    def tls_data(self, secret: dict, spec: dict) -> dict[str, str]:
        """``tls.crt`` (leaf + intermediate), ``tls.key`` and ``ca.crt`` for a TLS Secret."""
        _need(spec, ("dnsNames", "notBeforeAge", "validFor"), "sandbox.certificate")
        dns_names = spec["dnsNames"]
        not_before = self.ago(spec["notBeforeAge"])
        issuer = spec.get("issuer", SELF_SIGNED)
        if issuer != SELF_SIGNED and issuer not in self.cas:
            known = ", ".join([SELF_SIGNED, *sorted(self.cas)])
            raise ValueError(f"sandbox.certificate issuer {issuer!r} is unknown; use one of: {known}")
        root, signer = self.cas.get(issuer, (None, None))
        leaf = pki.issue(
            signer,
            common_name=spec.get("commonName", dns_names[0]),
            dns_names=dns_names,
            not_before=not_before,
            not_after=not_before + parse_duration(spec["validFor"]),
            key=self.key(spec.get("keyAlgorithm", "ECDSA")),
        )
        meta = secret["metadata"]
        self.certs[(meta.get("namespace", "default"), meta["name"])] = leaf
        if signer is None:
            chain, ca_pem = leaf.cert_pem, leaf.cert_pem
        elif signer is root:
            chain, ca_pem = leaf.cert_pem, root.cert_pem
        else:
            chain, ca_pem = pki.chain_pem(leaf, signer), root.cert_pem
        return {"ca.crt": _b64(ca_pem), "tls.crt": _b64(chain), "tls.key": _b64(leaf.key_pem)}

    def private_key_data(self, spec: dict) -> dict[str, str]:
        """An Opaque Secret holding a private key (e.g. an ACME account key)."""
        return {spec.get("key", "tls.key"): _b64(pki.key_pem(self.key(spec.get("algorithm", "ECDSA"))))}

    def key(self, algorithm: str) -> pki.PrivateKey:
        """A fresh EC key, or the next RSA key of the process-wide pool (RSA keygen is slow)."""
        if algorithm == "ECDSA":
            return pki.generate_key("ec")
        if algorithm == "RSA":
            self.rsa_slots += 1
            return pki.pooled_key("rsa", 2048, slot=self.rsa_slots - 1)
        raise ValueError(f"key algorithm {algorithm!r} is not supported; use one of {', '.join(KEY_ALGORITHMS)}")

    def request(self, kind: str, spec: dict) -> str:
        """``spec.request``: the CSR as base64 of PEM (CertificateRequest) or of DER (Order)."""
        dns_names = tuple(spec.get("dnsNames") or ())
        if not dns_names:
            raise ValueError("sandbox.csr needs a non-empty 'dnsNames' list")
        if dns_names not in self.csrs:  # the CertificateRequest and its Order share one CSR
            key = pki.generate_key("ec")
            self.csrs[dns_names] = pki.csr_pem(key, common_name=spec.get("commonName", dns_names[0]), dns_names=dns_names)
        pem = self.csrs[dns_names]
        if kind == "Order":
            return _b64(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
        return _b64(pem)

    def certificate_status(self, cert: dict) -> None:
        """Fill a cert-manager Certificate's times and Ready condition from its Secret."""
        meta, spec = cert["metadata"], cert["spec"]
        leaf = self.certs.get((meta.get("namespace", "default"), spec.get("secretName", "")))
        if leaf is None:
            return  # no Secret issued (e.g. a stuck Certificate): status is as written
        not_before, not_after = leaf.cert.not_valid_before_utc, leaf.cert.not_valid_after_utc
        lifetime = not_after - not_before
        if "renewBefore" in spec:
            renew_before = parse_duration(spec["renewBefore"])
        elif "renewBeforePercentage" in spec:
            renew_before = lifetime * spec["renewBeforePercentage"] / 100
        else:
            renew_before = lifetime / 3  # cert-manager default: renew 2/3 through the lifetime
        status = cert.setdefault("status", {})
        status["notBefore"] = rfc3339(not_before)
        status["notAfter"] = rfc3339(not_after)
        status["renewalTime"] = rfc3339(not_after - renew_before)
        conditions = status.setdefault("conditions", [])
        if not any(condition.get("type") == "Ready" for condition in conditions):
            conditions.insert(0, _ready_condition(not_after, self.now, meta["creationTimestamp"]))


def _ready_condition(not_after: datetime, now: datetime, created: str) -> dict:
    """cert-manager's Ready condition for an issued certificate."""
    if not_after <= now:
        return {
            "type": "Ready",
            "status": "False",
            "reason": "Expired",
            "message": f"Certificate expired on {rfc1123(not_after)}",
            "lastTransitionTime": rfc3339(not_after),
            "observedGeneration": 1,
        }
    return {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "Certificate is up to date and has not expired",
        "lastTransitionTime": created,
        "observedGeneration": 1,
    }


def _server_defaults(obj: dict) -> dict:
    """``obj`` with the defaults the sandbox API server fills in on create."""
    rt = next(t for t in BUILTIN if t.api_version == obj["apiVersion"] and t.kind == obj["kind"])
    return admission.apply_defaults(rt, obj)


def _defaulted_template(template: dict, now: datetime) -> dict:
    """An old revision's pod template as the API server would have stored it."""
    wrapper = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "spec": {"template": _resolve_times(template, now)}}
    return _server_defaults(wrapper)["spec"]["template"]


def _need(spec: Any, keys: tuple[str, ...], what: str) -> None:
    """ValueError naming the keys ``what`` lacks."""
    if not isinstance(spec, dict):
        raise ValueError(f"{what} must be a mapping with {', '.join(keys)}, got {spec!r}")
    missing = [key for key in keys if spec.get(key) in (None, "", [])]
    if missing:
        raise ValueError(f"{what} needs {', '.join(repr(key) for key in missing)} (has: {', '.join(spec) or 'nothing'})")


def _max_surge(spec: dict, replicas: int) -> int:
    """The Deployment's maxSurge in pods (percentages round up, as in Kubernetes)."""
    strategy = spec.get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    value = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return math.ceil(replicas * int(value[:-1]) / 100)
    raise ValueError(f"maxSurge {value!r} is neither a number nor a percentage like '25%'")


def _resolve_times(value: Any, now: datetime) -> Any:
    """Replace every ``now-<duration>`` / ``now+<duration>`` string with an RFC 3339 time."""
    if isinstance(value, dict):
        return {key: _resolve_times(item, now) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_times(item, now) for item in value]
    if isinstance(value, str):
        match = _RELATIVE_TIME.match(value)
        if match:
            delta = parse_duration(match.group(2))
            return rfc3339(now + delta if match.group(1) == "+" else now - delta)
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
