"""Label and field selectors as the Kubernetes API server evaluates them.

The sandbox answers ``?labelSelector=`` and ``?fieldSelector=`` on list, watch
and delete-collection requests, and controllers match Pods to ReplicaSets and
Services. Clients see the result and the 400 errors, so the grammar, the
per-kind field tables and the error texts follow k8s.io/apimachinery
(``pkg/labels``, ``pkg/fields``) and the field-label conversion functions of
k8s.io/kubernetes, not a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "label_key_errors",
    "label_selector_from_spec",
    "label_value_errors",
    "parse_field_selector",
    "parse_label_selector",
]


class SelectorError(ValueError):
    """A selector the API server would reject with 400 BadRequest; str() is the message."""


# --- label key and value validation (apimachinery/pkg/util/validation) -------

_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_RE = re.compile(_NAME_FMT)
_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_VALUE_FMT = "(" + _NAME_FMT + ")?"
_VALUE_RE = re.compile(_VALUE_FMT)
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_DNS1123_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_RE = re.compile(_DNS1123_FMT)
_DNS1123_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Format a regex failure the way validation.RegexError does (double spaces included)."""
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def _byte_len(text: str) -> int:
    return len(text.encode())


def label_key_errors(key: str) -> list[str]:
    """Problems with a label key (validation.IsQualifiedName); empty when valid."""
    errors: list[str] = []
    parts = key.split("/")
    if len(parts) > 2:
        return [
            "a qualified name "
            + _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if _byte_len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not _DNS1123_RE.fullmatch(prefix):
                errors.append(
                    "prefix part " + _regex_error(_DNS1123_MSG, _DNS1123_FMT, "example.com")
                )
    if not name:
        errors.append("name part must be non-empty")
    elif _byte_len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _NAME_RE.fullmatch(name):
        errors.append(
            "name part " + _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    """Problems with a label value (validation.IsValidLabelValue); empty when valid."""
    errors: list[str] = []
    if _byte_len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _VALUE_RE.fullmatch(value):
        errors.append(_regex_error(_VALUE_MSG, _VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


def _invalid(path: str, value: Any, detail: str) -> str:
    """Render a field.Invalid error: `<path>: Invalid value: <value>: <detail>`."""
    if isinstance(value, str):
        shown = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif value is None or value == []:
        shown = "null"
    else:
        shown = "[" + ",".join(f'"{v}"' for v in value) + "]"
    return f"{path}: Invalid value: {shown}: {detail}"


def _aggregate(errors: list[str]) -> str:
    """Join errors the way utilerrors.Aggregate does."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


# --- label selectors ----------------------------------------------------------

_SET_OPS = ("in", "notin")
_EXACT_OPS = ("=", "==", "!=")
_COMPARE_OPS = ("gt", "lt")
_UNARY_OPS = ("exists", "!")
_BINARY_OPS_TEXT = "in, notin, =, ==, !=, gt, lt"


@dataclass(frozen=True)
class Requirement:
    """One label requirement: key, operator (in, notin, =, ==, !=, gt, lt, exists, !) and values."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether the labels satisfy this requirement (labels.Requirement.Matches)."""
        present = self.key in labels
        if self.operator in ("in", "=", "=="):
            return present and labels[self.key] in self.values
        if self.operator in ("notin", "!="):
            return not present or labels[self.key] not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if not present:
            return False
        try:
            have, want = int(labels[self.key]), int(self.values[0])
        except ValueError:
            return False
        return have > want if self.operator == "gt" else have < want

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return "!" + self.key
        values = ",".join(sorted(self.values))
        if self.operator in _SET_OPS:
            return f"{self.key} {self.operator} ({values})"
        symbol = {"gt": ">", "lt": "<"}.get(self.operator, self.operator)
        return f"{self.key}{symbol}{values}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements; `nothing` marks the selector that matches no object."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything (matches every object)."""
        return not self.nothing and not self.requirements

    def matches(self, labels: dict[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _new_requirement(key: str, operator: str, values: list[str]) -> Requirement:
    """Validate and build a requirement like labels.NewRequirement (errors aggregated)."""
    errors: list[str] = []
    if key_errors := label_key_errors(key):
        errors.append(_invalid("key", key, "; ".join(key_errors)))
    values_path = "values"
    if operator in _SET_OPS and not values:
        errors.append(
            _invalid(values_path, values, "for 'in', 'notin' operators, values set can't be empty")
        )
    elif operator in _EXACT_OPS and len(values) != 1:
        errors.append(
            _invalid(values_path, values, "exact-match compatibility requires one single value")
        )
    elif operator in _UNARY_OPS and values:
        errors.append(
            _invalid(values_path, values, "values set must be empty for exists and does not exist")
        )
    elif operator in _COMPARE_OPS:
        if len(values) != 1:
            errors.append(
                _invalid(
                    values_path, values, "for 'Gt', 'Lt' operators, exactly one value is required"
                )
            )
        for i, value in enumerate(values):
            if not re.fullmatch(r"[+-]?[0-9]+", value):
                errors.append(
                    _invalid(
                        f"{values_path}[{i}]",
                        value,
                        "for 'Gt', 'Lt' operators, the value must be an integer",
                    )
                )
    for i, value in enumerate(values):
        if value_errors := label_value_errors(value):
            errors.append(_invalid(f"{values_path}[{i}][{key}]", value, "; ".join(value_errors)))
    if errors:
        raise SelectorError(_aggregate(errors))
    return Requirement(key, operator, tuple(values))


# Lexer for the string form (labels.Lexer): special symbols, identifiers, keywords.
_SPECIAL = "=!(),><"
_WHITESPACE = " \t\r\n"
_SYMBOLS = {
    ")": ")",
    ",": ",",
    "!": "!",
    "==": "==",
    "=": "=",
    ">": ">",
    "<": "<",
    "!=": "!=",
    "(": "(",
}
_KEYWORDS = ("in", "notin")
_END = "end"
_IDENT = "ident"


def _lex(text: str) -> list[tuple[str, str]]:
    """Split a selector into (token, literal) pairs, ending with the end-of-string token."""
    items: list[tuple[str, str]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos >= len(text):
            items.append((_END, ""))
            return items
        if text[pos] in _SPECIAL:
            end = pos
            best = ""
            while end < len(text) and text[end] in _SPECIAL:
                candidate = text[pos : end + 1]
                if candidate in _SYMBOLS:
                    best = candidate
                elif best:
                    break
                end += 1
            pos += len(best)
            items.append((_SYMBOLS[best], best))
            continue
        end = pos
        while end < len(text) and text[end] not in _SPECIAL and text[end] not in _WHITESPACE:
            end += 1
        word = text[pos:end]
        items.append((word if word in _KEYWORDS else _IDENT, word))
        pos = end


class _LabelParser:
    """Recursive-descent parser mirroring labels.Parser, error texts included."""

    def __init__(self, text: str):
        self.items = _lex(text)
        self.pos = 0

    def peek(self, values: bool = True) -> tuple[str, str]:
        token, literal = self.items[self.pos]
        if values and token in _KEYWORDS:
            token = _IDENT
        return token, literal

    def take(self, values: bool = True) -> tuple[str, str]:
        item = self.peek(values)
        self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal = self.peek()
            if token == _END:
                return requirements
            if token not in (_IDENT, "!"):
                raise SelectorError(
                    f"found '{literal}', expected: !, identifier, or 'end of string'"
                )
            try:
                requirements.append(self.requirement())
            except SelectorError as err:
                raise SelectorError(f"unable to parse requirement: {err}") from None
            token, literal = self.take()
            if token == _END:
                return requirements
            if token != ",":
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            token, literal = self.peek()
            if token not in (_IDENT, "!"):
                raise SelectorError(f"found '{literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        negated = False
        token, literal = self.take()
        if token == "!":
            negated = True
            token, literal = self.take()
        if token != _IDENT:
            raise SelectorError(f"found '{literal}', expected: identifier")
        if key_errors := label_key_errors(literal):
            raise SelectorError(_invalid("<nil>", literal, "; ".join(key_errors)))
        key = literal
        if negated:
            return _new_requirement(key, "!", [])
        if self.peek()[0] in (_END, ","):
            return _new_requirement(key, "exists", [])
        token, literal = self.take(values=False)
        operators = {
            "in": "in",
            "notin": "notin",
            "=": "=",
            "==": "==",
            "!=": "!=",
            ">": "gt",
            "<": "lt",
        }
        if token not in operators:
            raise SelectorError(f"found '{literal}', expected: {_BINARY_OPS_TEXT}")
        operator = operators[token]
        values = self.set_values() if operator in _SET_OPS else self.exact_value()
        return _new_requirement(key, operator, sorted(set(values)))

    def set_values(self) -> list[str]:
        token, literal = self.take()
        if token != "(":
            raise SelectorError(f"found '{literal}' expected: '('")
        token, literal = self.peek()
        if token == ")":
            self.take()
            return [""]
        if token not in (_IDENT, ","):
            raise SelectorError(f"found '{literal}', expected: ',', ')' or identifier")
        values = self.identifiers()
        if self.take()[0] != ")":
            raise SelectorError(f"found '{literal}', expected: ')'")
        return values

    def identifiers(self) -> list[str]:
        values: list[str] = []
        while True:
            token, literal = self.take()
            if token == _IDENT:
                values.append(literal)
                next_token, next_literal = self.peek()
                if next_token == ")":
                    return values
                if next_token != ",":
                    raise SelectorError(f"found '{next_literal}', expected: ',' or ')'")
            elif token == ",":
                if not values:
                    values.append("")
                next_token = self.peek()[0]
                if next_token == ")":
                    return values + [""]
                if next_token == ",":
                    self.take()
                    values.append("")
            else:
                raise SelectorError(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> list[str]:
        if self.peek()[0] in (_END, ","):
            return [""]
        token, literal = self.take()
        if token != _IDENT:
            raise SelectorError(f"found '{literal}', expected: identifier")
        return [literal]


def parse_label_selector(text: str) -> LabelSelector:
    """Parse the string form (`app=web,tier in (a,b),!canary`); empty text selects everything."""
    requirements = _LabelParser(text or "").parse()
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


_SPEC_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def label_selector_from_spec(selector: dict | None) -> LabelSelector:
    """Convert a metav1.LabelSelector object (metav1.LabelSelectorAsSelector).

    None matches nothing and {} (no matchLabels, no matchExpressions) matches
    everything. That is the generic rule used by ReplicaSets, Deployments,
    StatefulSets, Jobs, NetworkPolicy podSelector and policy/v1 PDBs; the API
    server separately rejects an empty selector on a Deployment or ReplicaSet
    ("empty selector is invalid for deployment"), and a Service's plain-map
    selector is not a LabelSelector (an empty one manages no endpoints).
    """
    if selector is None:
        return LabelSelector(nothing=True)
    requirements: list[Requirement] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        requirements.append(_new_requirement(key, "=", [value]))
    for expression in selector.get("matchExpressions") or []:
        operator = expression.get("operator")
        if operator not in _SPEC_OPERATORS:
            raise SelectorError(f'"{operator}" is not a valid label selector operator')
        values = list(expression.get("values") or [])
        requirements.append(
            _new_requirement(expression.get("key", ""), _SPEC_OPERATORS[operator], values)
        )
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


# --- field selectors ----------------------------------------------------------


def _get(obj: dict, dotted: str) -> Any:
    """Walk a dotted path through nested dicts; None when any step is missing."""
    current: Any = obj
    for part in dotted.split("."):
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def _text(value: Any) -> str:
    """Stringify a selectable value as ToSelectableFields would (missing is "")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _path(dotted: str):
    return lambda obj: _text(_get(obj, dotted))


def _flag(dotted: str):
    return lambda obj: "true" if _get(obj, dotted) else "false"


def _count(dotted: str):
    return lambda obj: str(_get(obj, dotted) or 0)


def _pod_ip(obj: dict) -> str:
    ips = _get(obj, "status.podIPs") or []
    if ips and isinstance(ips[0], dict) and ips[0].get("ip"):
        return str(ips[0]["ip"])
    return _text(_get(obj, "status.podIP"))


def _event_source(obj: dict) -> str:
    return _text(_get(obj, "source.component")) or _text(obj.get("reportingComponent"))


_NAME = {"metadata.name": _path("metadata.name")}
_NAMESPACED = {**_NAME, "metadata.namespace": _path("metadata.namespace")}

_CORE_EVENT_FIELDS = {
    **_NAMESPACED,
    **{
        f"involvedObject.{f}": _path(f"involvedObject.{f}")
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reason": _path("reason"),
    "reportingComponent": _path("reportingComponent"),
    "source": _event_source,
    "type": _path("type"),
}

# Kinds with a registered field-label conversion func: label -> value getter.
# Labels accepted by the conversion but never set by ToSelectableFields read "".
_KIND_FIELDS: dict[str, dict[str, Any]] = {
    "Pod": {
        **_NAMESPACED,
        "spec.nodeName": _path("spec.nodeName"),
        "spec.restartPolicy": _path("spec.restartPolicy"),
        "spec.schedulerName": _path("spec.schedulerName"),
        "spec.serviceAccountName": _path("spec.serviceAccountName"),
        "spec.hostNetwork": _flag("spec.hostNetwork"),
        "status.phase": _path("status.phase"),
        "status.podIP": _pod_ip,
        "status.podIPs": lambda obj: "",
        "status.nominatedNodeName": _path("status.nominatedNodeName"),
    },
    "Node": {**_NAME, "spec.unschedulable": _flag("spec.unschedulable")},
    "Namespace": {**_NAME, "status.phase": _path("status.phase")},
    "Secret": {**_NAMESPACED, "type": _path("type")},
    "Service": {
        **_NAMESPACED,
        "spec.clusterIP": _path("spec.clusterIP"),
        "spec.type": _path("spec.type"),
    },
    "ReplicationController": {**_NAMESPACED, "status.replicas": _count("status.replicas")},
    "Event": _CORE_EVENT_FIELDS,
    "Job": {**_NAMESPACED, "status.successful": _count("status.succeeded")},
    "CertificateSigningRequest": {**_NAME, "spec.signerName": _path("spec.signerName")},
}
# Legacy spellings rewritten by the conversion funcs before matching.
_ALIASES = {"Pod": {"spec.host": "spec.nodeName"}}

# events.k8s.io/v1 Event: its own spellings, mapped onto the core Event fields.
_EVENTS_V1_ALIASES = {
    **{
        f"regarding.{f}": f"involvedObject.{f}"
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reportingController": "reportingComponent",
    "reason": "reason",
    "type": "type",
    "metadata.name": "metadata.name",
    "metadata.namespace": "metadata.namespace",
}
_EVENTS_V1_FIELDS = {
    **_NAMESPACED,
    **{
        f"involvedObject.{f}": _path(f"regarding.{f}")
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reason": _path("reason"),
    "reportingComponent": _path("reportingController"),
    "type": _path("type"),
}


@dataclass(frozen=True)
class FieldRequirement:
    """One field term: `field` compared with `value` by `=` (also `==`) or `!=`."""

    field: str
    operator: str
    value: str
    getter: Any = None

    def matches(self, obj: dict) -> bool:
        """Whether the object's selectable field compares as required."""
        have = self.getter(obj) if self.getter else ""
        return (have == self.value) if self.operator == "=" else (have != self.value)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{'=' if self.operator == '=' else '!='}{escaped}"


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of field terms for one kind; empty matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the selector does not restrict anything."""
        return not self.requirements

    def matches(self, obj: dict) -> bool:
        """Whether the object is selected."""
        return all(r.matches(obj) for r in self.requirements)

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal, if a term pins it (e.g. spec.nodeName), else None."""
        for r in self.requirements:
            if r.field == field and r.operator == "=":
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_terms(text: str) -> list[str]:
    """Split on commas not escaped by a backslash (fields.splitTerms)."""
    terms, start, in_slash = [], 0, False
    for i, char in enumerate(text):
        if in_slash:
            in_slash = False
        elif char == "\\":
            in_slash = True
        elif char == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Split at the first operator, trying `!=`, then `==`, then `=` at each position."""
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape(value: str) -> str:
    """Undo `\\\\`, `\\,` and `\\=` escapes; bare `,` or `=` is an error (fields.UnescapeValue)."""
    out, in_slash = [], False
    for char in value:
        if in_slash:
            if char not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{char}")
            out.append(char)
            in_slash = False
        elif char == "\\":
            in_slash = True
        elif char in ",=":
            # Go formats the rune with %v, which prints its code point.
            raise SelectorError(
                f"invalid field selector: unescaped character in value: {ord(char)}"
            )
        else:
            out.append(char)
    if in_slash:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _field_table(
    kind: str, group: str, custom: bool, cluster_scoped: bool, selectable_fields: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, str], Any]:
    """Return (getters, aliases, rejection message) for a kind, as the API server registers them."""
    if custom:
        getters = dict(_NAME if cluster_scoped else _NAMESPACED)
        for path in selectable_fields:
            label = path.lstrip(".")
            getters[label] = _path(label)
        return getters, {}, lambda label: f"field label not supported: {label}"
    if kind == "Event" and group == "events.k8s.io":
        return (
            _EVENTS_V1_FIELDS,
            _EVENTS_V1_ALIASES,
            lambda label: f"field label not supported: {label}",
        )
    if kind in _KIND_FIELDS:
        getters = _KIND_FIELDS[kind]
        aliases = {label: label for label in getters} | _ALIASES.get(kind, {})
        if kind == "Job":
            return (
                getters,
                aliases,
                lambda label: f'field label "{label}" not supported for batchv1.Job',
            )
        return getters, aliases, lambda label: f"field label not supported: {label}"
    # Kinds without a conversion func (ConfigMap, Deployment, ReplicaSet, ...).
    return (
        _NAMESPACED,
        {},
        lambda label: (
            f'"{label}" is not a known field selector: only "metadata.name", "metadata.namespace"'
        ),
    )


def parse_field_selector(
    text: str,
    kind: str,
    *,
    group: str = "",
    custom: bool = False,
    cluster_scoped: bool = False,
    selectable_fields: tuple[str, ...] = (),
) -> FieldSelector:
    """Parse `?fieldSelector=` for `kind` and check every field against the kind's table.

    Pass `group="events.k8s.io"` for events.k8s.io/v1 Events, `custom=True` for a
    custom resource (with `cluster_scoped` and the CRD's `selectableFields` JSON
    paths). Values are compared as strings; a missing field reads "" (booleans
    "false", counts "0"). No whitespace is trimmed, as on the server.
    """
    # Pass 1, the syntax (fields.ParseSelector): terms are sorted first, so the
    # first bad term in sorted order is the one reported.
    terms: list[tuple[str, str, str]] = []
    for term in sorted(_split_terms(text or "")):
        if not term:
            continue
        split = _split_term(term)
        if split is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        label, op, raw = split
        terms.append((label, "!=" if op == "!=" else "=", _unescape(raw)))
    # Pass 2, the kind's field-label conversion (Selector.Transform).
    getters, aliases, reject = _field_table(
        kind, group, custom, cluster_scoped, tuple(selectable_fields)
    )
    if not aliases:
        aliases = {label: label for label in getters}
    requirements: list[FieldRequirement] = []
    for label, op, value in terms:
        if label not in aliases:
            raise SelectorError(reject(label))
        field = aliases[label]
        requirements.append(FieldRequirement(field, op, value, getters.get(field)))
    return FieldSelector(tuple(requirements))
