"""Write validation for the sandbox API, against the real Kubernetes JSON schemas.

Why this module exists: the sandbox must reject what a real API server rejects,
with the same ``422 Invalid`` causes, or runbooks that pass here fail on a real
cluster. A hand-written list of checks drifts; the published schemas do not.
So built-in kinds are checked against the schemas that the
``kubernetes-validate`` package ships for each Kubernetes minor (the one
matching the sandbox's ``/version``), custom resources against their CRD's
``openAPIV3Schema``, and on top of that the few semantic checks the API server
always makes and schemas cannot express (name formats, container names,
workload selectors matching their template labels).

Design choice: a small schema walker instead of a generic JSON-Schema
validator. The Kubernetes schemas use a handful of keywords; walking them
directly yields causes in the API server's own vocabulary (``FieldValueRequired``,
field paths like ``spec.template.spec.containers[0].image``), finds unknown
fields for ``fieldValidation=Strict|Warn`` in the same pass, understands the
structural-schema extensions CRDs use (``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``), and costs well under a millisecond
per Deployment once the definitions are loaded (they are loaded once).

Example:
    >>> from runbooks_sandbox.validate import validate
    >>> validate({"metadata": {"name": "Bad_Name"}}, "v1", "ConfigMap")[0]["field"]
    'metadata.name'
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.machinery
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .resources import SERVER_VERSION

__all__ = [
    "definition_name",
    "definitions",
    "has_schema",
    "invalid_status",
    "prune",
    "schema_version",
    "unknown_fields",
    "validate",
    "validate_custom",
]

# ---- schema loading ------------------------------------------------------------

_PACKAGE = "kubernetes_validate"
_SCHEMA_DIR = "kubernetes-json-schema"


@functools.cache
def _schema_root() -> Path:
    """The package's schema folder, found on sys.path without importing it (its import costs ~1 s;
    and a process that imported `runbooks` has it blocked in sys.modules)."""
    spec = importlib.machinery.PathFinder.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {_PACKAGE!r} package is not installed: pip install kubernetes-validate")
    return Path(next(iter(spec.submodule_search_locations))) / _SCHEMA_DIR


def _available_versions() -> list[tuple[int, int, int]]:
    root = _schema_root()
    out = set()
    for entry in root.iterdir():
        m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local", entry.name)
        if m:
            out.add((int(m[1]), int(m[2]), int(m[3])))
    return sorted(out)


@functools.cache
def schema_version() -> str:
    """The schema set used: the newest not newer than the server's minor, else the oldest.

    The sandbox says it is 1.32 (``resources.SERVER_VERSION``), so this is
    ``"1.32.0"`` with the schemas ``kubernetes-validate`` ships for it.
    """
    want = (int(SERVER_VERSION["major"]), int(SERVER_VERSION["minor"].rstrip("+")))
    versions = _available_versions()
    if not versions:
        raise RuntimeError(f"{_PACKAGE} ships no schemas; reinstall it")
    older = [v for v in versions if v[:2] <= want]
    best = older[-1] if older else versions[0]
    return ".".join(map(str, best))


@functools.cache
def definitions(strict: bool = True) -> dict[str, dict]:
    """All schema definitions by OpenAPI name (``io.k8s.api.apps.v1.Deployment`` ...).

    ``strict=True`` is the variant with ``additionalProperties: false`` on every
    struct (used to find unknown fields); ``strict=False`` is the plain one
    (used to publish OpenAPI). Loaded once per process.
    """
    folder = f"v{schema_version()}-local" + ("-strict" if strict else "")
    with (_schema_root() / folder / "_definitions.json").open("rb") as f:
        return json.load(f)["$defs"]


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions(True).items():
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        for gvk in gvks:
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            # Shared types (DeleteOptions, WatchEvent) list many GVKs: the first wins.
            index.setdefault(key, name)
    return index


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def definition_name(api_version: str, kind: str) -> str | None:
    """The definition describing ``kind`` in ``api_version``, or None (custom resources)."""
    group, version = _split_api_version(api_version)
    return _gvk_index().get((group, version, kind))


def has_schema(api_version: str, kind: str) -> bool:
    return definition_name(api_version, kind) is not None


_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# Fields the published schema marks required although the API server does not
# require them (the Go type lacks `omitempty`, the validation code accepts empty).
_NOT_REQUIRED = {
    "io.k8s.api.apps.v1.StatefulSetSpec": {"serviceName"},
}

# Closed value sets the API server enforces in code (the 1.32 schemas carry no enums),
# limited to the fields runbooks and manifests commonly touch.
_ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("io.k8s.api.core.v1.Container", "imagePullPolicy"): ("Always", "IfNotPresent", "Never"),
    ("io.k8s.api.core.v1.PodSpec", "restartPolicy"): ("Always", "Never", "OnFailure"),
    ("io.k8s.api.core.v1.PodSpec", "dnsPolicy"): ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
    ("io.k8s.api.core.v1.ContainerPort", "protocol"): ("SCTP", "TCP", "UDP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol"): ("SCTP", "TCP", "UDP"),
    ("io.k8s.api.core.v1.ServiceSpec", "type"): ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
    ("io.k8s.api.core.v1.ServiceSpec", "sessionAffinity"): ("ClientIP", "None"),
    ("io.k8s.api.apps.v1.DeploymentStrategy", "type"): ("Recreate", "RollingUpdate"),
    ("io.k8s.api.apps.v1.StatefulSetUpdateStrategy", "type"): ("OnDelete", "RollingUpdate"),
    ("io.k8s.api.apps.v1.DaemonSetUpdateStrategy", "type"): ("OnDelete", "RollingUpdate"),
    ("io.k8s.api.networking.v1.HTTPIngressPath", "pathType"): ("Exact", "ImplementationSpecific", "Prefix"),
    ("io.k8s.api.core.v1.Toleration", "operator"): ("Equal", "Exists"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", "operator"):
        ("DoesNotExist", "Exists", "In", "NotIn"),
}
_PORTS = {
    ("io.k8s.api.core.v1.ContainerPort", "containerPort"),
    ("io.k8s.api.core.v1.ContainerPort", "hostPort"),
    ("io.k8s.api.core.v1.ServicePort", "port"),
}

# ---- the walker ----------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, wanted: str) -> bool:
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    if wanted == "string":
        return isinstance(value, str)
    if wanted == "boolean":
        return isinstance(value, bool)
    if wanted == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if wanted == "null":
        return value is None
    return True


def _go_value(value: Any) -> str:
    """A bad value the way the API server prints it (Go's %q / %v / %#v)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return "map[string]string{" + inner + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _cause(reason: str, field: str, body: str) -> dict:
    return {"reason": reason, "message": body, "field": field}


def _invalid(field: str, value: Any, detail: str) -> dict:
    return _cause("FieldValueInvalid", field, f"Invalid value: {_go_value(value)}: {detail}")


def _required(field: str, detail: str = "") -> dict:
    return _cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Walker:
    """One pass over an object: collects causes and unknown-field paths, optionally prunes."""

    def __init__(self, defs: dict[str, dict], *, custom: bool = False, prune: bool = False,
                 check_values: bool = True):
        self.defs = defs
        self.custom = custom  # schema dialect: CRD structural schema (OpenAPI v3) vs. built-in
        self.prune = prune
        self.check_values = check_values
        self.causes: list[dict] = []
        self.unknown: list[str] = []

    # -- helpers --

    def resolve(self, schema: dict) -> tuple[dict, str | None]:
        name = None
        while "$ref" in schema:
            ref = schema["$ref"]
            name = ref.rsplit("/", 1)[-1]
            schema = self.defs.get(name, {})
        return schema, name

    def cause(self, cause: dict) -> None:
        if self.check_values:
            self.causes.append(cause)

    def type_error(self, path: str, value: Any, wanted: str) -> None:
        got = _json_type(value)
        if self.custom:
            body = f"Invalid value: {json.dumps(got)}: {path} in body must be of type {wanted}: {json.dumps(got)}"
        else:
            body = f"Invalid value: {_go_value(value)}: must be of type {wanted}"
        self.cause(_cause("FieldValueTypeInvalid", path, body))

    # -- the walk --

    def walk(self, value: Any, schema: dict, path: str) -> None:
        schema, name = self.resolve(schema)
        if value is None:
            return  # null means "unset" for every field the API server decodes
        if self.custom:
            self._walk_custom(value, schema, path)
            return
        if "oneOf" in schema:  # IntOrString, Quantity: a value of any listed type
            types = [t for branch in schema["oneOf"] for t in _types(branch)]
            if not any(_type_ok(value, t) for t in types if t != "null"):
                self.type_error(path, value, " or ".join(t for t in types if t != "null"))
            return
        types = _types(schema)
        if types and not any(_type_ok(value, t) for t in types):
            self.type_error(path, value, next(t for t in types if t != "null"))
            return
        enum = schema.get("enum")
        if enum and value not in enum and self.check_values:
            self.cause(_not_supported(path, value, enum))
        if isinstance(value, dict):
            self._walk_object(value, schema, path, name)
        elif isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, dict):
                for i, item in enumerate(value):
                    self.walk(item, items, f"{path}[{i}]")
        elif schema.get("format") == "byte" and isinstance(value, str) and self.check_values:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                # Never echo the value: byte fields hold Secret data.
                self.cause(_cause("FieldValueInvalid", path, "Invalid value: illegal base64 data"))

    def _walk_object(self, value: dict, schema: dict, path: str, name: str | None) -> None:
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if self.check_values:
            skip = _NOT_REQUIRED.get(name or "", ())
            for req in schema.get("required", ()):
                if value.get(req) is None and req not in skip:
                    self.cause(_required(_child(path, req)))
        if props is None and not isinstance(extra, dict):
            if extra is False:
                for key in list(value):
                    self._unknown(value, key, _child(path, key))
            return  # free-form (RawExtension, FieldsV1, JSON)
        for key in list(value):
            sub = props.get(key) if props else None
            if sub is not None:
                self.walk(value[key], sub, _child(path, key))
                if name is not None and self.check_values:
                    self._code_checks(name, key, value[key], _child(path, key))
            elif isinstance(extra, dict):
                self.walk(value[key], extra, f"{path}[{key}]")
            elif extra is not True:
                self._unknown(value, key, _child(path, key))

    def _code_checks(self, name: str, key: str, value: Any, path: str) -> None:
        allowed = _ENUMS.get((name, key))
        if allowed and isinstance(value, str) and value not in allowed:
            self.cause(_not_supported(path, value, allowed))
        if (name, key) in _PORTS and _type_ok(value, "integer") and not 1 <= value <= 65535:
            self.cause(_invalid(path, value, "must be between 1 and 65535, inclusive"))

    def _unknown(self, parent: dict, key: str, path: str) -> None:
        self.unknown.append(path)
        if self.prune:
            del parent[key]

    def _walk_custom(self, value: Any, schema: dict, path: str) -> None:
        """OpenAPI v3 structural schema semantics (CRDs), messages as kube-openapi words them."""
        if schema.get("x-kubernetes-int-or-string"):
            if not (isinstance(value, str) or _type_ok(value, "integer")):
                self.type_error(path, value, "integer or string")
            return
        wanted = schema.get("type")
        if wanted and not _type_ok(value, wanted):
            self.type_error(path, value, wanted)
            return
        if self.check_values:
            self._custom_value_checks(value, schema, path)
        for branch in schema.get("allOf", ()):
            self._walk_custom(value, branch, path)
        for key, word in (("anyOf", "at least one schema (anyOf)"), ("oneOf", "one and only one schema (oneOf)")):
            branches = schema.get(key)
            if branches and self.check_values:
                passing = 0
                for branch in branches:
                    probe = _Walker(self.defs, custom=True)
                    probe._walk_custom(value, branch, path)
                    passing += not probe.causes
                if passing == 0 or (key == "oneOf" and passing > 1):
                    self.cause(_invalid(path, value, f"{path} in body must validate {word}"))
        if isinstance(value, dict):
            if schema.get("x-kubernetes-embedded-resource") and path:
                for meta_key in ("apiVersion", "kind"):
                    if meta_key in value and not isinstance(value[meta_key], str):
                        self.type_error(_child(path, meta_key), value[meta_key], "string")
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
            if self.check_values:
                for req in schema.get("required", ()):
                    if value.get(req) is None:
                        self.cause(_required(_child(path, req)))
            for key in list(value):
                if not path and key in ("apiVersion", "kind", "metadata"):
                    continue  # the object's own type and ObjectMeta: checked as built-ins
                if key in props:
                    self.walk(value[key], props[key], _child(path, key))
                elif isinstance(extra, dict):
                    self.walk(value[key], extra, _child(path, key))
                elif extra is True or preserve:
                    continue
                elif schema.get("x-kubernetes-embedded-resource") and key in ("apiVersion", "kind", "metadata"):
                    continue
                else:
                    self._unknown(value, key, _child(path, key))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                self.walk(item, schema["items"], f"{path}[{i}]")

    def _custom_value_checks(self, value: Any, schema: dict, path: str) -> None:
        enum = schema.get("enum")
        if enum and value not in enum:
            self.cause(_not_supported(path, value, enum))
        if isinstance(value, str):
            pattern = schema.get("pattern")
            if pattern and not re.search(pattern, value):
                self.cause(_invalid(path, value, f"{path} in body should match '{pattern}'"))
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self.cause(_cause("FieldValueTooLong", path,
                                  f"Too long: may not be more than {schema['maxLength']} bytes"))
            if "minLength" in schema and len(value) < schema["minLength"]:
                self.cause(_invalid(path, value, f"{path} in body should be at least {schema['minLength']} chars long"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "maximum" in schema:
                over = value >= schema["maximum"] if schema.get("exclusiveMaximum") else value > schema["maximum"]
                if over:
                    word = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                    self.cause(_invalid(path, value, f"{path} in body should be {word} {schema['maximum']}"))
            if "minimum" in schema:
                under = value <= schema["minimum"] if schema.get("exclusiveMinimum") else value < schema["minimum"]
                if under:
                    word = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                    self.cause(_invalid(path, value, f"{path} in body should be {word} {schema['minimum']}"))
        elif isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                self.cause(_cause("FieldValueTooMany", path,
                                  f"Too many: {len(value)}: must have at most {schema['maxItems']} items"))
            if "minItems" in schema and len(value) < schema["minItems"]:
                self.cause(_invalid(path, value, f"{path} in body should have at least {schema['minItems']} items"))
        elif isinstance(value, dict):
            if "maxProperties" in schema and len(value) > schema["maxProperties"]:
                self.cause(_cause("FieldValueTooMany", path,
                                  f"Too many: {len(value)}: must have at most {schema['maxProperties']} items"))


def _types(schema: dict) -> list[str]:
    t = schema.get("type")
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)


def _not_supported(path: str, value: Any, enum: Iterable[Any]) -> dict:
    allowed = ", ".join(_go_value(v) for v in enum if v is not None)
    return _cause("FieldValueNotSupported", path,
                  f"Unsupported value: {_go_value(value)}: supported values: {allowed}")


# ---- semantic checks the API server always makes -------------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\." + _LABEL + r")*"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_QNAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QNAME + ")?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN_RE = re.compile(_SUBDOMAIN)
_DNS1035_RE = re.compile(_DNS1035)
_QNAME_RE = re.compile(_QNAME)
_LABEL_VALUE_RE = re.compile(_LABEL_VALUE)

_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
              "and must start and end with an alphanumeric character")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                  "'-' or '.', and must start and end with an alphanumeric character")
_DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character")
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', "
              "and must start and end with an alphanumeric character")
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character")


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """apimachinery's RegexError, double space after each example included."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    out = msg + " (e.g. "
    for i, ex in enumerate(examples):
        if i:
            out += " or "
        out += f"'{ex}', "
    return out + f"regex used for validation is '{fmt}')"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_RE.fullmatch(value):
        if _SUBDOMAIN_RE.fullmatch(value):
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(_LABEL_MSG, _LABEL, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _SUBDOMAIN_RE.fullmatch(value):
        errs.append(_regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_RE.fullmatch(value):
        errs.append(_regex_error(_DNS1035_MSG, _DNS1035, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    errs = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in is_dns1123_subdomain(prefix)]
    else:
        return ["a qualified name " + _regex_error(_QNAME_MSG, _QNAME, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QNAME_RE.fullmatch(name):
        errs.append("name part " + _regex_error(_QNAME_MSG, _QNAME, "MyName", "my.name", "123-abc"))
    return errs


def is_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(_regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errs


# Name rules by kind (the API server's per-type ValidateXName); subdomain otherwise.
_NAME_RULES = {
    "Namespace": is_dns1123_label,
    "Service": is_dns1035_label,
}


def _check_metadata(obj: dict, kind: str, causes: list[dict]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    name, generate = meta.get("name"), meta.get("generateName")
    rule = _NAME_RULES.get(kind, is_dns1123_subdomain)
    if isinstance(name, str) and name:
        for msg in rule(name):
            causes.append(_invalid("metadata.name", name, msg))
    elif isinstance(generate, str) and generate:
        prefix = generate[:-1] if generate.endswith("-") else generate  # prefix mode
        for msg in rule(prefix) if prefix else []:
            causes.append(_invalid("metadata.generateName", generate, msg))
    else:
        causes.append(_required("metadata.name", "name or generateName is required"))
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace:
        for msg in is_dns1123_label(namespace):
            causes.append(_invalid("metadata.namespace", namespace, msg))
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            for msg in is_qualified_name(str(key)):
                causes.append(_invalid(f"metadata.{field}", key, msg))
            if field == "labels" and isinstance(value, str):
                for msg in is_label_value(value):
                    causes.append(_invalid("metadata.labels", value, msg))


def _check_pod_spec(spec: Any, path: str, causes: list[dict]) -> None:
    if not isinstance(spec, dict):
        return
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        containers = spec.get(field)
        if not isinstance(containers, list):
            continue
        for i, ctr in enumerate(containers):
            if not isinstance(ctr, dict):
                continue
            cpath = f"{path}.{field}[{i}]"
            name = ctr.get("name")
            if isinstance(name, str) and name:
                for msg in is_dns1123_label(name):
                    causes.append(_invalid(f"{cpath}.name", name, msg))
                if name in seen:
                    causes.append(_cause("FieldValueDuplicate", f"{cpath}.name",
                                         f"Duplicate value: {_go_value(name)}"))
                seen.add(name)
            if not ctr.get("image"):
                causes.append(_required(f"{cpath}.image"))


def selector_matches(selector: dict, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions) against a label set."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


_WORKLOADS = {"Deployment": "deployment", "ReplicaSet": "replicaset", "StatefulSet": "statefulset",
              "DaemonSet": "daemonset"}
_POD_TEMPLATE_KINDS = _WORKLOADS.keys() | {"Job", "PodTemplate", "ReplicationController"}


def _go_selector(selector: dict) -> str:
    labels = selector.get("matchLabels")
    exprs = selector.get("matchExpressions")
    ml = "map[string]string(nil)" if labels is None else _go_value(labels)
    me = "[]v1.LabelSelectorRequirement(nil)" if exprs is None else json.dumps(exprs)
    return f"v1.LabelSelector{{MatchLabels:{ml}, MatchExpressions:{me}}}"


def _check_workload(obj: dict, kind: str, causes: list[dict]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    selector, template = spec.get("selector"), spec.get("template")
    if not isinstance(selector, dict) or not isinstance(template, dict):
        return  # the schema pass reports them as required
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        causes.append(_cause("FieldValueInvalid", "spec.selector",
                             f"Invalid value: {_go_selector(selector)}: empty selector is invalid for {_WORKLOADS[kind]}"))
        return
    pod_spec = template.get("spec") or {}
    restart = pod_spec.get("restartPolicy") if isinstance(pod_spec, dict) else None
    if kind != "Job" and isinstance(restart, str) and restart != "Always":
        causes.append(_not_supported("spec.template.spec.restartPolicy", restart, ["Always"]))
    labels = (template.get("metadata") or {}).get("labels") or {}
    if isinstance(labels, dict) and not selector_matches(selector, labels):
        causes.append(_invalid("spec.template.metadata.labels", labels,
                               "`selector` does not match template `labels`"))


def _semantic_checks(obj: dict, kind: str) -> list[dict]:
    causes: list[dict] = []
    _check_metadata(obj, kind, causes)
    if kind == "Pod":
        _check_pod_spec(obj.get("spec"), "spec", causes)
    elif kind in _POD_TEMPLATE_KINDS:
        spec = obj.get("spec") or {}
        template = spec.get("template") if kind != "PodTemplate" else obj.get("template")
        if isinstance(template, dict):
            base = "spec.template" if kind != "PodTemplate" else "template"
            _check_pod_spec(template.get("spec"), f"{base}.spec", causes)
    if kind in _WORKLOADS:
        _check_workload(obj, kind, causes)
    return causes


# ---- public API ----------------------------------------------------------------


def _dedupe(causes: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in causes:
        key = (c["reason"], c["field"], c["message"])
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def validate(obj: dict, api_version: str, kind: str) -> list[dict]:
    """Status causes for everything the API server would reject in ``obj``; [] when valid.

    Kinds without a built-in schema (custom resources) only get the metadata
    checks here: use :func:`validate_custom` with the CRD's schema for those.
    Unknown fields are not causes (the API server drops or reports them
    according to ``fieldValidation``): see :func:`unknown_fields`.
    """
    causes: list[dict] = []
    name = definition_name(api_version, kind)
    if name is not None:
        walker = _Walker(definitions(True))
        walker.walk(obj, {"$ref": f"#/$defs/{name}"}, "")
        causes = walker.causes
    causes += _semantic_checks(obj, kind)
    return _dedupe(causes)


def validate_custom(obj: dict, schema: dict | None) -> list[dict]:
    """Causes for a custom resource against its CRD version's ``openAPIV3Schema``.

    Without a schema anything with valid metadata is accepted. ``metadata`` is
    always checked as ObjectMeta (as the API server does), whatever the schema says.
    """
    causes: list[dict] = []
    if schema:
        walker = _Walker(definitions(True), custom=True)
        walker.walk(obj, _top_level(schema), "")
        if obj.get("metadata") is not None:
            builtin = _Walker(definitions(True))
            builtin.walk(obj["metadata"], {"$ref": f"#/$defs/{_OBJECT_META}"}, "metadata")
            causes += builtin.causes
        causes += walker.causes
    causes += _semantic_checks(obj, obj.get("kind", ""))
    return _dedupe(causes)


def _top_level(schema: dict) -> dict:
    """The CRD schema minus what the API server owns (apiVersion, kind, metadata)."""
    owned = ("apiVersion", "kind", "metadata")
    props = {k: v for k, v in (schema.get("properties") or {}).items() if k not in owned}
    required = [r for r in schema.get("required", ()) if r not in owned]
    return dict(schema, type="object", properties=props, required=required)


def _unknown(obj: dict, api_version: str, kind: str, schema: dict | None, prune: bool) -> list[str]:
    out: list[str] = []
    name = definition_name(api_version, kind)
    if name is not None:
        walker = _Walker(definitions(True), prune=prune, check_values=False)
        walker.walk(obj, {"$ref": f"#/$defs/{name}"}, "")
        return walker.unknown
    if not schema:
        return []
    if isinstance(obj.get("metadata"), dict):
        meta_walker = _Walker(definitions(True), prune=prune, check_values=False)
        meta_walker.walk(obj["metadata"], {"$ref": f"#/$defs/{_OBJECT_META}"}, "metadata")
        out += meta_walker.unknown
    walker = _Walker(definitions(True), custom=True, prune=prune, check_values=False)
    walker.walk(obj, _top_level(schema), "")
    return out + walker.unknown


def unknown_fields(obj: dict, api_version: str, kind: str, schema: dict | None = None) -> list[str]:
    """Paths of fields the schema does not know, e.g. ``spec.template.spec.containers[0].imagePolicy``.

    For ``fieldValidation=Strict`` (400 ``strict decoding error: unknown field "<path>"``) and
    ``Warn`` (a ``Warning`` header per path). Pass the CRD's ``schema`` for custom resources;
    without one nothing is unknown.
    """
    return _unknown(obj, api_version, kind, schema, prune=False)


def prune(obj: dict, api_version: str, kind: str, schema: dict | None = None) -> list[str]:
    """Drop unknown fields from ``obj`` in place (what decoding/pruning does), returning their paths."""
    return _unknown(obj, api_version, kind, schema, prune=True)


def invalid_status(kind: str, group: str, name: str, causes: list[dict]) -> dict:
    """The ``422 Invalid`` Status object the API server returns for these causes."""
    qualified = f"{kind}.{group}" if group else kind
    errors = []
    for c in causes:
        text = f"{c['field']}: {c['message']}" if c.get("field") else c["message"]
        if text not in errors:
            errors.append(text)
    message = f"{qualified} {json.dumps(name)} is invalid"
    if len(errors) == 1:
        message += f": {errors[0]}"
    elif errors:
        message += ": [" + ", ".join(errors) + "]"
    return {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Invalid",
        "details": {"name": name, "group": group, "kind": kind, "causes": causes},
        "code": 422,
    }
