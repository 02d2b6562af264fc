"""Patches and server-side apply behave like the Kubernetes API server's."""

import copy

import pytest

from runbooks_sandbox.patch import (
    ApplyConflict,
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    record_update,
    server_side_apply,
)
from runbooks_sandbox.resources import Registry

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:05:00Z"


def deployment():
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web"},
            "finalizers": ["a"],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "name": "http"}],
                        },
                        {"name": "log", "image": "busybox"},
                    ],
                    "tolerations": [{"key": "x", "operator": "Exists"}],
                },
            },
        },
    }


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def containers(obj):
    return [(c["name"], c.get("image")) for c in pod_spec(obj)["containers"]]


# --- JSON patch -----------------------------------------------------------------

JSON_PATCHES = [
    (
        [{"op": "replace", "path": "/spec/replicas", "value": 3}],
        lambda o: o["spec"]["replicas"] == 3,
    ),
    (
        [{"op": "add", "path": "/metadata/labels/tier", "value": "fe"}],
        lambda o: o["metadata"]["labels"]["tier"] == "fe",
    ),
    (
        [{"op": "remove", "path": "/metadata/finalizers"}],
        lambda o: "finalizers" not in o["metadata"],
    ),
    (
        [
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 0},
        ],
        lambda o: o["spec"]["replicas"] == 0,
    ),
    (
        [{"op": "move", "from": "/metadata/labels", "path": "/metadata/annotations"}],
        lambda o: o["metadata"]["annotations"] == {"app": "web"} and "labels" not in o["metadata"],
    ),
    (
        [{"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/name"}],
        lambda o: o["metadata"]["labels"]["name"] == "web",
    ),
    (
        [{"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "c3"}}],
        lambda o: pod_spec(o)["containers"][-1]["name"] == "c3",
    ),
]


@pytest.mark.parametrize(("ops", "check"), JSON_PATCHES)
def test_json_patch_operations(ops, check):
    original = deployment()
    assert check(apply_json_patch(original, ops))
    assert original == deployment()


JSON_PATCH_ERRORS = [
    (
        [{"op": "test", "path": "/spec/replicas", "value": 5}],
        422,
        "testing value /spec/replicas failed: test failed",
    ),
    (
        [{"op": "remove", "path": "/spec/paused"}],
        422,
        'remove operation does not apply: doc is missing path: "/spec/paused": missing value',
    ),
    (
        [{"op": "add", "path": "/spec/strategy/type", "value": "Recreate"}],
        422,
        'add operation does not apply: doc is missing path: "/spec/strategy/type": missing value',
    ),
    (
        [{"op": "replace", "path": "/spec/paused", "value": True}],
        422,
        "replace operation does not apply: doc is missing key: /spec/paused: missing value",
    ),
    ([{"op": "frobnicate", "path": "/spec"}], 422, "Unexpected kind: frobnicate"),
    ({"op": "add"}, 400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
]


@pytest.mark.parametrize(("ops", "code", "message"), JSON_PATCH_ERRORS)
def test_json_patch_errors(ops, code, message):
    with pytest.raises(PatchError) as caught:
        apply_json_patch(deployment(), ops)
    assert (caught.value.code, str(caught.value)) == (code, message)


# --- JSON merge patch -------------------------------------------------------------

MERGE_PATCHES = [
    ({"spec": {"replicas": 5}}, lambda o: o["spec"]["replicas"] == 5 and o["spec"]["selector"]),
    (
        {"metadata": {"labels": {"app": None, "tier": "fe"}}},
        lambda o: o["metadata"]["labels"] == {"tier": "fe"},
    ),
    (
        {"spec": {"template": {"spec": {"containers": [{"name": "only"}]}}}},
        lambda o: pod_spec(o)["containers"] == [{"name": "only"}],
    ),
    ({"metadata": {"finalizers": None}}, lambda o: "finalizers" not in o["metadata"]),
    ({"status": {"replicas": 2}}, lambda o: o["status"] == {"replicas": 2}),
]


@pytest.mark.parametrize(("patch", "check"), MERGE_PATCHES)
def test_merge_patch(patch, check):
    original = deployment()
    assert check(apply_merge_patch(original, patch))
    assert original == deployment()


def test_merge_patch_must_be_an_object():
    with pytest.raises(PatchError):
        apply_merge_patch(deployment(), [1, 2])


# --- strategic merge patch -------------------------------------------------------

SMP_CASES = [
    (
        "keeps a container the patch does not mention",
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}},
        lambda o: containers(o) == [("web", "nginx:2"), ("log", "busybox")],
    ),
    (
        "a new container is merged in first, as on the real server",
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "envoy"}]}}}},
        lambda o: containers(o) == [("side", "envoy"), ("web", "nginx:1"), ("log", "busybox")],
    ),
    (
        "$patch: delete removes a container",
        {"spec": {"template": {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}}}},
        lambda o: containers(o) == [("web", "nginx:1")],
    ),
    (
        "env merges by name",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                            }
                        ]
                    }
                }
            }
        },
        lambda o: (
            pod_spec(o)["containers"][0]["env"]
            == [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "3"},
                {"name": "C", "value": "4"},
            ]
        ),
    ),
    (
        "container ports merge by containerPort",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "web", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
                        ]
                    }
                }
            }
        },
        lambda o: (
            pod_spec(o)["containers"][0]["ports"]
            == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
        ),
    ),
    (
        "args are atomic",
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["--c"]}]}}}},
        lambda o: pod_spec(o)["containers"][0]["args"] == ["--c"],
    ),
    (
        "tolerations are atomic",
        {"spec": {"template": {"spec": {"tolerations": [{"key": "y", "operator": "Exists"}]}}}},
        lambda o: pod_spec(o)["tolerations"] == [{"key": "y", "operator": "Exists"}],
    ),
    (
        "null deletes a field",
        {"metadata": {"labels": {"app": None}}, "spec": {"replicas": None}},
        lambda o: o["metadata"]["labels"] == {} and "replicas" not in o["spec"],
    ),
    (
        "finalizers merge as a set, new ones first",
        {"metadata": {"finalizers": ["b", "a"]}},
        lambda o: o["metadata"]["finalizers"] == ["b", "a"],
    ),
    (
        "$deleteFromPrimitiveList removes finalizers",
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}},
        lambda o: "finalizers" not in o["metadata"],
    ),
    (
        "$setElementOrder orders the merged list",
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "log"}, {"name": "web"}],
                        "containers": [{"name": "web", "image": "nginx:3"}],
                    }
                }
            }
        },
        lambda o: containers(o) == [("log", "busybox"), ("web", "nginx:3")],
    ),
    (
        "$patch: replace on a list element replaces the list",
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}
                }
            }
        },
        lambda o: containers(o) == [("only", "x")],
    ),
    (
        "$patch: replace on a map replaces the map",
        {"spec": {"selector": {"$patch": "replace", "matchLabels": {"run": "web"}}}},
        lambda o: o["spec"]["selector"] == {"matchLabels": {"run": "web"}},
    ),
    (
        "$patch: delete on a map empties it",
        {"spec": {"template": {"metadata": {"$patch": "delete"}}}},
        lambda o: o["spec"]["template"]["metadata"] == {},
    ),
    (
        "$retainKeys drops keys it does not list",
        {"spec": {"$retainKeys": ["replicas", "template"], "replicas": 4}},
        lambda o: o["spec"].keys() == {"replicas", "template"} and o["spec"]["replicas"] == 4,
    ),
    (
        "maps without directives merge",
        {"spec": {"selector": {"matchLabels": {"extra": "1"}}}},
        lambda o: o["spec"]["selector"]["matchLabels"] == {"app": "web", "extra": "1"},
    ),
]


@pytest.mark.parametrize(("name", "patch", "check"), SMP_CASES, ids=[c[0] for c in SMP_CASES])
def test_strategic_merge_patch(name, patch, check):
    original = deployment()
    result = apply_strategic_merge_patch(original, copy.deepcopy(patch))
    assert check(result), result
    assert original == deployment()


def test_service_ports_merge_by_port():
    service = {
        "spec": {
            "ports": [
                {"port": 80, "targetPort": 8080, "name": "http"},
                {"port": 443, "name": "https"},
            ]
        }
    }
    result = apply_strategic_merge_patch(
        service, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}
    )
    assert result["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080, "name": "http"},
        {"port": 443, "name": "https", "targetPort": 8443},
    ]


SMP_ERRORS = [
    ({"spec": {"$patch": "merge"}}, 422, "unknown patch type: merge in map: map[$patch:merge]"),
    (
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "$patch": "merge"}]}}}},
        422,
        "merging lists cannot yet be specified in the patch",
    ),
    (
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "$patch": "bogus"}]}}}},
        422,
        "unknown patch type: bogus in map: map[$patch:bogus name:web]",
    ),
    (
        {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
        422,
        "map: map[image:x] does not contain declared merge key: name",
    ),
    ({"spec": {"$fancy": 1}}, 400, 'strict decoding error: unknown field "spec.$fancy"'),
    (
        {"spec": {"$retainKeys": ["replicas"], "paused": True}},
        400,
        "invalid patch format of retainKeys",
    ),
    (
        {"metadata": {"$deleteFromPrimitiveList": ["a"]}},
        400,
        "invalid patch format of primitive list",
    ),
    (
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "web"}],
                        "containers": [{"name": "new"}],
                    }
                }
            }
        },
        422,
        "The order in patch list:\n[map[name:new]]\n doesn't match $setElementOrder list:\n[map[name:web]]\n",
    ),
]


@pytest.mark.parametrize(("patch", "code", "message"), SMP_ERRORS)
def test_strategic_merge_patch_errors(patch, code, message):
    with pytest.raises(PatchError) as caught:
        apply_strategic_merge_patch(deployment(), patch)
    assert (caught.value.code, str(caught.value)) == (code, message)


# --- server-side apply -------------------------------------------------------------


def config(**labels):
    """An apply configuration as `kubectl apply --server-side` sends it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web", **labels}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }


def apply(live, applied, manager="kubectl", force=False, now=T0):
    return server_side_apply(
        live, applied, manager=manager, force=force, now=now, api_version="apps/v1"
    )


def entries(obj):
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_apply_creates_the_object_and_records_its_fields():
    obj = apply(None, config(tier="fe"))
    assert obj["metadata"]["labels"] == {"app": "web", "tier": "fe"}
    assert obj["metadata"]["managedFields"] == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"web"}': {
                                    ".": {},
                                    "f:image": {},
                                    "f:name": {},
                                    "f:ports": {
                                        'k:{"containerPort":80,"protocol":"TCP"}': {
                                            ".": {},
                                            "f:containerPort": {},
                                        }
                                    },
                                }
                            }
                        },
                    },
                },
            },
        }
    ]


def test_reapply_removes_a_label_the_manager_dropped():
    first = apply(None, config(tier="fe"))
    second = apply(first, config(), now=T1)
    assert second["metadata"]["labels"] == {"app": "web"}
    assert entries(second)[("kubectl", "Apply")]["f:metadata"] == {"f:labels": {"f:app": {}}}
    assert second["metadata"]["managedFields"][0]["time"] == T1


def test_reapply_keeps_a_dropped_field_another_manager_also_owns():
    first = apply(None, config(tier="fe"))
    shared = apply(
        first,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "fe"}},
        },
        manager="labeler",
    )
    second = apply(shared, config())
    assert second["metadata"]["labels"] == {"app": "web", "tier": "fe"}


def test_dropping_a_container_removes_it():
    two = config()
    pod_spec(two)["containers"].append({"name": "side", "image": "envoy"})
    first = apply(None, two)
    second = apply(first, config())
    assert containers(second) == [("web", "nginx:1")]


def scaled_by_hand():
    """Applied by kubectl, then `kubectl scale` (an Update by another manager) set replicas to 5."""
    applied = apply(None, config())
    scaled = copy.deepcopy(applied)
    scaled["spec"]["replicas"] = 5
    return record_update(applied, scaled, manager="kubectl-scale", now=T1, api_version="apps/v1")


def test_apply_conflicts_with_the_manager_that_owns_a_changed_field():
    live = scaled_by_hand()
    with pytest.raises(ApplyConflict) as caught:
        apply(live, config(), now=T1)
    error = caught.value
    assert error.code == 409
    assert (
        str(error)
        == 'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas'
    )
    assert error.conflicts == ['conflict with "kubectl-scale" using apps/v1: .spec.replicas']
    assert error.causes == [
        {
            "type": "FieldManagerConflict",
            "message": 'conflict with "kubectl-scale" using apps/v1',
            "field": ".spec.replicas",
        }
    ]


def test_force_takes_ownership():
    obj = apply(scaled_by_hand(), config(), force=True, now=T1)
    assert obj["spec"]["replicas"] == 2
    assert [(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]] == [
        ("kubectl", "Apply")
    ]
    assert "f:replicas" in entries(obj)[("kubectl", "Apply")]["f:spec"]


def test_applying_the_same_value_shares_ownership():
    desired = config()
    desired["spec"]["replicas"] = 5
    obj = apply(scaled_by_hand(), desired, now=T1)
    owners = entries(obj)
    assert "f:replicas" in owners[("kubectl", "Apply")]["f:spec"]
    assert owners[("kubectl-scale", "Update")] == {"f:spec": {"f:replicas": {}}}


def test_conflicts_with_several_fields_are_listed_per_manager():
    live = scaled_by_hand()
    edited = copy.deepcopy(live)
    pod_spec(edited)["containers"][0]["image"] = "nginx:9"
    live = record_update(live, edited, manager="kubectl-edit", now=T1, api_version="apps/v1")
    with pytest.raises(ApplyConflict) as caught:
        apply(live, config(), now=T1)
    assert str(caught.value) == (
        "Apply failed with 2 conflicts: "
        'conflicts with "kubectl-edit" using apps/v1:\n'
        '- .spec.template.spec.containers[name="web"].image\n'
        'conflicts with "kubectl-scale" using apps/v1:\n'
        "- .spec.replicas"
    )


def test_objects_without_managed_fields_belong_to_before_first_apply():
    live = config()
    live["spec"]["replicas"] = 3
    with pytest.raises(ApplyConflict) as caught:
        apply(live, config(), manager="helm")
    assert 'conflict with "before-first-apply" using apps/v1: .spec.replicas' in str(caught.value)
    forced = apply(live, config(), manager="helm", force=True)
    assert [(e["manager"], e["operation"]) for e in forced["metadata"]["managedFields"]] == [
        ("helm", "Apply"),
        ("before-first-apply", "Update"),
    ]


def test_apply_ignores_status_on_the_main_resource():
    live = apply(None, config())
    live["status"] = {"replicas": 2}
    desired = config()
    desired["status"] = {"replicas": 99}
    obj = apply(live, desired)
    assert obj["status"] == {"replicas": 2}
    assert "f:status" not in entries(obj)[("kubectl", "Apply")]


APPLY_ERRORS = [
    (lambda c: c["metadata"].update(managedFields=[]), 400, "metadata.managedFields must be nil"),
    (
        lambda c: c.update(apiVersion="apps/v1beta1"),
        400,
        "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1",
    ),
    (
        lambda c: pod_spec(c)["containers"].append({"image": "x"}),
        422,
        ".spec.template.spec.containers: element 1: associative list with keys has an element that omits "
        'key field "name" (and doesn\'t have default value)',
    ),
    (
        lambda c: pod_spec(c)["containers"].append({"name": "web"}),
        422,
        '.spec.template.spec.containers: duplicate entries for key [name="web"]',
    ),
]


@pytest.mark.parametrize(("change", "code", "message"), APPLY_ERRORS)
def test_apply_errors(change, code, message):
    bad = config()
    change(bad)
    with pytest.raises(PatchError) as caught:
        apply(None, bad)
    assert (caught.value.code, str(caught.value)) == (code, message)


def test_apply_does_not_mutate_its_inputs():
    live = scaled_by_hand()
    desired = config(tier="fe")
    before = (copy.deepcopy(live), copy.deepcopy(desired))
    apply(live, desired, force=True)
    assert (live, desired) == before


# --- record_update -----------------------------------------------------------------


def test_create_records_an_update_entry():
    obj = record_update(None, config(), manager="kubectl-create", now=T0, api_version="apps/v1")
    [entry] = obj["metadata"]["managedFields"]
    assert (
        entry["manager"],
        entry["operation"],
        entry["apiVersion"],
        entry["time"],
        entry["fieldsType"],
    ) == ("kubectl-create", "Update", "apps/v1", T0, "FieldsV1")
    fields = entry["fieldsV1"]
    assert fields["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}
    assert fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}'][
        "f:ports"
    ] == {".": {}, 'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}


def test_update_moves_changed_fields_and_drops_removed_ones():
    created = record_update(
        None, config(tier="fe"), manager="kubectl-create", now=T0, api_version="apps/v1"
    )
    edited = copy.deepcopy(created)
    edited["spec"]["replicas"] = 4
    del edited["metadata"]["labels"]["tier"]
    obj = record_update(created, edited, manager="kubectl-edit", now=T1, api_version="apps/v1")
    owners = entries(obj)
    assert owners[("kubectl-edit", "Update")] == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in owners[("kubectl-create", "Update")]["f:spec"]
    assert owners[("kubectl-create", "Update")]["f:metadata"] == {
        "f:labels": {".": {}, "f:app": {}}
    }
    assert [e["manager"] for e in obj["metadata"]["managedFields"]] == [
        "kubectl-create",
        "kubectl-edit",
    ]


def test_update_without_changes_keeps_the_entries():
    created = record_update(None, config(), manager="kubectl-create", now=T0, api_version="apps/v1")
    same = record_update(
        created, copy.deepcopy(created), manager="other", now=T1, api_version="apps/v1"
    )
    assert same["metadata"]["managedFields"] == created["metadata"]["managedFields"]


def test_status_writes_are_tracked_per_subresource():
    created = record_update(None, config(), manager="kubectl-create", now=T0, api_version="apps/v1")
    with_status = copy.deepcopy(created)
    with_status["status"] = {"replicas": 2}
    main = record_update(
        created, with_status, manager="kubectl-create", now=T1, api_version="apps/v1"
    )
    assert main["metadata"]["managedFields"] == created["metadata"]["managedFields"]
    via_status = record_update(
        created,
        with_status,
        manager="kube-controller-manager",
        now=T1,
        api_version="apps/v1",
        subresource="status",
    )
    status_entry = via_status["metadata"]["managedFields"][-1]
    assert (status_entry["manager"], status_entry["subresource"], status_entry["fieldsV1"]) == (
        "kube-controller-manager",
        "status",
        {"f:status": {"f:replicas": {}}},
    )


class _RacingStore:
    """A sandbox Store where another writer (a controller) changes the object right after each read."""

    @staticmethod
    def make(races: int):
        from runbooks_sandbox.store import Store

        class RacingStore(Store):
            def find(self, rt, namespace, name):
                live = super().find(rt, namespace, name)
                if live is not None and self.races > 0 and rt.kind == "ConfigMap":
                    self.races -= 1
                    bumped = copy.deepcopy(live)
                    bumped["metadata"].setdefault("labels", {})[f"controller-{self.races}"] = "wrote"
                    super().update(rt, bumped)
                return live

        store = RacingStore(Registry())
        store.races = races
        return store


def _call(api, method, path, body, ctype="application/json"):
    import json

    from runbooks_sandbox.server import Request
    from runbooks_sandbox.store import ApiError

    headers = {"Authorization": f"Bearer {api.token}", "Content-Type": ctype}
    try:
        code, out, _ = api.handle(Request(method, path, headers, json.dumps(body).encode()))
    except ApiError as e:
        return e.code, e.status()
    return code, out


def test_a_patch_applies_to_the_latest_object_when_another_writer_comes_in_between():
    """As the real API server's GuaranteedUpdate: no 409 for a write we never saw, unless the patch pins a version."""
    from runbooks_sandbox.server import ApiServer

    store = _RacingStore.make(races=0)
    api = ApiServer(store.registry, store)
    assert _call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": "default"}})[0] == 201
    path = "/api/v1/namespaces/default/configmaps"
    assert _call(api, "POST", path, {"metadata": {"name": "cm"}, "data": {"a": "1"}})[0] == 201
    stale = store.find(store.registry.by_kind("v1", "ConfigMap"), "default", "cm")["metadata"]["resourceVersion"]
    store.races = 2  # two writes by someone else while this patch is being computed
    code, out = _call(api, "PATCH", f"{path}/cm", {"data": {"b": "2"}}, "application/merge-patch+json")
    assert code == 200, out
    assert out["data"] == {"a": "1", "b": "2"}
    assert set(out["metadata"]["labels"]) == {"controller-0", "controller-1"}  # nothing the others wrote is lost

    store.races = 1  # a patch that names the version it was computed from is a precondition: 409
    code, out = _call(api, "PATCH", f"{path}/cm", {"metadata": {"resourceVersion": stale}, "data": {"c": "3"}},
                      "application/merge-patch+json")
    assert code == 409 and out["reason"] == "Conflict"
    assert "c" not in store.find(store.registry.by_kind("v1", "ConfigMap"), "default", "cm")["data"]
