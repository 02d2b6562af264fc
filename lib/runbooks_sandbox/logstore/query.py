"""The query DSL compiled to nodes that evaluate to position sets; query_string parsers."""

from __future__ import annotations

import bisect
import fnmatch
import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, tzinfo

from .common import TIME_FIELD, EsError, _illegal, _parsing
from .dates import _parse_tz, parse_date
from .index import _NO_TS, _NUMERIC, Index, _as_text, _diff, _inter, _union, _values, analyze

# -- queries -------------------------------------------------------------------------------


class Ctx:
    """What a request's compilation and evaluation share: the clock, the request's indices."""

    def __init__(self, now_ms: int):
        self.now_ms = now_ms


class Node:
    """A compiled query: ``eval`` returns the matching positions of an index within ``within``."""

    cheap = True  # answered from postings/bisects (else: tests each candidate)

    def eval(self, ix: Index, within):  # pragma: no cover - interface
        raise NotImplementedError


class MatchAll(Node):
    def eval(self, ix, within):
        return within


class MatchNone(Node):
    def eval(self, ix, within):
        return set()


class Bool(Node):
    def __init__(self, must, filter_, should, must_not, msm):
        self.required = sorted(must + filter_, key=lambda n: not n.cheap)
        self.should, self.must_not, self.msm = should, must_not, msm
        self.cheap = all(n.cheap for n in self.required + should + must_not)

    def eval(self, ix, within):
        cur = within
        # cheap clauses (postings, bisects) first, so expensive ones test fewer documents
        steps = [(n, False) for n in self.required if n.cheap] + [(n, True) for n in self.must_not if n.cheap] \
            + [(n, False) for n in self.required if not n.cheap] + [(n, True) for n in self.must_not if not n.cheap]
        for node, negate in steps:
            if not cur:
                return set()
            cur = _diff(cur, node.eval(ix, cur)) if negate else node.eval(ix, cur)
        if not cur:
            return set()
        if self.should:
            need = _resolve_msm(self.msm, len(self.should), default=0 if self.required else 1)
            if need > len(self.should):
                return set()
            if need == 1:
                cur = _union([node.eval(ix, cur) for node in self.should])
            elif need > 1:
                counts: Counter = Counter()
                for node in self.should:
                    counts.update(node.eval(ix, cur))
                cur = {p for p, n in counts.items() if n >= need}
        return cur


def _resolve_msm(spec, clauses: int, default: int) -> int:
    if spec is None:
        return default
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            n = math.floor(clauses * abs(pct) / 100)
            return clauses - n if pct < 0 else n
        n = int(text)
    except ValueError:
        raise _illegal(f"unsupported minimum_should_match [{spec}]; use a number, a negative number or "
                       "a percentage like 75%") from None
    return max(clauses + n, 0) if n < 0 else n


def _coerce_for(kind: str, value, now_ms: int, field: str):
    """A query value in the column's representation (None: cannot match)."""
    if kind in ("keyword", "text"):
        return _as_text(value)
    if kind in _NUMERIC:
        if isinstance(value, bool):
            raise _query_shard(f"failed to create query: For input string: \"{value}\"", field)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _query_shard(f"failed to create query: For input string: \"{value}\"", field) from None
        return int(number) if number.is_integer() else number
    if kind == "date":
        return parse_date(value, now_ms)
    if kind == "boolean":
        if value in (True, "true"):
            return True
        if value in (False, "false", ""):
            return False
        raise _query_shard(f"failed to create query: Can't parse boolean value [{value}], "
                           "expected [true] or [false]", field)
    return value


def _query_shard(reason: str, index: str | None = None) -> EsError:
    return EsError(400, "query_shard_exception", reason, phase=True, shard_index=index)


class Term(Node):
    def __init__(self, field: str, values: list, ctx: Ctx, case_insensitive: bool = False):
        self.field, self.values, self.ctx, self.ci = field, values, ctx, case_insensitive
        self.cheap = True

    def eval(self, ix, within):
        if self.field == "_index":
            names = {str(v) for v in self.values}
            return within if ix.name in names or any(fnmatch.fnmatchcase(ix.name, n) for n in names) else set()
        if self.field == "_id":
            wanted = {str(v) for v in self.values}
            return _inter({p for p, i in enumerate(ix.ids) if i in wanted}, within)
        path, kind = ix.field_type(self.field)
        if kind is None:
            return set()
        keys = {_coerce_for(kind, v, self.ctx.now_ms, ix.name) for v in self.values}
        if kind == "text":  # keyword semantics on the whole value; no postings for free text
            col = ix.column(self.field)
            if self.ci:
                keys = {k.lower() for k in keys}
                return {p for p in within if _any_value(col[p], lambda v: v.lower() in keys)}
            return {p for p in within if _any_value(col[p], keys.__contains__)}
        post = ix.postings(self.field)
        if self.ci and kind == "keyword":
            lowered = {k.lower() for k in keys}
            keys = {k for k in post if k.lower() in lowered}
        found = _union([set(post[k]) for k in keys if k in post]) if len(keys) > 1 else \
            set(post.get(next(iter(keys)), ())) if keys else set()
        return _inter(found, within)


def _any_value(value, test: Callable) -> bool:
    if value is None:
        return False
    if isinstance(value, list):
        return any(test(v) for v in value)
    return test(value)


class Pattern(Node):
    """prefix / wildcard / regexp on exact values (the whole value; ``case_insensitive``)."""

    def __init__(self, field: str, kind: str, pattern: str, case_insensitive: bool = False):
        self.field, self.kind, self.pattern, self.ci = field, kind, pattern, case_insensitive
        flags = re.IGNORECASE if case_insensitive else 0
        if kind == "prefix":
            self.regex = re.compile(re.escape(pattern), flags)
            self.test = (lambda v: v.lower().startswith(pattern.lower())) if case_insensitive else \
                (lambda v: v.startswith(pattern))
        else:
            source = _wildcard_regex(pattern) if kind == "wildcard" else pattern
            try:
                self.regex = re.compile(source, flags | re.DOTALL)
            except re.error as e:
                raise _illegal(f"invalid {kind} pattern [{pattern}]: {e}") from None
            self.test = lambda v: self.regex.fullmatch(v) is not None

    def eval(self, ix, within):
        test = self.test
        if self.field == "_index":
            return within if test(ix.name) else set()
        if self.field == "_id":
            return {p for p in within if test(ix.ids[p])}
        path, kind = ix.field_type(self.field)
        if kind is None:
            return set()
        if kind == "text":
            col = ix.column(self.field)
            return {p for p in within if _any_value(col[p], test)}
        post = ix.postings(self.field)
        return _inter(_union([set(post[k]) for k in post if test(_as_text(k))]), within)


def _wildcard_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
        i += 1
    return "".join(out)


class Range(Node):
    def __init__(self, field: str, bounds: dict, ctx: Ctx, fmt: str | None, tz: tzinfo):
        self.field, self.bounds, self.ctx, self.fmt, self.tz = field, bounds, ctx, fmt, tz
        self._dates: tuple | None = None
        self.cheap = field == TIME_FIELD

    def _date_bounds(self) -> tuple:
        if self._dates is None:
            b, now = self.bounds, self.ctx.now_ms
            lo = lo_incl = hi = hi_incl = None
            if b.get("gte") is not None:
                lo, lo_incl = parse_date(b["gte"], now, fmt=self.fmt, tz=self.tz), True
            if b.get("gt") is not None:
                lo, lo_incl = parse_date(b["gt"], now, round_up=True, fmt=self.fmt, tz=self.tz), False
            if b.get("lte") is not None:
                hi, hi_incl = parse_date(b["lte"], now, round_up=True, fmt=self.fmt, tz=self.tz), True
            if b.get("lt") is not None:
                hi, hi_incl = parse_date(b["lt"], now, fmt=self.fmt, tz=self.tz), False
            self._dates = (lo, lo_incl, hi, hi_incl)
        return self._dates

    def eval(self, ix, within):
        path, kind = ix.field_type(self.field)
        if kind is None:
            return set()
        if kind == "date":
            lo, lo_incl, hi, hi_incl = self._date_bounds()
            if path == TIME_FIELD:
                ts = ix.ts
                start = bisect.bisect_right(ts, _NO_TS)  # documents without @timestamp never match
                if lo is not None:
                    start = max(start, bisect.bisect_left(ts, lo) if lo_incl else bisect.bisect_right(ts, lo))
                stop = len(ts)
                if hi is not None:
                    stop = bisect.bisect_right(ts, hi) if hi_incl else bisect.bisect_left(ts, hi)
                return _inter(range(start, max(start, stop)), within)
            test = _bounds_test(lo, lo_incl, hi, hi_incl)
        else:
            b, now = self.bounds, self.ctx.now_ms
            lo = hi = None
            lo_incl = hi_incl = True
            for key in ("gte", "gt"):
                if b.get(key) is not None:
                    lo, lo_incl = _coerce_for(kind, b[key], now, ix.name), key == "gte"
            for key in ("lte", "lt"):
                if b.get(key) is not None:
                    hi, hi_incl = _coerce_for(kind, b[key], now, ix.name), key == "lte"
            test = _bounds_test(lo, lo_incl, hi, hi_incl)
        col = ix.column(self.field)
        return {p for p in within if _any_value(col[p], test)}


def _bounds_test(lo, lo_incl, hi, hi_incl) -> Callable:
    def test(v) -> bool:
        try:
            if lo is not None and (v < lo if lo_incl else v <= lo):
                return False
            if hi is not None and (v > hi if hi_incl else v >= hi):
                return False
        except TypeError:
            return False
        return True
    return test


class Exists(Node):
    def __init__(self, field: str):
        self.field = field

    def eval(self, ix, within):
        path, kind = ix.field_type(self.field)
        if kind is not None:
            col = ix.column(self.field)
            return {p for p in within if col[p] is not None}
        if ix.is_object(self.field):
            leaves = [f for f in ix.mapping if f.startswith(self.field + ".")]
            cols = [ix.column(f) for f in leaves]
            return {p for p in within if any(c[p] is not None for c in cols)}
        return set()


class Ids(Node):
    def __init__(self, values: list):
        self.values = {str(v) for v in values}

    def eval(self, ix, within):
        return _inter({p for p, i in enumerate(ix.ids) if i in self.values}, within)


class Match(Node):
    """match / match_phrase on a field (``*``: any field), analysed for text, exact otherwise."""

    cheap = False

    def __init__(self, fields: list[str], query, ctx: Ctx, *, operator: str = "or", msm=None,
                 phrase: bool = False, prefix_last: bool = False, zero_terms: str = "none"):
        self.fields, self.query, self.ctx = fields, query, ctx
        self.and_ = operator.lower() == "and"
        self.msm, self.phrase, self.prefix_last = msm, phrase, prefix_last
        self.tokens = analyze(query) if not isinstance(query, (bool, int, float)) else [str(query).lower()]
        self.zero_terms = zero_terms

    def eval(self, ix, within):
        if not self.tokens:
            return within if self.zero_terms == "all" else set()
        found: set = set()
        fields = self.fields
        if fields == ["*"]:
            fields = sorted(set(ix.mapping))
        else:
            expanded = []
            for f in fields:
                expanded.extend(sorted(k for k in ix.mapping if fnmatch.fnmatchcase(k, f)) if "*" in f else [f])
            fields = expanded
        for field in fields:
            rest = within if not found else _diff(within, found)
            if not rest:
                break
            found |= self._eval_field(ix, field, rest)
        return found

    def _eval_field(self, ix, field, within) -> set:
        path, kind = ix.field_type(field)
        if kind is None:
            return set()
        if kind != "text":
            try:
                key = _coerce_for(kind, self.query, self.ctx.now_ms, ix.name)
            except EsError:
                return set()
            if kind == "keyword":
                return Term(field, [key], self.ctx).eval(ix, within)
            col = ix.column(field)
            return {p for p in within if _any_value(col[p], lambda v: v == key)}
        col = ix.column(field)
        tokens = self.tokens
        out = set()
        if self.phrase:
            n = len(tokens)
            first = tokens[0]
            for p in within:
                for text in _values(col[p]):
                    low = text.lower()
                    if first not in low:
                        continue
                    doc = analyze(low)
                    if _has_phrase(doc, tokens, n, self.prefix_last):
                        out.add(p)
                        break
            return out
        need = len(tokens) if self.and_ else _resolve_msm(self.msm, len(tokens), default=1)
        wanted = set(tokens)
        words = tuple(sorted(wanted))

        def maybe(low: str) -> bool:  # a cheap pre-check: substring search is C-fast
            for word in words:
                if word in low:
                    return True
            return False

        for p in within:
            value = col[p]
            for text in (value,) if isinstance(value, str) else _values(value):
                low = text.lower()
                if not maybe(low):
                    continue
                if len(wanted & set(analyze(low))) >= need:
                    out.add(p)
                    break
        return out


def _has_phrase(doc: list[str], tokens: list[str], n: int, prefix_last: bool) -> bool:
    for i in range(len(doc) - n + 1):
        if doc[i:i + n - 1] == tokens[:-1] and (
                doc[i + n - 1].startswith(tokens[-1]) if prefix_last else doc[i + n - 1] == tokens[-1]):
            return True
    return False


class TokenPattern(Node):
    """A wildcard term of query_string on a text field: matches any token (lower-cased)."""

    cheap = False

    def __init__(self, fields: list[str], pattern: str):
        self.fields = fields
        self.regex = re.compile(_wildcard_regex(pattern.lower()), re.DOTALL)

    def eval(self, ix, within):
        out: set = set()
        fields = sorted(ix.mapping) if self.fields == ["*"] else self.fields
        for field in fields:
            path, kind = ix.field_type(field)
            if kind is None:
                continue
            col = ix.column(field)
            if kind == "text":
                test = lambda v: any(self.regex.fullmatch(t) for t in analyze(v))  # noqa: E731
            else:
                test = lambda v: self.regex.fullmatch(_as_text(v).lower()) is not None  # noqa: E731
            out |= {p for p in within if p not in out and _any_value(col[p], test)}
        return out


def compile_query(query, ctx: Ctx) -> Node:
    """Compile the ``query`` object of a request (parsing errors as Elasticsearch words them)."""
    if query is None:
        return MatchAll()
    if not isinstance(query, dict):
        raise _parsing(f"[_na] query malformed, must start with start_object, got [{type(query).__name__}]")
    if len(query) == 0:
        return MatchAll()
    if len(query) > 1:
        first, second = list(query)[:2]
        raise _parsing(f"[{first}] malformed query, expected [END_OBJECT] but found [FIELD_NAME]")
    kind, body = next(iter(query.items()))
    compiler = _COMPILERS.get(kind)
    if compiler is None:
        raise _parsing(f"unknown query [{kind}]")
    if not isinstance(body, dict):
        raise _parsing(f"[{kind}] query malformed, no start_object after query name")
    return compiler(body, ctx)


def _single_field(kind: str, body: dict, allowed: set[str]) -> tuple[str, dict]:
    """The (field, options) of a single-field query written either short or long."""
    fields = [k for k in body if k not in ("boost", "_name")]
    if not fields:
        raise _parsing(f"[{kind}] query requires a field name")
    if len(fields) > 1:
        raise _parsing(f"[{kind}] query doesn't support multiple fields, found [{fields[0]}] and [{fields[1]}]")
    field = fields[0]
    spec = body[field]
    if isinstance(spec, dict):
        for key in spec:
            if key not in allowed | {"boost", "_name"}:
                raise _parsing(f"[{kind}] query does not support [{key}]")
        return field, spec
    if isinstance(spec, list):
        raise _parsing(f"[{kind}] query does not support array of values")
    return field, {"value" if kind in ("term", "prefix", "wildcard", "regexp") else "query": spec}


def _c_bool(body: dict, ctx: Ctx) -> Node:
    clauses: dict[str, list[Node]] = {"must": [], "filter": [], "should": [], "must_not": []}
    for key, value in body.items():
        if key in clauses:
            items = value if isinstance(value, list) else [value]
            clauses[key] = [compile_query(item, ctx) for item in items]
        elif key not in ("minimum_should_match", "boost", "_name", "adjust_pure_negative"):
            raise _parsing(f"[bool] query does not support [{key}]")
    return Bool(clauses["must"], clauses["filter"], clauses["should"], clauses["must_not"],
                body.get("minimum_should_match"))


def _c_match_all(body, ctx):
    return MatchAll()


def _c_match_none(body, ctx):
    return MatchNone()


def _c_term(body, ctx):
    field, spec = _single_field("term", body, {"value", "case_insensitive"})
    if "value" not in spec:
        raise _parsing("[term] query requires a value")
    value = spec["value"]
    if isinstance(value, (dict, list)) or value is None:
        raise _parsing(f"[term] query does not support a value of type {type(value).__name__}")
    return Term(field, [value], ctx, bool(spec.get("case_insensitive")))


def _c_terms(body, ctx):
    fields = [k for k in body if k not in ("boost", "_name")]
    if len(fields) != 1:
        raise _parsing("[terms] query requires exactly one field" if not fields else
                       f"[terms] query does not support multiple fields, found [{fields[0]}] and [{fields[1]}]")
    values = body[fields[0]]
    if not isinstance(values, list):
        raise _parsing(f"[terms] query does not support [{fields[0]}]: expected an array of values")
    return Term(fields[0], values, ctx)


def _c_ids(body, ctx):
    values = body.get("values")
    if not isinstance(values, list):
        raise _parsing("[ids] query requires [values] as an array")
    return Ids(values)


def _c_exists(body, ctx):
    field = body.get("field")
    if not isinstance(field, str) or not field:
        raise _parsing("[exists] must be provided with a [field]")
    return Exists(field)


def _c_pattern(kind):
    def compile_(body, ctx):
        allowed = {"value", "case_insensitive", "rewrite", "flags", "max_determinized_states", "wildcard"}
        field, spec = _single_field(kind, body, allowed)
        value = spec.get("value", spec.get("wildcard"))
        if value is None:
            raise _parsing(f"[{kind}] query requires a value")
        return Pattern(field, kind, str(value), bool(spec.get("case_insensitive")))
    return compile_


def _c_range(body, ctx):
    allowed = {"gte", "gt", "lte", "lt", "format", "time_zone", "relation", "from", "to",
               "include_lower", "include_upper"}
    field, spec = _single_field("range", body, allowed)
    if not isinstance(body[field], dict):
        raise _parsing(f"[range] query malformed, no start_object after field [{field}]")
    bounds = {k: spec[k] for k in ("gte", "gt", "lte", "lt") if k in spec}
    if "from" in spec:
        bounds["gte" if spec.get("include_lower", True) else "gt"] = spec["from"]
    if "to" in spec:
        bounds["lte" if spec.get("include_upper", True) else "lt"] = spec["to"]
    node = Range(field, bounds, ctx, spec.get("format"), _parse_tz(spec.get("time_zone")))
    return node


def _c_match(phrase: bool, prefix: bool = False):
    name = "match_phrase_prefix" if prefix else "match_phrase" if phrase else "match"

    def compile_(body, ctx):
        allowed = {"query", "operator", "minimum_should_match", "analyzer", "fuzziness", "lenient",
                   "zero_terms_query", "slop", "prefix_length", "max_expansions", "auto_generate_synonyms_phrase_query",
                   "fuzzy_transpositions"}
        field, spec = _single_field(name, body, allowed)
        if "query" not in spec:
            raise _parsing(f"[{name}] query requires a [query]")
        return Match([field], spec["query"], ctx, operator=str(spec.get("operator", "or")),
                     msm=spec.get("minimum_should_match"), phrase=phrase, prefix_last=prefix,
                     zero_terms=str(spec.get("zero_terms_query", "none")))
    return compile_


def _c_multi_match(body, ctx):
    if "query" not in body:
        raise _parsing("[multi_match] requires a [query]")
    fields = [f.split("^")[0] for f in body.get("fields") or ["*"]]
    kind = body.get("type", "best_fields")
    return Match(fields, body["query"], ctx, operator=str(body.get("operator", "or")),
                 msm=body.get("minimum_should_match"), phrase=kind in ("phrase", "phrase_prefix"),
                 prefix_last=kind == "phrase_prefix")


def _c_constant_score(body, ctx):
    if "filter" not in body:
        raise _parsing("[constant_score] requires a 'filter' element")
    return compile_query(body["filter"], ctx)


def _c_query_string(body, ctx):
    if "query" not in body:
        raise _parsing("[query_string] must be provided with a [query]")
    fields = body.get("fields") or [body.get("default_field", "*")]
    fields = [f.split("^")[0] for f in fields]
    operator = str(body.get("default_operator", "or")).lower()
    return QueryStringParser(str(body["query"]), fields, operator, ctx).parse()


def _c_simple_query_string(body, ctx):
    if "query" not in body:
        raise _parsing("[simple_query_string] must be provided with a [query]")
    fields = [f.split("^")[0] for f in body.get("fields") or ["*"]]
    operator = str(body.get("default_operator", "or")).lower()
    return SimpleQueryParser(str(body["query"]), fields, operator, ctx).parse()


_COMPILERS: dict[str, Callable[[dict, Ctx], Node]] = {
    "bool": _c_bool, "match_all": _c_match_all, "match_none": _c_match_none, "term": _c_term,
    "terms": _c_terms, "ids": _c_ids, "exists": _c_exists, "prefix": _c_pattern("prefix"),
    "wildcard": _c_pattern("wildcard"), "regexp": _c_pattern("regexp"), "range": _c_range,
    "match": _c_match(False), "match_phrase": _c_match(True), "match_phrase_prefix": _c_match(True, True),
    "multi_match": _c_multi_match, "constant_score": _c_constant_score,
    "query_string": _c_query_string, "simple_query_string": _c_simple_query_string,
}


class QueryStringParser:
    """Lucene query syntax, the common part: ``field:value``, ``"phrases"``, ``AND``/``OR``/``NOT``,
    ``+``/``-``, parentheses, wildcards, ranges (``[a TO b]``, ``{a TO b}``, ``>=x``) and
    ``_exists_:field``.  Unsupported syntax is a 400 ``query_shard_exception``.
    """

    _SPECIAL = set('+-=&|><!(){}[]^"~*?:\\/ ')

    def __init__(self, text: str, fields: list[str], operator: str, ctx: Ctx):
        self.text, self.fields, self.and_default = text, fields, operator == "and"
        self.ctx = ctx
        self.tokens = self._lex(text)
        self.pos = 0

    def fail(self, why: str) -> EsError:
        return EsError(400, "query_shard_exception",
                       f"Failed to parse query [{self.text}]: {why}", phase=True)

    def _lex(self, text: str) -> list[tuple[str, str]]:
        out, i, n = [], 0, len(text)
        while i < n:
            ch = text[i]
            if ch.isspace():
                i += 1
            elif ch in "()":
                out.append((ch, ch))
                i += 1
            elif ch == '"':
                j, buf = i + 1, []
                while j < n and text[j] != '"':
                    if text[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(text[j])
                    j += 1
                if j >= n:
                    raise self.fail("unterminated quoted phrase")
                out.append(("PHRASE", "".join(buf)))
                i = j + 1
            elif ch in "[{":
                j = text.find("]" if ch == "[" else "}", i)
                k = max(text.find("]", i), text.find("}", i))
                j = k if j < 0 else min(j, k) if k >= 0 else j
                if j < 0:
                    raise self.fail("unterminated range")
                out.append(("RANGE", text[i:j + 1]))
                i = j + 1
            elif ch in "+-!" and (i + 1 < n and not text[i + 1].isspace()):
                out.append(("OP", "NOT" if ch in "-!" else "MUST"))
                i += 1
            elif text.startswith("&&", i) or text.startswith("||", i):
                out.append(("OP", "AND" if ch == "&" else "OR"))
                i += 2
            else:
                buf, j = [], i
                while j < n:
                    c = text[j]
                    if c == "\\" and j + 1 < n:
                        buf.append(text[j + 1] if text[j + 1] not in "*?" else "\\" + text[j + 1])
                        j += 2
                        continue
                    if c.isspace() or c in '()"' or (c == ":" and buf) or c in "[{":
                        break
                    buf.append(c)
                    j += 1
                word = "".join(buf)
                if j < n and text[j] == ":" and word:
                    out.append(("FIELD", word))
                    j += 1
                elif word in ("AND", "OR", "NOT"):
                    out.append(("OP", word))
                elif word:
                    out.append(("WORD", word))
                else:
                    raise self.fail(f"unexpected character [{text[j]}]")
                i = j
        return out

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def parse(self) -> Node:
        if not self.tokens:
            return MatchNone()
        node = self._query()
        if self.pos != len(self.tokens):
            raise self.fail(f"unexpected [{self.peek()[1]}]")
        return node

    def _query(self) -> Node:
        """Clauses with Lucene's occur rules: AND makes both sides required, OR optional,
        ``+``/``-``/``NOT`` mark one clause, bare clauses follow the default operator."""
        clauses: list[list] = []
        conj = None
        while True:
            kind, value = self.peek()
            if kind is None or kind == ")":
                break
            if kind == "OP" and value in ("AND", "OR"):
                if not clauses:
                    raise self.fail(f"{value} needs a clause before it")
                conj = value
                self.pos += 1
                continue
            modifier = None
            while kind == "OP" and value in ("NOT", "MUST"):
                modifier = modifier or value
                self.pos += 1
                kind, value = self.peek()
            node = self._primary(self.fields)
            if clauses and clauses[-1][0] != "must_not":
                if conj == "AND":
                    clauses[-1][0] = "must"
                elif conj == "OR" and self.and_default:
                    clauses[-1][0] = "should"
            if modifier == "NOT":
                occur = "must_not"
            elif modifier == "MUST" or conj == "AND":
                occur = "must"
            elif conj == "OR":
                occur = "should"
            else:
                occur = "must" if self.and_default else "should"
            clauses.append([occur, node])
            conj = None
        if conj is not None:
            raise self.fail(f"{conj} needs a clause after it")
        if not clauses:
            raise self.fail("empty group")
        must = [n for o, n in clauses if o == "must"]
        should = [n for o, n in clauses if o == "should"]
        must_not = [n for o, n in clauses if o == "must_not"]
        if len(clauses) == 1 and not must_not:
            return clauses[0][1]
        if not must and not should:
            must = [MatchAll()]
        return Bool(must, [], should, must_not, None)

    def _primary(self, fields: list[str]) -> Node:
        kind, value = self.peek()
        if kind is None:
            raise self.fail("unexpected end of query")
        self.pos += 1
        if kind == "(":
            node = self._query()
            if self.peek()[0] != ")":
                raise self.fail("missing )")
            self.pos += 1
            return node
        if kind == "FIELD":
            field = value.replace("\\", "")
            if field == "_exists_":
                k, name = self.peek()
                self.pos += 1
                if k != "WORD":
                    raise self.fail("_exists_ needs a field name")
                return Exists(name)
            return self._primary([field])
        if kind == "PHRASE":
            return self._any(fields, lambda f: Match([f], value, self.ctx, phrase=True))
        if kind == "RANGE":
            return self._range(fields, value)
        if kind == "WORD":
            return self._word(fields, value)
        raise self.fail(f"unexpected [{value}]")

    def _any(self, fields: list[str], build: Callable[[str], Node]) -> Node:
        nodes = [build(f) for f in fields]
        return nodes[0] if len(nodes) == 1 else Bool([], [], nodes, [], None)

    def _range(self, fields: list[str], text: str) -> Node:
        m = re.fullmatch(r"([\[{])\s*(\S+)\s+TO\s+(\S+?)\s*([\]}])", text)
        if not m:
            raise self.fail(f"malformed range [{text}]")
        bounds = {}
        if m.group(2) != "*":
            bounds["gte" if m.group(1) == "[" else "gt"] = m.group(2).strip('"')
        if m.group(3) != "*":
            bounds["lte" if m.group(4) == "]" else "lt"] = m.group(3).strip('"')
        return self._any(fields, lambda f: Range(f, bounds, self.ctx, None, UTC))

    def _word(self, fields: list[str], word: str) -> Node:
        for op, key in ((">=", "gte"), ("<=", "lte"), (">", "gt"), ("<", "lt")):
            if word.startswith(op) and len(word) > len(op):
                bounds = {key: word[len(op):]}
                return self._any(fields, lambda f, b=bounds: Range(f, b, self.ctx, None, UTC))
        has_wild = re.search(r"(?<!\\)[*?]", word) is not None
        if has_wild:
            if word == "*":
                return self._any(fields, lambda f: MatchAll() if f == "*" else Exists(f))
            return self._any(fields, lambda f: _FieldWildcard(f, word))
        plain = word.replace("\\", "")
        return self._any(fields, lambda f: Match([f], plain, self.ctx, phrase=len(analyze(plain)) > 1))


class _FieldWildcard(Node):
    """A wildcard word: tokens of text fields, whole values of the others."""

    cheap = False

    def __init__(self, field: str, pattern: str):
        self.field, self.pattern = field, pattern
        self.tokens = TokenPattern([field], pattern)

    def eval(self, ix, within):
        return self.tokens.eval(ix, within)


class SimpleQueryParser(QueryStringParser):
    """``simple_query_string``: ``+`` and, ``|`` or, ``-`` not, ``"phrase"``, ``prefix*``, parentheses.

    It never fails: like Elasticsearch, odd syntax is read as words.
    """

    def _lex(self, text: str) -> list[tuple[str, str]]:
        out, i, n = [], 0, len(text)
        while i < n:
            ch = text[i]
            if ch.isspace():
                i += 1
            elif ch in "()":
                out.append((ch, ch))
                i += 1
            elif ch == "|":
                out.append(("OP", "OR"))
                i += 1
            elif ch == "+":
                out.append(("OP", "AND"))
                i += 1
            elif ch == "-" and (i == 0 or text[i - 1].isspace() or text[i - 1] in "(+|"):
                out.append(("OP", "NOT"))
                i += 1
            elif ch == '"':
                j = text.find('"', i + 1)
                j = n if j < 0 else j
                out.append(("PHRASE", text[i + 1:j]))
                i = j + 1
            else:
                j = i
                while j < n and not text[j].isspace() and text[j] not in '()|+"':
                    j += 1
                word = text[i:j]
                word = re.sub(r"~\d*$", "", word)
                if word:
                    out.append(("WORD", word))
                i = max(j, i + 1)
        cleaned = []
        for tok in out:  # "a + -b": the binary AND then a NOT
            if tok == ("OP", "AND") and (not cleaned or cleaned[-1][0] in ("OP", "(")):
                continue
            cleaned.append(tok)
        while cleaned and cleaned[-1][0] == "OP":
            cleaned.pop()
        return cleaned

    def parse(self) -> Node:
        try:
            return super().parse()
        except EsError:
            words = [v for k, v in self.tokens if k in ("WORD", "PHRASE")]
            return Match(self.fields, " ".join(words), self.ctx)

    def _word(self, fields: list[str], word: str) -> Node:
        if word.endswith("*") and len(word) > 1:
            return self._any(fields, lambda f: _FieldWildcard(f, word))
        return self._any(fields, lambda f: Match([f], word, self.ctx))


