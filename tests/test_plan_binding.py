"""A plan id is bound to the environment, the target's identity and the parameters that change the apply."""

from __future__ import annotations

import pytest

from runbooks import deploy, incident, kube, params, plans
from runbooks import runbook as rb
from runbooks_sandbox.launch import Sandbox


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """A second sandbox started from the same scenario as the session's `sandbox`."""
    box = Sandbox(tmp_path_factory.mktemp("twin"), "default", tick=1.0).start()
    yield box
    box.stop()


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("RUNBOOKS_ENV", "sandbox")


def rollback_plan(cluster) -> plans.Plan:
    p = params.IncidentParams(expected_context="sandbox", mitigation="rollback")
    run = rb.Run("incident-investigation", p, cluster)
    return run.plan(incident.rollback, namespace="shop", name="checkout")


@pytest.mark.timeout(120)
def test_two_sandboxes_of_one_scenario_give_different_ids(env, cluster, twin):
    other = kube.connect(str(twin.kubeconfig), "sandbox")
    a, b = rollback_plan(cluster), rollback_plan(other)
    # the same scenario: the same changes ...
    assert [c.canonical() for c in a.changes] == [c.canonical() for c in b.changes]
    assert a.digest == b.digest
    # ... but another cluster: another id
    assert a.id != b.id
    for plan, c in ((a, cluster), (b, other)):
        uid = kube.request(c, "GET", "/api/v1/namespaces/kube-system")["metadata"]["uid"]
        assert plan.binding["targets"]["kubernetes"] == {"server": c.server, "context": "sandbox",
                                                         "cluster_uid": uid}
    assert a.public()["binding"]["env"] == "sandbox"
    # the same cluster again: the same id (an approval given in one run matches in the next)
    assert rollback_plan(cluster).id == a.id


@pytest.mark.timeout(60)
def test_the_environment_name_is_part_of_the_id(cluster, monkeypatch):
    monkeypatch.setenv("RUNBOOKS_ENV", "staging")
    staging = rollback_plan(cluster)
    monkeypatch.setenv("RUNBOOKS_ENV", "prod")
    prod = rollback_plan(cluster)
    assert staging.digest == prod.digest and staging.id != prod.id


def _silence() -> plans.Change:
    return plans.Change(target="alertmanager", operation="create", kind="Silence", name="checkout",
                        body={"matchers": [], "duration_seconds": 7200, "comment": "c", "createdBy": "me"})


@pytest.mark.timeout(60)
def test_the_alertmanager_url_is_part_of_a_silence_id(env, cluster):
    ids = set()
    for url in ("http://127.0.0.1:19093", "http://127.0.0.1:29093", "http://127.0.0.1:29093/"):
        p = params.IncidentParams(alertmanager_url=url, mitigation="silence")
        plan = rb.Run("incident-investigation", p, cluster).bind(plans.Plan([_silence()]))
        assert plan.binding["targets"]["alertmanager"] == {"url": url.rstrip("/")}
        ids.add(plan.id)
    assert len(ids) == 2  # the third is the second's Alertmanager


@pytest.mark.timeout(60)
def test_parameters_that_change_the_apply_are_part_of_the_id(env, cluster):
    change = plans.Change(operation="delete", kind="ConfigMap", namespace="web", name="x")
    spec_ids = set()
    for auto, timeout in ((False, 300), (True, 300), (False, 600)):
        p = deploy.ProvisionParams(auto_rollback=auto, timeout_seconds=timeout)
        plan = rb.Run("provision-service", p, cluster).bind(
            plans.Plan([change]), helm={"release": "web", "namespace": "web", "context": "sandbox"})
        spec_ids.add(plan.id)
    assert len(spec_ids) == 3
    # Helm's release, namespace and context are part of it too
    p = deploy.ProvisionParams()
    run = rb.Run("provision-service", p, cluster)
    ids = {run.bind(plans.Plan([change]), helm=h).id for h in (
        {"release": "web", "namespace": "web", "context": "sandbox"},
        {"release": "web2", "namespace": "web", "context": "sandbox"},
        {"release": "web", "namespace": "web", "context": "prod"})}
    assert len(ids) == 3


def test_an_unbound_plan_keeps_its_pinned_id():
    change = plans.Change(operation="delete", kind="ConfigMap", namespace="web", name="x")
    plan = plans.Plan([change])
    assert plan.id == plan.digest and plan.public()["binding"] == {}
