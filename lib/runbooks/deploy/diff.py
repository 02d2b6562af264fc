"""The server-side diff: each object Helm would apply, dry-run applied as Helm and compared with the live one.

Like ``kubectl diff --server-side``: an object is dry-run applied (``dryRun=All``, field manager
``helm``) and the answer compared field by field with the live object, giving *create*, *patch*
(with the changed fields) or nothing; objects of the current release that the new manifest drops
are *delete*. The hooks Helm will run and, on install, the chart's ``crds/`` are changes too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .. import kube
from ..errors import Conflict, InvalidInput, NotFound, PlanInvalid
from ..plans import Change, diff
from ..secrets import REDACTED
from .release import ReleaseSpec

FIELD_MANAGER = "helm"  # Helm 4's server-side apply field manager: the dry runs apply as Helm will
IGNORED_META = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid",
                "selfLink")


def _ref(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")


def get_live(cluster: Any, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The live object for a manifest object, or None."""
    api_version, kind, ns, name = _ref(obj)
    res = kube.kind_for(cluster, api_version, kind)
    try:
        return kube.request(cluster, "GET", res.path(ns, name))
    except NotFound:
        return None


def dry_run_apply(cluster: Any, obj: Mapping[str, Any], *, force: bool = False) -> dict[str, Any]:
    """Server-side apply ``obj`` with ``dryRun=All`` as Helm would (field manager ``helm``).

    Raises:
        PlanInvalid: the server refused it (invalid object, field conflict ...).
    """
    api_version, kind, ns, name = _ref(obj)
    res = kube.kind_for(cluster, api_version, kind)
    query = [("dryRun", "All"), ("fieldManager", FIELD_MANAGER), ("fieldValidation", "Strict"),
             ("force", "true" if force else "false")]
    try:
        return kube.request(cluster, "PATCH", res.path(ns, name), query=query, body=dict(obj),
                              content_type="application/apply-patch+yaml")
    except (InvalidInput, Conflict, NotFound) as exc:
        raise PlanInvalid(f"the server-side dry run of {kind} {ns + '/' if ns else ''}{name} failed: "
                             f"{exc}") from exc


def _strip(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    if obj is None:
        return {}
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in IGNORED_META}
    out["metadata"] = meta
    return out


def diff_objects(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Changed leaves from ``live`` to ``desired``: ``[{"path", "from", "to"}]``.

    Server-set metadata (``managedFields``, ``resourceVersion``, ``generation``,
    ``uid``, ``creationTimestamp``) and ``status`` are ignored; lists of
    objects with a ``name`` are matched by name (``containers[web].image``).
    """
    return diff(_strip(live), _strip(desired))


def content_digest(obj: Any) -> str:
    """SHA-256 of ``obj`` as canonical JSON: what a change sends, hashed into the plan id."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()



def as_helm_applies(obj: Mapping[str, Any], release: str, namespace: str) -> dict[str, Any]:
    """``obj`` with the ownership metadata Helm adds when it applies (its ``setMetadataVisitor``).

    Without them a dry run as field manager ``helm`` would remove what Helm's last apply set.
    """
    out = json.loads(json.dumps(obj))
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), "app.kubernetes.io/managed-by": "Helm"}
    meta["annotations"] = {**(meta.get("annotations") or {}), "meta.helm.sh/release-name": release,
                           "meta.helm.sh/release-namespace": namespace}
    return out


def object_changes(cluster: Any, desired: list[dict[str, Any]], current: list[dict[str, Any]],
                   precondition: dict[str, Any], *, namespace_exists: bool = True,
                   ) -> tuple[list[Change], list[dict[str, Any]]]:
    """Changes that turn the live objects into ``desired`` (and drop what only ``current`` has).

    ``desired`` objects are what Helm sends (see :func:`as_helm_applies`).
    Returns the changes and one status row per object (for :func:`plan_table`).
    """
    changes: list[Change] = []
    rows: list[dict[str, Any]] = []
    wanted = {_ref(o) for o in desired}
    for obj in desired:
        api_version, kind, ns, name = _ref(obj)
        kube.kind_for(cluster, api_version, kind)
        live = get_live(cluster, obj) if namespace_exists else None
        body = {"sha256": content_digest(obj)}  # what is applied, hashed: the plan id follows every value
        if live is None:
            if namespace_exists:
                dry_run_apply(cluster, obj)  # validates it; answers what would be created
            changes.append(Change(operation="create", kind=kind, namespace=ns or None, name=name,
                                     body=body, precondition=precondition))
            rows.append({"kind": kind, "namespace": ns, "name": name, "action": "create", "changes": ""})
            continue
        result = dry_run_apply(cluster, obj)
        diff = diff_objects(live, result)
        if kind == "Secret" and diff:
            diff = [{"path": "data", "from": REDACTED, "to": REDACTED}]  # changed-or-not only
        if not diff:
            rows.append({"kind": kind, "namespace": ns, "name": name, "action": "unchanged", "changes": ""})
            continue
        changes.append(Change(operation="patch", kind=kind, namespace=ns or None, name=name,
                                 diff=diff, body=body, precondition=precondition))
        rows.append({"kind": kind, "namespace": ns, "name": name, "action": "change",
                     "changes": "; ".join(d["path"] for d in diff)})
    for obj in current:
        if _ref(obj) in wanted:
            continue
        api_version, kind, ns, name = _ref(obj)
        try:
            kube.kind_for(cluster, api_version, kind)
        except InvalidInput:
            continue
        if get_live(cluster, obj) is None:
            continue
        changes.append(Change(operation="delete", kind=kind, namespace=ns or None, name=name,
                                 precondition=precondition))
        rows.append({"kind": kind, "namespace": ns, "name": name, "action": "delete", "changes": ""})
    return changes, rows


HOOK_EVENTS = {True: ("pre-install", "post-install"), False: ("pre-upgrade", "post-upgrade")}
"""The hook events ``helm upgrade --install`` runs: installing, or upgrading (``test`` hooks run only
under ``helm test``, which runbooks never call)."""
ROLLBACK_HOOK_EVENTS = ("pre-rollback", "post-rollback")
"""The hook events ``helm rollback`` runs: the hooks of the revision it rolls back to."""


def hook_and_crd_changes(cluster: Any, release: Mapping[str, Any], spec: ReleaseSpec, *, installing: bool,
                         precondition: dict[str, Any], events: Sequence[str] | None = None,
                         ) -> tuple[dict[str, list[Change]], dict[str, list[dict]]]:
    """What Helm sends besides the manifest: the hooks it will run and, on install, the chart's ``crds/``.

    Each becomes a change of the plan (shown, audited, and hashed into the plan id by the digest of
    what is sent), so a changed hook or CRD gives another plan id. ``events`` are the hook events
    the action runs (default: :data:`HOOK_EVENTS` of installing or upgrading; a rollback passes
    :data:`ROLLBACK_HOOK_EVENTS` and the target revision's release).
    """
    changes: dict[str, list[Change]] = {"hooks": [], "crds": []}
    rows: dict[str, list[dict]] = {"hooks": [], "crds": []}
    wanted = tuple(events) if events is not None else HOOK_EVENTS[installing]
    for hook in sorted(release.get("hooks") or [], key=lambda h: (h.get("weight") or 0, h.get("name") or "")):
        events = [e for e in hook.get("events") or [] if e in wanted]
        if not events:
            continue
        obj = yaml.safe_load(hook.get("manifest") or "") or {}
        if not isinstance(obj, dict):
            continue
        kind, name = obj.get("kind") or hook.get("kind") or "", (obj.get("metadata") or {}).get("name") or ""
        ns = (obj.get("metadata") or {}).get("namespace") or spec.namespace
        found = kube.kind_for(cluster, obj.get("apiVersion") or "v1", kind)
        digest = content_digest(obj)
        shown = f"sha256 {digest[:16]}" if kind != "Secret" else REDACTED
        changes["hooks"].append(Change(
            operation="create", kind=kind, namespace=ns if found.namespaced else None, name=name,
            diff=[{"path": f"helm hook {','.join(events)} (weight {hook.get('weight') or 0}, "
                           f"from {hook.get('path', '')})", "from": None, "to": shown}],
            body={"sha256": digest}, precondition={**precondition, "hook": events}))
        rows["hooks"].append({"kind": kind, "namespace": ns, "name": name, "action": f"hook {','.join(events)}",
                              "changes": f"{hook.get('path', '')}: {shown}"})
    if not installing:  # Helm installs crds/ only with the release, and never upgrades them
        return changes, rows
    for f in (release.get("chart") or {}).get("files") or []:
        if not str(f.get("name", "")).startswith("crds/"):
            continue
        try:
            text = base64.b64decode(f.get("data") or "").decode("utf-8")
        except ValueError:
            continue
        for obj in yaml.safe_load_all(text):
            if not isinstance(obj, dict) or obj.get("kind") != "CustomResourceDefinition":
                continue
            name = (obj.get("metadata") or {}).get("name") or ""
            kube.kind_for(cluster, obj.get("apiVersion") or "apiextensions.k8s.io/v1", "CustomResourceDefinition")
            exists = get_live(cluster, obj) is not None
            if exists:  # Helm skips a CRD that exists already
                rows["crds"].append({"kind": "CustomResourceDefinition", "namespace": "", "name": name,
                                     "action": "unchanged", "changes": f"{f['name']}: exists (Helm keeps it)"})
                continue
            digest = content_digest(obj)
            changes["crds"].append(Change(
                operation="create", kind="CustomResourceDefinition", name=name,
                diff=[{"path": f"CRD from {f['name']}", "from": None, "to": f"sha256 {digest[:16]}"}],
                body={"sha256": digest}, precondition=precondition))
            rows["crds"].append({"kind": "CustomResourceDefinition", "namespace": "", "name": name,
                                 "action": "create", "changes": f"{f['name']}"})
    return changes, rows
