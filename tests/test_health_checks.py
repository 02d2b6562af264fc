"""The cluster-health checks beyond pods and Deployments, on plain objects; pods streamed at scale."""

from __future__ import annotations

import csv
import tracemalloc
from datetime import UTC, datetime, timedelta

import pandas as pd

from runbooks import health

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sev(check):
    return {f.id: f.severity for f in check.findings}


def meta(name, ns="app", created=NOW - timedelta(days=3), **kw):
    return {"name": name, "namespace": ns, "creationTimestamp": ts(created), **kw}


def test_statefulsets():
    def sts(name, want, ready, updated, current="r1", update="r1", partition=0):
        return {"metadata": meta(name, generation=2), "spec": {"replicas": want, "updateStrategy": {
            "type": "RollingUpdate", "rollingUpdate": {"partition": partition}}},
            "status": {"observedGeneration": 2, "replicas": want, "readyReplicas": ready,
                       "updatedReplicas": updated, "currentRevision": current, "updateRevision": update}}

    check = health.check_statefulsets([
        sts("ok", 3, 3, 3), sts("rolling", 3, 3, 1, "r1", "r2"),  # mid-update, all ready: progressing
        sts("stuck", 3, 2, 1, "r1", "r2"), sts("canary", 3, 3, 1, "r1", "r2", partition=2),
        sts("down", 2, 0, 2), sts("short", 3, 2, 3)])
    assert sev(check) == {
        "statefulset-update-stuck/app/stuck": "warning",
        "statefulset-update-partitioned/app/canary": "info",
        "statefulset-unavailable/app/down": "critical", "statefulset-degraded/app/short": "warning"}
    assert "1/3 pods on r2" in next(f.title for f in check.findings if "update-stuck" in f.id)
    assert len(check.table) == 6


def test_daemonsets():
    def ds(name, desired, scheduled, available):
        return {"metadata": meta(name), "status": {"desiredNumberScheduled": desired,
                                                   "currentNumberScheduled": scheduled,
                                                   "numberReady": available, "numberAvailable": available}}

    check = health.check_daemonsets([ds("ok", 5, 5, 5), ds("missing", 5, 4, 4), ds("unavail", 5, 5, 3),
                                     ds("dead", 5, 5, 0), ds("none", 0, 0, 0)])
    assert sev(check) == {"daemonset-not-scheduled/app/missing": "warning",
                          "daemonset-unavailable-pods/app/unavail": "warning",
                          "daemonset-unavailable/app/dead": "critical"}
    assert "1 of 5 eligible nodes" in check.findings[0].title


def test_cron_next():
    t = datetime(2026, 6, 1, 12, 7, tzinfo=UTC)  # a Monday
    assert health.cron_next("*/15 * * * *", t) == datetime(2026, 6, 1, 12, 15, tzinfo=UTC)
    assert health.cron_next("0 3 * * *", t) == datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    assert health.cron_next("@weekly", t) == datetime(2026, 6, 7, 0, 0, tzinfo=UTC)
    assert health.cron_next("30 1 1 jan,jul *", t) == datetime(2026, 7, 1, 1, 30, tzinfo=UTC)
    assert health.cron_next("0 9 * * mon-fri", datetime(2026, 6, 5, 10, 0, tzinfo=UTC)) == \
        datetime(2026, 6, 8, 9, 0, tzinfo=UTC)
    assert health.cron_next("0 2 * * *", t, "Europe/Paris") == datetime(2026, 6, 2, 0, 0, tzinfo=UTC)
    assert health.cron_next("CRON_TZ=America/New_York 0 0 * * *", t) == datetime(2026, 6, 2, 4, 0, tzinfo=UTC)
    assert health.cron_next("0 0 31 2 *", t) is None  # never fires
    assert health.cron_next("not a schedule", t) is None


def test_batch():
    def cj(name, schedule="0 * * * *", last=NOW - timedelta(minutes=30), suspend=False, active=0):
        return {"metadata": meta(name), "spec": {"schedule": schedule, "suspend": suspend},
                "status": {"lastScheduleTime": ts(last), "active": [{"name": f"{name}-{i}"} for i in range(active)]}}

    def job(name, owner=None, failed=None, created=NOW - timedelta(hours=1), deadline=None, started=None,
            complete=False):
        conds = [{"type": "Failed", "status": "True", "reason": failed, "message": "m"}] if failed else []
        if complete:
            conds.append({"type": "Complete", "status": "True"})
        refs = [{"kind": "CronJob", "name": owner, "controller": True}] if owner else []
        return {"metadata": meta(name, created=created, ownerReferences=refs),
                "spec": {"activeDeadlineSeconds": deadline} if deadline else {},
                "status": {"conditions": conds, **({"startTime": ts(started)} if started else {})}}

    cronjobs = [cj("ok"), cj("late", last=NOW - timedelta(hours=3)), cj("paused", suspend=True,
                                                                      last=NOW - timedelta(days=9)),
                cj("pile", active=3), cj("broken"), cj("recovered")]
    jobs = [job("ok-1", "ok", complete=True),
            job("broken-2", "broken", failed="BackoffLimitExceeded"),
            job("broken-1", "broken", complete=True, created=NOW - timedelta(hours=2)),
            job("recovered-1", "recovered", failed="BackoffLimitExceeded", created=NOW - timedelta(hours=2)),
            job("recovered-2", "recovered", complete=True),
            job("slow", deadline=600, started=NOW - timedelta(hours=1)),
            job("killed", failed="DeadlineExceeded", deadline=60),
            job("fine", deadline=600, started=NOW - timedelta(hours=1), complete=True)]
    check = health.check_batch(iter(cronjobs), iter(jobs), now=NOW)
    assert sev(check) == {
        "cronjob-missed-schedule/app/late": "warning", "cronjob-suspended/app/paused": "info",
        "cronjob-too-many-active/app/pile": "warning", "cronjob-last-job-failed/app/broken": "warning",
        "job-deadline-exceeded/app/slow": "warning", "job-deadline-exceeded/app/killed": "warning"}
    assert set(check.table.name) == {"late", "paused", "pile", "broken", "slow", "killed"}


def test_pvcs():
    def pvc(name, phase, age=timedelta(hours=1)):
        return {"metadata": meta(name, created=NOW - age), "spec": {"storageClassName": "fast",
                                                                    "volumeName": "pv-1"},
                "status": {"phase": phase}}

    reasons = {("app", "stuck"): {"reason": "ProvisioningFailed", "message": "storageclass \"fast\" not found"},
               ("app", "lazy"): {"reason": "WaitForFirstConsumer", "message": "waiting for first consumer"}}
    check = health.check_pvcs([pvc("bound", "Bound"), pvc("stuck", "Pending"), pvc("lazy", "Pending"),
                               pvc("new", "Pending", timedelta(minutes=1)), pvc("gone", "Lost")], reasons, now=NOW)
    assert sev(check) == {"pvc-pending/app/stuck": "warning", "pvc-lost/app/gone": "critical"}
    assert "ProvisioningFailed" in next(f.detail for f in check.findings if "stuck" in f.id)


def test_hpas_and_pdbs():
    def hpa(name, current, desired, mx=10, active=("True", "ValidMetricFound")):
        return {"metadata": meta(name), "spec": {"maxReplicas": mx, "minReplicas": 2,
                                                 "scaleTargetRef": {"kind": "Deployment", "name": name}},
                "status": {"currentReplicas": current, "desiredReplicas": desired, "conditions": [
                    {"type": "AbleToScale", "status": "True"},
                    {"type": "ScalingActive", "status": active[0], "reason": active[1], "message": "m"}]}}

    check = health.check_hpas([hpa("ok", 4, 4), hpa("maxed", 10, 10),
                               hpa("blind", 3, 3, active=("False", "FailedGetResourceMetric")),
                               hpa("off", 0, 0, active=("False", "ScalingDisabled"))])
    assert sev(check) == {"hpa-at-max/app/maxed": "warning", "hpa-metrics-unavailable/app/blind": "warning"}

    def pdb(name, expected, healthy, desired, allowed):
        return {"metadata": meta(name), "status": {"expectedPods": expected, "currentHealthy": healthy,
                                                   "desiredHealthy": desired, "disruptionsAllowed": allowed}}

    check = health.check_pdbs([pdb("ok", 3, 3, 2, 1), pdb("strict", 2, 2, 2, 0), pdb("hurt", 3, 1, 2, 0),
                               pdb("empty", 0, 0, 1, 0)])
    assert sev(check) == {"pdb-blocks-drain/app/strict": "warning", "pdb-blocks-drain/app/hurt": "warning"}
    assert "only 1 of the 2" in next(f.detail for f in check.findings if "hurt" in f.id)


def test_quotas_and_node_capacity():
    q = {"metadata": meta("compute"), "status": {
        "hard": {"requests.cpu": "10", "requests.memory": "20Gi", "pods": "50", "services": "0"},
        "used": {"requests.cpu": "9500m", "requests.memory": "4Gi", "pods": "50", "services": "0"}}}
    check = health.check_quotas([q], percent=90)
    assert sev(check) == {"quota-near-limit/app/compute/requests.cpu": "warning",
                          "quota-near-limit/app/compute/pods": "warning"}
    nodes = pd.DataFrame([{"node": "a", "cpu_allocatable": 2.0, "memory_allocatable": 4 * 2 ** 30},
                          {"node": "b", "cpu_allocatable": 2.0, "memory_allocatable": 4 * 2 ** 30}])
    check = health.check_node_capacity(nodes, {"a": {"cpu": 1.5, "memory": 2 ** 30, "pods": 3},
                                               "b": {"cpu": 2.5, "memory": 5 * 2 ** 30, "pods": 9}})
    assert sev(check) == {"node-overcommitted/b": "warning"}
    assert "cpu and memory" in check.findings[0].title


def test_pod_requests():
    spec = {"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                           {"resources": {"requests": {"cpu": "250m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "32Mi"}}}]}
    assert health.pod_requests(spec) == {"cpu": 2.0, "memory": 64 * 2 ** 20}


def test_webhooks_apiservices_readyz():
    def cfg(kind, name, svc, policy=None):
        wh = {"name": f"{name}.example.com", "clientConfig": {"service": {"namespace": "sys", "name": svc}}}
        if policy:
            wh["failurePolicy"] = policy
        return {"kind": kind, "metadata": {"name": name}, "webhooks": [wh, {"name": "url.example.com",
                                                                            "clientConfig": {"url": "https://x"}}]}

    check = health.check_webhooks([cfg("ValidatingWebhookConfiguration", "policy", "gatekeeper"),
                                   cfg("MutatingWebhookConfiguration", "inject", "injector", "Ignore"),
                                   cfg("ValidatingWebhookConfiguration", "fine", "good")],
                                  {("sys", "gatekeeper"): 0, ("sys", "injector"): None, ("sys", "good"): 2})
    assert sev(check) == {"webhook-no-endpoints/policy/policy.example.com": "critical",
                          "webhook-no-endpoints/inject/inject.example.com": "warning"}
    assert len(check.table) == 3  # URL webhooks are outside the cluster's Services

    def api(name, status, group="metrics.k8s.io"):
        return {"metadata": {"name": name}, "spec": {"group": group, "version": "v1beta1",
                                                     "service": {"namespace": "kube-system", "name": "ms"}},
                "status": {"conditions": [{"type": "Available", "status": status,
                                           "reason": "FailedDiscoveryCheck", "message": "no response"}]}}

    check = health.check_apiservices([api("v1beta1.metrics.k8s.io", "False"), api("v1.apps", "True", "apps")])
    assert sev(check) == {"apiservice-unavailable/v1beta1.metrics.k8s.io": "warning"}
    assert "kubectl top" in check.findings[0].detail

    ok = "[+]ping ok\n[+]etcd ok\nreadyz check passed\n"
    assert health.check_readyz(200, ok).findings == []
    bad = health.check_readyz(500, "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\n")
    assert sev(bad) == {"apiserver-not-ready": "critical"} and list(bad.table.check) == ["etcd"]
    hook = health.check_readyz(500, "[+]etcd ok\n[-]poststarthook/start-apiextensions-informers failed: x\n")
    assert sev(hook) == {"apiserver-not-ready": "warning"}


def _pod(i, ns, *, crash=False, image="registry.example.com/app:1.0", requests=True):
    st = {"name": "app", "ready": not crash, "restartCount": 20 if crash else 0,
          "state": {"waiting": {"reason": "CrashLoopBackOff"}} if crash else {"running": {}},
          "lastState": {"terminated": {"reason": "Error", "exitCode": 1}} if crash else {}}
    res = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}} if requests else {}
    w = f"w{i % 40}"
    return {"metadata": {"name": f"{w}-{i}", "namespace": ns, "creationTimestamp": ts(NOW),
                         "labels": {"pod-template-hash": "h"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{w}-h", "controller": True}]},
            "spec": {"nodeName": f"n{i % 7}", "containers": [{"name": "app", "image": image, "resources": res}]},
            "status": {"phase": "Running", "containerStatuses": [st]}}


def test_scan_pods_aggregates_by_workload_with_every_row_in_csv(tmp_path):
    pages = [[_pod(i, "prod", crash=i % 2 == 0) for i in range(p * 100, p * 100 + 100)] for p in range(4)]
    pages.append([_pod(1000, "prod", image="nginx", requests=False), _pod(1001, "dev", image="x:latest")])
    out = tmp_path / "unhealthy-pods.csv"
    scan = health.scan_pods(iter(pages), production_namespaces=["prod"], top=5, csv_path=out, now=NOW)
    crash = [f for f in scan.check.findings if f.id.startswith("pod-crashloopbackoff/")]
    assert len(crash) == 6  # the 5 workloads with most pods, then one for the rest
    more = crash[-1]
    assert more.id == "pod-crashloopbackoff/more" and more.severity == "critical"
    assert "200 pods with CrashLoopBackOff across 20 workloads" in more.title
    assert all(f.evidence["pods"] == 10 for f in crash[:5])
    assert len(scan.check.table) == 5 and scan.unhealthy == 200 and scan.pods == 402
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 200 and rows[0].keys() == set(health.POD_COLUMNS)
    info = {f.id: f.severity for f in scan.check.findings if f.severity == "info"}
    assert info == {"pod-no-resources/prod/Deployment/w0": "info", "pod-image-untagged/prod/Deployment/w0": "info"}
    assert scan.node_requests["n0"]["pods"] == 59 and abs(scan.node_requests["n0"]["cpu"] - 5.9) < 1e-9
    assert scan.restarts.iloc[0]["restarts"] == 200


def test_scan_pods_memory_does_not_grow_with_pods():
    def pages(n):
        for p in range(n // 500):
            yield [_pod(i, f"ns{i % 50}", crash=i % 100 == 0) for i in range(p * 500, p * 500 + 500)]

    def peak(n):
        tracemalloc.start()
        health.scan_pods(pages(n), now=NOW)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(2_000), peak(20_000)
    assert large < small * 1.5  # ten times the pods: one page at a time, aggregates per workload


def test_healthy_objects_give_no_finding():
    ok_pods = [_pod(i, "prod") for i in range(50)]
    checks = [health.check_pods(ok_pods),
              health.check_statefulsets([{"metadata": meta("db"), "spec": {"replicas": 1},
                                          "status": {"readyReplicas": 1, "updatedReplicas": 1,
                                                     "currentRevision": "a", "updateRevision": "a"}}]),
              health.check_daemonsets([{"metadata": meta("agent"), "status": {
                  "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberAvailable": 3}}]),
              health.check_batch([], []), health.check_pvcs([]), health.check_hpas([]), health.check_pdbs([]),
              health.check_quotas([]), health.check_webhooks([], {}), health.check_apiservices([])]
    assert [f.id for c in checks for f in c.findings] == []


def test_volumes_filling_up():
    usage = pd.DataFrame([
        {"namespace": "db", "persistentvolumeclaim": "data-pg-0", "used": 98 * 2 ** 30, "capacity": 100 * 2 ** 30},
        {"namespace": "db", "persistentvolumeclaim": "data-pg-1", "used": 90 * 2 ** 30, "capacity": 100 * 2 ** 30},
        {"namespace": "db", "persistentvolumeclaim": "wal", "used": 10 * 2 ** 30, "capacity": 100 * 2 ** 30}])
    check = health.check_volumes(usage, warning_percent=85, critical_percent=97)
    assert sev(check) == {"volume-filling-up/db/data-pg-0": "critical", "volume-filling-up/db/data-pg-1": "warning"}
    assert list(check.table.percent) == [98.0, 90.0]


def test_volumes_without_prometheus_or_with_it_down():
    assert health.volumes(None).note.startswith("no Prometheus") and health.volumes(None).findings == []
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = health.volumes(f"http://127.0.0.1:{port}")
    assert sev(down) == {"data-source-down/prometheus": "warning"} and down.note == "Prometheus unreachable"
