"""Helm deploys for runbooks: vault secrets and values → helm → a plan against the live objects → apply, watch, verify, roll back.

Why this package exists: the seed's team deploys every service with a Helm
chart and keeps its secrets in Ansible Vault. The provision-service runbook
does the same, safely: it shows exactly what will change, applies only an
approved plan, watches the rollout, proves the service answers, and rolls
back when it does not.

Design choices:

- **The real ``helm`` binary does every write** (:mod:`runbooks.helm`), so
  releases, ``helm history`` and ``helm rollback`` are exactly Helm's. This
  package decides what to ask Helm for and checks the result.
- **The plan is a server-side diff** (:mod:`.diff`), like ``kubectl diff
  --server-side``: the manifest Helm would apply (``helm upgrade --install
  --dry-run=server``) is server-side applied object by object with
  ``dryRun=All`` as field manager ``helm``, and each answer is compared field
  by field with the live object. An identical re-run therefore plans nothing.
  The same diff against the manifest of the last good revision is the
  rollback plan (:mod:`.plan`).
- **Secrets** come from an Ansible Vault file decrypted in memory
  (:mod:`runbooks.vault`). They reach Helm on stdin (``--values -``), never a
  file; a Secret's diff says only that its data changed; everything Helm
  prints is redacted of the secret values before it is shown or raised.
- **Plans reuse** :mod:`runbooks.plans` and the run's audit log, with the
  approval rules of ``runbook.Run.apply``. Applying a Helm release is not a
  list of API writes, so :func:`apply_release` and :func:`apply_rollback`
  take its place (:mod:`.apply`).
- Like every job it returns plain data (dataclasses, dicts, DataFrames) and
  never draws; the notebook passes drawing callbacks where a progress display
  or a button is wanted.

Modules, in the order a run uses them: :mod:`.params` (the parameter model),
:mod:`.release` (what to deploy, rendering), :mod:`.checks` (preflight),
:mod:`.diff` and :mod:`.plan` (plans), :mod:`.apply` (apply, outcome),
:mod:`.rollout` (status, diagnosis, history), :mod:`.verification`.
"""

from ..helm import CLUSTER_SCOPED, Helm, HelmFailed, find_helm, parse_manifest
from ..vault import NO_SECRETS, VaultValues, encrypt_vault, read_vault
from .apply import (
    NOT_APPLIED,
    ApplyResult,
    apply_release,
    apply_rollback,
    outcome_findings,
    rollback_after,
)
from .checks import check_chart, preflight
from .diff import (
    FIELD_MANAGER,
    HOOK_EVENTS,
    ROLLBACK_HOOK_EVENTS,
    as_helm_applies,
    diff_objects,
    dry_run_apply,
    get_live,
    hook_and_crd_changes,
    object_changes,
)
from .params import ProvisionParams, parse_image
from .plan import (
    PlanDetail,
    helm_identity,
    last_good_revision,
    namespace_exists,
    plan_detail,
    plan_release,
    plan_rollback,
    plan_table,
    release_changes,
    rollback_changes,
)
from .release import ReleaseSpec, helm_for, objects_table, render, resolve_path
from .rollout import diagnose, release_history, rollout_status
from .verification import Probe, http_probe, ingress_address, recheck, verify

__all__ = [
    "CLUSTER_SCOPED",
    "FIELD_MANAGER",
    "HOOK_EVENTS",
    "NOT_APPLIED",
    "NO_SECRETS",
    "ROLLBACK_HOOK_EVENTS",
    "ApplyResult",
    "Helm",
    "HelmFailed",
    "PlanDetail",
    "Probe",
    "ProvisionParams",
    "ReleaseSpec",
    "VaultValues",
    "apply_release",
    "apply_rollback",
    "as_helm_applies",
    "check_chart",
    "diagnose",
    "diff_objects",
    "dry_run_apply",
    "encrypt_vault",
    "find_helm",
    "get_live",
    "helm_for",
    "helm_identity",
    "hook_and_crd_changes",
    "http_probe",
    "ingress_address",
    "last_good_revision",
    "namespace_exists",
    "object_changes",
    "objects_table",
    "outcome_findings",
    "parse_image",
    "parse_manifest",
    "plan_detail",
    "plan_release",
    "plan_rollback",
    "plan_table",
    "preflight",
    "read_vault",
    "recheck",
    "release_changes",
    "release_history",
    "render",
    "resolve_path",
    "rollback_after",
    "rollback_changes",
    "rollout_status",
    "verify",
]
