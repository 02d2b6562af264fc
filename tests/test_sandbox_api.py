"""The official Python client against the sandbox API over HTTPS: verbs, selectors, semantics."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from runbooks import kube
from runbooks.secrets import redacted_digest

from helpers import raw_request, wait_for


def deployment(name: str, image: str = "nginx:1.27", replicas: int = 1, **labels) -> dict:
    labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": image,
                                                       "ports": [{"containerPort": 8080}]}]}}},
    }


def configmap(name: str, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels},
            "data": {"k": "v"}}


def status_of(e: ApiException) -> dict:
    return json.loads(e.body)


def test_discovery_and_version(empty_cluster):
    version = client.VersionApi(empty_cluster.api_client).get_code()
    assert version.major == "1" and version.minor == "32"
    groups = {g.name for g in client.ApisApi(empty_cluster.api_client).get_api_versions().groups}
    assert {"apps", "networking.k8s.io", "discovery.k8s.io", "apiextensions.k8s.io"} <= groups
    res = client.CoreV1Api(empty_cluster.api_client).get_api_resources()
    pods = next(r for r in res.resources if r.name == "pods")
    assert pods.namespaced and pods.kind == "Pod" and "watch" in pods.verbs and pods.short_names == ["po"]
    assert any(r.name == "pods/log" for r in res.resources)


def test_unauthenticated_request_is_401(empty_sandbox, empty_cluster):
    cfg = client.Configuration()
    cfg.host = empty_sandbox.url
    cfg.ssl_ca_cert = str(empty_sandbox.ca_file)
    cfg.api_key = {"BearerToken": "wrong"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(client.ApiClient(cfg)).list_namespace()
    assert err.value.status == 401
    assert status_of(err.value)["reason"] == "Unauthorized"


def test_tls_is_verified_against_the_kubeconfig_ca(empty_sandbox):
    cfg = client.Configuration()
    cfg.host = empty_sandbox.url
    cfg.api_key = {"BearerToken": empty_sandbox.token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    cfg.retries = 0
    with pytest.raises(Exception) as err:  # no CA given: the system store does not trust it
        client.CoreV1Api(client.ApiClient(cfg)).list_namespace()
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


def test_create_get_update_delete_configmap(empty_cluster, empty_namespace):
    core = empty_cluster.core
    created = core.create_namespaced_config_map(empty_namespace, configmap("cfg", team="a"))
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    got = core.read_namespaced_config_map("cfg", empty_namespace)
    assert got.data == {"k": "v"}
    got.data["k"] = "w"
    updated = core.replace_namespaced_config_map("cfg", empty_namespace, got)
    assert updated.data["k"] == "w"
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(empty_namespace, configmap("cfg"))
    assert err.value.status == 409 and status_of(err.value)["reason"] == "AlreadyExists"
    core.delete_namespaced_config_map("cfg", empty_namespace)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("cfg", empty_namespace)
    body = status_of(err.value)
    assert err.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "cfg" not found'


def test_update_with_stale_resource_version_is_409(empty_cluster, empty_namespace):
    core = empty_cluster.core
    first = core.create_namespaced_config_map(empty_namespace, configmap("stale"))
    first.data = {"k": "1"}
    core.replace_namespaced_config_map("stale", empty_namespace, first)
    first.data = {"k": "2"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("stale", empty_namespace, first)
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(err.value)["message"]


def test_dry_run_leaves_no_trace(empty_cluster, empty_namespace):
    core = empty_cluster.core
    rv_before = core.list_namespaced_config_map(empty_namespace).metadata.resource_version
    out = core.create_namespaced_config_map(empty_namespace, configmap("ghost"), dry_run="All")
    assert out.metadata.name == "ghost"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("ghost", empty_namespace)
    assert err.value.status == 404
    core.create_namespaced_config_map(empty_namespace, configmap("real"))
    rv_mid = core.list_namespaced_config_map(empty_namespace).metadata.resource_version
    core.patch_namespaced_config_map("real", empty_namespace, {"data": {"k": "dry"}}, dry_run="All")
    core.delete_namespaced_config_map("real", empty_namespace, dry_run="All")
    assert core.read_namespaced_config_map("real", empty_namespace).data == {"k": "v"}
    assert core.list_namespaced_config_map(empty_namespace).metadata.resource_version == rv_mid
    assert int(rv_mid) > int(rv_before)


def test_bad_dry_run_value_is_400(empty_cluster, empty_namespace):
    with pytest.raises(ApiException) as err:
        empty_cluster.core.create_namespaced_config_map(empty_namespace, configmap("x"), dry_run="Some")
    assert err.value.status == 400


def test_invalid_object_is_422_with_field_path(empty_cluster, empty_namespace):
    bad = deployment("Bad_Name")
    with pytest.raises(ApiException) as err:
        empty_cluster.apps.create_namespaced_deployment(empty_namespace, bad)
    body = status_of(err.value)
    assert err.value.status == 422 and body["reason"] == "Invalid"
    assert any(c["field"] == "metadata.name" for c in body["details"]["causes"])


def test_label_selectors(empty_cluster, empty_namespace):
    core = empty_cluster.core
    for name, labels in [("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db", "env": "prod"}),
                         ("c", {"tier": "web"}), ("d", {})]:
        core.create_namespaced_config_map(empty_namespace, configmap(name, **labels))

    def names(selector):
        return sorted(i.metadata.name for i in
                      core.list_namespaced_config_map(empty_namespace, label_selector=selector).items)

    assert names("tier=web") == ["a", "c"]
    assert names("tier==web") == ["a", "c"]
    assert names("tier!=web") == ["b", "d"]
    assert names("tier in (web,db)") == ["a", "b", "c"]
    assert names("tier notin (web)") == ["b", "d"]
    assert names("env") == ["a", "b"]
    assert names("!env") == ["c", "d"]
    assert names("tier=web,env=prod") == ["a"]
    with pytest.raises(ApiException) as err:
        names("tier in web")
    assert err.value.status == 400


def test_field_selectors(empty_cluster, empty_namespace):
    core = empty_cluster.core
    for name in ("one", "two"):
        core.create_namespaced_config_map(empty_namespace, configmap(name))
    items = core.list_config_map_for_all_namespaces(field_selector=f"metadata.name=one,metadata.namespace="
                                                    f"{empty_namespace}").items
    assert [i.metadata.name for i in items] == ["one"]
    secret = {"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
              "stringData": {"tls.crt": "x", "tls.key": "y"}}
    core.create_namespaced_secret(empty_namespace, secret)
    core.create_namespaced_secret(empty_namespace, {"metadata": {"name": "opaque"}, "stringData": {"a": "b"}})
    tls = core.list_namespaced_secret(empty_namespace, field_selector="type=kubernetes.io/tls").items
    assert [s.metadata.name for s in tls] == ["tls"]
    # stringData folded into base64 data (seen through the product's client: as digests of those values)
    assert tls[0].data == {"tls.crt": redacted_digest("eA=="), "tls.key": redacted_digest("eQ==")}
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map(empty_namespace, field_selector="data.k=v")
    assert err.value.status == 400


def test_pagination_over_2000_pods_returns_each_once(empty_sandbox, empty_cluster, empty_namespace):
    rt = empty_sandbox.registry.lookup("", "v1", "pods")
    for i in range(2000):  # straight into the store: this test is about listing, not scheduling
        empty_sandbox.store.create(rt, {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"p-{i:04d}", "namespace": empty_namespace},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "nodeName": "nowhere"}})
    seen = []
    pages = 0
    for page in kube.iter_pages(empty_cluster, "pods", empty_namespace, page_size=300):
        pages += 1
        seen.extend(p["metadata"]["name"] for p in page)
        if pages == 2:  # writes during the walk must not disturb the snapshot
            empty_sandbox.store.create(rt, {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": "p-late", "namespace": empty_namespace},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "nodeName": "nowhere"}})
    assert pages == 7
    assert len(seen) == 2000 and len(set(seen)) == 2000
    first = empty_cluster.core.list_namespaced_pod(empty_namespace, limit=500)
    assert len(first.items) == 500 and first.metadata._continue
    assert first.metadata.remaining_item_count == 1501


def test_expired_continue_token_is_410(empty_cluster, empty_namespace):
    with pytest.raises(ApiException) as err:
        empty_cluster.core.list_namespaced_pod(empty_namespace, limit=1, _continue="eyJzIjoibm9wZSIsIm8iOjF9")
    assert err.value.status == 410


def test_strategic_merge_keeps_unmentioned_container(empty_cluster, empty_namespace):
    d = deployment("smp")
    d["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1.30"})
    empty_cluster.apps.create_namespaced_deployment(empty_namespace, d)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28",
                                                            "env": [{"name": "A", "value": "1"}]}]}}}}
    out = empty_cluster.apps.patch_namespaced_deployment("smp", empty_namespace, patch)  # strategic by default
    containers = {c.name: c for c in out.spec.template.spec.containers}
    assert set(containers) == {"web", "sidecar"}
    assert containers["web"].image == "nginx:1.28" and containers["sidecar"].image == "envoy:1.30"
    assert out.metadata.generation == 2


def test_json_and_merge_patch(empty_cluster, empty_namespace):
    core = empty_cluster.core
    core.create_namespaced_config_map(empty_namespace, configmap("p", a="1"))
    out = core.patch_namespaced_config_map(
        "p", empty_namespace, [{"op": "add", "path": "/data/extra", "value": "x"}],
        _content_type="application/json-patch+json")
    assert out.data == {"k": "v", "extra": "x"}
    out = core.patch_namespaced_config_map("p", empty_namespace, {"data": {"k": None}},
                                           _content_type="application/merge-patch+json")
    assert out.data == {"extra": "x"}


def test_server_side_apply_creates_then_merges(empty_cluster, empty_namespace):
    core = empty_cluster.core
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": empty_namespace},
            "data": {"a": "1"}}
    out = core.patch_namespaced_config_map("ssa", empty_namespace, body, field_manager="runbooks",
                                           _content_type="application/apply-patch+yaml")
    assert out.data == {"a": "1"}
    assert any(m.manager == "runbooks" and m.operation == "Apply" for m in out.metadata.managed_fields)
    body["data"] = {"a": "2", "b": "3"}
    out = core.patch_namespaced_config_map("ssa", empty_namespace, body, field_manager="runbooks",
                                           _content_type="application/apply-patch+yaml")
    assert out.data == {"a": "2", "b": "3"}


def test_delete_collection_with_selector(empty_cluster, empty_namespace):
    core = empty_cluster.core
    for name, tier in (("x1", "a"), ("x2", "a"), ("x3", "b")):
        core.create_namespaced_config_map(empty_namespace, configmap(name, tier=tier))
    core.delete_collection_namespaced_config_map(empty_namespace, label_selector="tier=a")
    left = [c.metadata.name for c in core.list_namespaced_config_map(empty_namespace).items]
    assert left == ["x3"]


def test_watch_streams_changes_and_ends_at_timeout(empty_cluster, empty_namespace):
    core = empty_cluster.core
    rv = core.list_namespaced_config_map(empty_namespace).metadata.resource_version

    def writer():
        time.sleep(0.3)
        core.create_namespaced_config_map(empty_namespace, configmap("w"))
        core.patch_namespaced_config_map("w", empty_namespace, {"data": {"k": "2"}})
        core.delete_namespaced_config_map("w", empty_namespace)

    threading.Thread(target=writer).start()
    seen = []
    w = watch.Watch()
    # a generous server timeout, ended by the client at the last event: a slow writer cannot outlast it
    for e in w.stream(core.list_namespaced_config_map, empty_namespace, resource_version=rv, timeout_seconds=60):
        seen.append((e["type"], e["object"].metadata.name))
        if e["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    # with nothing to send, the server ends the watch at its timeout
    rv = core.list_namespaced_config_map(empty_namespace).metadata.resource_version
    started = time.monotonic()
    quiet = list(watch.Watch().stream(core.list_namespaced_config_map, empty_namespace, resource_version=rv,
                                      timeout_seconds=2))
    elapsed = time.monotonic() - started
    assert quiet == [] and 1.5 <= elapsed < 30


def test_watch_with_too_old_resource_version_is_410(empty_sandbox, empty_cluster, empty_namespace):
    empty_sandbox.store._history.clear()  # as after an etcd compaction
    empty_cluster.core.create_namespaced_config_map(empty_namespace, configmap("after-compaction"))
    resp = empty_cluster.core.list_namespaced_config_map(
        empty_namespace, watch=True, resource_version="1", timeout_seconds=1, _preload_content=False)
    event = json.loads(resp.data.decode().splitlines()[0])
    # as the real watch cache does: the stream opens and one ERROR event carries the 410 Status
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


def test_crd_serves_custom_objects_with_status_subresource(empty_cluster):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
    client.ApiextensionsV1Api(empty_cluster.api_client).create_custom_resource_definition(crd)
    custom = empty_cluster.custom
    empty_cluster.core.create_namespace({"metadata": {"name": "widgets"}})
    custom.create_namespaced_custom_object("example.com", "v1", "widgets", "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}})
    listed = custom.list_namespaced_custom_object("example.com", "v1", "widgets", "widgets")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1"]
    assert listed["kind"] == "WidgetList" and listed["apiVersion"] == "example.com/v1"
    out = custom.patch_namespaced_custom_object_status(
        "example.com", "v1", "widgets", "widgets", "w1",
        {"status": {"ready": True}, "spec": {"size": 99}})
    assert out["status"] == {"ready": True}
    assert out["spec"] == {"size": 3}  # the status subresource never changes spec
    got = custom.get_namespaced_custom_object("example.com", "v1", "widgets", "widgets", "w1")
    assert got["spec"] == {"size": 3} and got["status"] == {"ready": True}


def test_every_list_has_kind_and_api_version(cluster):
    for resource in ("pods", "deployments", "ingresses", "certificates", "endpointslices"):
        data = next(kube.iter_pages(cluster, resource))
        assert isinstance(data, list)
    body = json.loads(kube.get_raw(cluster, "/apis/apps/v1/deployments"))
    assert body["kind"] == "DeploymentList" and body["apiVersion"] == "apps/v1"


def test_pod_logs_honour_tail_and_since(cluster):
    pod = wait_for(lambda: next((p for p in kube.iter_objects(cluster, "pods", "shop", label_selector="app=cart")
                                 if p["status"].get("phase") == "Running"), None), what="a running cart pod")
    name = pod["metadata"]["name"]
    tail = kube.pod_logs(cluster, "shop", name, tail_lines=5)
    assert len(tail.splitlines()) == 5
    recent = kube.pod_logs(cluster, "shop", name, since_seconds=60, timestamps=True)
    lines = recent.splitlines()
    assert lines, "a running pod logs within a minute"
    now = time.time()
    for line in lines:
        stamp = kube.parse_time(line.split(" ", 1)[0])
        assert now - stamp.timestamp() <= 61
    with pytest.raises(Exception) as err:
        kube.pod_logs(cluster, "shop", name, previous=True)
    assert "previous terminated container" in str(err.value)


def test_unknown_fields_warn_by_default_and_fail_when_strict(empty_cluster, empty_namespace):
    path = f"/api/v1/namespaces/{empty_namespace}/configmaps"
    status, headers, _ = raw_request(empty_cluster, "POST", path, {**configmap("unknown"), "bogus": 1})
    assert status == 201
    assert headers.get("Warning") == '299 - "unknown field \\"bogus\\""'
    stored = json.loads(kube.get_raw(empty_cluster, f"{path}/unknown"))
    assert "bogus" not in stored  # pruned, as the API server decodes into the typed object
    status, _, text = raw_request(empty_cluster, "POST", path, {**configmap("strict"), "bogus": 1},
                                  query=[("fieldValidation", "Strict")])
    assert status == 400 and 'unknown field \\"bogus\\"' in text
