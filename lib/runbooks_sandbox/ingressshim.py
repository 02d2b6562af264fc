"""cert-manager's ingress-shim for the sandbox: annotated Ingresses get their Certificates.

On a real cluster a chart only annotates its Ingress
(``cert-manager.io/cluster-issuer: letsencrypt-prod``) and lists the TLS
hosts and Secret; cert-manager's ingress-shim creates the Certificate, and
the certificates controllers issue it. This module does the first half the
way cert-manager's ``certificate-shim`` sync does it, so that a provisioning
flow that works here works there:

* **Which Ingresses.** Those annotated with ``cert-manager.io/issuer`` (an
  Issuer in the Ingress's namespace) or ``cert-manager.io/cluster-issuer``,
  or with an auto-certificate annotation (``kubernetes.io/tls-acme: "true"``)
  when a default issuer is configured (cert-manager's ``--default-issuer-name``,
  ``--default-issuer-kind``, ``--default-issuer-group`` flags, read from the
  cert-manager controller Deployment's arguments, or given to :class:`IngressShim`).
  ``cert-manager.io/issuer-kind`` and ``cert-manager.io/issuer-group`` override
  the issuer's kind and group (not together with ``cluster-issuer``). An
  Ingress being deleted is left alone.
* **One Certificate per ``spec.tls`` entry**, named after its ``secretName``,
  in the Ingress's namespace, with the Ingress's labels, controlled by the
  Ingress (``ownerReferences``: ``controller: true``, ``blockOwnerDeletion:
  true``), the entry's hosts as ``dnsNames`` (IP addresses as ``ipAddresses``),
  cert-manager's default usages, and the annotations ``cert-manager.io/common-name``,
  ``duration``, ``renew-before``, ``usages``, ``private-key-algorithm``,
  ``private-key-size``, ``private-key-encoding``, ``private-key-rotation-policy``
  and ``revision-history-limit``. An entry without hosts or secretName, two
  entries sharing a secretName, conflicting issuer annotations or an unparsable
  annotation value are refused with a ``BadConfig`` Warning Event on the Ingress.
* **Updates.** A Certificate the Ingress controls is brought back to what the
  Ingress says when the hosts (or any field above, or the labels) change; one
  the Ingress does not control is never touched (cert-manager logs "refusing to
  update non-owned certificate resource"). A controlled Certificate whose
  secretName no longer appears in the Ingress is deleted; a controlled one that
  is deleted by hand is created again.
* **Garbage collection.** Deleting the Ingress deletes its Certificates through
  their ownerReferences (the sandbox's garbage collector, as Kubernetes's).

Events on the Ingress as cert-manager records them: ``CreateCertificate``
"Successfully created Certificate "NAME"", ``UpdateCertificate``,
``DeleteCertificate``, ``BadConfig``.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

COMPONENT = "cert-manager-ingress-shim"
ISSUER = "cert-manager.io/issuer"
CLUSTER_ISSUER = "cert-manager.io/cluster-issuer"
ISSUER_KIND = "cert-manager.io/issuer-kind"
ISSUER_GROUP = "cert-manager.io/issuer-group"
AUTO_ANNOTATIONS = ("kubernetes.io/tls-acme",)
DEFAULT_USAGES = ["digital signature", "key encipherment"]
APPLYSET_LABEL = "applyset.kubernetes.io/part-of"
INGRESS_API = "networking.k8s.io/v1"


@dataclass(frozen=True)
class DefaultIssuer:
    """cert-manager's ``--default-issuer-*`` flags (used with the auto-certificate annotations)."""

    name: str = ""
    kind: str = "Issuer"
    group: str = "cert-manager.io"


class BadConfig(ValueError):
    """An Ingress whose annotations or TLS entries cert-manager refuses (a BadConfig Event)."""


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration (``2160h``, ``168h0m0s``, ``1h30m``, ``90s``); ValueError if it is not one."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total, number, i = 0.0, "", 0
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text[i:i + 2] == "ms" else ch
        if unit not in units or not number:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise ValueError(f"time: missing unit in duration {text!r}")
    return total


def format_go_duration(seconds: float) -> str:
    """A duration the way Go's ``time.Duration.String`` (and so cert-manager) writes it: ``168h0m0s``."""
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def default_issuer_from_args(args: list[str]) -> DefaultIssuer | None:
    """The default issuer configured by cert-manager controller flags, or None when not configured."""
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        for flag in ("--default-issuer-name", "--default-issuer-kind", "--default-issuer-group"):
            if arg.startswith(flag + "="):
                values[flag] = arg.split("=", 1)[1]
            elif arg == flag and i + 1 < len(args):
                values[flag] = args[i + 1]
    if not values.get("--default-issuer-name"):
        return None
    return DefaultIssuer(values["--default-issuer-name"], values.get("--default-issuer-kind") or "Issuer",
                         values.get("--default-issuer-group") or "cert-manager.io")


def wants_certificates(annotations: dict[str, str], auto: tuple[str, ...] = AUTO_ANNOTATIONS) -> bool:
    """Does the Ingress carry one of the annotations ingress-shim acts on?"""
    if ISSUER in annotations or CLUSTER_ISSUER in annotations:
        return True
    return any(str(annotations.get(a, "")).lower() in ("true", "1", "t") for a in auto)


def issuer_for(annotations: dict[str, str], default: DefaultIssuer | None) -> tuple[str, str, str]:
    """(name, kind, group) of the issuer for an Ingress's Certificates; BadConfig when it cannot be told."""
    name, kind, group = (default.name, default.kind, default.group) if default else ("", "Issuer", "cert-manager.io")
    errors = []
    if ISSUER in annotations:
        name, kind = annotations[ISSUER], "Issuer"
    if CLUSTER_ISSUER in annotations:
        name, kind = annotations[CLUSTER_ISSUER], "ClusterIssuer"
    if ISSUER_KIND in annotations:
        kind = annotations[ISSUER_KIND]
    if ISSUER_GROUP in annotations:
        group = annotations[ISSUER_GROUP]
    if not name:
        errors.append("failed to determine issuer name to be used for ingress resource")
    for a, b in ((ISSUER, CLUSTER_ISSUER), (CLUSTER_ISSUER, ISSUER_GROUP), (CLUSTER_ISSUER, ISSUER_KIND)):
        if a in annotations and b in annotations:
            errors.append(f'both "{a}" and "{b}" may not be set')
    if errors:
        raise BadConfig("Could not determine issuer for ingress due to bad annotations: " + ", ".join(errors))
    return name, kind, group


def _split_hosts(hosts: list[str]) -> tuple[list[str], list[str]]:
    dns, ips = [], []
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            if h not in dns:
                dns.append(h)
        else:
            if h not in ips:
                ips.append(h)
    return dns, ips


def _apply_annotations(spec: dict, annotations: dict[str, str]) -> None:
    """cert-manager's translateAnnotations: Certificate fields from ``cert-manager.io/*`` Ingress annotations."""
    prefix = "cert-manager.io/"
    if annotations.get(prefix + "common-name"):
        spec["commonName"] = annotations[prefix + "common-name"]
    for key, field in (("duration", "duration"), ("renew-before", "renewBefore")):
        value = annotations.get(prefix + key)
        if value is None:
            continue
        try:
            spec[field] = format_go_duration(parse_go_duration(value))
        except ValueError as e:
            raise BadConfig(f'{prefix}{key}: {e}') from None
    if annotations.get(prefix + "usages"):
        spec["usages"] = [u.strip() for u in annotations[prefix + "usages"].split(",") if u.strip()]
    key: dict[str, Any] = {}
    if annotations.get(prefix + "private-key-algorithm"):
        key["algorithm"] = annotations[prefix + "private-key-algorithm"]
    if annotations.get(prefix + "private-key-encoding"):
        key["encoding"] = annotations[prefix + "private-key-encoding"]
    if annotations.get(prefix + "private-key-rotation-policy"):
        key["rotationPolicy"] = annotations[prefix + "private-key-rotation-policy"]
    if annotations.get(prefix + "private-key-size"):
        try:
            key["size"] = int(annotations[prefix + "private-key-size"])
        except ValueError:
            raise BadConfig(f"{prefix}private-key-size: not an integer: "
                            f"{annotations[prefix + 'private-key-size']!r}") from None
    if key:
        spec["privateKey"] = key
    if annotations.get(prefix + "revision-history-limit"):
        try:
            spec["revisionHistoryLimit"] = int(annotations[prefix + "revision-history-limit"])
        except ValueError:
            raise BadConfig(f"{prefix}revision-history-limit: not an integer") from None


def desired_certificates(ingress: dict, default: DefaultIssuer | None = None) -> tuple[list[dict], list[str]]:
    """The Certificates ingress-shim wants for an Ingress, and the BadConfig messages of entries it skipped.

    Raises :class:`BadConfig` when nothing can be built (issuer annotations, duplicate
    secretNames, bad annotation values).
    """
    meta = ingress["metadata"]
    annotations = meta.get("annotations") or {}
    name, kind, group = issuer_for(annotations, default)
    tls = (ingress.get("spec") or {}).get("tls") or []
    seen: dict[str, int] = {}
    for i, entry in enumerate(tls):
        secret = entry.get("secretName") or ""
        if secret in seen:
            raise BadConfig(f"spec.tls[{seen[secret]}].secretName: Invalid value: {secret!r}: this secret name "
                            f"must only appear in a single TLS entry but is also used in spec.tls[{i}].secretName")
        seen[secret] = i
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != APPLYSET_LABEL}
    owner = {"apiVersion": INGRESS_API, "kind": "Ingress", "name": meta["name"], "uid": meta.get("uid"),
             "controller": True, "blockOwnerDeletion": True}
    out, skipped = [], []
    for i, entry in enumerate(tls):
        missing = [f"spec.tls[{i}].{f}: Required value" for f, v in
                   (("hosts", entry.get("hosts")), ("secretName", entry.get("secretName"))) if not v]
        if missing:
            skipped.append("Skipped a TLS block: " + ", ".join(missing))
            continue
        dns, ips = _split_hosts(list(entry["hosts"]))
        spec: dict[str, Any] = {"dnsNames": dns, "secretName": entry["secretName"],
                                "issuerRef": {"name": name, "kind": kind, "group": group},
                                "usages": list(DEFAULT_USAGES)}
        if ips:
            spec["ipAddresses"] = ips
        _apply_annotations(spec, annotations)
        cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": entry["secretName"], "namespace": meta["namespace"],
                             "ownerReferences": [dict(owner)]},
                "spec": spec}
        if labels:
            cert["metadata"]["labels"] = dict(labels)
        out.append(cert)
    return out, skipped


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parse_go_duration(value)
    except ValueError:
        return None


def needs_update(existing: dict, desired: dict) -> bool:
    """cert-manager's certNeedsUpdate: labels, names, SANs, issuer, private key, durations."""
    a, b = existing.get("spec") or {}, desired.get("spec") or {}
    if (existing["metadata"].get("labels") or {}) != (desired["metadata"].get("labels") or {}):
        return True
    for field in ("commonName", "dnsNames", "ipAddresses", "secretName", "revisionHistoryLimit"):
        if (a.get(field) or None) != (b.get(field) or None):
            return True
    ra, rb = a.get("issuerRef") or {}, b.get("issuerRef") or {}
    if (ra.get("name"), ra.get("kind") or "Issuer") != (rb.get("name"), rb.get("kind") or "Issuer"):
        return True
    ka, kb = a.get("privateKey") or {}, b.get("privateKey") or {}
    for field in ("algorithm", "encoding", "rotationPolicy"):
        if (ka.get(field) or "") != (kb.get(field) or ""):
            return True
    if str(ka.get("algorithm") or "").lower() != "ed25519" and (ka.get("size") or 0) != (kb.get("size") or 0):
        return True
    return any(_seconds(a.get(f)) != _seconds(b.get(f)) for f in ("duration", "renewBefore"))


def controlled_by(obj: dict, uid: str | None) -> bool:
    return any(r.get("controller") and r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def controller_of(obj: dict) -> dict | None:
    return next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)


class IngressShim:
    """Keeps each annotated Ingress's Certificates as cert-manager's ingress-shim does.

    Args:
        sandbox: the :class:`runbooks_sandbox.launch.Sandbox` (store, registry, Events).
        default_issuer: cert-manager's default issuer for ``kubernetes.io/tls-acme``;
            None reads the ``--default-issuer-*`` flags of the Deployment ``deployment``.
        deployment: ``namespace/name`` of the cert-manager controller Deployment.
    """

    def __init__(self, sandbox: Any, *, default_issuer: DefaultIssuer | None = None,
                 deployment: str = "cert-manager/cert-manager") -> None:
        self.sandbox = sandbox
        self.store, self.registry = sandbox.store, sandbox.registry
        self._default = default_issuer
        self.deployment = deployment

    @property
    def ingress_rt(self) -> Any:
        return self.registry.by_kind_any_version("Ingress", "networking.k8s.io")

    @property
    def cert_rt(self) -> Any:
        return self.registry.by_kind_any_version("Certificate", "cert-manager.io")

    def default_issuer(self) -> DefaultIssuer | None:
        if self._default is not None:
            return self._default
        ns, _, name = self.deployment.partition("/")
        rt = self.registry.by_kind_any_version("Deployment", "apps")
        dep = self.store.find(rt, ns, name) if rt else None
        if not dep:
            return None
        containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        for c in containers:
            found = default_issuer_from_args(list(c.get("args") or []))
            if found:
                return found
        return None

    def ingresses(self) -> list[tuple[str, str]]:
        return [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in self.store.items(self.ingress_rt)]

    def owner_of(self, change_obj: dict) -> tuple[str, str] | None:
        """The Ingress to sync again when a Certificate it controls changed or was deleted."""
        ref = controller_of(change_obj)
        if ref and ref.get("kind") == "Ingress" and str(ref.get("apiVersion", "")).startswith("networking.k8s.io/"):
            return change_obj["metadata"].get("namespace", ""), ref.get("name", "")
        return None

    def sync(self, ns: str, name: str) -> None:
        """One pass over an Ingress (idempotent): create, update and delete its Certificates."""
        ingress = self.store.find(self.ingress_rt, ns, name)
        if ingress is None or self.cert_rt is None:
            return
        meta = ingress["metadata"]
        if not wants_certificates(meta.get("annotations") or {}):
            return
        if meta.get("deletionTimestamp") or "foregroundDeletion" in (meta.get("finalizers") or []):
            return
        try:
            wanted, skipped = desired_certificates(ingress, self.default_issuer())
        except BadConfig as e:
            self._event(ingress, "Warning", "BadConfig", str(e))
            return
        for message in skipped:
            self._event(ingress, "Warning", "BadConfig", message)
        for cert in wanted:
            existing = self.store.find(self.cert_rt, ns, cert["metadata"]["name"])
            if existing is None:
                self.store.create(self.cert_rt, cert, created=self.store.clock())
                self._event(ingress, "Normal", "CreateCertificate",
                            f'Successfully created Certificate "{cert["metadata"]["name"]}"')
                continue
            if controller_of(existing) is None or not controlled_by(existing, meta.get("uid")):
                log.info("certificate %s/%s is not owned by Ingress %s/%s: refusing to update it",
                         ns, cert["metadata"]["name"], ns, name)
                continue
            if not needs_update(existing, cert):
                continue
            new = copy.deepcopy(existing)
            new["spec"] = cert["spec"]
            if cert["metadata"].get("labels"):
                new["metadata"]["labels"] = cert["metadata"]["labels"]
            else:
                new["metadata"].pop("labels", None)
            self.store.update(self.cert_rt, new)
            self._event(ingress, "Normal", "UpdateCertificate",
                        f'Successfully updated Certificate "{cert["metadata"]["name"]}"')
        used = {t.get("secretName") for t in (ingress.get("spec") or {}).get("tls") or []}
        for cert in self.store.items(self.cert_rt, ns):
            if controlled_by(cert, meta.get("uid")) and (cert.get("spec") or {}).get("secretName") not in used:
                self.store.delete(self.cert_rt, ns, cert["metadata"]["name"])
                self._event(ingress, "Normal", "DeleteCertificate",
                            f'Successfully deleted unrequired Certificate "{cert["metadata"]["name"]}"')

    def _event(self, ingress: dict, type_: str, reason: str, message: str) -> None:
        self.sandbox.controllers.event(ingress, type_, reason, message, COMPONENT)
