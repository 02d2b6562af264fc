"""Certificate rotation: the job behind notebooks/certificate-rotation.ipynb.

:mod:`runbooks.certs` knows certificates; this module brings the cluster in:

* **Inventory** (:func:`inventory`): TLS Secrets, cert-manager Certificates,
  CertificateRequests, ACME Challenges and Ingresses listed with the raw
  paginated lister (:func:`runbooks.kube.iter_objects`) into
  :func:`runbooks.certinventory.build_inventory`, page by page.
* **Rotation** through the runbook plan/approve/audit flow
  (``run.plan(rotation_changes, ...)``, ``run.apply(plan)``, :func:`verify_rotation`):
  cert-manager Certificates are renewed the way ``cmctl renew`` does it and
  the apply waits for the new revision (the ``cert-manager-renewal`` runbook
  target, :class:`CertManagerRenewal`); hand-managed Secrets are replaced from
  validated files after an in-cluster backup (a copy with a timestamp suffix
  and a label, restorable with ``rollback_backup``); then the workloads that
  mount the Secret and the ingress controller are restarted, and verification
  checks the new certificate is stored and served.
* **Re-check** (:func:`recheck`): after a verified rotation the inventory's
  findings about the rotated certificates are evaluated again, so a renewed
  certificate is reported as resolved by the plan instead of still expiring.

New key material travels only in change bodies (hashed into the plan id, sent
to the API server, never displayed, recorded or audited).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import kube, resolution
from .certinventory import CmCertificate, Inventory, build_inventory, read_certificate
from .certs import (
    BACKUP_OF,
    ROTATED_AT,
    TLS_TYPE,
    CertInfo,
    Served,
    check_chain,
    data_changed_at,
    describe,
    host_covered,
    load_chain,
    load_private_key,
    parse_time,
    probe_served,
    read_tls_secret,
    same_key,
    split_endpoint,
)
from .errors import InvalidInput, NotFound, PlanInvalid, RunbookError, Unavailable
from .model import Finding
from .parameters import MutatingParams
from .params import check_namespaces
from .plans import (
    APPLY_TIME,
    Change,
    KubernetesTarget,
    Plan,
    materialize,
    register_target,
    rollout_restart,
)
from .plans import (
    path as plans_path,
)

if TYPE_CHECKING:  # the notebook side hands its Run to the job; the job never imports it
    from .runbook import Run

BACKUP_SHA = "kube-runbooks.io/backup-sha256"
"""Annotation on a backup Secret: SHA-256 fingerprint of the leaf certificate it holds."""
BACKUP_TIME = "kube-runbooks.io/backed-up-at"
BACKUP_TYPE = "kube-runbooks.io/backup-of-type"
CM_API = "/apis/cert-manager.io/v1"
ACME_API = "/apis/acme.cert-manager.io/v1"
_DOMAIN_SUFFIX = re.compile(r"\.?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_OBJECT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?\Z")


# --------------------------------------------------------------------------
# Inventory from the cluster
# --------------------------------------------------------------------------


def _list(cluster: kube.Cluster, resource: str, namespaces: list[str] | None, **kw: Any) -> Iterable[dict]:
    """Objects of a resource in the namespaces (all when empty); nothing if its API is not installed."""
    for ns in namespaces or [None]:
        try:
            yield from kube.iter_objects(cluster, resource, ns, **kw)
        except NotFound:
            return


def _secret_keys(cluster: kube.Cluster, namespaces: list[str] | None, keys: Any = ("tls.crt", "ca.crt", "tls.key"),
                 **kw: Any) -> Iterable[kube.SecretKeys]:
    """The Secrets of the namespaces (all when empty) as :class:`runbooks.kube.SecretKeys`: certificates,
    and whether each key matches, never a key."""
    for ns in namespaces or [None]:
        try:
            yield from kube.iter_secret_keys(cluster, ns, keys, **kw)
        except NotFound:
            return


def inventory(cluster: kube.Cluster, namespaces: list[str] | None = None, *, now: datetime | None = None,
              page_size: int = kube.PAGE_SIZE) -> Inventory:
    """The certificate inventory of a cluster (all namespaces when ``namespaces`` is empty).

    Example:
        >>> inv = inventory(cluster, ["shop"])  # doctest: +SKIP
        >>> inv.table()[["name", "days_left", "state"]]  # doctest: +SKIP
    """
    return build_inventory(
        _secret_keys(cluster, namespaces, field_selector=f"type={TLS_TYPE}", page_size=page_size),
        _list(cluster, "certificates", namespaces),
        _list(cluster, "certificaterequests", namespaces),
        _list(cluster, "ingresses", namespaces),
        _list(cluster, "challenges", namespaces, api_path=ACME_API),
        now=now,
    )


# --------------------------------------------------------------------------
# Parameters of notebooks/certificate-rotation.ipynb
# --------------------------------------------------------------------------


class ReplacementFiles(BaseModel):
    """New certificate files for one hand-managed Secret (paths, never contents)."""

    model_config = ConfigDict(extra="forbid")

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    ca: str | None = None


def _check_object(value: str, what: str) -> str:
    if not isinstance(value, str) or not _OBJECT.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not 'namespace/name' (lowercase RFC 1123 names)")
    return value


class CertificateRotationParams(MutatingParams):
    """Parameters of notebooks/certificate-rotation.ipynb (checked before a kernel starts and in preflight)."""

    APPLY_PARAMETERS = ("renew_timeout_seconds",)
    EXISTING_NAMESPACES = ("namespaces",)

    namespaces: list[str] = Field(default_factory=list)
    warning_days: int = Field(default=30, ge=0)
    critical_days: int = Field(default=7, ge=0)
    ingress_url: str = ""
    probe_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    probe_concurrency: int = Field(default=16, ge=1, le=256)
    certificates: list[str] = Field(default_factory=list)
    expiring_within_days: int | None = Field(default=None, ge=0)
    replacement_files: dict[str, ReplacementFiles] = Field(default_factory=dict)
    force_renewal: bool = False
    ingress_controller: str = "ingress-nginx/ingress-nginx-controller"
    renew_timeout_seconds: int = Field(default=180, ge=1, le=3600)
    verify_timeout_seconds: int = Field(default=120, ge=1, le=3600)
    rollback_backup: str = ""
    internal_domains: list[str] = Field(default_factory=lambda: [".local", ".internal", ".svc", ".cluster.local"])

    @field_validator("namespaces")
    @classmethod
    def _valid_namespaces(cls, value: list[str]) -> list[str]:
        return check_namespaces(value)

    @field_validator("certificates")
    @classmethod
    def _valid_certificates(cls, value: list[str]) -> list[str]:
        return [_check_object(v, "certificate") for v in value]

    @field_validator("replacement_files")
    @classmethod
    def _valid_files(cls, value: dict[str, ReplacementFiles]) -> dict[str, ReplacementFiles]:
        for k in value:
            _check_object(k, "replacement_files key")
        return value

    @field_validator("internal_domains")
    @classmethod
    def _valid_domains(cls, value: list[str]) -> list[str]:
        for d in value:
            if not isinstance(d, str) or len(d) > 253 or not _DOMAIN_SUFFIX.fullmatch(d):
                raise ValueError(f"internal domain {d!r} is not a domain suffix such as .internal or "
                                 "corp.example.com (an empty one would match every host)")
        return value

    @field_validator("ingress_controller", "rollback_backup")
    @classmethod
    def _valid_ref(cls, value: str, info: Any) -> str:
        return _check_object(value, info.field_name) if value else value

    @field_validator("ingress_url")
    @classmethod
    def _valid_endpoint(cls, value: str) -> str:
        if value:
            try:
                split_endpoint(value)
            except InvalidInput:
                raise ValueError(f"ingress_url {value!r} is not https://host[:port] (e.g. https://127.0.0.1:18443)"
                                 ) from None
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> CertificateRotationParams:
        if self.critical_days > self.warning_days:
            raise ValueError(f"critical_days={self.critical_days} must not exceed warning_days={self.warning_days}")
        if self.rollback_backup and (self.certificates or self.replacement_files or self.expiring_within_days is not None):
            raise ValueError("rollback_backup restores one backup: leave certificates, replacement_files and "
                             "expiring_within_days empty in the same run")
        return self


# --------------------------------------------------------------------------
# Rotation: what to do for each selected certificate
# --------------------------------------------------------------------------


def select_targets(inv: Inventory, certificates: Iterable[str] = (), expiring_within_days: int | None = None,
                   replacement_files: Mapping[str, Any] | None = None, rollback_backup: str = "",
                   cluster: kube.Cluster | None = None) -> list[str]:
    """The TLS Secrets (``namespace/name``) to rotate.

    Those named in ``certificates`` (a Secret, or a cert-manager Certificate
    meaning its Secret), those with replacement files, and every one expiring
    within ``expiring_within_days`` (expired included); or the Secret a
    ``rollback_backup`` restores.

    Raises:
        PlanInvalid: a name is not in the inventory (nothing is changed; exit code 2).
    """
    if rollback_backup:
        if cluster is None:
            raise PlanInvalid("select_targets needs the cluster to read a rollback backup")
        ns, name = rollback_backup.split("/", 1)
        backup = _get_secret(cluster, ns, name)
        if backup is None or not ((backup["metadata"].get("labels") or {}).get(BACKUP_OF)):
            raise PlanInvalid(f"rollback_backup {rollback_backup!r} is not a backup Secret (label {BACKUP_OF}); "
                                 "see the Rollback section for the backups that exist")
        return [f"{ns}/{backup['metadata']['labels'][BACKUP_OF]}"]
    out: list[str] = []
    known = {f"{ns}/{n}" for ns, n in inv.secrets} | {f"{c.namespace}/{c.secret_name}" for c in inv.certificates.values()}
    for ref in [*certificates, *(replacement_files or {})]:
        ns, name = ref.split("/", 1)
        target = ref
        if ref not in known:
            cert = inv.certificates.get((ns, name))
            if cert is None:
                raise PlanInvalid(f"certificate {ref!r} is neither a TLS Secret nor a cert-manager Certificate "
                                     f"in the inventory; known: {', '.join(sorted(known)) or 'none'}")
            target = f"{ns}/{cert.secret_name}"
        if target not in out:
            out.append(target)
    if expiring_within_days is not None:
        for (ns, name), s in sorted(inv.secrets.items()):
            if s.leaf is not None and s.leaf.days_left(inv.now) <= expiring_within_days and f"{ns}/{name}" not in out:
                out.append(f"{ns}/{name}")
    return out


@dataclass
class Decision:
    """What the plan does for one target Secret, and why."""

    target: str
    managed_by: str
    action: str  # renew, replace, restore, reload, none
    reason: str
    current_sha256: str = ""
    new_sha256: str = ""
    new_not_after: datetime | None = None
    backup: str = ""  # name of the backup to create ("" none)
    restarts: list[str] = field(default_factory=list)  # "Kind/namespace/name"

    def row(self) -> dict:
        return {"certificate": self.target, "managed_by": self.managed_by, "action": self.action,
                "reason": self.reason, "backup": self.backup, "restarts": ", ".join(self.restarts),
                "current_sha256": self.current_sha256[:16], "new_sha256": self.new_sha256[:16],
                "new_not_after": self.new_not_after}


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise InvalidInput(f"{what} file {path!r} cannot be read: {e.strerror or e}") from None


def validate_replacement(cert_pem: bytes, key_pem: bytes, ca_pem: bytes | None, *, hosts: Iterable[str],
                         current_not_after: datetime | None, now: datetime | None = None,
                         target: str = "") -> tuple[CertInfo, list[x509.Certificate]]:
    """Check replacement files before anything changes; InvalidInput names the failed check.

    Checks, in order: ``PEM`` (certificate bundle and private key parse),
    ``chain order`` (leaf first, each certificate issued by the next, signatures
    verify), ``key matches``, ``chain complete``, ``not expired``, ``later notAfter``
    (than the certificate it replaces) and ``SANs cover the hosts`` (of every Ingress
    using the Secret).
    """
    now = now or datetime.now(UTC)
    label = f"replacement files for {target}" if target else "replacement files"

    def fail(check: str, detail: str) -> InvalidInput:
        return InvalidInput(f"{label} failed the check '{check}': {detail}")

    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise fail("PEM", "the certificate file holds no PEM certificate") from None
    try:
        key = load_private_key(key_pem)
    except ValueError as e:
        raise fail("PEM", f"the key file is {e}") from None
    try:
        roots = x509.load_pem_x509_certificates(ca_pem) if ca_pem else []
    except ValueError:
        raise fail("PEM", "the CA file holds no PEM certificate") from None
    check = check_chain(chain, roots, verify_signatures=True)
    if not check.in_order:
        raise fail("chain order", check.problem)
    if not same_key(chain[0], key):
        raise fail("key matches", "the private key does not belong to the first certificate of the file")
    if not check.complete:
        raise fail("chain complete", check.problem)
    leaf = describe(chain[0])
    if leaf.not_after <= now:
        raise fail("not expired", f"the certificate expired on {leaf.not_after:%Y-%m-%d %H:%M} UTC")
    if leaf.not_before > now:
        raise fail("not expired", f"the certificate is not valid before {leaf.not_before:%Y-%m-%d %H:%M} UTC")
    if current_not_after is not None and leaf.not_after <= current_not_after:
        raise fail("later notAfter", f"it expires {leaf.not_after:%Y-%m-%d %H:%M} UTC, not later than the "
                                     f"certificate it replaces ({current_not_after:%Y-%m-%d %H:%M} UTC)")
    missing = [h for h in hosts if not host_covered(h, leaf.dns_names)]
    if missing:
        raise fail("SANs cover the hosts", f"{', '.join(missing)} not in its SANs "
                                           f"({', '.join(leaf.dns_names) or 'none'})")
    return leaf, chain


def _get_secret(cluster: kube.Cluster, ns: str, name: str) -> dict | None:
    """A Secret as reads return it: metadata, and its values replaced by digests."""
    try:
        return kube.get_object(cluster, "secrets", ns, name)
    except NotFound:
        return None


def _get_secret_keys(cluster: kube.Cluster, ns: str, name: str,
                     keys: Any = kube.CERTIFICATE_KEYS) -> kube.SecretKeys | None:
    """A Secret's certificates (:func:`runbooks.kube.read_secret_keys`), or None when it does not exist."""
    try:
        return kube.read_secret_keys(cluster, ns, name, keys)
    except NotFound:
        return None


def backup_name(secret: dict) -> str:
    """``<name>-backup-<time its data was written>``: stable for the same content, unique per version."""
    when = data_changed_at(secret) or datetime.now(UTC)
    name = secret["metadata"]["name"]
    suffix = f"-backup-{when:%Y%m%dt%H%M%Sz}"
    return name[: 253 - len(suffix)] + suffix


def backups(cluster: kube.Cluster, namespaces: list[str] | None = None, of: str | None = None) -> list[dict]:
    """Backup Secrets made by this module (metadata and fingerprints only)."""
    selector = f"{BACKUP_OF}={of}" if of else BACKUP_OF
    out = []
    for keys in _secret_keys(cluster, namespaces, kube.CERTIFICATE_KEYS, label_selector=selector):
        meta = keys.object["metadata"]
        annotations = meta.get("annotations") or {}
        leaf = None
        try:
            leaf = describe(load_chain(keys.certificate("tls.crt"))[0])
        except (InvalidInput, IndexError):
            pass
        out.append({"namespace": meta.get("namespace"), "backup": meta["name"],
                    "of": (meta.get("labels") or {}).get(BACKUP_OF), "sha256": annotations.get(BACKUP_SHA, ""),
                    "not_after": leaf.not_after if leaf else None, "backed_up_at": annotations.get(BACKUP_TIME, ""),
                    "restore_with": f"rollback_backup = \"{meta.get('namespace')}/{meta['name']}\""})
    return out


def backups_table(cluster: kube.Cluster, namespaces: list[str] | None = None) -> pd.DataFrame:
    cols = ["namespace", "backup", "of", "sha256", "not_after", "backed_up_at", "restore_with"]
    rows = backups(cluster, namespaces)
    for r in rows:
        r["sha256"] = r["sha256"][:16]
    return pd.DataFrame(rows, columns=cols)


def workloads_using(cluster: kube.Cluster, namespace: str, secret: str) -> list[tuple[str, str, dict]]:
    """(kind, name, object) of Deployments, StatefulSets and DaemonSets whose pods mount or read the Secret."""
    out = []
    for kind, resource in (("Deployment", "deployments"), ("StatefulSet", "statefulsets"), ("DaemonSet", "daemonsets")):
        for obj in kube.iter_objects(cluster, resource, namespace):
            if secret in _secrets_of_template(((obj.get("spec") or {}).get("template") or {}).get("spec") or {}):
                out.append((kind, obj["metadata"]["name"], obj))
    return out


def _secrets_of_template(pod_spec: dict) -> set[str]:
    names = set()
    for v in pod_spec.get("volumes") or []:
        if (v.get("secret") or {}).get("secretName"):
            names.add(v["secret"]["secretName"])
        for src in (v.get("projected") or {}).get("sources") or []:
            if (src.get("secret") or {}).get("name"):
                names.add(src["secret"]["name"])
    for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        for e in c.get("env") or []:
            ref = ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            if ref:
                names.add(ref)
        for e in c.get("envFrom") or []:
            if (e.get("secretRef") or {}).get("name"):
                names.add(e["secretRef"]["name"])
    return names


def _oldest_pod(cluster: kube.Cluster, namespace: str, workload: dict) -> datetime | None:
    labels = (((workload.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    if not labels:
        return None
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    times = [t for p in kube.iter_objects(cluster, "pods", namespace, label_selector=selector)
             if not p["metadata"].get("deletionTimestamp") and (t := parse_time(p["metadata"].get("creationTimestamp")))]
    return min(times) if times else None


def decide(cluster: kube.Cluster, inv: Inventory, targets: list[str], *,
           replacement_files: Mapping[str, Any] | None = None, expiring_within_days: int | None = None,
           force_renewal: bool = False, ingress_controller: str = "", rollback_backup: str = "",
           explicit: Iterable[str] = ()) -> list[Decision]:
    """Decide, per target Secret, whether to renew, replace, restore or only reload, and what to restart.

    Pure reading: the same state gives the same decisions (so the plan id is stable).

    Raises:
        InvalidInput: replacement files fail a check, or a hand-managed Secret named
            in ``explicit`` has no replacement files.
    """
    files = {k: (v if isinstance(v, ReplacementFiles) else ReplacementFiles.model_validate(v))
             for k, v in (replacement_files or {}).items()}
    explicit = set(explicit)
    now = inv.now
    decisions = []
    for target in targets:
        ns, name = target.split("/", 1)
        s = inv.secrets.get((ns, name))
        cert = inv.certificate_for(ns, name)
        hosts = inv.hosts_of(ns, name)
        d = Decision(target, "cert-manager" if cert else "hand", "none", "", current_sha256=s.sha256 if s else "")
        changes_data = False
        if rollback_backup:
            bns, bname = rollback_backup.split("/", 1)
            backup = _get_secret(cluster, bns, bname)
            assert backup is not None  # checked by select_targets
            d.new_sha256 = (backup["metadata"].get("annotations") or {}).get(BACKUP_SHA, "")
            if d.new_sha256 and d.new_sha256 == d.current_sha256:
                d.reason = f"{name} already holds the certificate of {bname}"
            else:
                d.action, d.reason, changes_data = "restore", f"restore {name} from backup {bname}", True
                if cert:
                    d.reason += " (cert-manager will overwrite it at its next issuance)"
        elif cert is not None:
            days = s.leaf.days_left(now) if s and s.leaf else None
            due = []
            if force_renewal:
                due.append("renewal forced")
            if s is None or s.leaf is None:
                due.append("no usable Secret")
            if not cert.is_ready:
                due.append(f"not Ready ({cert.ready.get('reason', '')})")
            if cert.renewal_time and cert.renewal_time <= now:
                due.append(f"renewal was due {cert.renewal_time:%Y-%m-%d}")
            if expiring_within_days is not None and days is not None and days <= expiring_within_days:
                due.append(f"{days:.0f} days left")
            if cert.is_issuing:
                d.reason = (f"already issuing since {cert.issuing.get('lastTransitionTime', '?')}: "
                            f"{cert.why_failing() or cert.issuing.get('message', '')} — a renewal cannot help "
                            "until that is fixed")
            elif due:
                d.action, d.reason, changes_data = "renew", "; ".join(due), True
            else:
                d.reason = f"not due (renews at {cert.renewal_time:%Y-%m-%d})" if cert.renewal_time else "not due"
        elif target in files:
            f = files[target]
            cert_pem = read_file(f.cert, "certificate")
            if s is not None and s.leaf is not None and _pem_sha(cert_pem) == s.sha256:
                d.new_sha256, d.new_not_after = s.sha256, s.leaf.not_after
                d.reason = "the Secret already holds the new certificate"
            else:
                leaf, _ = validate_replacement(
                    cert_pem, read_file(f.key, "key"), read_file(f.ca, "CA") if f.ca else None, hosts=hosts,
                    current_not_after=None if s is None or s.leaf is None else s.leaf.not_after, now=now,
                    target=target)
                d.new_sha256, d.new_not_after = leaf.sha256, leaf.not_after
                d.action, d.reason, changes_data = "replace", f"new certificate until {leaf.not_after:%Y-%m-%d}", True
        elif target in explicit:
            raise InvalidInput(f"{target} is managed by hand: give its new certificate and key in "
                               f"replacement_files[{target!r}] = {{'cert': PATH, 'key': PATH}}")
        else:
            d.reason = "managed by hand and no replacement_files entry: skipped"
        if d.action in ("replace", "restore"):
            secret = _get_secret(cluster, ns, name)
            if secret is not None and not _has_backup(cluster, ns, name, d.current_sha256):
                d.backup = backup_name(secret)
        # restarts: workloads reading the Secret, and the ingress controller serving it
        for kind, wname, obj in workloads_using(cluster, ns, name):
            oldest = _oldest_pod(cluster, ns, obj)
            if changes_data or (s and s.changed_at and oldest and oldest < s.changed_at):
                d.restarts.append(f"{kind}/{ns}/{wname}")
        mismatch = inv.served_mismatch(ns, name)
        if ingress_controller and hosts and (changes_data or mismatch):
            ins, iname = ingress_controller.split("/", 1)
            d.restarts.append(f"Deployment/{ins}/{iname}")
            if d.action == "none" and mismatch:
                d.action = "reload"
                d.reason = (f"{', '.join(sorted(mismatch))} serve(s) an old certificate"
                            + (f"; {d.reason}" if d.reason else ""))
        decisions.append(d)
    return decisions


def _pem_sha(pem: bytes) -> str:
    try:
        return x509.load_pem_x509_certificates(pem)[0].fingerprint(hashes.SHA256()).hex()
    except (ValueError, IndexError):
        return ""


def _has_backup(cluster: kube.Cluster, ns: str, name: str, sha: str) -> bool:
    return any(b["sha256"] == sha for b in backups(cluster, [ns], of=name)) if sha else False


def rotation_preview(cluster: kube.Cluster, inv: Inventory, targets: list[str], params: Any) -> pd.DataFrame:
    """The decisions as a table (what the plan will do and why); refusals are shown, not raised."""
    cols = ["certificate", "managed_by", "action", "reason", "backup", "restarts", "current_sha256",
            "new_sha256", "new_not_after"]
    try:
        rows = [d.row() for d in decide(cluster, inv, targets, **_decide_args(params))]
    except InvalidInput as e:
        rows = [{"certificate": ", ".join(targets), "action": "refused", "reason": str(e)}]
    return pd.DataFrame(rows, columns=cols)


def _decide_args(p: Any) -> dict[str, Any]:
    return {"replacement_files": {k: v.model_dump() for k, v in p.replacement_files.items()},
            "expiring_within_days": p.expiring_within_days, "force_renewal": p.force_renewal,
            "ingress_controller": p.ingress_controller, "rollback_backup": p.rollback_backup,
            "explicit": list(p.certificates) + list(p.replacement_files)}


def plan_arguments(p: CertificateRotationParams, targets: list[str]) -> dict[str, Any]:
    """Keyword arguments of :func:`rotation_changes` for ``run.plan`` (plain data, so the plan recomputes)."""
    return {"targets": list(targets), "namespaces": sorted({t.split("/", 1)[0] for t in targets}),
            "ingress_endpoint": p.ingress_url, "probe_timeout": p.probe_timeout_seconds,
            "probe_concurrency": p.probe_concurrency, **_decide_args(p)}


# --------------------------------------------------------------------------
# Rotation: the plan builder
# --------------------------------------------------------------------------

RENEW_REASON = "ManuallyTriggered"
RENEW_MESSAGE = "Certificate re-issuance manually triggered"


def rotation_changes(cluster: kube.Cluster, *, targets: list[str], namespaces: list[str],
                     ingress_endpoint: str = "", probe_timeout: float = 5.0, probe_concurrency: int = 16,
                     **decide_kw: Any) -> list[Change]:
    """Plan builder (``run.plan(rotation.rotation_changes, **rotation.plan_arguments(p, targets))``).

    Reads the current state of the target namespaces, decides (:func:`decide`)
    and returns the changes in the order they must happen:

    1. renewals: the Certificate's ``Issuing`` condition set to True through the
       status subresource, as ``cmctl renew`` does;
    2. backups: a copy of each Secret about to be replaced (type Opaque, label
       ``kube-runbooks.io/backup-of``), unless one of the same certificate exists;
    3. replacements (or restores) of ``tls.crt``/``tls.key`` (and ``ca.crt``);
    4. rollout restarts of the workloads reading the Secrets and of the ingress controller.

    Every change is idempotent against the state it was planned on (preconditions
    are part of the plan id): a re-run after an interruption plans only what is left.
    """
    inv = inventory(cluster, namespaces)
    if targets and any(inv.hosts_of(*t.split("/", 1)) for t in targets):
        inv.served = probe_served([h for t in targets for h in inv.hosts_of(*t.split("/", 1))], ingress_endpoint,
                                  timeout=probe_timeout, concurrency=probe_concurrency)
        inv.probed = True
    decisions = decide(cluster, inv, targets, **decide_kw)
    renew, backup, replace, restart = [], [], [], []
    restarts_seen: list[str] = []
    files = decide_kw.get("replacement_files") or {}
    for d in decisions:
        ns, name = d.target.split("/", 1)
        if d.action == "renew":
            cert = inv.certificate_for(ns, name)
            assert cert is not None
            renew.append(_renew_change(cluster, cert))
        if d.action in ("replace", "restore"):
            secret = _get_secret_keys(cluster, ns, name)
            assert secret is not None
            if d.backup:
                backup.append(_backup_change(secret, d.backup))
            if d.action == "replace":
                f = files[d.target]
                f = f if isinstance(f, ReplacementFiles) else ReplacementFiles.model_validate(f)
                data = {"tls.crt": read_file(f.cert, "certificate"), "tls.key": read_file(f.key, "key")}
                if f.ca:
                    data["ca.crt"] = read_file(f.ca, "CA")
                replace.append(_replace_change(secret.object, data, d))
            else:  # the backup's values, named by their digests: the target copies them (kube.write_secret_copy)
                source = _get_secret(cluster, *decide_kw["rollback_backup"].split("/", 1)) or {}
                replace.append(_replace_change(secret.object, source.get("data") or {}, d,
                                               data_from=decide_kw["rollback_backup"]))
        for ref in d.restarts:
            if ref not in restarts_seen:
                restarts_seen.append(ref)
    for ref in restarts_seen:
        kind, ns, name = ref.split("/", 2)
        restart.extend(rollout_restart(cluster, ns, name, kind))
    return renew + backup + replace + restart


def _renew_change(cluster: kube.Cluster, cert: CmCertificate) -> Change:
    conditions = [c for c in cert.conditions if c.get("type") != "Issuing"]
    issuing = {"type": "Issuing", "status": "True", "reason": RENEW_REASON, "message": RENEW_MESSAGE,
               "lastTransitionTime": APPLY_TIME}
    if cert.generation is not None:
        issuing["observedGeneration"] = cert.generation
    old = f"{cert.issuing.get('status')} ({cert.issuing.get('reason', '')})" if cert.issuing else None
    return Change(
        target=RENEWAL_TARGET, operation="patch", kind="Certificate", namespace=cert.namespace, name=cert.name,
        subresource="status",
        diff=[{"path": "status.conditions[Issuing]", "from": old, "to": f"True ({RENEW_REASON})"},
              {"path": "status.revision", "from": cert.revision, "to": f"{cert.revision + 1} (issued by cert-manager)"}],
        body={"status": {"conditions": [*conditions, issuing]}},
        precondition={"revision": cert.revision,
                      "notAfter": cert.not_after.isoformat() if cert.not_after else None},
    )


def _backup_change(secret: dict | kube.SecretKeys, name: str) -> Change:
    """A copy of ``secret`` (its certificates read, its values named by their digests: the
    ``tls-secret`` target copies them from the Secret when it sends the change)."""
    info = read_tls_secret(secret, check_key=False)
    secret = secret.object if isinstance(secret, kube.SecretKeys) else kube.redact_secrets(secret, True)
    meta = secret["metadata"]
    sha = info.sha256
    until = f", not after {info.leaf.not_after:%Y-%m-%d}" if info.leaf else ""
    return Change(
        target=SECRET_TARGET, operation="create", kind="Secret", namespace=meta["namespace"], name=name,
        diff=[{"path": f"new Secret: copy of {meta['name']} (certificate sha256 {sha[:16]}{until}), "
                       f"label {BACKUP_OF}={meta['name']}"}],
        body={"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": name, "namespace": meta["namespace"], "labels": {BACKUP_OF: meta["name"]},
                           "annotations": {BACKUP_SHA: sha, BACKUP_TIME: APPLY_TIME,
                                           BACKUP_TYPE: secret.get("type", TLS_TYPE)}},
              "data": dict(secret.get("data") or {})},
        precondition={"sha256": sha, "data_from": f"{meta['namespace']}/{meta['name']}"},
    )


def _replace_change(secret: dict, data: Mapping[str, Any], d: Decision, data_from: str | None = None) -> Change:
    """Replace the Secret's certificate and key: ``data`` are new values (bytes, from files), or with
    ``data_from`` the digests of that Secret's values (a restore; the target copies them)."""
    meta = secret["metadata"]
    until = f" (not after {d.new_not_after:%Y-%m-%d})" if d.new_not_after else ""
    what = "restored from backup" if d.action == "restore" else "replaced from files"
    diff = [{"path": f"data[tls.crt]: certificate sha256 {d.current_sha256[:16] or 'none'} → "
                     f"{d.new_sha256[:16] or '?'}{until}, {what}"},
            {"path": "data[tls.key]: replaced by the key of the new certificate"}]
    if "ca.crt" in data:
        diff.append({"path": "data[ca.crt]: replaced"})
    return Change(
        target=SECRET_TARGET, operation="patch", kind="Secret", namespace=meta["namespace"], name=meta["name"],
        diff=diff,
        body={"metadata": {"annotations": {ROTATED_AT: APPLY_TIME}},
              "data": {k: (v if data_from else base64.b64encode(v).decode()) for k, v in sorted(data.items())
                       if k in ("tls.crt", "tls.key", "ca.crt")}},
        precondition={"sha256": d.current_sha256, **({"data_from": data_from} if data_from else {})},
        resource_version=meta.get("resourceVersion"),
    )


# --------------------------------------------------------------------------
# Rotation: how the changes are sent (runbook targets), waiting for cert-manager
# --------------------------------------------------------------------------

RENEWAL_TARGET = "cert-manager-renewal"
SECRET_TARGET = "tls-secret"


class RenewalFailed(Unavailable):
    """cert-manager did not issue the renewal (it failed, or not within the timeout)."""


class CertManagerRenewal:
    """Runbook target ``cert-manager-renewal``: renew a Certificate the way ``cmctl renew`` does.

    Sending the change sets the ``Issuing`` condition through the status
    subresource (with ``dryRun=All`` when validating), then waits until
    cert-manager has written a new revision and Secret, or reports why not:
    issuance failed, or nothing happened within ``renew_timeout_seconds`` (a
    parameter of the run). A renewal that does not come records a critical
    ``renewal-failed`` finding with cert-manager's message and stops the apply
    (later changes, such as restarts, would only restart onto the old certificate).
    """

    poll = 1.0

    def identity(self, run: Run) -> dict[str, Any]:
        return kube.identity(run.cluster)

    def send(self, run: Run, change: Change, *, dry_run: bool, now: str) -> Any:
        cluster = run.cluster
        path = f"{CM_API}/namespaces/{change.namespace}/certificates/{change.name}/status"
        out = kube.request(cluster, "PATCH", path, query=[("dryRun", "All")] if dry_run else [],
                           body=materialize(change.body, now), content_type="application/merge-patch+json")
        if dry_run:
            return out
        timeout = float(getattr(run.params, "renew_timeout_seconds", 180))
        result = wait_for_renewal(cluster, change.namespace or "", change.name,
                                  int(change.precondition.get("revision") or 0), timeout=timeout, poll=self.poll)
        if not result["ok"]:
            run.finding(f"renewal-failed/{change.namespace}/{change.name}", "critical",
                        f"Certificate {change.namespace}/{change.name} was not renewed",
                        detail=result["problem"], resource=f"Certificate/{change.namespace}/{change.name}")
            raise RenewalFailed(result["problem"])
        return result

    def current(self, run: Run, change: Change) -> Any:
        try:
            return kube.get_object(run.cluster, "certificates", change.namespace, change.name)
        except NotFound:
            return None


register_target(RENEWAL_TARGET, CertManagerRenewal())
class TlsSecretWrites(KubernetesTarget):
    """Runbook target ``tls-secret``: Kubernetes writes of TLS Secrets. A backup or a restore names the
    values it copies by their digests (``precondition.data_from`` is the Secret they come from) and
    :func:`runbooks.kube.write_secret_copy` puts them in as it sends: no key passes through a plan.
    Backups in the run directory hold digests too (plans.AuditLog)."""

    def send(self, run: Run, change: Change, *, dry_run: bool, now: str) -> Any:
        source = change.precondition.get("data_from")
        if not source:
            return super().send(run, change, dry_run=dry_run, now=now)
        ns, name = str(source).split("/", 1)
        return kube.write_secret_copy(
            run.cluster, "POST" if change.operation == "create" else "PATCH",
            plans_path(change, with_name=change.operation != "create"), self.body(change, dry_run=dry_run, now=now),
            (ns, name), query=[("dryRun", "All")] if dry_run else [],
            content_type="application/json" if change.operation == "create" else "application/merge-patch+json")


register_target(SECRET_TARGET, TlsSecretWrites())


def wait_for_renewal(cluster: kube.Cluster, namespace: str, name: str, old_revision: int, *,
                     timeout: float = 180.0, poll: float = 1.0) -> dict:
    """Wait until cert-manager has issued a revision after ``old_revision``, failed, or the time is up.

    Returns ``certificate``, ``ok``, ``revision``, ``not_after``, ``sha256`` and,
    when it did not work, ``problem`` in cert-manager's words (the Issuing
    condition, the CertificateRequest, the ACME challenge), so that a stuck
    issuance is reported instead of waited on forever.
    """
    started = datetime.now(UTC) - timedelta(seconds=5)  # tolerate a little clock skew with the cluster
    deadline = time.monotonic() + timeout
    ref = f"{namespace}/{name}"
    while True:
        cert = read_certificate(kube.get_object(cluster, "certificates", namespace, name))
        secret = _get_secret_keys(cluster, namespace, cert.secret_name)
        info = read_tls_secret(secret, check_key=False) if secret else None
        if cert.revision > old_revision and info is not None and info.leaf is not None:
            return {"certificate": ref, "ok": True, "revision": cert.revision, "not_after": info.leaf.not_after,
                    "sha256": info.sha256, "problem": ""}
        if cert.issuing.get("status") == "False" and cert.issuing.get("reason") == "Failed" \
                and cert.last_failure is not None and cert.last_failure >= started:
            return {"certificate": ref, "ok": False, "revision": cert.revision,
                    "problem": f"cert-manager failed to issue it: {cert.why_failing()}"}
        if time.monotonic() > deadline:
            break
        time.sleep(poll)
    inv = build_inventory([], [kube.get_object(cluster, "certificates", namespace, name)],
                          _list(cluster, "certificaterequests", [namespace]), (),
                          _list(cluster, "challenges", [namespace], api_path=ACME_API))
    cert = inv.certificates[(namespace, name)]
    return {"certificate": ref, "ok": False, "revision": cert.revision,
            "problem": f"cert-manager issued no new revision within {timeout:.0f} s (still revision "
                       f"{old_revision}): {cert.why_failing() or cert.ready.get('message', '')}"}


def phase_of(change: Change) -> str:
    """renew, backup, replace or restart."""
    if change.kind == "Certificate":
        return "renew"
    if change.kind == "Secret":
        return "backup" if change.operation == "create" else "replace"
    return "restart"


class VerificationFailed(RunbookError):
    """The rotation was applied but did not take (see the verification findings)."""


def _rollout_done(cluster: kube.Cluster, kind: str, ns: str, name: str) -> bool:
    resource = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}[kind]
    obj = kube.get_object(cluster, resource, ns, name)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if status.get("observedGeneration", 0) < (obj["metadata"].get("generation") or 0):
        return False
    if kind == "DaemonSet":
        return status.get("updatedNumberScheduled", 0) >= status.get("desiredNumberScheduled", 0) \
            and status.get("numberAvailable", 0) >= status.get("desiredNumberScheduled", 0)
    want = spec.get("replicas", 1)
    return status.get("updatedReplicas", 0) >= want and status.get("availableReplicas", 0) >= want \
        and status.get("replicas", 0) <= want


def verify_rotation(cluster: kube.Cluster, applied: list[dict], plan: Plan, before: Inventory, *,
                    ingress_endpoint: str = "", timeout: float = 120.0, poll: float = 1.0,
                    probe_timeout: float = 5.0) -> list[Finding]:
    """Prove an applied rotation took: new certificate stored and served, workloads restarted.

    ``applied`` is what ``run.apply(plan)`` returned (empty: nothing was
    applied, nothing to verify). One finding per rotated Secret
    (``rotation-verified/…`` ok, or ``rotation-failed/…`` critical naming what
    did not happen) and one per restarted workload (``restart-done``, or
    ``restart-incomplete`` critical). Waits up to ``timeout`` seconds for the
    rollouts to finish and the ingress to serve the new certificates.
    """
    if not applied:
        return []
    secrets: dict[str, str] = {}  # target Secret -> what happened to it
    for c in plan.changes:
        phase = phase_of(c)
        if phase == "renew":
            cert = before.certificates.get((c.namespace or "", c.name))
            if cert is not None:
                secrets[f"{c.namespace}/{cert.secret_name}"] = "renewed"
        elif phase == "replace":
            secrets[f"{c.namespace}/{c.name}"] = "restored" if plan.kwargs.get("rollback_backup") else "replaced"
    restarts = [(c.kind, c.namespace or "", c.name) for c in plan.changes if phase_of(c) == "restart"]
    if restarts:  # Secrets whose only problem was served ≠ stored: the restart reloads them
        for target in plan.kwargs.get("targets") or []:
            if target not in secrets and before.served_mismatch(*target.split("/", 1)):
                secrets[target] = "reloaded"
    deadline = time.monotonic() + timeout
    now_inv = Inventory(now=datetime.now(UTC))
    not_served: set[str] = set()
    while True:
        pending_rollouts = [r for r in restarts if not _rollout_done(cluster, *r)]
        if secrets:
            now_inv = inventory(cluster, sorted({t.split("/", 1)[0] for t in secrets}))
            hosts = [h for t in secrets for h in now_inv.hosts_of(*t.split("/", 1))]
            now_inv.served = probe_served(hosts, ingress_endpoint, timeout=probe_timeout)
            now_inv.probed = True
            not_served = {t for t in secrets if now_inv.served_mismatch(*t.split("/", 1))
                          or any(now_inv.served.get(h, Served(h, error="not probed")).error
                                 for h in now_inv.hosts_of(*t.split("/", 1)))}
        if (not pending_rollouts and not not_served) or time.monotonic() > deadline:
            break
        time.sleep(poll)
    findings: list[Finding] = []
    for target, how in sorted(secrets.items()):
        ns, name = target.split("/", 1)
        old, new = before.secrets.get((ns, name)), now_inv.secrets.get((ns, name))
        problems = []
        if new is None or new.leaf is None:
            problems.append("the Secret has no readable certificate")
        elif how != "reloaded" and old is not None and old.leaf is not None:
            if new.sha256 == old.sha256:
                problems.append("the Secret still holds the certificate it had before")
            elif how != "restored" and new.leaf.not_after <= old.leaf.not_after:
                problems.append(f"the new certificate does not expire later ({new.leaf.not_after:%Y-%m-%d})")
        if target in not_served:
            mismatch = now_inv.served_mismatch(ns, name)
            errors = [now_inv.served[h].error for h in now_inv.hosts_of(ns, name)
                      if h in now_inv.served and now_inv.served[h].error]
            problems.append(f"{', '.join(sorted(mismatch))} still serve(s) another certificate" if mismatch
                            else f"the served certificate could not be read: {errors[0] if errors else '?'}")
        evidence = {"before_sha256": old.sha256 if old else "", "after_sha256": new.sha256 if new else "",
                    "before_not_after": old.leaf.not_after.isoformat() if old and old.leaf else None,
                    "after_not_after": new.leaf.not_after.isoformat() if new and new.leaf else None,
                    "hosts": now_inv.hosts_of(ns, name)}
        if problems:
            findings.append(Finding(id=f"rotation-failed/{ns}/{name}", severity="critical",
                                       title=f"{target} was {how} but the rotation did not take",
                                       detail="; ".join(problems) + ".", resource=f"Secret/{ns}/{name}",
                                       evidence=evidence))
        else:
            hosts_text = ", ".join(now_inv.hosts_of(ns, name)) or "no Ingress host"
            until = f" until {new.leaf.not_after:%Y-%m-%d}" if new and new.leaf else ""
            findings.append(Finding(id=f"rotation-verified/{ns}/{name}", severity="ok",
                                       title=f"{target} {how}: certificate{until} stored and served on {hosts_text}",
                                       resource=f"Secret/{ns}/{name}", evidence=evidence))
    for kind, ns, name in restarts:
        if (kind, ns, name) in pending_rollouts:
            findings.append(Finding(id=f"restart-incomplete/{ns}/{name}", severity="critical",
                                       title=f"{kind} {ns}/{name}: the restart did not finish within {timeout:.0f} s",
                                       resource=f"{kind}/{ns}/{name}"))
        else:
            findings.append(Finding(id=f"restart-done/{ns}/{name}", severity="ok",
                                       title=f"{kind} {ns}/{name} restarted: all its pods are new and available",
                                       resource=f"{kind}/{ns}/{name}"))
    return findings


def fail_unless_verified(findings: Iterable[Finding]) -> None:
    """Raise :class:`VerificationFailed` if any verification finding is critical."""
    bad = [f for f in findings if f.severity == "critical"]
    if bad:
        raise VerificationFailed("verification failed: " + "; ".join(f"{f.title} ({f.detail})" if f.detail
                                                                    else f.title for f in bad))


def touched_resources(before: Inventory, target: str) -> set[str]:
    """The objects whose state a rotation of Secret ``namespace/name`` changed (for :func:`recheck`)."""
    ns, name = target.split("/", 1)
    out = {f"Secret/{ns}/{name}"}
    out |= {f"Certificate/{ns}/{c.name}" for c in before.certificates.values()
            if c.namespace == ns and c.secret_name == name}
    out |= {f"Ingress/{ns}/{t.ingress}" for t in before.ingresses if (t.namespace, t.secret) == (ns, name)}
    return out


def recheck(cluster: kube.Cluster, plan: Plan, verified: Iterable[Finding], before: Inventory,
            findings: Iterable[Finding], *, ingress_endpoint: str = "", probe_timeout: float = 5.0,
            warning_days: int = 30, critical_days: int = 7,
            internal_domains: Iterable[str] = (".local", ".internal", ".svc", ".cluster.local")) -> list[Finding]:
    """The inventory's findings about each rotation that verified, evaluated again now.

    ``findings`` are those the inventory reported before the change. For every
    Secret with a ``rotation-verified`` finding, the Secret, its Certificate and
    its Ingresses are inventoried and probed again (after a verified restart of the
    ingress controller, also every Secret it served stale): a problem that is gone comes
    back as ``ok`` "resolved by plan ID", one that persists as it is now
    (:func:`runbooks.resolution.reevaluate`). Rotations that failed verification
    are not re-checked (their findings stand, and the run fails anyway).
    """
    verified, findings = list(verified), list(findings)
    done = {f.id.split("/", 1)[1] for f in verified if f.id.startswith("rotation-verified/")}
    controller = str(plan.kwargs.get("ingress_controller") or "")
    if controller and f"restart-done/{controller}" in {f.id for f in verified}:
        # the ingress controller reloaded every certificate: what it served before is stale for all hosts
        done |= {f.id.split("/", 1)[1] for f in findings if f.id.startswith("tls-served-mismatch/")}
    done = sorted(done)
    if not done:
        return []
    touched: set[str] = set()
    for target in done:
        touched |= touched_resources(before, target)
    now_inv = inventory(cluster, sorted({t.split("/", 1)[0] for t in done}))
    hosts = [h for t in done for h in now_inv.hosts_of(*t.split("/", 1))]
    now_inv.served = probe_served(hosts, ingress_endpoint, timeout=probe_timeout)
    now_inv.probed = bool(hosts)
    after = now_inv.findings(warning_days=warning_days, critical_days=critical_days,
                             internal_domains=internal_domains)
    return resolution.reevaluate(findings, after, touched, plan.id)
