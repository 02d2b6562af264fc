"""Cluster-health rules on plain objects, and the whole set of checks on the default scenario."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from runbooks import health, kube, params
from runbooks.errors import InvalidInput
from runbooks.parameters import validate_params
from runbooks_sandbox import pki

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def node(name, ready=True, unschedulable=False, pressure=()):
    conds = [{"type": "Ready", "status": "True" if ready else "False", "message": "kubelet stopped posting"}]
    conds += [{"type": t, "status": "True"} for t in pressure]
    return {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable}, "status": {"conditions": conds}}


def pod(name, *, waiting=None, restarts=0, ready=True, last=None, phase="Running", created=NOW, ns="app",
        finished=NOW - timedelta(hours=1)):
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    st = {"name": "main", "ready": ready, "restartCount": restarts, "state": state,
          "lastState": {"terminated": {"reason": last, "exitCode": 137,
                                       "finishedAt": finished.strftime("%Y-%m-%dT%H:%M:%SZ")}} if last else {}}
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "labels": {"pod-template-hash": "abc"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": True}]},
            "spec": {"nodeName": "n1"},
            "status": {"phase": phase, "containerStatuses": [] if phase == "Pending" else [st],
                       "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": "0/3 nodes are available"}]}}


def ids(check):
    return sorted(f.id for f in check.findings)


def test_nodes():
    check = health.check_nodes([node("a"), node("b", ready=False), node("c", unschedulable=True),
                                node("d", pressure=("DiskPressure",))])
    assert ids(check) == ["node-cordoned/c", "node-not-ready/b", "node-pressure/d"]
    assert {f.id: f.severity for f in check.findings}["node-not-ready/b"] == "critical"
    assert len(check.table) == 4


def test_a_crash_looping_pod_read_between_two_crashes_is_still_crash_looping():
    """The kubelet shows CrashLoopBackOff only while it waits to restart; read during the few seconds
    the container runs, the pod is Running. A restart that ended within the back-off reset (10 min)
    is still the crash loop; an old one is only restarts."""
    check = health.check_pods([
        pod("between", restarts=12, ready=False, last="Error", finished=NOW - timedelta(minutes=3)),
        pod("recovered", restarts=12, last="Error", finished=NOW - timedelta(minutes=30), ns="other"),
    ], restart_threshold=5, now=NOW)
    sev = {f.id: f.severity for f in check.findings}
    assert sev == {"pod-crashloopbackoff/app/Deployment/web": "critical", "pod-restarts/other/Deployment/web": "warning"}
    assert "between crashes" in check.table.set_index("pod").loc["between", "state"]


def test_pods_severity_by_state():
    check = health.check_pods([
        pod("ok"),
        pod("crash", waiting="CrashLoopBackOff", restarts=12, ready=False, last="OOMKilled"),
        pod("pull", waiting="ImagePullBackOff", ready=False),
        pod("flappy", restarts=7),
        pod("few", restarts=2),
        pod("unready", ready=False),
        pod("pending", phase="Pending", created=NOW - timedelta(minutes=30)),
        pod("new-pending", phase="Pending", created=NOW - timedelta(minutes=1)),
    ], restart_threshold=5, pending_minutes=10, now=NOW)
    sev = {f.id: f.severity for f in check.findings}
    assert sev == {  # one finding per workload and problem
        "pod-crashloopbackoff/app/Deployment/web": "critical",
        "pod-imagepullbackoff/app/Deployment/web": "critical",
        "pod-restarts/app/Deployment/web": "warning",
        "pod-not-ready/app/Deployment/web": "warning",
        "pod-pending/app/Deployment/web": "warning",
    }
    crash = next(f for f in check.findings if "crash" in f.id)
    assert "OOMKilled" in crash.title and "Deployment/web" in crash.title
    assert crash.evidence["restarts"] == 12


def test_deployments():
    def dep(name, want, available, reason="NewReplicaSetAvailable"):
        return {"metadata": {"name": name, "namespace": "app"}, "spec": {"replicas": want},
                "status": {"availableReplicas": available, "updatedReplicas": want,
                           "conditions": [{"type": "Progressing", "reason": reason, "message": "m"}]}}

    check = health.check_deployments([dep("ok", 3, 3), dep("down", 2, 0), dep("half", 4, 2),
                                      dep("stuck", 3, 3, "ProgressDeadlineExceeded")])
    sev = {f.id: f.severity for f in check.findings}
    assert sev == {"deployment-unavailable/app/down": "critical", "deployment-degraded/app/half": "warning",
                   "deployment-rollout-stalled/app/stuck": "warning"}


def test_services_and_ingresses():
    svcs = [{"metadata": {"name": "web", "namespace": "app"}, "spec": {"selector": {"app": "web"}}},
            {"metadata": {"name": "idle", "namespace": "app"}, "spec": {"selector": {"app": "idle"}}},
            {"metadata": {"name": "ext", "namespace": "app"}, "spec": {"type": "ExternalName"}}]
    eps = [{"metadata": {"name": "web", "namespace": "app"}, "subsets": [{"addresses": [{"ip": "1"}]}]},
           {"metadata": {"name": "idle", "namespace": "app"}, "subsets": [{"notReadyAddresses": [{"ip": "2"}]}]}]
    assert ids(health.check_services(svcs, eps)) == ["service-no-endpoints/app/idle"]
    ing = {"metadata": {"name": "shop", "namespace": "app"}, "spec": {
        "tls": [{"hosts": ["a.example.com"], "secretName": "gone-tls"}],
        "rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "/api", "backend": {"service": {"name": "missing", "port": {"number": 80}}}}]}}]}}
    check = health.check_ingresses([ing], svcs, [])
    assert ids(check) == ["ingress-missing-service/app/shop/missing", "ingress-missing-tls-secret/app/shop/gone-tls"]


def tls_secret(name, not_after, ns="app"):
    leaf = pki.issue(None, common_name=f"{name}.example.com", dns_names=[f"{name}.example.com"],
                     not_before=not_after - timedelta(days=90), not_after=not_after, key_type="ec")
    return {"metadata": {"name": name, "namespace": ns}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(leaf.cert_pem).decode(),
                     "tls.key": base64.b64encode(leaf.key_pem).decode()}}


def test_tls_expiry_thresholds_and_no_key_material():
    secrets = [tls_secret("fine", NOW + timedelta(days=60)), tls_secret("soon", NOW + timedelta(days=20)),
               tls_secret("very-soon", NOW + timedelta(days=3)), tls_secret("gone", NOW - timedelta(days=1)),
               {"metadata": {"name": "opaque", "namespace": "app"}, "type": "Opaque", "data": {}}]
    check = health.check_tls_secrets(secrets, warning_days=30, critical_days=7, now=NOW)
    sev = {f.id: f.severity for f in check.findings}
    assert sev == {"tls-expiring/app/soon": "warning", "tls-expiring/app/very-soon": "critical",
                   "tls-expired/app/gone": "critical"}
    text = check.table.to_csv() + repr([f.to_json() for f in check.findings])
    assert "PRIVATE KEY" not in text and secrets[0]["data"]["tls.key"] not in text


def test_events_grouped_by_reason():
    evs = [{"namespace": "app", "type": "Warning", "reason": "BackOff", "object": "Pod/a", "message": "m",
            "count": 5, "last_seen": NOW},
           {"namespace": "app", "type": "Warning", "reason": "BackOff", "object": "Pod/b", "message": "m",
            "count": 2, "last_seen": NOW},
           {"namespace": "app", "type": "Normal", "reason": "Pulled", "object": "Pod/a", "message": "m",
            "count": 1, "last_seen": NOW}]
    check = health.check_events(evs)
    assert [(f.id, f.severity) for f in check.findings] == [("warning-events/BackOff", "info")]
    assert "7 Warning events" in check.findings[0].title


@pytest.mark.parametrize("values, problem", [
    ({"namespaces": ["Bad_NS"]}, "Bad_NS"),
    ({"restart_threshold": 0}, "restart_threshold"),
    ({"cert_warning_days": -1}, "cert_warning_days"),
    ({"cert_warning_days": 5, "cert_critical_days": 10}, "cert_critical_days"),
    ({"namespace": "shop"}, "namespace"),
])
def test_parameter_model_refuses_bad_values(values, problem):
    with pytest.raises(InvalidInput) as err:
        validate_params(params.ClusterHealthParams, values)
    assert problem in str(err.value)


def test_default_scenario_findings_are_exactly_the_planted_ones(cluster):
    pods = kube.list_objects(cluster, "pods")
    services = kube.list_objects(cluster, "services")
    tls = kube.list_secret_keys(cluster, None, kube.CERTIFICATE_KEYS, field_selector="type=kubernetes.io/tls")
    checks = [health.check_nodes(kube.list_objects(cluster, "nodes")),
              health.check_deployments(kube.list_objects(cluster, "deployments")),
              health.check_pods(pods), health.check_events(health.warning_events(cluster, [], 24)),
              health.check_services(services, kube.list_objects(cluster, "endpoints")),
              health.check_ingresses(kube.list_objects(cluster, "ingresses"), services, tls),
              health.check_tls_secrets(tls)]
    scan = health.scan_pods(kube.pages(cluster, "pods"))
    nodes = checks[0]
    listed = [health.statefulsets(cluster), health.daemonsets(cluster), health.batch(cluster), health.pvcs(cluster),
              health.hpas(cluster), health.pdbs(cluster), health.quotas(cluster), health.webhooks(cluster),
              health.apiservices(cluster), health.readyz(cluster),
              health.check_node_capacity(nodes.table, scan.node_requests)]
    # a resource this sandbox does not serve (yet) is a note on its table, never a finding or a crash
    assert all(c.note in ("", "not served by this cluster") for c in listed)
    checks += listed
    found = {(f.id.rsplit("/", 2)[0] if f.id.startswith("pod-") else f.id, f.severity)
             for c in checks for f in c.findings}
    assert found == {
        ("pod-crashloopbackoff/shop", "critical"),  # the new checkout ReplicaSet's pod, OOMKilled
        ("deployment-rollout-stalled/shop/checkout", "warning"),
        ("tls-expired/shop/checkout-tls", "critical"),
        ("tls-expiring/shop/cart-tls", "critical"),
        ("warning-events/BackOff", "info"),
        ("statefulset-update-stuck/shop/sessions", "warning"),
        ("pod-not-ready/shop", "warning"),
        ("warning-events/Unhealthy", "info"),
        ("daemonset-unavailable-pods/monitoring/node-exporter", "warning"),
        ("pod-pending/monitoring", "warning"),
        ("warning-events/ProvisioningFailed", "info"),  # reports/report-archive: its StorageClass does not exist
        # reports: the batch, storage, scaling and quota problems planted there
        ("job-deadline-exceeded/reports/db-backfill", "warning"),
        ("cronjob-last-job-failed/reports/nightly-report", "warning"),
        ("cronjob-missed-schedule/reports/nightly-report", "warning"),  # its last schedule is over a day old
        ("pvc-pending/reports/report-archive", "warning"),
        ("hpa-at-max/reports/report-api", "warning"),
        ("pdb-blocks-drain/reports/report-api", "warning"),
        ("quota-near-limit/reports/reports-quota/pods", "warning"),
        # the control plane: an admission webhook and an aggregated API whose Services have no endpoint
        ("webhook-no-endpoints/report-policy/validate.reports.example.io", "warning"),  # failurePolicy Ignore
        ("service-no-endpoints/reports/report-policy-webhook", "critical"),
        ("apiservice-unavailable/v1beta1.custom.metrics.k8s.io", "warning"),  # MissingEndpoints
        ("service-no-endpoints/reports/report-metrics-adapter", "critical"),
        ("service-no-endpoints/web/newsletter", "critical"),
        ("service-no-endpoints/web/careers", "critical"),
    }
    crash = next(f for c in checks for f in c.findings if f.id.startswith("pod-"))
    assert crash.evidence["last_termination_reason"] == "OOMKilled" and crash.evidence["restarts"] > 10


def test_healthy_namespaces_give_no_finding(cluster):
    """Every namespace but those with planted problems: no check finds anything there."""
    healthy = sorted(n["metadata"]["name"] for n in kube.objects(cluster, "namespaces")
                     if n["metadata"]["name"] not in ("shop", "monitoring", "reports", "web"))
    assert "payments" in healthy and "logging" in healthy
    pods = health.scan_pods(kube.pages(cluster, "pods", healthy), production_namespaces=[])
    services = kube.list_objects(cluster, "services", healthy)
    checks = [pods.check, health.check_deployments(kube.objects(cluster, "deployments", healthy)),
              health.statefulsets(cluster, healthy), health.daemonsets(cluster, healthy),
              health.batch(cluster, healthy), health.pvcs(cluster, healthy), health.hpas(cluster, healthy),
              health.pdbs(cluster, healthy), health.quotas(cluster, healthy), health.webhooks(cluster, healthy),
              health.check_services(services, kube.objects(cluster, "endpoints", healthy)),
              health.check_events(health.warning_events(cluster, healthy, 24))]
    assert [f.id for c in checks for f in c.findings] == []


def test_readyz_lists_the_api_servers_checks(cluster):
    """The sandbox answers /readyz?verbose as kube-apiserver does; every check passes, so nothing is found."""
    status, text = kube.get_text(cluster, "/readyz", [("verbose", "true")])
    lines = text.splitlines()
    assert status == 200 and lines[-1] == "readyz check passed"
    assert {"[+]ping ok", "[+]etcd ok", "[+]informer-sync ok", "[+]shutdown ok"} <= set(lines)
    assert kube.get_text(cluster, "/readyz/etcd", [])[1] == "ok"
    assert kube.get_text(cluster, "/readyz/no-such-check", [])[0] == 404
    excluded = kube.get_text(cluster, "/readyz", [("verbose", ""), ("exclude", "etcd")])[1]
    assert "[+]etcd excluded: ok" in excluded.splitlines()
    check = health.readyz(cluster)
    assert check.findings == [] and check.table.empty and check.note == ""
