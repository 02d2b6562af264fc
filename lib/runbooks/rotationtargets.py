"""How certificate rotation's changes reach the cluster, and what they leave behind.

:mod:`runbooks.rotation` decides what to do; this module knows the cluster:

* the **inventory** (:func:`inventory`): TLS Secrets (as
  :class:`runbooks.kube.SecretKeys`), cert-manager Certificates,
  CertificateRequests, ACME Challenges and Ingresses, listed page by page into
  :func:`runbooks.certinventory.build_inventory`;
* the **runbook targets** its changes go through: ``cert-manager-renewal``
  (renew a Certificate the way ``cmctl renew`` does, then wait for cert-manager
  to issue it or say why not) and ``tls-secret`` (TLS Secret writes that copy
  values named by their digests, so no key passes through a plan);
* the **changes** they send: renew, backup, replace or restore;
* the **backup Secrets** a replacement leaves (a copy with a timestamp suffix
  and a label, listed here and restorable with ``rollback_backup``);
* the **workloads** that read a Secret, restarted after it changes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import kube
from .certinventory import CmCertificate, Inventory, build_inventory, read_certificate
from .certs import (
    BACKUP_OF,
    ROTATED_AT,
    TLS_TYPE,
    data_changed_at,
    describe,
    load_chain,
    parse_time,
    read_tls_secret,
)
from .errors import InvalidInput, NotFound, Unavailable
from .plans import APPLY_TIME, Change, KubernetesTarget, materialize, register_target
from .plans import path as plans_path

if TYPE_CHECKING:  # the notebook side hands its Run to the target; this module never imports it
    from .runbook import Run

BACKUP_SHA = "kube-runbooks.io/backup-sha256"
"""Annotation on a backup Secret: SHA-256 fingerprint of the leaf certificate it holds."""
BACKUP_TIME = "kube-runbooks.io/backed-up-at"
BACKUP_TYPE = "kube-runbooks.io/backup-of-type"
CM_API = "/apis/cert-manager.io/v1"
ACME_API = "/apis/acme.cert-manager.io/v1"


def list_objects(cluster: kube.Cluster, resource: str, namespaces: list[str] | None, **kw: Any) -> Iterable[dict]:
    """Objects of a resource in the namespaces (all when empty); nothing if its API is not installed."""
    for ns in namespaces or [None]:
        try:
            yield from kube.iter_objects(cluster, resource, ns, **kw)
        except NotFound:
            return


def secret_keys_in(cluster: kube.Cluster, namespaces: list[str] | None, keys: Any = ("tls.crt", "ca.crt", "tls.key"),
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
        secret_keys_in(cluster, namespaces, field_selector=f"type={TLS_TYPE}", page_size=page_size),
        list_objects(cluster, "certificates", namespaces),
        list_objects(cluster, "certificaterequests", namespaces),
        list_objects(cluster, "ingresses", namespaces),
        list_objects(cluster, "challenges", namespaces, api_path=ACME_API),
        now=now,
    )


def get_secret(cluster: kube.Cluster, ns: str, name: str) -> dict | None:
    """A Secret as reads return it: metadata, and its values replaced by digests."""
    try:
        return kube.get_object(cluster, "secrets", ns, name)
    except NotFound:
        return None


def get_secret_keys(cluster: kube.Cluster, ns: str, name: str,
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
    for keys in secret_keys_in(cluster, namespaces, kube.CERTIFICATE_KEYS, label_selector=selector):
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
    """:func:`backups` as a table, fingerprints shortened."""
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


def oldest_pod(cluster: kube.Cluster, namespace: str, workload: dict) -> datetime | None:
    """When the oldest running pod of ``workload`` was created (None: no pods, or no selector)."""
    labels = (((workload.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    if not labels:
        return None
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    times = [t for p in kube.iter_objects(cluster, "pods", namespace, label_selector=selector)
             if not p["metadata"].get("deletionTimestamp") and (t := parse_time(p["metadata"].get("creationTimestamp")))]
    return min(times) if times else None


def has_backup(cluster: kube.Cluster, ns: str, name: str, sha: str) -> bool:
    """Whether a backup of Secret ``ns/name`` holding the certificate with fingerprint ``sha`` exists."""
    return any(b["sha256"] == sha for b in backups(cluster, [ns], of=name)) if sha else False



RENEW_REASON = "ManuallyTriggered"
RENEW_MESSAGE = "Certificate re-issuance manually triggered"


def renew_change(cluster: kube.Cluster, cert: CmCertificate) -> Change:
    """Renew ``cert`` as ``cmctl renew`` does: its ``Issuing`` condition set to True (status subresource)."""
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


def backup_change(secret: dict | kube.SecretKeys, name: str) -> Change:
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


def replace_change(secret: dict, data: Mapping[str, Any], *, current_sha256: str, new_sha256: str,
                   new_not_after: datetime | None, data_from: str | None = None) -> Change:
    """Replace the Secret's certificate and key: ``data`` are new values (bytes, from files), or with
    ``data_from`` the digests of that Secret's values (a restore; the target copies them)."""
    meta = secret["metadata"]
    until = f" (not after {new_not_after:%Y-%m-%d})" if new_not_after else ""
    what = "restored from backup" if data_from else "replaced from files"
    diff = [{"path": f"data[tls.crt]: certificate sha256 {current_sha256[:16] or 'none'} → "
                     f"{new_sha256[:16] or '?'}{until}, {what}"},
            {"path": "data[tls.key]: replaced by the key of the new certificate"}]
    if "ca.crt" in data:
        diff.append({"path": "data[ca.crt]: replaced"})
    return Change(
        target=SECRET_TARGET, operation="patch", kind="Secret", namespace=meta["namespace"], name=meta["name"],
        diff=diff,
        body={"metadata": {"annotations": {ROTATED_AT: APPLY_TIME}},
              "data": {k: (v if data_from else base64.b64encode(v).decode()) for k, v in sorted(data.items())
                       if k in ("tls.crt", "tls.key", "ca.crt")}},
        precondition={"sha256": current_sha256, **({"data_from": data_from} if data_from else {})},
        resource_version=meta.get("resourceVersion"),
    )


# --------------------------------------------------------------------------
# How the changes are sent (runbook targets), waiting for cert-manager
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
        secret = get_secret_keys(cluster, namespace, cert.secret_name)
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
                          list_objects(cluster, "certificaterequests", [namespace]), (),
                          list_objects(cluster, "challenges", [namespace], api_path=ACME_API))
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
