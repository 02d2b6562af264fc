"""The controllers beyond workloads: Jobs, CronJobs, PDBs and evictions, HPAs, PVCs, quotas, leases, metrics."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from runbooks_sandbox.clusterctl import Cron, format_quantity

from helpers import wait_for


def _job(name: str, *, exit_code: int = 0, runtime: str = "1s", **spec) -> dict:
    return {"metadata": {"name": name}, "spec": {**spec, "template": {
        "metadata": {"annotations": {"sandbox.kube-runbooks.io/exit-code": str(exit_code),
                                     "sandbox.kube-runbooks.io/runtime": runtime}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}]}}}}


def _cond(obj, type_: str):
    conditions = (obj.status.conditions if obj.status else None) or []  # no status until the controller writes one
    return next((c for c in conditions if c.type == type_ and c.status == "True"), None)


@pytest.fixture
def batch(cluster):
    return client.BatchV1Api(cluster.api_client)


def test_job_runs_pods_to_completion(batch, cluster, namespace):
    batch.create_namespaced_job(namespace, _job("ok", completions=2, parallelism=1))
    job = wait_for(lambda: _cond(j := batch.read_namespaced_job("ok", namespace), "Complete") and j,
                   timeout=30, what="the Job to complete")
    assert job.status.succeeded == 2 and not job.status.active
    assert _cond(job, "SuccessCriteriaMet").reason == "CompletionsReached"
    assert job.status.completion_time >= job.status.start_time
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": job.metadata.uid}
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="batch.kubernetes.io/job-name=ok").items
    assert sorted(p.status.phase for p in pods) == ["Succeeded", "Succeeded"]
    assert pods[0].status.container_statuses[0].state.terminated.reason == "Completed"


def test_job_fails_after_its_backoff_limit(batch, cluster, namespace):
    batch.create_namespaced_job(namespace, _job("bad", exit_code=1, backoffLimit=1))
    job = wait_for(lambda: _cond(j := batch.read_namespaced_job("bad", namespace), "Failed") and j,
                   timeout=30, what="the Job to fail")
    failed = _cond(job, "Failed")
    assert (failed.reason, failed.message) == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert job.status.failed == 2
    assert _cond(job, "FailureTarget")


def test_job_past_its_deadline_fails(batch, namespace):
    batch.create_namespaced_job(namespace, _job("slow", runtime="1h", activeDeadlineSeconds=1))
    job = wait_for(lambda: _cond(j := batch.read_namespaced_job("slow", namespace), "Failed") and j,
                   timeout=30, what="the deadline to pass")
    assert _cond(job, "Failed").reason == "DeadlineExceeded"
    assert _cond(job, "Failed").message == "Job was active longer than specified deadline"
    assert not job.status.active


def test_cron_schedules():
    cron = Cron("0 2 * * *")
    now = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
    assert cron.latest(now, now - timedelta(days=2)) == datetime(2026, 3, 4, 2, 0, tzinfo=UTC)
    assert cron.latest(now, datetime(2026, 3, 4, 2, 0, tzinfo=UTC)) is None
    assert Cron("*/15 9-17 * * mon-fri").next_after(now) == datetime(2026, 3, 4, 10, 45, tzinfo=UTC)
    assert Cron("@hourly").next_after(now) == datetime(2026, 3, 4, 11, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        Cron("61 * * * *")


def test_cronjob_creates_jobs_and_keeps_history(sandbox, batch, namespace):
    rt = sandbox.registry.by_kind("batch/v1", "CronJob")
    created = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": namespace, "creationTimestamp": created},
            "spec": {"schedule": "* * * * *", "successfulJobsHistoryLimit": 1, "jobTemplate": _job("x")}}
    from runbooks_sandbox.admission import apply_defaults

    sandbox.store.create(rt, apply_defaults(rt, body))  # created five minutes ago: a run is due now
    cj = wait_for(lambda: (c := batch.read_namespaced_cron_job("tick", namespace)).status
                  and c.status.last_schedule_time and c,
                  timeout=30, what="the first schedule")
    jobs = batch.list_namespaced_job(namespace).items
    assert len(jobs) == 1
    job = jobs[0]
    scheduled = cj.status.last_schedule_time
    assert job.metadata.name == f"tick-{int(scheduled.timestamp()) // 60}"
    assert job.metadata.owner_references[0].kind == "CronJob"
    assert job.metadata.annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
        scheduled.strftime("%Y-%m-%dT%H:%M:%SZ")
    wait_for(lambda: batch.read_namespaced_cron_job("tick", namespace).status.last_successful_time
             and not batch.read_namespaced_cron_job("tick", namespace).status.active,
             timeout=30, what="the Job to succeed and be recorded")
    assert not batch.read_namespaced_cron_job("tick", namespace).status.active


def test_eviction_honours_the_pdb(cluster, namespace):
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                                                   "containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
    policy = client.PolicyV1Api(cluster.api_client)
    policy.create_namespaced_pod_disruption_budget(namespace, {
        "metadata": {"name": "web"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    pdb = wait_for(lambda: (p := policy.read_namespaced_pod_disruption_budget("web", namespace)).status
                   and p.status.current_healthy == 2 and p, timeout=30, what="the PDB to see two healthy pods")
    assert (pdb.status.disruptions_allowed, pdb.status.desired_healthy, pdb.status.expected_pods) == (0, 2, 2)
    assert pdb.status.conditions[0].reason == "InsufficientPods"
    pod = cluster.core.list_namespaced_pod(namespace).items[0].metadata.name
    with pytest.raises(ApiException) as e:
        cluster.core.create_namespaced_pod_eviction(pod, namespace, {"metadata": {"name": pod, "namespace": namespace}})
    assert e.value.status == 429
    status = json.loads(e.value.body)
    assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"]["causes"][0] == {"reason": "DisruptionBudget", "message":
                                              "The disruption budget web needs 2 healthy pods and has 2 currently"}
    policy.patch_namespaced_pod_disruption_budget("web", namespace, {"spec": {"minAvailable": 1}})
    wait_for(lambda: policy.read_namespaced_pod_disruption_budget("web", namespace).status.disruptions_allowed == 1,
             timeout=30, what="one allowed disruption")
    cluster.core.create_namespaced_pod_eviction(pod, namespace, {"metadata": {"name": pod, "namespace": namespace}})
    assert pod not in [p.metadata.name for p in cluster.core.list_namespaced_pod(namespace).items]


def test_hpa_pinned_at_its_maximum(cluster, namespace):
    cluster.apps.create_namespaced_deployment(namespace, {
        "metadata": {"name": "api"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                                               "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                                                   "containers": [{"name": "api", "image": "nginx:1.27", "resources": {
                                                       "requests": {"cpu": "200m"}}}]}}}})
    hpa_api = client.AutoscalingV2Api(cluster.api_client)
    hpa_api.create_namespaced_horizontal_pod_autoscaler(namespace, {
        "metadata": {"name": "api"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": 5}}}]}})

    def limited():
        h = hpa_api.read_namespaced_horizontal_pod_autoscaler("api", namespace)
        conds = {c.type: c for c in (h.status.conditions or [])} if h.status else {}
        return h if conds.get("ScalingLimited") and conds["ScalingLimited"].status == "True" \
            and h.status.current_replicas == 3 else None

    hpa = wait_for(limited, timeout=40, what="the HPA to scale to its maximum and stay limited")
    conds = {c.type: c for c in hpa.status.conditions}
    assert conds["ScalingLimited"].reason == "TooManyReplicas"
    assert conds["ScalingActive"].reason == "ValidMetricFound"
    assert hpa.status.desired_replicas == 3
    util = hpa.status.current_metrics[0].resource.current.average_utilization
    assert 20 <= util <= 50  # the usage profile: 25-45% of the request
    assert cluster.apps.read_namespaced_deployment("api", namespace).spec.replicas == 3


def test_pvc_binding(cluster, namespace):
    storage = client.StorageV1Api(cluster.api_client)
    cls = f"fast-{uuid.uuid4().hex[:6]}"
    storage.create_storage_class({"metadata": {"name": cls}, "provisioner": "ebs.csi.aws.com"})
    try:
        cluster.core.create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                                                   "resources": {"requests": {"storage": "5Gi"}}}})
        cluster.core.create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": "orphan"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                     "storageClassName": "no-such-class",
                                                     "resources": {"requests": {"storage": "1Gi"}}}})
        pvc = wait_for(lambda: (p := cluster.core.read_namespaced_persistent_volume_claim("data", namespace))
                       .status.phase == "Bound" and p, timeout=30, what="the claim to bind")
        assert pvc.status.capacity == {"storage": "5Gi"}
        pv = cluster.core.read_persistent_volume(pvc.spec.volume_name)
        assert (pv.status.phase, pv.spec.claim_ref.name, pv.spec.storage_class_name) == ("Bound", "data", cls)
        orphan = cluster.core.read_namespaced_persistent_volume_claim("orphan", namespace)
        assert orphan.status.phase == "Pending"
        events = wait_for(lambda: [e for e in cluster.core.list_namespaced_event(namespace).items
                                   if e.involved_object.name == "orphan"], what="the binder's event")
        assert events[0].reason == "ProvisioningFailed"
        assert events[0].message == 'storageclass.storage.k8s.io "no-such-class" not found'
    finally:
        storage.delete_storage_class(cls, _preload_content=False)


def test_resource_quota_usage_and_refusal(cluster, namespace):
    cluster.core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "small"}, "spec": {"hard": {"configmaps": "2", "pods": "5"}}})
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "one"}})
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "two"}})
    quota = wait_for(lambda: (q := cluster.core.read_namespaced_resource_quota("small", namespace)).status
                     and q.status.used and q.status.used.get("configmaps") == "2" and q, what="usage 2")
    assert quota.status.hard == {"configmaps": "2", "pods": "5"}
    assert quota.status.used["pods"] == "0"
    with pytest.raises(ApiException) as e:
        cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "three"}})
    assert e.value.status == 403
    assert json.loads(e.value.body)["message"] == ('configmaps "three" is forbidden: exceeded quota: small, '
                                                   'requested: configmaps=1, used: configmaps=2, '
                                                   'limited: configmaps=2')


def test_leases_are_renewed(cluster):
    coordination = client.CoordinationV1Api(cluster.api_client)
    lease = coordination.read_namespaced_lease("kube-scheduler", "kube-system")
    first = lease.spec.renew_time
    wait_for(lambda: coordination.read_namespaced_lease("kube-scheduler", "kube-system").spec.renew_time > first,
             timeout=30, what="a renewal")


def test_metrics_api(cluster):
    custom = client.CustomObjectsApi(cluster.api_client)
    nodes = custom.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert nodes["kind"] == "NodeMetricsList" and nodes["items"]
    assert nodes["items"][0]["usage"]["cpu"].endswith("n")
    assert nodes["items"][0]["usage"]["memory"].endswith("Ki")
    pods = custom.list_namespaced_custom_object("metrics.k8s.io", "v1beta1", "shop", "pods")
    assert pods["items"] and all(c["usage"]["cpu"].endswith("n") for p in pods["items"] for c in p["containers"])
    one = pods["items"][0]["metadata"]["name"]
    assert custom.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "shop", "pods", one)["kind"] == \
        "PodMetrics"


def test_quantities():
    assert format_quantity(0.75, "requests.cpu") == "750m"
    assert format_quantity(2.0, "cpu") == "2"
    assert format_quantity(384 * 2**20, "requests.memory") == "384Mi"
    assert format_quantity(3, "pods") == "3"


# ---- the default scenario's planted batch, storage, autoscaling and access problems ----------------


def test_reports_scenario(sandbox, cluster):
    ns = "reports"
    batch = client.BatchV1Api(cluster.api_client)
    nightly = batch.read_namespaced_cron_job("nightly-report", ns)
    assert nightly.spec.schedule == "0 2 * * *"
    assert nightly.status.last_successful_time < nightly.status.last_schedule_time
    jobs = {j.metadata.name: j for j in batch.list_namespaced_job(ns).items}
    last = next(j for j in jobs.values() if j.metadata.owner_references
                and j.metadata.owner_references[0].name == "nightly-report")
    assert _cond(last, "Failed").reason == "BackoffLimitExceeded"
    assert _cond(jobs["db-backfill"], "Failed").reason == "DeadlineExceeded"
    pvc = cluster.core.read_namespaced_persistent_volume_claim("report-archive", ns)
    assert pvc.status.phase == "Pending" and pvc.spec.storage_class_name == "standard-rwx"
    hpa = client.AutoscalingV2Api(cluster.api_client).read_namespaced_horizontal_pod_autoscaler("report-api", ns)
    limited = next(c for c in hpa.status.conditions if c.type == "ScalingLimited")
    assert (limited.status, limited.reason) == ("True", "TooManyReplicas")
    assert hpa.status.current_replicas == hpa.spec.max_replicas == 3
    pdb = client.PolicyV1Api(cluster.api_client).read_namespaced_pod_disruption_budget("report-api", ns)
    assert pdb.status.disruptions_allowed == 0 and pdb.status.current_healthy == 3
    quota = cluster.core.read_namespaced_resource_quota("reports-quota", ns)
    assert quota.status.used["pods"] == quota.status.hard["pods"] == "3"
    with pytest.raises(ApiException) as e:
        cluster.core.create_namespaced_pod(ns, {"metadata": {"name": "extra"}, "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36"}]}})
    assert e.value.status == 403 and "exceeded quota: reports-quota" in e.value.body


def test_reports_control_plane_plants(sandbox, cluster):
    """An admission webhook and an aggregated API whose Services have no endpoint, as kube-aggregator sees it."""
    ns = "reports"
    admission = client.AdmissionregistrationV1Api(cluster.api_client)
    (hook,) = admission.read_validating_webhook_configuration("report-policy").webhooks
    assert hook.client_config.service.name == "report-policy-webhook" and hook.failure_policy == "Ignore"
    assert hook.namespace_selector.match_labels == {"kubernetes.io/metadata.name": ns}
    for name in ("report-policy-webhook", "report-metrics-adapter"):
        ep = cluster.core.read_namespaced_endpoints(name, ns)
        assert not any(s.addresses for s in ep.subsets or [])
    api = client.ApiregistrationV1Api(cluster.api_client).read_api_service("v1beta1.custom.metrics.k8s.io")
    (available,) = api.status.conditions
    assert (available.type, available.status, available.reason) == ("Available", "False", "MissingEndpoints")
    assert available.message == \
        'endpoints for service/report-metrics-adapter in "reports" have no addresses with port name "https"'


def _as(sandbox, cluster, sa: str) -> client.ApiClient:
    token = cluster.core.create_namespaced_service_account_token(sa, "reports", {"spec": {}}).status.token
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = sandbox.url, str(sandbox.ca_file)
    cfg.api_key, cfg.api_key_prefix = {"authorization": token}, {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def test_reports_service_accounts_have_narrow_roles(sandbox, cluster):
    reader = client.CoreV1Api(_as(sandbox, cluster, "report-reader"))
    assert reader.list_namespaced_pod("reports").items
    for call in (lambda: reader.list_namespaced_secret("reports"),
                 lambda: reader.create_namespaced_config_map("reports", {"metadata": {"name": "x"}}),
                 lambda: reader.list_namespaced_pod("shop")):
        with pytest.raises(ApiException) as e:
            call()
        assert e.value.status == 403
    deployer = client.CoreV1Api(_as(sandbox, cluster, "report-deployer"))
    name = f"cfg-{uuid.uuid4().hex[:6]}"
    deployer.create_namespaced_config_map("reports", {"metadata": {"name": name}})
    deployer.delete_namespaced_config_map(name, "reports")
    runner = client.CoreV1Api(_as(sandbox, cluster, "report-runner"))
    assert runner.read_namespaced_config_map("nightly-report", "reports").data
    with pytest.raises(ApiException) as e:
        runner.list_namespaced_pod("reports")
    assert json.loads(e.value.body)["message"] == (
        'pods is forbidden: User "system:serviceaccount:reports:report-runner" cannot list resource "pods" '
        'in API group "" in the namespace "reports"')
