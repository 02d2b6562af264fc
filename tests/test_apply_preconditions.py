"""Each write of an approved plan carries the resourceVersion its recomputation saw: a change made
in between (a `kubectl set image`) stops the apply with exit 2 instead of being overwritten."""

from __future__ import annotations

import json
import time

import pytest

from runbooks import errors, incident, kube, parameters, plans
from runbooks import runbook as rb


def deployment(cluster, namespace, name, image="nginx:1.27"):
    labels = {"app": name}
    kube.request(cluster, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}})


def get(cluster, namespace, name):
    return kube.request(cluster, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")


def set_image(cluster, namespace, name, image):
    """What `kubectl set image` sends: a strategic merge patch of the container's image."""
    kube.request(cluster, "PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                 body={"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}},
                 content_type="application/strategic-merge-patch+json")


def image(cluster, namespace, name):
    return get(cluster, namespace, name)["spec"]["template"]["spec"]["containers"][0]["image"]


def wait_for_revision(cluster, namespace, name, revision, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        annotations = get(cluster, namespace, name)["metadata"].get("annotations") or {}
        if annotations.get("deployment.kubernetes.io/revision") == revision:
            return
        assert time.monotonic() < deadline, f"{name} never reached revision {revision}"
        time.sleep(0.2)


def wait_available(cluster, namespace, name, timeout=30.0):
    """Until the controller has rolled the Deployment out (it writes status until then)."""
    deadline = time.monotonic() + timeout
    while True:
        d = get(cluster, namespace, name)
        st = d.get("status") or {}
        if st.get("observedGeneration") == d["metadata"]["generation"] and st.get("availableReplicas") == 1 \
                and st.get("updatedReplicas") == 1 and st.get("replicas") == 1:
            return
        assert time.monotonic() < deadline, f"{name} was not rolled out: {st}"
        time.sleep(0.2)


def approved_run(cluster, tmp_path, plan):
    params = parameters.MutatingParams(dry_run=False, approve_plan="0" * 12, expected_context="sandbox",
                                       run_dir=str(tmp_path))
    run = rb.Run("demo", params, cluster)
    run.bind(plan)
    return run


@pytest.mark.timeout(60)
def test_a_change_between_recompute_and_write_stops_the_apply(cluster, namespace, tmp_path):
    deployment(cluster, namespace, "a")
    deployment(cluster, namespace, "b")

    def restarts(cl):
        return plans.rollout_restart(cl, namespace, "a") + plans.rollout_restart(cl, namespace, "b")

    plan = plans.build_plan(cluster, restarts, {})
    run = approved_run(cluster, tmp_path, plan)
    fresh = run.guard(plan)  # recomputed now: the resourceVersions it saw travel with each write
    assert all(c.resource_version for c in fresh.changes)
    set_image(cluster, namespace, "a", "nginx:1.28")  # somebody else's change, just before the PATCH
    with pytest.raises(errors.ApplyConflict, match=f"patch Deployment/{namespace}/a was refused") as exc:
        plans.apply(run, fresh, run.audit_log())
    assert exc.value.exit_code == 2
    # their change stays; nothing of the plan was applied, not even the second change
    assert image(cluster, namespace, "a") == "nginx:1.28"
    for name in ("a", "b"):
        annotations = get(cluster, namespace, name)["spec"]["template"]["metadata"].get("annotations") or {}
        assert plans.RESTARTED_AT not in annotations
    (line,) = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert line["result"].startswith("conflict:") and line["change"]["resource"] == f"Deployment/{namespace}/a"


@pytest.mark.timeout(60)
def test_an_unchanged_object_is_written(cluster, namespace, tmp_path):
    deployment(cluster, namespace, "a")
    wait_available(cluster, namespace, "a")
    plan = plans.build_plan(cluster, plans.rollout_restart, {"namespace": namespace, "name": "a"})
    run = approved_run(cluster, tmp_path, plan)
    fresh = run.guard(plan)
    (result,) = plans.apply(run, fresh, run.audit_log())
    assert result["result"] == "applied"
    assert result["change"]["resource_version"] == fresh.changes[0].resource_version
    annotations = get(cluster, namespace, "a")["spec"]["template"]["metadata"]["annotations"]
    assert annotations[plans.RESTARTED_AT] == result["change"]["diff"][0]["to"]


@pytest.mark.timeout(60)
def test_a_rollback_does_not_overwrite_a_later_set_image(cluster, namespace, tmp_path):
    deployment(cluster, namespace, "web", "nginx:1.26")
    # revision 1 first: a set image the controller sees before its first ReplicaSet is revision 1 itself
    wait_for_revision(cluster, namespace, "web", "1")
    set_image(cluster, namespace, "web", "nginx:1.27")
    wait_for_revision(cluster, namespace, "web", "2")  # the controller records revision 2
    plan = plans.build_plan(cluster, incident.rollback, {"namespace": namespace, "name": "web"})
    assert plan.changes and plan.changes[0].resource_version
    run = approved_run(cluster, tmp_path, plan)
    fresh = run.guard(plan)
    set_image(cluster, namespace, "web", "nginx:1.28")
    with pytest.raises(errors.ApplyConflict):
        plans.apply(run, fresh, run.audit_log())
    assert image(cluster, namespace, "web") == "nginx:1.28"


def test_resource_version_is_not_part_of_the_id():
    a = plans.Change(operation="delete", kind="ConfigMap", namespace="n", name="x", resource_version="1")
    b = a.model_copy(update={"resource_version": "2"})
    assert plans.Plan([a]).id == plans.Plan([b]).id
