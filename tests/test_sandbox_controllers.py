"""Controllers: the sandbox cluster reacts to writes the way a real one does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbooks import kube
from runbooks.errors import NotFound
from runbooks_sandbox.controllers import FAIL_ANNOTATION, crash_history
from runbooks_sandbox.launch import Sandbox

from helpers import wait_for


def web(name: str, replicas: int = 2, fail: str | None = None, image: str = "nginx:1.27") -> dict:
    tpl_meta: dict = {"labels": {"app": name}}
    if fail:
        tpl_meta["annotations"] = {"sandbox.kube-runbooks.io/fail": fail}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": tpl_meta, "spec": {"containers": [
                         {"name": "app", "image": image, "ports": [{"containerPort": 8080, "name": "http"}]}]}}}}


class Clock:
    """Real time plus an offset the test can push forward."""

    def __init__(self):
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(scope="module")
def live():
    """A sandbox with three nodes, no scenario, and a clock the tests can advance."""
    import tempfile

    clock = Clock()
    box = Sandbox(tempfile.mkdtemp(), None, tick=0.5, clock=clock).start()
    cluster = kube.connect(str(box.kubeconfig), "sandbox")
    for i in (1, 2, 3):
        cluster.core.create_node({"metadata": {"name": f"node-{i}"}})
    box.clock = clock
    yield box, cluster
    box.stop()


@pytest.fixture
def ns(live):
    import uuid

    _, cluster = live
    name = f"c-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": name}})
    return name


def pods(cluster, ns, selector=""):
    return list(kube.iter_objects(cluster, "pods", ns, label_selector=selector))


def test_scaling_creates_and_deletes_pods(live, ns):
    _, cluster = live
    cluster.apps.create_namespaced_deployment(ns, web("api", replicas=2))
    wait_for(lambda: len(pods(cluster, ns)) == 2, what="2 pods")
    cluster.apps.patch_namespaced_deployment_scale("api", ns, {"spec": {"replicas": 4}})
    wait_for(lambda: len(pods(cluster, ns)) == 4, what="4 pods after scale up")
    cluster.apps.patch_namespaced_deployment_scale("api", ns, {"spec": {"replicas": 1}})
    wait_for(lambda: len(pods(cluster, ns)) == 1, what="1 pod after scale down")
    d = wait_for(lambda: (lambda d: d if (d.status.available_replicas or 0) == 1 and d.status.replicas == 1
                          else None)(cluster.apps.read_namespaced_deployment("api", ns)), what="status")
    assert d.status.observed_generation == d.metadata.generation
    pod = pods(cluster, ns)[0]
    assert pod["spec"]["nodeName"].startswith("node-") and pod["status"]["phase"] == "Running"
    assert pod["metadata"]["labels"]["pod-template-hash"]
    reasons = {e["reason"] for e in kube.events(cluster, ns)}
    assert {"ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete", "Scheduled", "Started"} <= reasons


def test_template_change_rolls_out_a_new_replicaset(live, ns):
    _, cluster = live
    cluster.apps.create_namespaced_deployment(ns, web("shop", replicas=3))
    wait_for(lambda: len(pods(cluster, ns)) == 3, what="3 pods")
    cluster.apps.patch_namespaced_deployment("shop", ns, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "nginx:1.28"}]}}}})

    def rolled():
        rss = list(kube.iter_objects(cluster, "replicasets", ns))
        by_rev = {r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: r for r in rss}
        if set(by_rev) != {"1", "2"}:
            return None
        new, old = by_rev["2"], by_rev["1"]
        ok = (new["spec"]["replicas"] == 3 and old["spec"]["replicas"] == 0
              and (new.get("status") or {}).get("availableReplicas") == 3)
        return (new, old) if ok else None

    new, old = wait_for(rolled, what="rollout to revision 2")
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert old["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    assert new["metadata"]["name"] == "shop-" + new["metadata"]["labels"]["pod-template-hash"]
    wait_for(lambda: all(p["spec"]["containers"][0]["image"] == "nginx:1.28" for p in pods(cluster, ns))
             and len(pods(cluster, ns)) == 3, what="only new pods")

    def completed():  # the Deployment's own status follows its ReplicaSets on the controller's next pass
        d = cluster.apps.read_namespaced_deployment("shop", ns)
        progressing = next((c for c in d.status.conditions or [] if c.type == "Progressing"), None)
        return d if progressing is not None and progressing.reason == "NewReplicaSetAvailable" else None

    d = wait_for(completed, what="Progressing=NewReplicaSetAvailable")
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "2"


def container_status(pod):
    """The first container's status, or None before the kubelet has reported it."""
    return ((pod.get("status") or {}).get("containerStatuses") or [None])[0]


def waiting_reason(pod):
    return (((container_status(pod) or {}).get("state") or {}).get("waiting") or {}).get("reason")


def test_failing_template_crash_loops_with_growing_restarts(live, ns):
    box, cluster = live
    cluster.apps.create_namespaced_deployment(ns, web("oom", replicas=1, fail="OOMKilled"))
    pod = wait_for(lambda: next((p for p in pods(cluster, ns) if container_status(p)), None),
                   what="a pod with container statuses")
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    before = pod["status"]["containerStatuses"][0]["restartCount"]
    box.clock.offset += timedelta(minutes=10)
    try:
        def crashed():
            p = next((p for p in pods(cluster, ns) if container_status(p)), None)
            return p if p and container_status(p)["restartCount"] > before + 3 \
                and (container_status(p).get("lastState") or {}).get("terminated") else None

        pod = wait_for(crashed, what="restarts to grow")
    finally:
        box.clock.offset -= timedelta(minutes=10)
    st = pod["status"]["containerStatuses"][0]
    assert st["lastState"]["terminated"]["reason"] == "OOMKilled"
    assert st["lastState"]["terminated"]["exitCode"] == 137
    assert pod["status"]["phase"] == "Running"
    d = cluster.apps.read_namespaced_deployment("oom", ns)
    assert not d.status.available_replicas
    assert any(e["reason"] == "BackOff" and e["type"] == "Warning" for e in kube.events(cluster, ns))


def test_image_pull_backoff(live, ns):
    _, cluster = live
    cluster.apps.create_namespaced_deployment(ns, web("pull", replicas=1, fail="ImagePullBackOff"))
    # wait for what is asserted: the kubelet sets containerStatuses after it created the pod
    pod = wait_for(lambda: next((p for p in pods(cluster, ns) if waiting_reason(p) == "ImagePullBackOff"), None),
                   what="a pod waiting in ImagePullBackOff")
    st = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Pending"
    assert st["restartCount"] == 0


def test_endpoints_follow_readiness(live, ns):
    _, cluster = live
    cluster.apps.create_namespaced_deployment(ns, web("front", replicas=2))
    cluster.core.create_namespaced_service(ns, {"metadata": {"name": "front"}, "spec": {
        "selector": {"app": "front"}, "ports": [{"port": 80, "targetPort": "http"}]}})

    def endpoints():
        try:
            ep = kube.get_object(cluster, "endpoints", ns, "front")
        except NotFound:  # the endpoints controller creates it after the Service, as in a real cluster
            return 0, 0, {}
        subset = (ep.get("subsets") or [{}])[0]
        return len(subset.get("addresses") or []), len(subset.get("notReadyAddresses") or []), subset

    wait_for(lambda: endpoints()[:2] == (2, 0), what="2 ready endpoints")
    assert endpoints()[2]["ports"][0]["port"] == 8080  # named targetPort resolved from the pod
    # a rollout to a template that never becomes ready: the surge pod shows up as not ready
    cluster.apps.patch_namespaced_deployment("front", ns, {"spec": {"template": {"metadata": {
        "annotations": {"sandbox.kube-runbooks.io/fail": "NotReady"}}}}})
    wait_for(lambda: endpoints()[:2] == (2, 1), what="2 ready + 1 not ready endpoints")
    slices = list(kube.iter_objects(cluster, "endpointslices", ns, label_selector="kubernetes.io/service-name=front"))
    assert len(slices) == 1
    assert sorted(e["conditions"]["ready"] for e in slices[0]["endpoints"]) == [False, True, True]


def test_deleting_a_deployment_collects_its_replicasets_and_pods(live, ns):
    _, cluster = live
    cluster.apps.create_namespaced_deployment(ns, web("gone", replicas=2))
    wait_for(lambda: len(pods(cluster, ns)) == 2, what="2 pods")
    cluster.apps.delete_namespaced_deployment("gone", ns)
    wait_for(lambda: not pods(cluster, ns) and not list(kube.iter_objects(cluster, "replicasets", ns)),
             what="garbage collection")


def test_crash_history_follows_kubelet_backoff():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert crash_history(t0, t0 + timedelta(seconds=5))[0] == 0  # first life still running
    restarts, _, _, next_start = crash_history(t0, t0 + timedelta(seconds=12))
    assert restarts == 0 and next_start == t0 + timedelta(seconds=18)  # died at 8s, 10s back-off
    counts = [crash_history(t0, t0 + timedelta(minutes=m))[0] for m in (1, 10, 60, 120)]
    assert counts == sorted(counts) and counts[0] >= 2
    # steady state: one restart per (8s run + 300s back-off)
    assert 20 <= counts[3] <= 30
    assert counts[3] - counts[2] == pytest.approx(3600 / 308, abs=1)


def statefulset(name: str, image: str, replicas: int = 3) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": image}]}}}}


def _images(cluster, ns: str, prefix: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
            for p in kube.iter_objects(cluster, "pods", ns) if p["metadata"]["name"].startswith(prefix)}


def test_statefulset_update_goes_from_the_highest_ordinal_and_stops_at_an_unready_pod(live, ns):
    _, cluster = live
    cluster.apps.create_namespaced_stateful_set(ns, statefulset("db", "redis:7.2"))
    sts = lambda: kube.get_object(cluster, "statefulsets", ns, "db").get("status") or {}  # noqa: E731
    wait_for(lambda: sts().get("readyReplicas") == 3, timeout=30, what="3 ready replicas")
    cluster.apps.patch_namespaced_stateful_set("db", ns, {"spec": {"template": {
        "metadata": {"annotations": {"sandbox.kube-runbooks.io/fail": "NotReady"}},
        "spec": {"containers": [{"name": "app", "image": "redis:7.4"}]}}}})
    wait_for(lambda: sts().get("updatedReplicas") == 1 and _images(cluster, ns, "db-").get("db-2") == "redis:7.4",
             timeout=30, what="the highest ordinal updated")
    # db-2 never becomes ready, so the controller never goes on to db-1 and db-0
    assert _images(cluster, ns, "db-") == {"db-0": "redis:7.2", "db-1": "redis:7.2", "db-2": "redis:7.4"}
    status = sts()
    assert status["currentRevision"] != status["updateRevision"] and status["currentReplicas"] == 2


def test_statefulset_partition_holds_the_lower_ordinals(live, ns):
    _, cluster = live
    body = statefulset("web", "nginx:1.26")
    body["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    cluster.apps.create_namespaced_stateful_set(ns, body)
    sts = lambda: kube.get_object(cluster, "statefulsets", ns, "web").get("status") or {}  # noqa: E731
    wait_for(lambda: sts().get("readyReplicas") == 3, timeout=30, what="3 ready replicas")
    cluster.apps.patch_namespaced_stateful_set("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:1.27"}]}}}})
    wait_for(lambda: sts().get("updatedReplicas") == 2 and sts().get("readyReplicas") == 3, timeout=30,
             what="ordinals 2 and 1 updated and ready")
    assert _images(cluster, ns, "web-") == {"web-0": "nginx:1.26", "web-1": "nginx:1.27", "web-2": "nginx:1.27"}


def test_daemonset_pod_without_a_free_host_port_stays_pending(live, ns):
    _, cluster = live
    cluster.core.create_namespaced_pod(ns, {"metadata": {"name": "squatter"}, "spec": {
        "nodeName": "node-2", "containers": [{"name": "x", "image": "busybox",
                                              "ports": [{"containerPort": 9100, "hostPort": 9100}]}]}})
    cluster.apps.create_namespaced_daemon_set(ns, {"metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [
            {"name": "agent", "image": "node-exporter:1.8", "ports": [{"containerPort": 9100, "hostPort": 9100}]}]}}}})
    ds = lambda: kube.get_object(cluster, "daemonsets", ns, "agent").get("status") or {}  # noqa: E731

    def pending() -> list[dict]:
        return [p for p in kube.iter_objects(cluster, "pods", ns, label_selector="app=agent")
                if (p.get("status") or {}).get("phase") == "Pending" and kube.condition(p, "PodScheduled")]

    wait_for(lambda: ds().get("numberAvailable") == 2 and pending(), timeout=30, what="2 available, 1 Pending")
    assert ds()["desiredNumberScheduled"] == 3 and ds()["currentNumberScheduled"] == 3
    [pod] = pending()
    cond = kube.condition(pod, "PodScheduled")
    assert cond["reason"] == "Unschedulable" and "free ports" in cond["message"]
    assert not pod["spec"].get("nodeName")
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["node-2"]
    cluster.core.delete_namespaced_pod("squatter", ns)


def test_daemonset_node_selector_limits_the_eligible_nodes(live, ns):
    _, cluster = live
    cluster.core.patch_node("node-3", {"metadata": {"labels": {"example.com/gpu": "true"}}})
    cluster.apps.create_namespaced_daemon_set(ns, {"metadata": {"name": "gpu"}, "spec": {
        "selector": {"matchLabels": {"app": "gpu"}},
        "template": {"metadata": {"labels": {"app": "gpu"}}, "spec": {
            "nodeSelector": {"example.com/gpu": "true"},
            "containers": [{"name": "plugin", "image": "device-plugin:1"}]}}}})
    wait_for(lambda: (kube.get_object(cluster, "daemonsets", ns, "gpu").get("status") or {})
             .get("numberAvailable") == 1, timeout=30, what="1 available")
    status = kube.get_object(cluster, "daemonsets", ns, "gpu")["status"]
    assert status["desiredNumberScheduled"] == 1
    assert [p["spec"]["nodeName"] for p in kube.iter_objects(cluster, "pods", ns, label_selector="app=gpu")] == ["node-3"]


def test_active_deadline_ends_the_pod(live, ns):
    """Past spec.activeDeadlineSeconds the kubelet kills the containers and the pod is Failed."""
    box, cluster = live
    cluster.core.create_namespaced_pod(ns, {"metadata": {"name": "probe"}, "spec": {
        "restartPolicy": "Never", "activeDeadlineSeconds": 30,
        "containers": [{"name": "probe", "image": "busybox:1.36", "command": ["sleep", "30"]}]}})
    wait_for(lambda: cluster.core.read_namespaced_pod("probe", ns).status.phase == "Running", what="probe running")
    box.clock.offset += timedelta(seconds=31)
    try:
        pod = wait_for(lambda: next((p for p in pods(cluster, ns) if p["status"].get("phase") == "Failed"), None),
                       what="the pod Failed past its deadline")
    finally:
        box.clock.offset -= timedelta(seconds=31)
    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert pod["status"]["message"] == "Pod was active on the node longer than the specified deadline"
    state = pod["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == 137 and not pod["status"]["containerStatuses"][0]["ready"]


def test_one_controller_per_kind_each_with_its_priority(live):
    """The dispatch runs the registered controllers: one per kind, by the priority registered beside it."""
    from runbooks_sandbox.controllers import CONTROLLERS, EVERY

    box, _ = live
    controllers = box.controllers
    kinds = [make(controllers).kind for _, make in CONTROLLERS]
    assert len(kinds) == len(set(kinds)) == len(controllers.controllers)
    assert [p for p, _ in CONTROLLERS] == sorted(p for p, _ in CONTROLLERS)
    work = {("Endpoints", "a", EVERY), ("Pod", "a", "p"), ("Deployment", "a", "d"), ("Namespace", "", "gone"),
            ("Endpoints", "a", "svc")}
    order = controllers.ordered(work)
    assert [w[0] for w in order] == ["Namespace", "Deployment", "Pod", "Endpoints", "Endpoints"]
    assert order[-1][2] == EVERY  # one Service before all of a namespace's


def test_bulk_pods_are_named_and_spread_like_a_real_cluster(tmp_path):
    """The scale benchmark's pods: `<replicaset>-<5 chars of the name generator>`, workloads of 20 over
    the namespaces and extra nodes, and the unhealthy share crash-looping."""
    import re

    box = Sandbox(tmp_path, "default", tick=1.0).start()
    try:
        box.add_bulk_pods(400, namespaces=4, nodes=6, unhealthy_percent=10)
        api = kube.connect(str(box.kubeconfig), "sandbox")
        pods = [p for p in kube.iter_objects(api, "pods") if p["metadata"]["namespace"].startswith("bulk-")]
        assert len(pods) == 400
        assert all(re.fullmatch(r"load-\d+-7d9f8b6c5-[bcdfghjklmnpqrstvwxz2456789]{5}", p["metadata"]["name"])
                   for p in pods)
        assert {p["metadata"]["namespace"] for p in pods} == {f"bulk-{i:04d}" for i in range(4)}
        assert len({p["spec"]["nodeName"] for p in pods}) >= 6
        failing = {p["metadata"]["name"] for p in pods if FAIL_ANNOTATION in p["metadata"]["annotations"]}
        assert len(failing) == 40  # 2 of the 20 workloads, every pod of each

        def crash_looping():
            return {p["metadata"]["name"] for p in kube.iter_objects(api, "pods")
                    if p["metadata"]["namespace"].startswith("bulk-") and any(((c.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
                           for c in (p.get("status") or {}).get("containerStatuses") or [])}

        wait_for(lambda: crash_looping() >= failing, timeout=120, what="the failing bulk pods to crash-loop")
        assert crash_looping() <= failing
    finally:
        box.stop()
