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
  target, :mod:`runbooks.rotationtargets`); hand-managed Secrets are replaced from
  validated files after an in-cluster backup (a copy with a timestamp suffix
  and a label, restorable with ``rollback_backup``); then the workloads that
  mount the Secret and the ingress controller are restarted, and verification
  checks the new certificate is stored and served.
* **Re-check** (:func:`recheck`): after a verified rotation the inventory's
  findings about the rotated certificates are evaluated again, so a renewed
  certificate is reported as resolved by the plan instead of still expiring.

New key material travels only in change bodies (hashed into the plan id, sent
to the API server, never displayed, recorded or audited).

This module decides and plans; :mod:`runbooks.rotationtargets` reads the
inventory and sends the changes (targets, backups), :mod:`runbooks.rotationverify`
verifies and re-checks. The names the notebook calls are all reachable from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import kube
from .certinventory import CmCertificate, Inventory
from .certs import (
    BACKUP_OF,
    CertInfo,
    check_chain,
    describe,
    host_covered,
    load_private_key,
    probe_served,
    same_key,
    split_endpoint,
)
from .errors import InvalidInput, PlanInvalid
from .parameters import MutatingParams
from .params import check_namespaces
from .plans import Change, rollout_restart
from .rotationtargets import (
    BACKUP_SHA,
    backup_change,
    backup_name,
    backups_table,
    get_secret,
    get_secret_keys,
    has_backup,
    inventory,
    oldest_pod,
    renew_change,
    replace_change,
    workloads_using,
)
from .rotationverify import (
    VerificationFailed,
    fail_unless_verified,
    recheck,
    touched_resources,
    verify_rotation,
)

__all__ = [
    "CertificateRotationParams",
    "Decision",
    "ReplacementFiles",
    "VerificationFailed",
    "backups_table",
    "decide",
    "fail_unless_verified",
    "inventory",
    "plan_arguments",
    "recheck",
    "rotation_changes",
    "rotation_preview",
    "select_targets",
    "touched_resources",
    "validate_replacement",
    "verify_rotation",
]

_DOMAIN_SUFFIX = re.compile(r"\.?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_OBJECT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?\Z")


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
        backup = get_secret(cluster, ns, name)
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

    def fingerprints(self) -> dict[str, Any]:
        """The certificate before and after, as :func:`runbooks.rotationtargets.replace_change` takes them."""
        return {"current_sha256": self.current_sha256, "new_sha256": self.new_sha256,
                "new_not_after": self.new_not_after}

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
    decisions = []
    for target in targets:
        ns, name = target.split("/", 1)
        s = inv.secrets.get((ns, name))
        cert = inv.certificate_for(ns, name)
        d = Decision(target, "cert-manager" if cert else "hand", "none", "", current_sha256=s.sha256 if s else "")
        if rollback_backup:
            _decide_restore(cluster, d, cert, rollback_backup)
        elif cert is not None:
            _decide_renewal(d, s, cert, inv.now, force_renewal, expiring_within_days)
        elif target in files:
            _decide_replacement(d, s, files[target], inv.hosts_of(ns, name), inv.now)
        elif target in explicit:
            raise InvalidInput(f"{target} is managed by hand: give its new certificate and key in "
                               f"replacement_files[{target!r}] = {{'cert': PATH, 'key': PATH}}")
        else:
            d.reason = "managed by hand and no replacement_files entry: skipped"
        if d.action in ("replace", "restore"):
            secret = get_secret(cluster, ns, name)
            if secret is not None and not has_backup(cluster, ns, name, d.current_sha256):
                d.backup = backup_name(secret)
        _decide_restarts(cluster, inv, d, ingress_controller)
        decisions.append(d)
    return decisions


def _decide_restore(cluster: kube.Cluster, d: Decision, cert: CmCertificate | None, rollback_backup: str) -> None:
    """Restore the target from the backup ``rollback_backup`` unless it holds that certificate already."""
    name = d.target.split("/", 1)[1]
    bns, bname = rollback_backup.split("/", 1)
    backup = get_secret(cluster, bns, bname)
    assert backup is not None  # checked by select_targets
    d.new_sha256 = (backup["metadata"].get("annotations") or {}).get(BACKUP_SHA, "")
    if d.new_sha256 and d.new_sha256 == d.current_sha256:
        d.reason = f"{name} already holds the certificate of {bname}"
        return
    d.action, d.reason = "restore", f"restore {name} from backup {bname}"
    if cert:
        d.reason += " (cert-manager will overwrite it at its next issuance)"


def _decide_renewal(d: Decision, s: Any, cert: CmCertificate, now: datetime, force_renewal: bool,
                    expiring_within_days: int | None) -> None:
    """Renew a cert-manager Certificate when it is due (or forced), unless it is issuing already."""
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
        d.action, d.reason = "renew", "; ".join(due)
    else:
        d.reason = f"not due (renews at {cert.renewal_time:%Y-%m-%d})" if cert.renewal_time else "not due"


def _decide_replacement(d: Decision, s: Any, f: ReplacementFiles, hosts: list[str], now: datetime) -> None:
    """Replace a hand-managed Secret from validated files, unless it holds the new certificate already."""
    cert_pem = read_file(f.cert, "certificate")
    if s is not None and s.leaf is not None and _pem_sha(cert_pem) == s.sha256:
        d.new_sha256, d.new_not_after = s.sha256, s.leaf.not_after
        d.reason = "the Secret already holds the new certificate"
        return
    leaf, _ = validate_replacement(
        cert_pem, read_file(f.key, "key"), read_file(f.ca, "CA") if f.ca else None, hosts=hosts,
        current_not_after=None if s is None or s.leaf is None else s.leaf.not_after, now=now,
        target=d.target)
    d.new_sha256, d.new_not_after = leaf.sha256, leaf.not_after
    d.action, d.reason = "replace", f"new certificate until {leaf.not_after:%Y-%m-%d}"


def _decide_restarts(cluster: kube.Cluster, inv: Inventory, d: Decision, ingress_controller: str) -> None:
    """What to restart: the workloads reading the Secret, and the ingress controller serving it.

    A Secret whose data does not change still needs them when they run on older data (pods older
    than its last write) or serve an old certificate; the latter makes the decision a ``reload``.
    """
    ns, name = d.target.split("/", 1)
    s = inv.secrets.get((ns, name))
    hosts = inv.hosts_of(ns, name)
    changes_data = d.action in ("renew", "replace", "restore")
    for kind, wname, obj in workloads_using(cluster, ns, name):
        oldest = oldest_pod(cluster, ns, obj)
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


def _pem_sha(pem: bytes) -> str:
    try:
        return x509.load_pem_x509_certificates(pem)[0].fingerprint(hashes.SHA256()).hex()
    except (ValueError, IndexError):
        return ""



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
            renew.append(renew_change(cluster, cert))
        if d.action in ("replace", "restore"):
            secret = get_secret_keys(cluster, ns, name)
            assert secret is not None
            if d.backup:
                backup.append(backup_change(secret, d.backup))
            if d.action == "replace":
                f = files[d.target]
                f = f if isinstance(f, ReplacementFiles) else ReplacementFiles.model_validate(f)
                data = {"tls.crt": read_file(f.cert, "certificate"), "tls.key": read_file(f.key, "key")}
                if f.ca:
                    data["ca.crt"] = read_file(f.ca, "CA")
                replace.append(replace_change(secret.object, data, **d.fingerprints()))
            else:  # the backup's values, named by their digests: the target copies them (kube.write_secret_copy)
                source = get_secret(cluster, *decide_kw["rollback_backup"].split("/", 1)) or {}
                replace.append(replace_change(secret.object, source.get("data") or {}, **d.fingerprints(),
                                               data_from=decide_kw["rollback_backup"]))
        for ref in d.restarts:
            if ref not in restarts_seen:
                restarts_seen.append(ref)
    for ref in restarts_seen:
        kind, ns, name = ref.split("/", 2)
        restart.extend(rollout_restart(cluster, ns, name, kind))
    return renew + backup + replace + restart
