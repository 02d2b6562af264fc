"""Authentication and RBAC in the sandbox, through the official client as a ServiceAccount would use it."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from runbooks_sandbox import auth

from helpers import wait_for


def _admin(sandbox) -> client.ApiClient:
    return _client(sandbox, sandbox.token)


def _client(sandbox, token: str, headers: dict | None = None) -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = sandbox.url
    cfg.ssl_ca_cert = str(sandbox.ca_file)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    api = client.ApiClient(cfg)
    for k, v in (headers or {}).items():
        api.set_default_header(k, v)
    return api


@pytest.fixture
def robot(sandbox, namespace):
    """A ServiceAccount with no bindings and a bound token for it (the TokenRequest API)."""
    core = client.CoreV1Api(_admin(sandbox))
    name = f"robot-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    tr = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}})
    return name, tr.status.token


def _bind(sandbox, namespace: str, sa: str, role: str) -> None:
    rbac = client.RbacAuthorizationV1Api(_admin(sandbox))
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": f"{sa}-{role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]})


def _status(e: ApiException) -> dict:
    return json.loads(e.body)


def test_unbound_service_account_gets_the_real_403(sandbox, namespace, robot):
    sa, token = robot
    core = client.CoreV1Api(_client(sandbox, token))
    with pytest.raises(ApiException) as e:
        core.list_namespaced_pod(namespace)
    assert e.value.status == 403
    body = _status(e.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (f'pods is forbidden: User "system:serviceaccount:{namespace}:{sa}" cannot list '
                               f'resource "pods" in API group "" in the namespace "{namespace}"')
    assert body["details"] == {"kind": "pods"}
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(_client(sandbox, token)).list_node()
    assert _status(e.value)["message"].endswith('cannot list resource "nodes" in API group "" at the cluster scope')


def test_view_reads_but_cannot_write_or_read_secrets_and_edit_may_write(sandbox, namespace, robot):
    sa, token = robot
    user = f"system:serviceaccount:{namespace}:{sa}"
    _bind(sandbox, namespace, sa, "view")
    api = _client(sandbox, token)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert core.list_namespaced_pod(namespace).items == []
    assert apps.list_namespaced_deployment(namespace).items == []
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert _status(e.value)["message"] == (f'configmaps is forbidden: User "{user}" cannot create resource '
                                           f'"configmaps" in API group "" in the namespace "{namespace}"')
    with pytest.raises(ApiException) as e:
        core.read_namespaced_secret("anything", namespace)
    assert _status(e.value)["message"] == (f'secrets "anything" is forbidden: User "{user}" cannot get resource '
                                           f'"secrets" in API group "" in the namespace "{namespace}"')
    with pytest.raises(ApiException) as e:
        apps.delete_namespaced_deployment("web", namespace)
    assert _status(e.value)["message"].startswith('deployments.apps "web" is forbidden: ')
    assert _status(e.value)["details"] == {"kind": "deployments", "group": "apps", "name": "web"}
    _bind(sandbox, namespace, sa, "edit")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}, "data": {"a": "b"}})
    assert core.list_namespaced_secret(namespace).items is not None
    with pytest.raises(ApiException) as e:  # edit does not grant RBAC writes
        client.RbacAuthorizationV1Api(api).create_namespaced_role(namespace, {"metadata": {"name": "r"}, "rules": []})
    assert e.value.status == 403


def test_bad_expired_and_orphaned_tokens_are_401(sandbox, namespace, robot):
    sa, token = robot
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(_client(sandbox, token[:-4] + "AAAA")).list_namespaced_pod(namespace)
    assert e.value.status == 401
    core = client.CoreV1Api(_admin(sandbox))
    core.delete_namespaced_service_account(sa, namespace)
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(_client(sandbox, token)).list_namespaced_pod(namespace)
    assert e.value.status == 401 and _status(e.value)["message"] == "Unauthorized"


def test_token_request_refuses_short_lifetimes(sandbox, namespace, robot):
    sa, _ = robot
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(_admin(sandbox)).create_namespaced_service_account_token(
            sa, namespace, {"spec": {"expirationSeconds": 60}})
    assert e.value.status == 422


def test_legacy_token_secret_is_filled_and_authenticates(sandbox, namespace, robot):
    sa, _ = robot
    core = client.CoreV1Api(_admin(sandbox))
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": f"{sa}-token", "annotations": {auth.SA_NAME_ANNOTATION: sa}},
        "type": "kubernetes.io/service-account-token"})
    secret = wait_for(lambda: (s := core.read_namespaced_secret(f"{sa}-token", namespace)).data
                      and s.data.get("token") and s, what="the token controller to fill the Secret")
    assert base64.b64decode(secret.data["namespace"]).decode() == namespace
    assert b"BEGIN CERTIFICATE" in base64.b64decode(secret.data["ca.crt"])
    token = base64.b64decode(secret.data["token"]).decode()
    review = client.AuthenticationV1Api(_client(sandbox, token)).create_self_subject_review({})
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:{sa}"
    assert review.status.user_info.groups == ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                              "system:authenticated"]
    core.delete_namespaced_secret(f"{sa}-token", namespace)
    with pytest.raises(ApiException) as e:
        client.AuthenticationV1Api(_client(sandbox, token)).create_self_subject_review({})
    assert e.value.status == 401


def test_access_reviews(sandbox, namespace, robot):
    sa, token = robot
    user = f"system:serviceaccount:{namespace}:{sa}"
    _bind(sandbox, namespace, sa, "view")
    mine = client.AuthorizationV1Api(_client(sandbox, token))
    review = mine.create_self_subject_access_review({"spec": {"resourceAttributes": {
        "namespace": namespace, "verb": "list", "resource": "pods"}}})
    assert review.status.allowed is True
    assert review.status.reason == (f'RBAC: allowed by RoleBinding "{namespace}/{sa}-view" of ClusterRole "view" '
                                    f'to ServiceAccount "{sa}/{namespace}"')
    review = mine.create_self_subject_access_review({"spec": {"resourceAttributes": {
        "namespace": namespace, "verb": "get", "resource": "secrets"}}})
    assert review.status.allowed is False
    rules = mine.create_self_subject_rules_review({"spec": {"namespace": namespace}}).status
    assert any("pods" in r.resources and "list" in r.verbs for r in rules.resource_rules)
    assert any("/healthz" in r.non_resource_urls for r in rules.non_resource_rules)
    admin = client.AuthorizationV1Api(_admin(sandbox))
    sar = admin.create_subject_access_review({"spec": {"user": user, "groups": ["system:authenticated"],
                                                       "resourceAttributes": {"namespace": namespace,
                                                                              "verb": "watch",
                                                                              "group": "apps",
                                                                              "resource": "deployments"}}})
    assert sar.status.allowed is True
    lsar = admin.create_namespaced_local_subject_access_review(namespace, {"spec": {
        "user": user, "resourceAttributes": {"namespace": namespace, "verb": "delete", "resource": "pods"}}})
    assert lsar.status.allowed is False
    # the caller needs RBAC for SubjectAccessReview itself
    with pytest.raises(ApiException) as e:
        mine.create_subject_access_review({"spec": {"user": "bob", "resourceAttributes": {"verb": "get"}}})
    assert _status(e.value)["message"] == (f'subjectaccessreviews.authorization.k8s.io is forbidden: User "{user}" '
                                           'cannot create resource "subjectaccessreviews" in API group '
                                           '"authorization.k8s.io" at the cluster scope')


def test_impersonation(sandbox, namespace, robot):
    sa, token = robot
    user = f"system:serviceaccount:{namespace}:{sa}"
    as_sa = _client(sandbox, sandbox.token, {"Impersonate-User": user})
    who = client.AuthenticationV1Api(as_sa).create_self_subject_review({}).status.user_info
    assert who.username == user
    assert who.groups == ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(as_sa).list_namespaced_pod(namespace)
    assert e.value.status == 403
    as_group = _client(sandbox, sandbox.token, {"Impersonate-User": "jane", "Impersonate-Group": "system:masters"})
    assert client.CoreV1Api(as_group).list_namespaced_pod(namespace).items == []
    # a ServiceAccount may not impersonate without the impersonate verb
    with pytest.raises(ApiException) as e:
        client.CoreV1Api(_client(sandbox, token, {"Impersonate-User": "jane"})).list_namespaced_pod(namespace)
    assert _status(e.value)["message"] == (f'users "jane" is forbidden: User "{user}" cannot impersonate resource '
                                           '"users" in API group "" at the cluster scope')


def test_default_cluster_roles_are_aggregated(sandbox):
    rbac = client.RbacAuthorizationV1Api(_admin(sandbox))
    view = rbac.read_cluster_role("view")
    assert view.aggregation_rule.cluster_role_selectors[0].match_labels == {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}
    assert any("pods" in r.resources and r.api_groups == [""] for r in view.rules)
    assert not any("secrets" in (r.resources or []) for r in view.rules)
    edit = rbac.read_cluster_role("edit")
    assert any("secrets" in (r.resources or []) and "create" in r.verbs for r in edit.rules)
    admin = rbac.read_cluster_role("admin")
    assert any("rolebindings" in (r.resources or []) for r in admin.rules)
    assert rbac.read_cluster_role_binding("cluster-admin").subjects[0].name == "system:masters"
    name = f"widgets-view-{uuid.uuid4().hex[:6]}"
    rbac.create_cluster_role({"metadata": {"name": name, "labels": {
        "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}]})
    try:
        wait_for(lambda: any("widgets" in (r.resources or []) for r in rbac.read_cluster_role("view").rules),
                 what="the aggregation controller to add the rule to view")
        assert any("widgets" in (r.resources or []) for r in rbac.read_cluster_role("admin").rules)
    finally:
        rbac.delete_cluster_role(name)
    wait_for(lambda: not any("widgets" in (r.resources or []) for r in rbac.read_cluster_role("view").rules),
             what="the rule to leave view again")


def test_rule_matching():
    attrs = {"verb": "get", "group": "apps", "resource": "deployments", "subresource": "scale", "name": "web"}
    assert auth.rule_allows({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}, attrs)
    assert auth.rule_allows({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}, attrs)
    assert not auth.rule_allows({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}, attrs)
    assert not auth.rule_allows({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments/scale"],
                                 "resourceNames": ["other"]}, attrs)
    assert auth.rule_allows({"verbs": ["get"], "nonResourceURLs": ["/api/*"]}, {"verb": "get", "path": "/api/v1"})
    assert not auth.rule_allows({"verbs": ["get"], "nonResourceURLs": ["/api"]}, {"verb": "get", "path": "/apis"})
