"""Cluster health checks: turn listed objects into tables and findings.

Each check takes plain objects (as :func:`runbooks.kube.iter_objects` yields
them) and returns a DataFrame for the report and the findings it implies, so
the cluster-health notebook only chooses what to run and the rules here are
unit-tested on data. Severity follows what the problem does to users:
traffic failing now is critical, degraded redundancy or a stalled rollout is
a warning, symptoms such as Warning events are info.

The checks live by area, each module on :mod:`.core` (the `Check` result and the guard
for lists a cluster may not serve) and nothing else: :mod:`.pods` (the streamed pod
scan), :mod:`.workloads`, :mod:`.services`, :mod:`.events`, :mod:`.batch`,
:mod:`.volumes`, :mod:`.capacity`, :mod:`.controlplane`. The notebook and callers use
this package's names (``health.scan_pods``, ``health.webhooks``).
"""

from .batch import BATCH_COLUMNS, batch, check_batch, cron_next
from .capacity import (
    CAPACITY_COLUMNS,
    NODE_COLUMNS,
    QUOTA_COLUMNS,
    check_node_capacity,
    check_nodes,
    check_quotas,
    nodes,
    quotas,
)
from .controlplane import (
    APISERVICE_COLUMNS,
    READYZ_COLUMNS,
    WEBHOOK_COLUMNS,
    apiservices,
    check_apiservices,
    check_readyz,
    check_webhooks,
    readyz,
    webhooks,
)
from .core import Check
from .events import check_events, warning_events
from .pods import (
    CRASH_REASONS,
    POD_COLUMNS,
    PodScan,
    check_pods,
    image_tag_problem,
    pod_requests,
    restarts_by_workload,
    scan_pods,
)
from .services import check_ingresses, check_services, check_tls_secrets
from .volumes import (
    PVC_COLUMNS,
    VOLUME_COLUMNS,
    VOLUME_QUERIES,
    check_pvcs,
    check_volumes,
    pvcs,
    volumes,
)
from .workloads import (
    DAEMONSET_COLUMNS,
    HPA_COLUMNS,
    PDB_COLUMNS,
    STATEFULSET_COLUMNS,
    check_daemonsets,
    check_deployments,
    check_hpas,
    check_pdbs,
    check_statefulsets,
    daemonsets,
    hpas,
    pdbs,
    statefulsets,
)

__all__ = [
    "APISERVICE_COLUMNS", "BATCH_COLUMNS", "CAPACITY_COLUMNS", "CRASH_REASONS", "DAEMONSET_COLUMNS",
    "HPA_COLUMNS", "NODE_COLUMNS", "PDB_COLUMNS", "POD_COLUMNS", "PVC_COLUMNS", "QUOTA_COLUMNS", "READYZ_COLUMNS",
    "STATEFULSET_COLUMNS", "VOLUME_COLUMNS", "VOLUME_QUERIES", "WEBHOOK_COLUMNS",
    "Check", "PodScan",
    "apiservices", "batch", "check_apiservices", "check_batch", "check_daemonsets", "check_deployments",
    "check_events", "check_hpas", "check_ingresses", "check_node_capacity", "check_nodes", "check_pdbs",
    "check_pods", "check_pvcs", "check_quotas", "check_readyz", "check_services", "check_statefulsets",
    "check_tls_secrets", "check_volumes", "check_webhooks", "cron_next", "daemonsets", "hpas",
    "image_tag_problem", "nodes", "pod_requests", "pdbs", "pvcs", "quotas", "readyz", "restarts_by_workload",
    "scan_pods", "statefulsets", "volumes", "warning_events", "webhooks",
]
