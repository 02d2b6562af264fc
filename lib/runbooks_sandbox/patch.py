"""PATCH and server-side apply semantics of the Kubernetes API server, on plain dicts.

The sandbox accepts every patch type kubectl and the Python client send:
JSON patch, JSON merge patch, strategic merge patch and server-side apply.
Each behaves like the real server (k8s.io/apimachinery strategicpatch,
sigs.k8s.io/structured-merge-diff) so that a runbook tested here does the
same thing against a cluster, including which list elements merge, where
new elements land, and who owns which field in metadata.managedFields.
Every function returns a new dict and never mutates its arguments.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer

__all__ = [
    "ApplyConflict",
    "PatchError",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "record_update",
    "server_side_apply",
]


class PatchError(ValueError):
    """A patch the API server rejects; `code` is the HTTP status it answers with."""

    def __init__(self, message: str, field: str | None = None, code: int = 422):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class ApplyConflict(PatchError):
    """Server-side apply hit fields owned by other managers (HTTP 409, reason Conflict).

    `conflicts` holds one line per field (`conflict with "m" using apps/v1: .spec.replicas`),
    `causes` the Status details causes ({type: FieldManagerConflict, message, field}).
    """

    def __init__(self, conflicts: list[tuple[str, str]]):
        self.causes = [
            {"type": "FieldManagerConflict", "message": f"conflict with {who}", "field": path}
            for who, path in conflicts
        ]
        self.conflicts = [f"conflict with {who}: {path}" for who, path in conflicts]
        super().__init__(_conflict_message(conflicts), code=409)


def _conflict_message(conflicts: list[tuple[str, str]]) -> str:
    """Word the 409 message like the API server's getConflictMessage."""
    if len(conflicts) == 1:
        who, path = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {who}: {path}"
    lines: list[str] = []
    for who in sorted({who for who, _ in conflicts}):
        lines.append(f"conflicts with {who}:")
        lines.extend(f"- {path}" for w, path in conflicts if w == who)
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


# --- which lists merge, and by which keys (k8s.io/api struct tags) ------------

_CONTAINER_LISTS = {"containers", "initContainers", "ephemeralContainers"}
_KEYED_LISTS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "resourceClaims": ("name",),
    "schedulingGates": ("name",),
    "podIPs": ("ip",),
    "hostIPs": ("ip",),
}
# Key fields the schema defaults, so an element may omit them (server-side apply).
_KEY_DEFAULTS = {"protocol": "TCP"}
# Maps server-side apply replaces whole (+structType=atomic / +mapType=atomic).
_ATOMIC_MAPS = {"selector", "nodeSelector", "podSelector", "namespaceSelector", "labelSelector"}
_ATOMIC = ("atomic", ())
_SET = ("set", ())


def _list_rule(ctx: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """How the list at `ctx` (field names, "[]" for a list item) merges: map by keys, set, or atomic.

    For strategic merge patch the merge key is the first key; server-side apply
    uses all of them (container ports are keyed by containerPort and protocol).
    """
    name = ctx[-1] if ctx else ""
    parent = ctx[-2] if len(ctx) >= 2 else ""
    grandparent = ctx[-3] if len(ctx) >= 3 else ""
    if name == "ports":
        if parent == "[]" and grandparent in _CONTAINER_LISTS:
            return ("map", ("containerPort", "protocol"))
        if ctx == ("spec", "ports"):  # a Service
            return ("map", ("port", "protocol"))
        return _ATOMIC
    if name == "imagePullSecrets":  # merged in a PodSpec, atomic in a ServiceAccount
        return ("map", ("name",)) if parent == "spec" else _ATOMIC
    if name == "finalizers":  # metadata.finalizers; Namespace spec.finalizers is atomic
        return _SET if parent == "metadata" else _ATOMIC
    if ctx == ("secrets",):  # ServiceAccount
        return ("map", ("name",))
    if name in _KEYED_LISTS:
        return ("map", _KEYED_LISTS[name])
    return _ATOMIC  # tolerations, args, command and every other list


def _go(value: Any) -> str:
    """Format a decoded JSON value like Go's %v does, for error messages."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _go_type(value: Any) -> str:
    """Name a decoded JSON value's Go type, for error messages."""
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string" if isinstance(value, str) else "<nil>"


# --- JSON patch (RFC 6902) and JSON merge patch (RFC 7386) --------------------

_JSON_PATCH_OPS = ("add", "remove", "replace", "move", "copy", "test")


def apply_json_patch(obj: dict, ops: list) -> dict:
    """Apply an RFC 6902 JSON patch; a failing `test` or a missing path raises PatchError."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch", code=400
        )
    doc = copy.deepcopy(obj)
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if kind not in _JSON_PATCH_OPS:
            raise PatchError(f"Unexpected kind: {kind}")
        try:
            doc = jsonpatch.apply_patch(doc, [op], in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(f"testing value {path} failed: test failed") from None
        except (
            jsonpatch.JsonPatchException,
            jsonpointer.JsonPointerException,
            LookupError,
            TypeError,
        ):
            raise PatchError(_json_patch_failure(kind, op)) from None
    return doc


def _json_patch_failure(kind: str, op: dict) -> str:
    """Word a failed operation like evanphx/json-patch, which the API server uses."""
    if kind == "replace":
        return (
            f"replace operation does not apply: doc is missing key: {op.get('path')}: missing value"
        )
    if kind in ("move", "copy"):
        return f'{kind} operation does not apply: doc is missing from path: "{op.get("from")}": missing value'
    return (
        f'{kind} operation does not apply: doc is missing path: "{op.get("path")}": missing value'
    )


def apply_merge_patch(obj: dict, patch: dict) -> dict:
    """Apply an RFC 7386 merge patch: null deletes, objects merge, everything else replaces."""
    if not isinstance(patch, dict):
        raise PatchError("Invalid JSON Patch")
    return _merge_patch(obj, patch)


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# --- strategic merge patch ----------------------------------------------------

_PATCH = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM = "$deleteFromPrimitiveList"
_SET_ORDER = "$setElementOrder"


def apply_strategic_merge_patch(obj: dict, patch: dict) -> dict:
    """Apply a Kubernetes strategic merge patch to a built-in object.

    Lists with a merge key merge element by element (new elements go first, as
    on the real server); other lists are replaced. Directives: `$patch`
    (replace or delete, on a map or a list element), `$retainKeys`,
    `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.
    """
    if not isinstance(patch, dict):
        raise PatchError("invalid JSON document", code=400)
    return _smp_map(copy.deepcopy(obj), copy.deepcopy(patch), ())


def _strip_directives(value: Any) -> Any:
    """Drop leftover `$` keys from a value copied in whole (the decoder would drop them too)."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _directive_field(key: str, prefix: str, message: str) -> str:
    """The field a parallel-list directive (`$prefix/field`) names."""
    head, _, name = key.partition("/")
    if head != prefix or not name:
        raise PatchError(message, code=400)
    return name


def _smp_new(value: Any, ctx: tuple[str, ...]) -> Any:
    """A patch value for a field the original lacks, with its directives applied."""
    if isinstance(value, dict):
        return _smp_map({}, value, ctx)
    if isinstance(value, list):
        return _smp_list([], value, ctx)
    return value


def _smp_map(original: dict, patch: dict, ctx: tuple[str, ...]) -> dict:
    """Merge a patch map into an original map (strategicpatch.mergeMap)."""
    if _PATCH in patch:
        directive = patch[_PATCH]
        if directive == "replace":
            return _strip_directives({k: v for k, v in patch.items() if k != _PATCH})
        if directive == "delete":
            return {}
        raise PatchError(f"unknown patch type: {_go(directive)} in map: {_go(patch)}")
    result = dict(original) if isinstance(original, dict) else {}
    patch = dict(patch)
    _smp_retain_keys(result, patch)
    _smp_set_element_order(result, patch, ctx)
    deletions: list[tuple[str, Any]] = []
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM):
            name = _directive_field(key, _DELETE_FROM, "invalid patch format of primitive list")
            deletions.append((name, value))
            continue
        if key.startswith("$"):
            raise PatchError(
                f'strict decoding error: unknown field "{".".join(ctx + (key,))}"', code=400
            )
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif isinstance(current, dict) and isinstance(value, dict):
            result[key] = _smp_map(current, value, ctx + (key,))
        elif isinstance(current, list) and isinstance(value, list):
            result[key] = _smp_list(current, value, ctx + (key,))
        else:
            result[key] = _smp_new(value, ctx + (key,))
    for name, values in deletions:
        if not isinstance(values, list):
            raise PatchError("invalid patch format of primitive list", code=400)
        if isinstance(result.get(name), list):
            result[name] = [v for v in result[name] if v not in values]
            if not result[name]:
                del result[name]  # an empty list is omitted when served
    return result


def _smp_retain_keys(result: dict, patch: dict) -> None:
    """Apply `$retainKeys`: drop original keys it does not list (applyRetainKeysDirective)."""
    if _RETAIN_KEYS not in patch:
        return
    retain = patch.pop(_RETAIN_KEYS)
    if not isinstance(retain, list):
        raise PatchError("invalid patch format of retainKeys", code=400)
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM, _SET_ORDER)):
            continue
        if key not in retain:
            raise PatchError("invalid patch format of retainKeys", code=400)
    for key in list(result):
        if key not in retain:
            del result[key]


def _identity(item: Any, merge_key: str) -> Any:
    """What orders and matches list elements: the merge key's value, or the element itself."""
    return item.get(merge_key) if merge_key and isinstance(item, dict) else item


def _require_key(item: Any, merge_key: str) -> None:
    if not isinstance(item, dict):
        raise PatchError(f"expected a map[string]interface {{}}, but received a {_go_type(item)}")
    if merge_key not in item:
        raise PatchError(f"map: {_go(item)} does not contain declared merge key: {merge_key}")


def _position(items: list, item: Any, merge_key: str) -> int:
    wanted = _identity(item, merge_key)
    for i, candidate in enumerate(items):
        if _identity(candidate, merge_key) == wanted:
            return i
    return -1


def _ordered(
    patch_items: list, server_only: list, patch_order: list, server_order: list, merge_key: str
) -> list:
    """Interleave patched and server-only elements (normalizeElementOrder + mergeSortedSlice).

    Patched elements follow the patch's order, server-only ones the live order;
    a new element (absent from the live list) is placed before the remaining
    server-only elements, which is why a patch prepends new containers.
    """

    def rank(order: list, item: Any) -> int:
        position = _position(order, item, merge_key)
        return position if position >= 0 else len(order)

    right = sorted(patch_items, key=lambda x: rank(patch_order, x))
    left = sorted(server_only, key=lambda x: rank(server_order, x))
    out: list = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li = _position(server_order, left[i], merge_key)
            ri = _position(server_order, right[j], merge_key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _smp_list(original: list, patch: list, ctx: tuple[str, ...]) -> list:
    """Merge a patch list into an original list (strategicpatch.mergeSlice)."""
    kind, keys = _list_rule(ctx)
    if kind == "atomic":
        return _strip_directives(patch)
    if not original and not patch:
        return original
    if kind == "set":
        if any(isinstance(v, (dict, list)) for v in original + patch):
            raise PatchError("cannot merge lists without merge key for type map")
        merged: list = []
        for value in original + patch:
            if value not in merged:
                merged.append(value)
        in_patch = [v for v in merged if v in patch]
        server_only = [v for v in merged if v not in patch]
        return _ordered(in_patch, server_only, patch, original, "")
    merge_key = keys[0]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(
                f"expected a map[string]interface {{}}, but received a {_go_type(item)}"
            )
    regular: list[dict] = []
    replace = False
    for item in patch:
        directive = item.get(_PATCH)
        if directive is None:
            regular.append(item)
        elif directive == "delete":
            _require_key(item, merge_key)
            original = [
                o for o in original if not (merge_key in o and o[merge_key] == item[merge_key])
            ]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"unknown patch type: {_go(directive)} in map: {_go(item)}")
    if replace:
        original, regular = [_strip_directives(x) for x in regular], []
    merged = list(original)
    for item in regular:
        _require_key(item, merge_key)
        index = next(
            (i for i, o in enumerate(merged) if merge_key in o and o[merge_key] == item[merge_key]),
            None,
        )
        if index is None:
            merged.append(_smp_map({}, item, ctx + ("[]",)))
        else:
            merged[index] = _smp_map(merged[index], item, ctx + ("[]",))
    in_patch = [m for m in merged if _position(regular, m, merge_key) >= 0]
    server_only = [m for m in merged if _position(regular, m, merge_key) < 0]
    return _ordered(in_patch, server_only, regular, original, merge_key)


def _smp_set_element_order(result: dict, patch: dict, ctx: tuple[str, ...]) -> None:
    """Apply `$setElementOrder/<field>` lists together with their patch lists (mergePatchIntoOriginal)."""
    for key in [k for k in patch if k.startswith(_SET_ORDER)]:
        order = patch.pop(key)
        if not isinstance(order, list):
            raise PatchError(f"expected a []interface {{}}, but received a {_go_type(order)}")
        name = _directive_field(key, _SET_ORDER, "invalid patch format of setElementOrder list")
        kind, keys = _list_rule(ctx + (name,))
        merge_key = keys[0] if kind == "map" else ""
        current, patch_list = result.get(name), patch.get(name)
        for value in (current, patch_list):
            if value is not None and not isinstance(value, list):
                raise PatchError(f"expected a []interface {{}}, but received a {_go_type(value)}")
        _check_set_order(patch_list or [], order, merge_key)
        if current is None and patch_list is None:
            continue
        merged = (
            _smp_list(current or [], patch_list, ctx + (name,))
            if patch_list is not None
            else current
        )
        if merge_key:
            for item in merged:
                _require_key(item, merge_key)
        listed = [m for m in merged if _position(order, m, merge_key) >= 0]
        server_only = [m for m in merged if _position(order, m, merge_key) < 0]
        result[name] = _ordered(listed, server_only, order, current or [], merge_key)
        patch.pop(name, None)


def _check_set_order(patch_list: list, order: list, merge_key: str) -> None:
    """Reject a patch list whose elements are not in `$setElementOrder` in the same order."""
    if not patch_list or not order:
        return
    kept = [
        p
        for p in patch_list
        if not (merge_key and isinstance(p, dict) and p.get(_PATCH) == "delete")
    ]
    pi = si = 0
    while pi < len(kept) and si < len(order):
        item = kept[pi]
        if isinstance(item, dict) and _PATCH in item:
            pi += 1
            continue
        if merge_key:
            _require_key(item, merge_key)
            _require_key(order[si], merge_key)
        if _identity(item, merge_key) == _identity(order[si], merge_key):
            pi += 1
        si += 1
    if pi < len(kept) and si >= len(order):
        raise PatchError(
            f"The order in patch list:\n{_go(patch_list)}\n doesn't match {_SET_ORDER} list:\n{_go(order)}\n"
        )


# --- field sets (structured-merge-diff), in FieldsV1 path-element form --------
# A path is a tuple of elements: 'f:spec', 'k:{"name":"web"}', 'v:"foo"', 'i:0'.

Path = tuple[str, ...]
_MISSING: Any = object()
# Metadata the API server never records as owned (stripMetaManager).
_STRIPPED: set[Path] = {("f:apiVersion",), ("f:kind",), ("f:metadata",)} | {
    ("f:metadata", f"f:{name}")
    for name in (
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    )
}
# Structs that exist even in an empty object, so an Update never owns them as
# a whole (no "." entry): only their fields.
_ALWAYS_PRESENT = {
    "f:metadata",
    "f:spec",
    "f:status",
    "f:template",
    "f:strategy",
    "f:updateStrategy",
    "f:containers",
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _element(item: Any, kind: str, keys: tuple[str, ...], index: int, where: Path | None) -> str:
    """The path element naming a list item; with `where` set, a missing key is an error."""
    if kind == "set":
        return "v:" + _json(item)
    values = {}
    for key in keys:
        if isinstance(item, dict) and key in item:
            values[key] = item[key]
        elif key in _KEY_DEFAULTS:
            values[key] = _KEY_DEFAULTS[key]
        elif where is None:
            return f"i:{index}"
        else:
            raise PatchError(
                f"{_path_text(where)}: element {index}: associative list with keys has an element "
                f'that omits key field "{key}" (and doesn\'t have default value)'
            )
    return "k:" + _json(values)


def _items(items: list, ctx: tuple[str, ...], where: Path | None = None) -> dict[str, Any]:
    """Index a keyed list by path element, first occurrence wins (duplicates are errors with `where`)."""
    kind, keys = _list_rule(ctx)
    indexed: dict[str, Any] = {}
    for i, item in enumerate(items):
        element = _element(item, kind, keys, i, where)
        if element in indexed and where is not None:
            raise PatchError(
                f"{_path_text(where)}: duplicate entries for key {_path_text((element,))}"
            )
        indexed.setdefault(element, item)
    return indexed


def _path_text(path: Path) -> str:
    """Render a path like fieldpath.Path.String: `.spec.containers[name="web"].image`."""
    parts = []
    for element in path:
        kind, body = element[0], element[2:]
        if kind == "f":
            parts.append("." + body)
        elif kind == "k":
            keys = json.loads(body)
            parts.append("[" + ",".join(f"{k}={_json(v)}" for k, v in keys.items()) + "]")
        elif kind == "v":
            parts.append(f"[={body}]")
        else:
            parts.append(f"[{body}]")
    return "".join(parts)


def _applied_fields(value: Any, ctx: tuple[str, ...] = (), path: Path = ()) -> set[Path]:
    """The fields an apply configuration sets (TypedValue.ToFieldSet)."""
    if isinstance(value, dict):
        if ctx and ctx[-1] in _ATOMIC_MAPS:
            return {path}
        out: set[Path] = set()
        for key, child in value.items():
            out |= _applied_fields(child, ctx + (key,), path + (f"f:{key}",))
        return out
    if isinstance(value, list):
        kind, _ = _list_rule(ctx)
        if kind == "atomic":
            return {path}
        out = set()
        for element, item in _items(value, ctx, where=path).items():
            out.add(path + (element,))
            if kind == "map":
                out |= _applied_fields(item, ctx + ("[]",), path + (element,))
        return out
    return {path}


@dataclass
class _Diff:
    """Paths added, removed and modified between two objects (TypedValue.Compare)."""

    added: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)

    def changed(self) -> set[Path]:
        """Paths whose value the new object sets or changes, as a manager would own them."""
        owned = self.added | self.modified
        return {p for p in owned if p and p not in _STRIPPED}


def _is_leaf(old: Any, new: Any, ctx: tuple[str, ...]) -> bool:
    values = [v for v in (old, new) if v is not _MISSING]
    if any(not isinstance(v, (dict, list)) for v in values) or len({type(v) for v in values}) > 1:
        return True
    if isinstance(values[0], dict) and ctx and ctx[-1] in _ATOMIC_MAPS:
        return True
    if isinstance(values[0], list) and _list_rule(ctx)[0] == "atomic":
        return True
    return all(len(v) == 0 for v in values)


def _diff(
    old: Any, new: Any, ctx: tuple[str, ...] = (), path: Path = (), out: _Diff | None = None
) -> _Diff:
    out = out if out is not None else _Diff()
    if old is _MISSING and new is _MISSING:
        return out
    if _is_leaf(old, new, ctx):
        if old is _MISSING:
            out.added.add(path)
        elif new is _MISSING:
            out.removed.add(path)
        elif old != new:
            out.modified.add(path)
        return out
    sample = new if old is _MISSING else old
    if isinstance(sample, dict):
        before = old if isinstance(old, dict) else {}
        after = new if isinstance(new, dict) else {}
        for key in list(before) + [k for k in after if k not in before]:
            _diff(
                before.get(key, _MISSING),
                after.get(key, _MISSING),
                ctx + (key,),
                path + (f"f:{key}",),
                out,
            )
    else:
        before = _items(old if isinstance(old, list) else [], ctx)
        after = _items(new if isinstance(new, list) else [], ctx)
        for element in list(before) + [e for e in after if e not in before]:
            _diff(
                before.get(element, _MISSING),
                after.get(element, _MISSING),
                ctx + ("[]",),
                path + (element,),
                out,
            )
    if old is _MISSING and path and path[-1] not in _ALWAYS_PRESENT:
        out.added.add(path)
    elif new is _MISSING:
        out.removed.add(path)
    return out


def _to_fields_v1(paths: set[Path]) -> dict:
    """Encode a path set as FieldsV1 JSON ("." marks a node owned as a whole)."""
    tree: dict = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})

    def order(element: str) -> tuple[int, str]:
        return ("fkvi".find(element[0]), element)

    def encode(node: dict, prefix: Path) -> dict:
        out: dict = {}
        if node and prefix in paths:
            out["."] = {}
        for element in sorted(node, key=order):
            out[element] = encode(node[element], prefix + (element,))
        return out

    return encode(tree, ())


def _from_fields_v1(tree: Any, prefix: Path = ()) -> set[Path]:
    """Decode FieldsV1 JSON into a path set."""
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for element, child in tree.items():
        if element == ".":
            continue
        path = prefix + (element,)
        if not isinstance(child, dict) or not child or "." in child:
            out.add(path)
        out |= _from_fields_v1(child, path)
    return out


# --- managedFields entries ------------------------------------------------------


@dataclass
class _Entry:
    """One metadata.managedFields entry with its decoded field set."""

    manager: str
    operation: str
    api_version: str
    time: str | None
    subresource: str
    fields: set[Path]

    def identity(self) -> tuple[str, str, str, str]:
        """What makes two entries the same manager (appliers ignore apiVersion)."""
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def display(self) -> str:
        """Name the manager as conflict messages do (printManager)."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def encode(self) -> dict:
        entry = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields_v1(self.fields),
        }
        if self.time is None:
            del entry["time"]
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _decode_entries(obj: dict | None) -> list[_Entry]:
    entries: list[_Entry] = []
    for raw in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        entry = _Entry(
            manager=raw.get("manager", ""),
            operation=raw.get("operation", "Update"),
            api_version=raw.get("apiVersion", ""),
            time=raw.get("time"),
            subresource=raw.get("subresource", ""),
            fields=_from_fields_v1(raw.get("fieldsV1") or {}),
        )
        same = next((e for e in entries if e.identity() == entry.identity()), None)
        if same:
            same.fields |= entry.fields
        else:
            entries.append(entry)
    return entries


def _store_entries(obj: dict, entries: list[_Entry]) -> dict:
    """Write entries into metadata.managedFields, sorted as the API server sorts them."""
    kept = [e for e in entries if e.fields]
    kept.sort(key=lambda e: (e.operation, e.time or "", e.manager, e.api_version, e.subresource))
    metadata = obj.setdefault("metadata", {})
    if kept:
        metadata["managedFields"] = [e.encode() for e in kept]
    else:
        metadata.pop("managedFields", None)
    return obj


def _find(entries: list[_Entry], identity: tuple[str, str, str, str]) -> _Entry | None:
    return next((e for e in entries if e.identity() == identity), None)


def _bare(obj: dict | None) -> dict:
    """A deep copy without metadata.managedFields ({} for a missing object)."""
    if obj is None:
        return {}
    out = copy.deepcopy(obj)
    if isinstance(out.get("metadata"), dict):
        out["metadata"].pop("managedFields", None)
    return out


def _in_scope(path: Path, subresource: str | None, reset_status: bool) -> bool:
    """Whether a write through this endpoint can own `path` (status goes through /status)."""
    is_status = path[:1] == ("f:status",)
    if subresource == "status":
        return is_status
    return not (reset_status and is_status)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# --- server-side apply --------------------------------------------------------


def _apply_merge(live: Any, applied: Any, ctx: tuple[str, ...]) -> Any:
    """Merge an apply configuration into the live object (TypedValue.Merge)."""
    if (
        isinstance(live, dict)
        and isinstance(applied, dict)
        and not (ctx and ctx[-1] in _ATOMIC_MAPS)
    ):
        out = dict(live)
        for key, value in applied.items():
            out[key] = (
                _apply_merge(live[key], value, ctx + (key,))
                if key in live
                else copy.deepcopy(value)
            )
        return out
    if isinstance(live, list) and isinstance(applied, list) and _list_rule(ctx)[0] != "atomic":
        return _merge_keyed_list(live, applied, ctx)
    return copy.deepcopy(applied)


def _merge_keyed_list(live: list, applied: list, ctx: tuple[str, ...]) -> list:
    """Merge keyed lists: live-only items keep their place, applied items follow the applied order."""
    lhs, rhs = _items(live, ctx), _items(applied, ctx)
    left, right = list(lhs), list(rhs)
    shared = [e for e in right if e in lhs]
    out: list = []
    done: set[str] = set()
    li = ri = si = 0

    def take(element: str) -> None:
        item = rhs.get(element, _MISSING)
        if item is _MISSING:
            out.append(copy.deepcopy(lhs[element]))
        elif element in lhs:
            out.append(_apply_merge(lhs[element], item, ctx + ("[]",)))
        else:
            out.append(copy.deepcopy(item))
        done.add(element)

    while li < len(left) or ri < len(right):
        if li < len(left) and left[li] in done:
            li += 1
            continue
        if li < len(left) and ri < len(right):
            element = left[li]
            if element == right[ri]:
                take(element)
                li, ri, si = li + 1, ri + 1, si + 1
                continue
            if element in rhs and si < len(shared) and shared[si] != element:
                li += 1
                continue
        if li < len(left) and left[li] not in rhs:
            take(left[li])
            li += 1
            continue
        if ri < len(right):
            element = right[ri]
            take(element)
            ri += 1
            if si < len(shared) and shared[si] == element:
                si += 1
            continue
        li += 1
    return out


def _is_key_field(path: Path) -> bool:
    """Whether `path` is a key field of a list item, which stays as long as the item does."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _remove_path(obj: dict, path: Path) -> None:
    """Delete the field or list item at `path`, then any container it left empty (below depth 1)."""
    trail: list[tuple[Any, Any]] = []
    node: Any = obj
    ctx: tuple[str, ...] = ()
    for element in path:
        if element.startswith("f:"):
            name = element[2:]
            if not isinstance(node, dict) or name not in node:
                return
            trail.append((node, name))
            node, ctx = node[name], ctx + (name,)
        else:
            if not isinstance(node, list):
                return
            kind, keys = _list_rule(ctx)
            index = next(
                (
                    i
                    for i, item in enumerate(node)
                    if _element(item, kind, keys, i, None) == element
                ),
                None,
            )
            if index is None:
                return
            trail.append((node, index))
            node, ctx = node[index], ctx + ("[]",)
    container, key = trail.pop()
    del container[key]
    while len(trail) >= 2:
        container, key = trail.pop()
        if container[key] not in ({}, []):
            break
        del container[key]


def server_side_apply(
    live: dict | None,
    applied: dict,
    *,
    manager: str,
    force: bool,
    now: str,
    api_version: str,
    subresource: str | None = None,
    reset_status: bool = True,
) -> dict:
    """Server-side apply `applied` (the manager's full intent) onto `live`, or create it.

    Merges the configuration, removes fields the manager applied last time but
    no longer does (unless someone else owns them), checks ownership and
    records metadata.managedFields. Raises ApplyConflict when another manager
    owns a field whose value would change and `force` is False; with `force`
    the field changes owner. A live object without managedFields is first
    attributed to "before-first-apply", as the API server does. With
    `reset_status` (main resource of a kind with a status subresource) the
    applied status is ignored; pass `subresource="status"` for /status.
    """
    if not isinstance(applied, dict):
        raise PatchError("invalid JSON document", code=400)
    if (applied.get("metadata") or {}).get("managedFields") is not None:
        raise PatchError("metadata.managedFields must be nil", code=400)
    if applied.get("apiVersion") not in (None, api_version):
        raise PatchError(
            "Incorrect version specified in apply patch. "
            f"Specified patch version: {applied['apiVersion']}, expected: {api_version}",
            code=400,
        )
    config = _drop_nulls(copy.deepcopy(applied))
    if subresource == "status":
        config = {"status": config["status"]} if "status" in config else {}
    elif reset_status:
        config.pop("status", None)

    base = _bare(live)
    entries = _decode_entries(live)
    if live is not None and not entries:
        before = _diff({}, base).changed()
        entries.append(
            _Entry(
                "before-first-apply",
                "Update",
                api_version,
                now,
                "",
                {p for p in before if _in_scope(p, None, reset_status)},
            )
        )

    owned = {
        p
        for p in _applied_fields(config)
        if p not in _STRIPPED and _in_scope(p, subresource, reset_status)
    }
    me = _find(entries, (manager, "Apply", "", subresource or ""))
    others = [e for e in entries if e is not me]
    keep = owned.union(*(e.fields for e in others))
    merged = _apply_merge(base, config, ())
    for path in sorted((me.fields if me else set()) - keep, key=len):
        if not _is_key_field(path) and not any(k[: len(path)] == path for k in keep):
            _remove_path(merged, path)

    diff = _diff(base, merged)
    changed = diff.changed()
    conflicts = [(e, sorted(e.fields & changed)) for e in others if e.fields & changed]
    if conflicts and not force:
        raise ApplyConflict([(e.display(), _path_text(p)) for e, paths in conflicts for p in paths])
    for entry in others:
        entry.fields -= changed | diff.removed
    if me is None:
        me = _Entry(manager, "Apply", api_version, now, subresource or "", set())
        entries.append(me)
    me.fields, me.api_version, me.time = owned, api_version, now
    return _store_entries(merged, entries)


def record_update(
    old: dict | None,
    new: dict,
    *,
    manager: str,
    now: str,
    api_version: str,
    subresource: str | None = None,
    reset_status: bool = True,
) -> dict:
    """Record a create, update or non-apply patch in metadata.managedFields.

    The manager's `Update` entry gains every field the write added or changed
    (taking it from other managers) and every manager loses removed fields.
    Status is tracked only for `subresource="status"` unless `reset_status`
    is False. A request that carries its own non-empty managedFields keeps them
    as the starting point, as on the real server.
    """
    result = copy.deepcopy(new)
    entries = _decode_entries(result) or _decode_entries(old)
    diff = _diff(_bare(old), _bare(new))
    changed = {p for p in diff.changed() if _in_scope(p, subresource, reset_status)}
    for entry in entries:
        entry.fields -= changed | diff.removed
    if changed:
        identity = (manager, "Update", api_version, subresource or "")
        me = _find(entries, identity)
        if me is None:
            me = _Entry(manager, "Update", api_version, now, subresource or "", set())
            entries.append(me)
        me.fields |= changed
        me.time = now
    return _store_entries(result, entries)
