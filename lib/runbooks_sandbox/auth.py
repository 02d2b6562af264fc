"""Who is asking and may they: authentication, impersonation and RBAC as kube-apiserver does them.

Why this module exists: runbooks run scheduled with least-privilege
ServiceAccounts, and the failure an SRE meets first on a real cluster is a
403. So the sandbox authenticates and authorizes every request the way a
kubeadm cluster does, with the same words:

* **Authentication**: the kubeconfig's admin token (user ``kubernetes-admin`` in
  ``system:masters``, which the real authorizer lets through before RBAC), and
  ServiceAccount tokens -- bound tokens from the TokenRequest API
  (``kubectl create token``) and legacy tokens the token controller writes into
  ``kubernetes.io/service-account-token`` Secrets. Both authenticate as
  ``system:serviceaccount:NS:NAME`` in ``system:serviceaccounts``,
  ``system:serviceaccounts:NS`` and ``system:authenticated``. Tokens are JWTs
  (signed with HS256 by a per-server key; the real server uses RS256), checked
  for expiry and for the ServiceAccount (and Secret) still existing with the
  same uid.
* **Impersonation** (``Impersonate-User``, ``-Group``, ``-Uid``, ``-Extra-*``;
  ``kubectl --as/--as-group``): the requester needs the ``impersonate`` verb on
  ``users``, ``groups``, ``serviceaccounts``, ``uids`` or ``userextras/KEY``.
* **RBAC** (``plugin/pkg/auth/authorizer/rbac``): ClusterRoleBindings, then the
  RoleBindings of the request's namespace; rules match verbs, API groups,
  resources (``pods/log``, ``*/scale``), resourceNames and nonResourceURLs
  (``/healthz``, ``/api/*``). Aggregated ClusterRoles hold the rules the
  aggregation controller copied into them (see ``clusterctl.py``).
* **403s** worded as ``responsewriters.forbiddenMessage`` + ``errors.NewForbidden``:
  ``pods is forbidden: User "system:serviceaccount:ns:sa" cannot list resource
  "pods" in API group "" in the namespace "ns"``.
* The access reviews ``kubectl auth can-i`` and ``kubectl auth whoami`` use:
  SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
  LocalSubjectAccessReview, SelfSubjectReview, TokenReview.

The default ClusterRoles (cluster-admin, admin, edit, view and their
``system:aggregate-to-*`` parts, system:discovery, system:basic-user,
system:public-info-viewer) with the rules of ``bootstrappolicy/policy.go`` are
in :data:`DEFAULT_CLUSTER_ROLES`; ``bootstrap()`` stores them like the
apiserver's ``rbac/bootstrap-roles`` post-start hook.

Example:
    >>> rule = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}
    >>> rule_allows(rule, {"verb": "get", "group": "", "resource": "pods", "subresource": "log", "name": ""})
    True
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .resources import Registry, ResourceType
from .store import ApiError, Store, rfc3339

if TYPE_CHECKING:
    from .server import ApiServer, Request, Route

__all__ = [
    "ADMIN", "DEFAULT_CLUSTER_ROLES", "User", "authenticate", "authorize", "bootstrap", "check",
    "forbidden", "handle_review", "rule_allows", "token_request",
]

ISSUER = "https://kubernetes.default.svc.cluster.local"
LEGACY_ISSUER = "kubernetes/serviceaccount"
SA_PREFIX = "system:serviceaccount:"
TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"


@dataclass(frozen=True)
class User:
    """user.Info: name, uid, groups and extra."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, compare=False, hash=False)

    def info(self) -> dict:
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


ADMIN = User("kubernetes-admin", ("system:masters", "system:authenticated"))
"""The kubeconfig's user: like kubeadm's super-admin, in the group the authorizer never refuses."""


def service_account_user(namespace: str, name: str, uid: str = "", extra: dict | None = None) -> User:
    return User(f"{SA_PREFIX}{namespace}:{name}",
                ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
                uid, extra or {})


# ---- tokens ----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(api: ApiServer) -> bytes:
    return hashlib.sha256(b"service-account-signing-key\0" + api.token.encode()).digest()


def sign(api: ApiServer, claims: dict) -> str:
    """A JWT (HS256) over ``claims``, as the token controller and TokenRequest issue them."""
    kid = hashlib.sha256(_key(api)).hexdigest()[:43]
    head = _b64(json.dumps({"alg": "HS256", "kid": kid}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(_key(api), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def _verify(api: ApiServer, token: str) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        sig = _unb64(parts[2])
        want = hmac.new(_key(api), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(sig, want):
            return None
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _rt(registry: Registry, kind: str, group: str = "") -> ResourceType:
    rt = registry.by_kind_any_version(kind, group)
    assert rt is not None, kind
    return rt


def legacy_token(api: ApiServer, secret: dict, sa: dict) -> str:
    """What the token controller writes into a service-account-token Secret's ``data.token``."""
    meta = secret["metadata"]
    return sign(api, {
        "iss": LEGACY_ISSUER, "sub": f"{SA_PREFIX}{meta['namespace']}:{sa['metadata']['name']}",
        "kubernetes.io/serviceaccount/namespace": meta["namespace"],
        "kubernetes.io/serviceaccount/secret.name": meta["name"],
        "kubernetes.io/serviceaccount/service-account.name": sa["metadata"]["name"],
        "kubernetes.io/serviceaccount/service-account.uid": sa["metadata"]["uid"],
    })


def token_user(api: ApiServer, token: str) -> tuple[User, list[str]] | None:
    """The ServiceAccount user a token authenticates as (and its audiences), or None."""
    claims = _verify(api, token)
    if claims is None:
        return None
    store, registry = api.store, api.registry
    now = time.time()
    if claims.get("iss") == LEGACY_ISSUER:
        ns = claims.get("kubernetes.io/serviceaccount/namespace", "")
        secret = store.find(_rt(registry, "Secret"), ns, claims.get("kubernetes.io/serviceaccount/secret.name", ""))
        sa = store.find(_rt(registry, "ServiceAccount"), ns,
                        claims.get("kubernetes.io/serviceaccount/service-account.name", ""))
        if not secret or not sa or sa["metadata"]["uid"] != claims.get(
                "kubernetes.io/serviceaccount/service-account.uid"):
            return None
        stored = (secret.get("data") or {}).get("token", "")
        if not hmac.compare_digest(stored.encode(), base64.b64encode(token.encode())):
            return None
        return service_account_user(ns, sa["metadata"]["name"], sa["metadata"]["uid"]), [ISSUER]
    k8s = claims.get("kubernetes.io") or {}
    if claims.get("iss") != ISSUER or not isinstance(k8s, dict):
        return None
    if not isinstance(claims.get("exp"), int) or claims["exp"] < now or claims.get("nbf", 0) > now + 60:
        return None
    ns = k8s.get("namespace", "")
    ref = k8s.get("serviceaccount") or {}
    sa = store.find(_rt(registry, "ServiceAccount"), ns, ref.get("name", ""))
    if sa is None or sa["metadata"]["uid"] != ref.get("uid"):
        return None
    extra: dict[str, list[str]] = {}
    for kind in ("pod", "secret", "node"):
        bound = k8s.get(kind)
        if isinstance(bound, dict):
            registry_kind = {"pod": "Pod", "secret": "Secret", "node": "Node"}[kind]
            obj = store.find(_rt(registry, registry_kind), ns if kind != "node" else None, bound.get("name", ""))
            if obj is None or obj["metadata"]["uid"] != bound.get("uid"):
                return None  # the object the token was bound to is gone
            extra[f"authentication.kubernetes.io/{kind}-name"] = [bound["name"]]
            extra[f"authentication.kubernetes.io/{kind}-uid"] = [bound["uid"]]
    aud = claims.get("aud") or []
    return service_account_user(ns, sa["metadata"]["name"], sa["metadata"]["uid"], extra), \
        aud if isinstance(aud, list) else [aud]


def authenticate(api: ApiServer, req: Request) -> User:
    """The user behind a request's bearer token (401 if none), after impersonation."""
    auth = req.headers.get("Authorization") or ""
    user: User | None = None
    scheme, _, rest = auth.partition(" ")
    if scheme.lower() == "bearer":  # as bearertoken.go: the scheme is case-insensitive (in-cluster config sends "bearer")
        token = rest.strip()
        if secrets.compare_digest(token.encode(), api.token.encode()):
            user = ADMIN
        else:
            found = token_user(api, token)
            user = found[0] if found else None
    if user is None:
        raise ApiError(401, "Unauthorized", "Unauthorized")
    return impersonate(api, req, user)


def _header_values(headers, name: str) -> list[str]:
    get_all = getattr(headers, "get_all", None)
    values = get_all(name) if get_all else ([headers[name]] if name in headers else [])
    return [v.strip() for v in values or [] if v is not None]


def impersonate(api: ApiServer, req: Request, user: User) -> User:
    """Apply ``Impersonate-*`` headers as the impersonation filter does (403 if not allowed)."""
    names = _header_values(req.headers, "Impersonate-User")
    groups = _header_values(req.headers, "Impersonate-Group")
    uids = _header_values(req.headers, "Impersonate-Uid")
    extra: dict[str, list[str]] = {}
    for key in list(req.headers.keys()):
        if key.lower().startswith("impersonate-extra-"):
            extra.setdefault(key[len("impersonate-extra-"):].lower(), []).extend(_header_values(req.headers, key))
    if not names:
        if groups or uids or extra:
            raise ApiError(500, "InternalError", "Internal error occurred: requested "
                           f"{groups or uids or extra} without impersonating a user")
        return user
    target = names[0]
    checks: list[dict] = []
    if target.startswith(SA_PREFIX) and target.count(":") == 3:
        _, _, ns, sa = target.split(":")
        checks.append({"verb": "impersonate", "group": "", "resource": "serviceaccounts", "namespace": ns,
                       "name": sa, "subresource": ""})
    else:
        checks.append({"verb": "impersonate", "group": "", "resource": "users", "namespace": "", "name": target,
                       "subresource": ""})
    checks += [{"verb": "impersonate", "group": "", "resource": "groups", "namespace": "", "name": g,
                "subresource": ""} for g in groups]
    checks += [{"verb": "impersonate", "group": "authentication.k8s.io", "resource": "uids", "namespace": "",
                "name": u, "subresource": ""} for u in uids]
    for k, vs in extra.items():
        checks += [{"verb": "impersonate", "group": "authentication.k8s.io", "resource": "userextras",
                    "subresource": k, "namespace": "", "name": v} for v in vs]
    for attrs in checks:
        allowed, _ = authorize(api.store, api.registry, user, attrs)
        if not allowed:
            raise forbidden(user, attrs)
    if not groups and target.startswith(SA_PREFIX) and target.count(":") == 3:
        ns = target.split(":")[2]
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
    if target != "system:anonymous" and "system:authenticated" not in groups:
        groups = [*groups, "system:authenticated"]
    return User(target, tuple(groups), uids[0] if uids else "", extra)


# ---- authorization ---------------------------------------------------------------------

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def request_attributes(req: Request, route: Route | None) -> dict:
    """authorizer.Attributes of a request (RequestInfoFactory): verb, group, resource, name..."""
    if route is None:
        verb = {"GET": "get", "HEAD": "get", "POST": "post", "PUT": "put", "PATCH": "patch",
                "DELETE": "delete"}.get(req.method, req.method.lower())
        return {"path": req.path, "verb": verb}
    rt = route.rt
    if req.method in ("GET", "HEAD"):
        if route.name is None:
            verb = "watch" if req.q_bool("watch") else "list"
        else:
            verb = "get"
    elif req.method == "DELETE":
        verb = "delete" if route.name else "deletecollection"
    else:
        verb = _VERBS.get(req.method, req.method.lower())
    name = route.name or ""
    if rt.kind == "Namespace" and name and route.sub is None:
        return {"verb": verb, "group": "", "resource": "namespaces", "subresource": "", "namespace": name,
                "name": name}
    return {"verb": verb, "group": rt.group, "resource": rt.plural, "subresource": route.sub or "",
            "namespace": route.namespace or "", "name": name}


def _subject_matches(subject: dict, user: User, binding_ns: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.name == f"{SA_PREFIX}{ns}:{subject.get('name')}"
    return False


def _describe_subject(subject: dict, binding_ns: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or binding_ns}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def _has(values: list | None, want: str) -> bool:
    return bool(values) and ("*" in values or want in values)  # type: ignore[operator]


def rule_allows(rule: dict, attrs: dict) -> bool:
    """rbac.RuleAllows: one PolicyRule against one request."""
    if "path" in attrs:
        if not _has(rule.get("verbs"), attrs["verb"]):
            return False
        for url in rule.get("nonResourceURLs") or []:
            if url == "*" or url == attrs["path"] or (url.endswith("*") and attrs["path"].startswith(url[:-1])):
                return True
        return False
    if not _has(rule.get("verbs"), attrs["verb"]) or not _has(rule.get("apiGroups"), attrs["group"]):
        return False
    resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
    resources = rule.get("resources") or []
    if not ("*" in resources or resource in resources
            or (attrs.get("subresource") and f"*/{attrs['subresource']}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.get("name", "") in names


def _role_rules(store: Store, registry: Registry, ref: dict, namespace: str) -> list[dict]:
    if ref.get("kind") == "ClusterRole":
        role = store.find(_rt(registry, "ClusterRole", "rbac.authorization.k8s.io"), None, ref.get("name", ""))
    elif ref.get("kind") == "Role" and namespace:
        role = store.find(_rt(registry, "Role", "rbac.authorization.k8s.io"), namespace, ref.get("name", ""))
    else:
        role = None
    return list((role or {}).get("rules") or [])


def visit_rules(store: Store, registry: Registry, user: User, namespace: str):
    """(source description, rule) for every rule that applies to ``user`` in ``namespace``."""
    for crb in store.items(_rt(registry, "ClusterRoleBinding", "rbac.authorization.k8s.io")):
        for subject in crb.get("subjects") or []:
            if _subject_matches(subject, user, ""):
                ref = crb.get("roleRef") or {}
                source = (f'ClusterRoleBinding "{crb["metadata"]["name"]}" of {ref.get("kind")} '
                          f'"{ref.get("name")}" to {_describe_subject(subject, "")}')
                for rule in _role_rules(store, registry, ref, ""):
                    yield source, rule
                break
    if not namespace:
        return
    for rb in store.items(_rt(registry, "RoleBinding", "rbac.authorization.k8s.io"), namespace):
        for subject in rb.get("subjects") or []:
            if _subject_matches(subject, user, namespace):
                ref = rb.get("roleRef") or {}
                source = (f'RoleBinding "{namespace}/{rb["metadata"]["name"]}" of {ref.get("kind")} '
                          f'"{ref.get("name")}" to {_describe_subject(subject, namespace)}')
                for rule in _role_rules(store, registry, ref, namespace):
                    yield source, rule
                break


def authorize(store: Store, registry: Registry, user: User, attrs: dict) -> tuple[bool, str]:
    """(allowed, reason): system:masters first (as the real authorizer chain), then RBAC."""
    if "system:masters" in user.groups:
        return True, ""
    for source, rule in visit_rules(store, registry, user, attrs.get("namespace", "")):
        if rule_allows(rule, attrs):
            return True, f"RBAC: allowed by {source}"
    return False, ""


def forbidden(user: User, attrs: dict) -> ApiError:
    """The 403 Status kube-apiserver sends, worded by forbiddenMessage and NewForbidden."""
    if "path" in attrs:
        return ApiError(403, "Forbidden", f'forbidden: User "{user.name}" cannot {attrs["verb"]} path '
                        f'"{attrs["path"]}"', {})
    resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
    where = (f'in the namespace "{attrs["namespace"]}"' if attrs.get("namespace") else "at the cluster scope")
    msg = (f'User "{user.name}" cannot {attrs["verb"]} resource "{resource}" in API group '
           f'"{attrs["group"]}" {where}')
    qualified = attrs["resource"] + (f".{attrs['group']}" if attrs["group"] else "")
    name = attrs.get("name") or ""
    head = f'{qualified} "{name}" is forbidden' if name else f"{qualified} is forbidden"
    details = {"kind": attrs["resource"], **({"group": attrs["group"]} if attrs["group"] else {}),
               **({"name": name} if name else {})}
    return ApiError(403, "Forbidden", f"{head}: {msg}", details)


def check(api: ApiServer, req: Request, route: Route | None, user: User) -> None:
    """Raise the 403 for a request ``user`` may not make.

    With ``api.audit`` set to a list, each request's attributes, user and decision are appended
    to it (the fields of kube-apiserver's audit events: ``user``, ``verb``, ``objectRef``), so a
    test can see exactly which verbs on which resources a client used.
    """
    audit = getattr(api, "audit", None)
    if "system:masters" in user.groups and audit is None:
        return
    attrs = request_attributes(req, route)
    allowed, _ = authorize(api.store, api.registry, user, attrs)
    if audit is not None:
        audit.append({"user": user.name, "allowed": allowed, **attrs})
    if not allowed:
        raise forbidden(user, attrs)


# ---- reviews -------------------------------------------------------------------------


def _review_attrs(spec: dict) -> dict:
    if spec.get("nonResourceAttributes"):
        nra = spec["nonResourceAttributes"]
        return {"path": nra.get("path", ""), "verb": nra.get("verb", "")}
    ra = spec.get("resourceAttributes") or {}
    return {"verb": ra.get("verb", ""), "group": ra.get("group", ""), "resource": ra.get("resource", ""),
            "subresource": ra.get("subresource", ""), "namespace": ra.get("namespace", ""),
            "name": ra.get("name", "")}


def _rules_review(store: Store, registry: Registry, user: User, namespace: str) -> dict:
    resource_rules: list[dict] = []
    non_resource: list[dict] = []
    if "system:masters" in user.groups:
        resource_rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        non_resource.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
    for _, rule in visit_rules(store, registry, user, namespace):
        if rule.get("nonResourceURLs"):
            non_resource.append({"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]})
        else:
            entry = {"verbs": rule.get("verbs") or [], "apiGroups": rule.get("apiGroups") or [],
                     "resources": rule.get("resources") or []}
            if rule.get("resourceNames"):
                entry["resourceNames"] = rule["resourceNames"]
            resource_rules.append(entry)
    return {"resourceRules": resource_rules, "nonResourceRules": non_resource, "incomplete": False}


def handle_review(api: ApiServer, req: Request, r: Route, user: User) -> tuple[int, dict, str]:
    """POST of a review kind: evaluated for the caller (or the spec's user), returned, not stored."""
    from .admission import _check_kind

    rt = r.rt
    if req.method != "POST" or r.name:
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({req.method})")
    body = req.json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be an object")
    _check_kind(rt, body)
    out = copy.deepcopy(body)
    meta = out.setdefault("metadata", {})
    meta.setdefault("creationTimestamp", None)
    spec = out.setdefault("spec", {})
    kind = rt.kind
    store, registry = api.store, api.registry
    if kind == "SelfSubjectReview":
        out["status"] = {"userInfo": user.info()}
    elif kind == "TokenReview":
        token = spec.get("token", "")
        found = None
        if token and secrets.compare_digest(token.encode(), api.token.encode()):
            found = (ADMIN, [ISSUER])
        elif token:
            found = token_user(api, token)
        if found is None:
            out["status"] = {"authenticated": False, "error": "[invalid bearer token, service account token "
                             "is not valid]", "user": {}}
        else:
            out["status"] = {"authenticated": True, "user": found[0].info(), "audiences": found[1]}
    elif kind in ("SelfSubjectAccessReview", "SubjectAccessReview", "LocalSubjectAccessReview"):
        attrs = _review_attrs(spec)
        if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
            raise ApiError(422, "Invalid", f'{kind}.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                           "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes "
                           "must be specified", {"kind": kind, "group": "authorization.k8s.io"})
        subject = user
        if kind != "SelfSubjectAccessReview":
            if not spec.get("user") and not spec.get("groups"):
                raise ApiError(422, "Invalid", f'{kind}.authorization.k8s.io "" is invalid: spec.user: Invalid '
                               'value: "": at least one of user or group must be specified',
                               {"kind": kind, "group": "authorization.k8s.io"})
            subject = User(spec.get("user", ""), tuple(spec.get("groups") or ()), spec.get("uid", ""),
                           spec.get("extra") or {})
            if kind == "LocalSubjectAccessReview":
                ns = (spec.get("resourceAttributes") or {}).get("namespace", "")
                if ns != r.namespace:
                    raise ApiError(400, "BadRequest", f"spec.resourceAttributes.namespace must match namespace: "
                                   f"{r.namespace}")
        allowed, reason = authorize(store, registry, subject, attrs)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        out["status"] = status
    elif kind == "SelfSubjectRulesReview":
        ns = spec.get("namespace", "")
        out["status"] = _rules_review(store, registry, user, ns)
    else:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    out["apiVersion"], out["kind"] = rt.api_version, rt.kind
    return 201, out, "application/json"


def token_request(api: ApiServer, req: Request, r: Route) -> tuple[int, dict, str]:
    """POST serviceaccounts/NAME/token: a bound token for the ServiceAccount (``kubectl create token``)."""
    if req.method != "POST":
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                       f"resource ({req.method})")
    sa = api.store.get(r.rt, r.namespace, r.name or "")
    body = req.json_body() if req.body else {}
    spec = dict((body or {}).get("spec") or {})
    expiration = spec.get("expirationSeconds") or 3600
    if not isinstance(expiration, int) or expiration < 600:
        raise ApiError(422, "Invalid", f'TokenRequest.authentication.k8s.io "{r.name}" is invalid: '
                       f"spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration less "
                       "than 10 minutes", {"kind": "TokenRequest", "group": "authentication.k8s.io",
                                           "name": r.name, "causes": [{"reason": "FieldValueInvalid",
                                                                       "field": "spec.expirationSeconds"}]})
    expiration = min(expiration, 48 * 3600)
    audiences = spec.get("audiences") or [ISSUER]
    now = int(time.time())
    k8s: dict[str, Any] = {"namespace": r.namespace,
                           "serviceaccount": {"name": sa["metadata"]["name"], "uid": sa["metadata"]["uid"]}}
    bound = spec.get("boundObjectRef")
    if bound:
        kind = bound.get("kind")
        if kind not in ("Pod", "Secret", "Node"):
            raise ApiError(422, "Invalid", f'TokenRequest.authentication.k8s.io "{r.name}" is invalid: '
                           f'spec.boundObjectRef.kind: Unsupported value: "{kind}": supported values: "Pod", '
                           '"Node", "Secret"', {"kind": "TokenRequest", "group": "authentication.k8s.io"})
        obj = api.store.get(_rt(api.registry, kind), r.namespace if kind != "Node" else None, bound.get("name", ""))
        if bound.get("uid") and bound["uid"] != obj["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f'the UID in the bound object reference ({bound["uid"]}) does not match '
                           f'the UID in record. The object might have been deleted and then recreated')
        k8s[kind.lower()] = {"name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}
        spec["boundObjectRef"] = {**bound, "uid": obj["metadata"]["uid"], "apiVersion": "v1"}
    claims = {"aud": audiences, "exp": now + expiration, "iat": now, "iss": ISSUER,
              "jti": str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": now,
              "sub": f"{SA_PREFIX}{r.namespace}:{r.name}"}
    token = sign(api, claims)
    out = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
           "metadata": {"name": r.name, "namespace": r.namespace, "creationTimestamp": rfc3339()},
           "spec": {"audiences": audiences, "expirationSeconds": expiration,
                    "boundObjectRef": spec.get("boundObjectRef")},
           "status": {"token": token,
                      "expirationTimestamp": rfc3339(datetime.fromtimestamp(now + expiration, UTC))}}
    return 201, out, "application/json"


# ---- default RBAC ----------------------------------------------------------------------

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_RW = _READ + _WRITE
_AGG = "rbac.authorization.k8s.io/aggregate-to-"
_BOOT = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> dict:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def _cluster_role(name: str, rules: list[dict], labels: dict | None = None, aggregate: str = "") -> dict:
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**_BOOT, **(labels or {})}, "annotations": dict(_AUTOUPDATE)},
        "rules": rules,
    }
    if aggregate:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {_AGG + aggregate: "true"}}]}
        role["rules"] = []
    return role


DEFAULT_CLUSTER_ROLES: list[dict] = [
    _cluster_role("cluster-admin", [_rule(["*"], ["*"], ["*"]), {"verbs": ["*"], "nonResourceURLs": ["*"]}]),
    _cluster_role("admin", [], aggregate="admin"),
    _cluster_role("edit", [], {_AGG + "admin": "true"}, aggregate="edit"),
    _cluster_role("view", [], {_AGG + "edit": "true"}, aggregate="view"),
    _cluster_role("system:aggregate-to-admin", [
        _rule(_RW, ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
        _rule(_RW, ["rbac.authorization.k8s.io"], ["rolebindings", "roles"]),
    ], {_AGG + "admin": "true"}),
    _cluster_role("system:aggregate-to-edit", [
        _rule(_READ, [""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets",
                            "services/proxy"]),
        _rule(["impersonate"], [""], ["serviceaccounts"]),
        _rule(_WRITE, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
        _rule(["create"], [""], ["pods/eviction"]),
        _rule(_WRITE, [""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                             "replicationcontrollers/scale", "secrets", "serviceaccounts", "services",
                             "services/proxy"]),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        _rule(_WRITE, ["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                                 "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"]),
        _rule(_WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
        _rule(_WRITE, ["batch"], ["cronjobs", "jobs"]),
        _rule(_WRITE, ["extensions"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale",
                                       "ingresses", "networkpolicies", "replicasets", "replicasets/scale",
                                       "replicationcontrollers/scale"]),
        _rule(_WRITE, ["policy"], ["poddisruptionbudgets"]),
        _rule(_WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
        _rule(_RW, ["coordination.k8s.io"], ["leases"]),
    ], {_AGG + "edit": "true"}),
    _cluster_role("system:aggregate-to-view", [
        _rule(_READ, [""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status",
                            "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts",
                            "services", "services/status"]),
        _rule(_READ, [""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                            "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]),
        _rule(_READ, [""], ["namespaces"]),
        _rule(_READ, ["discovery.k8s.io"], ["endpointslices"]),
        _rule(_READ, ["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments",
                                "deployments/scale", "deployments/status", "replicasets", "replicasets/scale",
                                "replicasets/status", "statefulsets", "statefulsets/scale",
                                "statefulsets/status"]),
        _rule(_READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        _rule(_READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
        _rule(_READ, ["extensions"], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                                      "deployments/status", "ingresses", "ingresses/status", "networkpolicies",
                                      "replicasets", "replicasets/scale", "replicasets/status",
                                      "replicationcontrollers/scale"]),
        _rule(_READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        _rule(_READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
    ], {_AGG + "view": "true"}),
    _cluster_role("system:discovery", [{"verbs": ["get"], "nonResourceURLs": [
        "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
        "/version", "/version/"]}]),
    _cluster_role("system:basic-user", [
        _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
        _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
    ]),
    _cluster_role("system:public-info-viewer", [{"verbs": ["get"], "nonResourceURLs": [
        "/healthz", "/livez", "/readyz", "/version", "/version/"]}]),
    _cluster_role("system:aggregated-metrics-reader", [_rule(_READ, ["metrics.k8s.io"], ["nodes", "pods"])],
                  {_AGG + "admin": "true", _AGG + "edit": "true", _AGG + "view": "true"}),
]
"""The default ClusterRoles of bootstrappolicy/policy.go (and metrics-server's reader role)."""


def _binding(name: str, role: str, subjects: list[dict]) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(_BOOT), "annotations": dict(_AUTOUPDATE)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}


def _group(name: str) -> dict:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}


DEFAULT_BINDINGS: list[dict] = [
    _binding("cluster-admin", "cluster-admin", [_group("system:masters")]),
    _binding("kubeadm:cluster-admins", "cluster-admin", [_group("kubeadm:cluster-admins")]),
    _binding("system:discovery", "system:discovery", [_group("system:authenticated")]),
    _binding("system:basic-user", "system:basic-user", [_group("system:authenticated")]),
    _binding("system:public-info-viewer", "system:public-info-viewer",
             [_group("system:authenticated"), _group("system:unauthenticated")]),
]


def aggregate(roles: list[dict]) -> dict[str, list[dict]]:
    """Rules of every aggregated ClusterRole (clusterrole-aggregation controller), to a fixed point."""
    from .validate import selector_matches

    by_name = {r["metadata"]["name"]: r for r in roles}
    rules = {name: list(r.get("rules") or []) for name, r in by_name.items()}
    for _ in range(len(roles) + 1):
        changed = False
        for name, role in by_name.items():
            selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
            if not selectors:
                continue
            new: list[dict] = []
            for other_name in sorted(by_name):
                if other_name == name:
                    continue
                labels = by_name[other_name]["metadata"].get("labels") or {}
                if any(selector_matches(s, labels) for s in selectors):
                    for rule in rules[other_name]:
                        if rule not in new:
                            new.append(rule)
            if new != rules[name]:
                rules[name], changed = new, True
        if not changed:
            break
    return {n: rules[n] for n, r in by_name.items() if (r.get("aggregationRule") or {}).get("clusterRoleSelectors")}


def bootstrap(store: Store, registry: Registry) -> None:
    """Store the default ClusterRoles and bindings (the rbac/bootstrap-roles post-start hook)."""
    cr_rt = _rt(registry, "ClusterRole", "rbac.authorization.k8s.io")
    crb_rt = _rt(registry, "ClusterRoleBinding", "rbac.authorization.k8s.io")
    roles = copy.deepcopy(DEFAULT_CLUSTER_ROLES)
    for name, rules in aggregate(roles).items():
        next(r for r in roles if r["metadata"]["name"] == name)["rules"] = rules
    for role in roles:
        if store.find(cr_rt, None, role["metadata"]["name"]) is None:
            store.create(cr_rt, role)
    for binding in copy.deepcopy(DEFAULT_BINDINGS):
        if store.find(crb_rt, None, binding["metadata"]["name"]) is None:
            store.create(crb_rt, binding)
