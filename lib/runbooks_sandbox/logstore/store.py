"""The store: indices, bulk writes, search and count requests, mappings, ``filter_path``."""

from __future__ import annotations

import base64
import fnmatch
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer

from .aggs import AggCtx, compile_aggs, run_aggs
from .common import (
    _EPOCH,
    _MISSING,
    _SHARDS_ONE,
    DEFAULT_TRACK_TOTAL,
    IGNORE_ABOVE,
    LUCENE_VERSION,
    MAX_RESULT_WINDOW,
    NODE_ID,
    TIME_FIELD,
    VERSION,
    EsError,
    _illegal,
    _index_not_found,
    _parsing,
    log,
)
from .dates import _to_ms, iso_ms
from .index import _NO_TS, Docs, Index, _sorted_positions
from .query import Ctx, QueryStringParser, compile_query
from .search import HitFormatter, SortSpec, _check_sorts, parse_sort, select_hits

# -- the store -------------------------------------------------------------------------------

_SEARCH_BODY = {"query", "aggs", "aggregations", "size", "from", "sort", "search_after", "track_total_hits",
                "_source", "fields", "post_filter", "version", "seq_no_primary_term", "pit", "timeout",
                "track_scores", "explain", "profile", "stats", "highlight", "min_score"}
_SEARCH_UNSUPPORTED = {"runtime_mappings", "collapse", "rescore", "suggest", "script_fields", "knn",
                       "indices_boost", "slice", "rank", "retriever", "docvalue_fields", "stored_fields",
                       "terminate_after", "ext", "scroll"}
_COMMON_PARAMS = {"pretty", "human", "error_trace", "filter_path", "source", "source_content_type"}
_SEARCH_PARAMS = _COMMON_PARAMS | {
    "q", "df", "default_operator", "analyze_wildcard", "lenient", "size", "from", "sort", "track_total_hits",
    "_source", "_source_includes", "_source_excludes", "ignore_unavailable", "allow_no_indices",
    "expand_wildcards", "typed_keys", "rest_total_hits_as_int", "search_type", "request_cache", "preference",
    "routing", "timeout", "allow_partial_search_results", "batched_reduce_size", "ccs_minimize_roundtrips",
    "max_concurrent_shard_requests", "pre_filter_shard_size", "seq_no_primary_term", "version", "stats",
    "track_scores", "explain", "ignore_throttled", "include_named_queries_score"}
_INDEX_NAME_BAD = re.compile(r'[\\/*?"<>| ,#:A-Z]')


def _bool_param(value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("", "true"):
        return True
    if text == "false":
        return False
    raise _illegal(f"Failed to parse value [{value}] as only [true] or [false] are allowed.")


def _int_param(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _illegal(f"Failed to parse int parameter [{name}] with value [{value}]") from None


def _check_index_name(name: str) -> None:
    if (not name or _INDEX_NAME_BAD.search(name) or name[0] in "-_+" or name in (".", "..")
            or len(name.encode()) > 255):
        raise EsError(400, "invalid_index_name_exception",
                      f"Invalid index name [{name}], must be lowercase, must not contain \\, /, *, ?, \", <, >, |, "
                      f"' ', ',', #, :, and must not start with _, - or +", index=name, index_uuid="_na_")


def _duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(nanos|micros|ms|s|m|h|d)", str(text).strip())
    if not m:
        raise _illegal(f"failed to parse setting [keep_alive] with value [{text}] as a time value: unit is "
                       "missing or unrecognized")
    factor = {"nanos": 1e-6, "micros": 1e-3, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    return int(int(m.group(1)) * factor[m.group(2)])


class LogStore:
    """The in-memory store and its HTTP face.

    Example:
        >>> store = LogStore()
        >>> url = store.start()             # http://127.0.0.1:PORT
        >>> store.add(documents)            # doctest: +SKIP
        >>> store.stop()
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None, cluster_name: str = "sandbox-logs",
                 index_prefix: str = "logstash-"):
        self.clock = clock or (lambda: datetime.now(UTC))
        self.cluster_name = cluster_name
        self.index_prefix = index_prefix
        self.cluster_uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[:22]
        self.url = ""
        self._indices: dict[str, Index] = {}
        self._lock = threading.RLock()
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._id_prefix = secrets.token_bytes(7)
        self._pits: dict[str, dict] = {}
        self._day_names: dict[int, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve on ``host:port`` (0: a free port) in a background thread; returns the URL."""
        if self._server is not None:
            return self.url
        store = self

        from .http import _Handler  # the HTTP front depends on the store, not the other way round

        class Handler(_Handler):
            pass

        Handler.store = store
        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="logstore", daemon=True,
                                        kwargs={"poll_interval": 0.2})
        self._thread.start()
        self.url = f"http://{host}:{server.server_address[1]}"
        log.info("log store listening on %s", self.url)
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LogStore:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def now_ms(self) -> int:
        return _to_ms(self.clock())

    # ---- writing from Python ----

    def add(self, docs: Iterable[dict], index: str | None = None) -> int:
        """Index documents (``_source`` dicts); the index defaults to ``<prefix>YYYY.MM.DD`` of
        ``@timestamp``.  Returns how many were added; raises ValueError naming the first
        rejected document (the others are kept), as a bulk request would report it.
        """
        added = 0
        problems = []
        memos: dict[str, dict] = {}
        with self._lock:
            for doc in docs:
                try:
                    self._put(doc, index, None, memos, op="index", size=len(doc.get("log") or "") + 350)
                    added += 1
                except EsError as e:
                    problems.append(e.reason)
        if problems:
            raise ValueError(f"{len(problems)} document(s) rejected, first: {problems[0]}")
        return added

    def indices(self) -> dict[str, int]:
        """Index name -> number of documents."""
        with self._lock:
            return {name: len(ix.by_id) for name, ix in sorted(self._indices.items())}

    def _new_id(self) -> str:
        raw = self._id_prefix + next(self._ids).to_bytes(8, "big")
        return base64.urlsafe_b64encode(raw).decode()[:20]

    def _index_for(self, name: str | None, ts: int) -> Index:
        if name is None:
            day = (ts if ts != _NO_TS else self.now_ms()) // 86_400_000
            name = self._day_names.get(day)
            if name is None:
                name = self._day_names[day] = f"{self.index_prefix}{_EPOCH + timedelta(days=day):%Y.%m.%d}"
        ix = self._indices.get(name)
        if ix is None:
            _check_index_name(name)
            ix = self._indices[name] = Index(name, self.now_ms())
        return ix

    def _put(self, doc: dict, index: str | None, doc_id: str | None, memos: dict, *, op: str,
             size: int) -> tuple[Index, str, int, str]:
        if not isinstance(doc, dict):
            raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: the document must be an object")
        raw_ts = doc.get(TIME_FIELD)
        if raw_ts is None:
            ts = _NO_TS
        elif isinstance(raw_ts, str):
            try:
                ts = iso_ms(raw_ts)
            except (ValueError, EsError):
                raise EsError(400, "document_parsing_exception",
                              f"[1:1] failed to parse field [{TIME_FIELD}] of type [date] in document with id "
                              f"'{doc_id}'. Preview of field's value: '{raw_ts}'") from None
        elif isinstance(raw_ts, (int, float)) and not isinstance(raw_ts, bool):
            ts = int(raw_ts)
        else:
            raise EsError(400, "document_parsing_exception",
                          f"[1:1] failed to parse field [{TIME_FIELD}] of type [date]")
        ix = self._index_for(index, ts)
        memo = memos.setdefault(ix.name, {})
        problem = ix.learn_mapping(doc, memo)
        if problem:
            raise EsError(400, "document_parsing_exception", f"[1:1] {problem}")
        existed = doc_id is not None and doc_id in ix.by_id
        if existed and op == "create":
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, document already exists (current version [1])",
                          index=ix.name, shard="0", index_uuid=ix.uuid)
        doc_id = doc_id or self._new_id()
        version = 1
        if existed:
            old_seq = ix.by_id[doc_id]
            version = 1 + next((v for s, v in zip(ix.seqs, ix.versions, strict=True) if s == old_seq),
                               next((row[4] for row in ix._pending if row[1] == old_seq), 1))
        seq = next(self._seq)
        ix.put(doc_id, doc, ts, seq, size, version)
        return ix, doc_id, seq, "updated" if existed else "created"

    # ---- reading ----

    def _resolve(self, expr: str | None, params: dict) -> list[Index]:
        ignore_unavailable = _bool_param(params.get("ignore_unavailable"), False)
        allow_no = _bool_param(params.get("allow_no_indices"), True)
        expand = str(params.get("expand_wildcards", "open"))
        names = sorted(self._indices)
        visible = names if "all" in expand or "hidden" in expand else [n for n in names if not n.startswith(".")]
        if expand == "none":
            visible = []
        if not expr or expr in ("_all", "*"):
            if not visible and not allow_no:
                raise _index_not_found(expr or "_all")
            return [self._indices[n] for n in visible]
        selected: list[str] = []
        wildcard_seen = False
        for part in (p.strip() for p in expr.split(",")):
            if not part:
                continue
            if part.startswith("-") and wildcard_seen:
                selected = [n for n in selected if not fnmatch.fnmatchcase(n, part[1:])]
                continue
            if "*" in part:
                wildcard_seen = True
                matches = [n for n in visible if fnmatch.fnmatchcase(n, part)]
                if not matches and not allow_no:
                    raise _index_not_found(part)
                selected.extend(n for n in matches if n not in selected)
            elif part in self._indices:
                if part not in selected:
                    selected.append(part)
            elif not ignore_unavailable:
                raise _index_not_found(part)
        if not selected and not allow_no:
            raise _index_not_found(expr)
        return [self._indices[n] for n in sorted(selected)]

    def search(self, target: str | None, body: dict | None, params: dict | None = None) -> dict:
        """``POST /<target>/_search`` in-process (the HTTP handler calls this too)."""
        started = time.perf_counter()
        body = dict(body or {})
        params = params or {}
        for key, value in body.items():
            if key in _SEARCH_UNSUPPORTED:
                raise _illegal(f"[{key}] is not supported by the sandbox log store")
            if key not in _SEARCH_BODY:
                what = "START_OBJECT" if isinstance(value, dict) else "START_ARRAY" if isinstance(value, list) \
                    else "VALUE_STRING" if isinstance(value, str) else "VALUE_NUMBER"
                raise _parsing(f"Unknown key for a {what} in [{key}].")
        if "aggs" in body and "aggregations" in body:
            raise _parsing("Found two aggregation type definitions in [aggs] and [aggregations]")
        ctx = Ctx(self.now_ms())
        if body.get("query") is None and params.get("q") is not None:
            node = QueryStringParser(str(params["q"]), [params.get("df", "*")],
                                     str(params.get("default_operator", "or")).lower(), ctx).parse()
        else:
            node = compile_query(body.get("query"), ctx)
        post = compile_query(body["post_filter"], ctx) if body.get("post_filter") is not None else None
        aggs = compile_aggs(body.get("aggs", body.get("aggregations")), ctx)
        size = _int_param(body.get("size", params.get("size", 10)), "size")
        start = _int_param(body.get("from", params.get("from", 0)), "from")
        if size < 0:
            raise _illegal(f"[size] parameter cannot be negative, found [{size}]")
        if start < 0:
            raise _illegal(f"[from] parameter cannot be negative, found [{start}]")
        if start + size > MAX_RESULT_WINDOW:
            raise _illegal(f"Result window is too large, from + size must be less than or equal to: "
                           f"[{MAX_RESULT_WINDOW}] but was [{start + size}]. See the scroll api for a more "
                           "efficient way to request large data sets. This limit can be set by changing the "
                           "[index.max_result_window] index level setting.", phase=True)
        specs = parse_sort(body.get("sort", params.get("sort")))
        after = body.get("search_after")
        if after is not None:
            if not isinstance(after, list):
                raise _parsing("[search_after] must be an array")
            if start:
                raise _illegal("[from] parameter must be set to 0 when [search_after] is used")
            if not specs and not body.get("pit"):
                raise _illegal("Sort must contain at least one field when [search_after] is used")
        track = body.get("track_total_hits", params.get("track_total_hits", DEFAULT_TRACK_TOTAL))
        if isinstance(track, str):
            track = True if track == "true" else False if track == "false" else _int_param(track, "track_total_hits")
        include_src = params.get("_source_includes")
        exclude_src = params.get("_source_excludes")
        source_spec = body.get("_source", params.get("_source"))
        if include_src or exclude_src:
            source_spec = {"includes": include_src.split(",") if include_src else [],
                           "excludes": exclude_src.split(",") if exclude_src else []}
        pit = body.get("pit")
        with self._lock:
            max_seq = None
            if pit is not None:
                if target:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: [indices] cannot be used with point in time. Do not "
                                  "specify any index with point in time.;")
                indices, max_seq = self._pit(pit)
                if not any(s.field in ("_shard_doc", "_doc") for s in specs):
                    specs = specs + [SortSpec("_shard_doc", "asc")]
            else:
                indices = self._resolve(target, params)
            for ix in indices:
                ix.flush()
            _check_sorts(specs, indices)
            matched: Docs = []
            for ix in indices:
                within = range(len(ix))
                if max_seq is not None and ix.seqs and max(ix.seqs) > max_seq:
                    within = {p for p, s in enumerate(ix.seqs) if s <= max_seq}
                try:
                    found = node.eval(ix, within) if len(ix) else set()
                except EsError as e:
                    if e.phase and e.shard_index is None:
                        e.shard_index = ix.name
                    raise
                matched.append((ix, _sorted_positions(found)))
            aggregations = None
            if aggs:
                aggregations = run_aggs(aggs, matched, AggCtx(ctx, _bool_param(params.get("typed_keys"), False)))
            hit_docs = matched
            if body.get("min_score") is not None and float(body["min_score"]) > 1.0:  # every hit scores 1.0
                hit_docs = [(ix, []) for ix, _ in matched]
            if post is not None:
                hit_docs = [(ix, _sorted_positions(post.eval(ix, ps if isinstance(ps, range) else set(ps))))
                            for ix, ps in matched]
            formatter = HitFormatter(specs, source_spec, body.get("fields"),
                                     _bool_param(body.get("version", params.get("version")), False),
                                     _bool_param(body.get("seq_no_primary_term",
                                                          params.get("seq_no_primary_term")), False))
            rows = select_hits(hit_docs, specs, start, size, after)
            hits = [formatter(ix, pos, values) for ix, pos, values in rows]
            total = sum(len(ps) for _, ps in hit_docs)
        hits_obj: dict = {}
        if track is not False:
            limit = None if track is True else int(track)
            if limit is not None and total > limit:
                hits_obj["total"] = {"value": limit, "relation": "gte"}
            else:
                hits_obj["total"] = {"value": total, "relation": "eq"}
            if _bool_param(params.get("rest_total_hits_as_int"), False):
                hits_obj["total"] = hits_obj["total"]["value"]
        hits_obj["max_score"] = None if specs or not hits else 1.0
        hits_obj["hits"] = hits
        out = {"took": int((time.perf_counter() - started) * 1000), "timed_out": False,
               "_shards": {**_SHARDS_ONE, "total": len(indices), "successful": len(indices)}, "hits": hits_obj}
        if pit is not None:
            out = {"pit_id": pit["id"], **out}
        if aggregations is not None:
            out["aggregations"] = aggregations
        return out

    def count(self, target: str | None, body: dict | None, params: dict | None = None) -> dict:
        body, params = body or {}, params or {}
        for key in body:
            if key != "query":
                raise _parsing(f"request does not support [{key}]")
        ctx = Ctx(self.now_ms())
        if body.get("query") is None and params.get("q") is not None:
            node = QueryStringParser(str(params["q"]), [params.get("df", "*")],
                                     str(params.get("default_operator", "or")).lower(), ctx).parse()
        else:
            node = compile_query(body.get("query"), ctx)
        with self._lock:
            indices = self._resolve(target, params)
            n = 0
            for ix in indices:
                ix.flush()
                if len(ix):
                    n += len(node.eval(ix, range(len(ix))))
        return {"count": n, "_shards": {**_SHARDS_ONE, "total": len(indices), "successful": len(indices)}}

    # ---- point in time ----

    def open_pit(self, target: str, params: dict) -> dict:
        if "keep_alive" not in params:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: [keep_alive] is not specified;")
        keep = _duration_ms(params["keep_alive"])
        with self._lock:
            indices = self._resolve(target, params)
            pit_id = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
            max_seq = max((max(ix.seqs, default=-1) for ix in indices), default=-1)
            for ix in indices:
                ix.flush()
                max_seq = max(max_seq, max(ix.seqs, default=-1))
            self._pits[pit_id] = {"indices": indices, "max_seq": max_seq, "expires": time.monotonic() + keep / 1000}
            self._expire_pits()
        return {"id": pit_id, "_shards": {**_SHARDS_ONE, "total": len(indices), "successful": len(indices)}}

    def _pit(self, pit) -> tuple[list[Index], int]:
        if not isinstance(pit, dict) or "id" not in pit:
            raise _parsing("[pit] requires an [id]")
        self._expire_pits()
        entry = self._pits.get(pit["id"])
        if entry is None:
            raise EsError(404, "search_context_missing_exception", f"No search context found for id [{pit['id']}]")
        if pit.get("keep_alive"):
            entry["expires"] = time.monotonic() + _duration_ms(pit["keep_alive"]) / 1000
        return entry["indices"], entry["max_seq"]

    def close_pit(self, body: dict) -> tuple[int, dict]:
        pit_id = (body or {}).get("id")
        if not pit_id:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no point in time id;")
        with self._lock:
            found = self._pits.pop(pit_id, None) is not None
        return (200 if found else 404), {"succeeded": True, "num_freed": 1 if found else 0}

    def _expire_pits(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._pits.items() if v["expires"] < now]:
            del self._pits[key]

    # ---- bulk and documents ----

    def bulk(self, data: bytes, default_index: str | None, params: dict) -> dict:
        started = time.perf_counter()
        lines = data.split(b"\n")
        items, errors = [], False
        memos: dict[str, dict] = {}
        i = 0
        with self._lock:
            while i < len(lines):
                raw = lines[i].strip()
                i += 1
                if not raw:
                    continue
                try:
                    action = json.loads(raw)
                except ValueError as e:
                    raise EsError(400, "x_content_parse_exception", f"[{i}:1] Malformed action/metadata line "
                                  f"[{i}]: {e}") from None
                if not isinstance(action, dict) or len(action) != 1:
                    raise EsError(400, "illegal_argument_exception",
                                  f"Malformed action/metadata line [{i}], expected START_OBJECT or END_OBJECT "
                                  "but found [VALUE]")
                op, meta = next(iter(action.items()))
                if op not in ("index", "create", "delete", "update"):
                    raise _illegal(f"Malformed action/metadata line [{i}], expected field [create], [delete], "
                                   f"[index] or [update] but found [{op}]")
                meta = meta or {}
                name = meta.get("_index", default_index)
                doc_id = meta.get("_id")
                doc_id = None if doc_id is None else str(doc_id)
                if op in ("index", "create", "update"):
                    if i >= len(lines) or not lines[i].strip():
                        raise _illegal("The bulk request must be terminated by a newline [\\n]" if i >= len(lines)
                                       else f"Malformed action/metadata line [{i + 1}], expected a source")
                    source_raw = lines[i]
                    i += 1
                if name is None:
                    raise EsError(400, "action_request_validation_exception",
                                  "Validation Failed: 1: index is missing;")
                result = {"_index": name, "_id": doc_id}
                try:
                    if op == "update":
                        raise _illegal("the sandbox log store does not support [update] in _bulk; use index")
                    if op == "delete":
                        ix = self._indices.get(name)
                        if ix is None or doc_id is None or not ix.delete(doc_id):
                            result.update(_version=1, result="not_found", status=404, _shards=_write_shards())
                        else:
                            result.update(_version=1, result="deleted", status=200, _shards=_write_shards())
                        items.append({op: result})
                        continue
                    try:
                        source = json.loads(source_raw)
                    except ValueError as e:
                        raise EsError(400, "document_parsing_exception", f"[1:1] failed to parse: {e}") from None
                    _check_index_name(name)
                    ix, doc_id, seq, outcome = self._put(source, name, doc_id, memos, op=op, size=len(source_raw))
                    version = 1 if outcome == "created" else 2
                    result.update(_id=doc_id, _version=version, result=outcome, _shards=_write_shards(),
                                  _seq_no=seq, _primary_term=1, status=201 if outcome == "created" else 200)
                except EsError as e:
                    errors = True
                    result.update(status=e.status, error={"type": e.type, "reason": e.reason, **e.extra})
                items.append({op: result})
        return {"errors": errors, "took": int((time.perf_counter() - started) * 1000), "items": items}

    def index_doc(self, name: str, doc_id: str | None, source, op: str) -> tuple[int, dict]:
        _check_index_name(name)
        with self._lock:
            ix, doc_id, seq, outcome = self._put(source, name, doc_id, {}, op=op, size=len(json.dumps(source)))
        return (201 if outcome == "created" else 200), {
            "_index": ix.name, "_id": doc_id, "_version": 1 if outcome == "created" else 2, "result": outcome,
            "_shards": _write_shards(), "_seq_no": seq, "_primary_term": 1}

    def get_doc(self, name: str, doc_id: str) -> tuple[int, dict]:
        with self._lock:
            ix = self._indices.get(name)
            if ix is None:
                raise _index_not_found(name)
            ix.flush()
            seq = ix.by_id.get(doc_id)
            if seq is None:
                return 404, {"_index": name, "_id": doc_id, "found": False}
            pos = ix.seqs.index(seq)
            return 200, {"_index": name, "_id": doc_id, "_version": ix.versions[pos], "_seq_no": seq,
                         "_primary_term": 1, "found": True, "_source": ix.sources[pos]}

    def delete_doc(self, name: str, doc_id: str) -> tuple[int, dict]:
        with self._lock:
            ix = self._indices.get(name)
            if ix is None:
                raise _index_not_found(name)
            found = ix.delete(doc_id)
        return (200 if found else 404), {"_index": name, "_id": doc_id, "_version": 1,
                                         "result": "deleted" if found else "not_found", "_shards": _write_shards()}

    # ---- indices ----

    def create_index(self, name: str, body: dict | None) -> dict:
        _check_index_name(name)
        body = body or {}
        with self._lock:
            if name in self._indices:
                raise EsError(400, "resource_already_exists_exception", f"index [{name}/{self._indices[name].uuid}] "
                              "already exists", index=name, index_uuid=self._indices[name].uuid)
            ix = Index(name, self.now_ms())
            props = (body.get("mappings") or {}).get("properties") or {}
            _apply_mapping(ix, props, "")
            self._indices[name] = ix
        return {"acknowledged": True, "shards_acknowledged": True, "index": name}

    def delete_index(self, expr: str, params: dict) -> dict:
        if "*" in expr or expr == "_all":  # action.destructive_requires_name defaults to true
            raise _illegal("Wildcard expressions or all indices are not allowed")
        with self._lock:
            for ix in self._resolve(expr, params):
                del self._indices[ix.name]
        return {"acknowledged": True}

    def mapping(self, expr: str | None, params: dict) -> dict:
        with self._lock:
            return {ix.name: {"mappings": _mapping_json(ix)} for ix in self._resolve(expr, params)}

    def field_caps(self, expr: str | None, fields: list[str], params: dict) -> dict:
        with self._lock:
            indices = self._resolve(expr, params)
            caps: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
            for ix in indices:
                names = dict(ix.mapping)
                for path, kind in ix.mapping.items():
                    if kind == "text" and path not in ix.no_keyword:
                        names[path + ".keyword"] = "keyword"
                for name, kind in names.items():
                    if any(fnmatch.fnmatchcase(name, f) for f in fields):
                        caps[name][kind].append(ix.name)
            out: dict = {}
            for name, kinds in sorted(caps.items()):
                out[name] = {}
                for kind, where in kinds.items():
                    entry = {"type": kind, "metadata_field": False, "searchable": True,
                             "aggregatable": kind != "text"}
                    if len(kinds) > 1:
                        entry["indices"] = where
                    out[name][kind] = entry
            return {"indices": [ix.name for ix in indices], "fields": out}

    def cat_indices(self, expr: str | None, params: dict) -> list[dict]:
        with self._lock:
            rows = []
            for ix in self._resolve(expr, {**params, "expand_wildcards": params.get("expand_wildcards", "all")}):
                size = _human_bytes(ix.size_bytes, params.get("bytes"))
                rows.append({"health": "green", "status": "open", "index": ix.name, "uuid": ix.uuid, "pri": "1",
                             "rep": "0", "docs.count": str(len(ix.by_id)), "docs.deleted": str(ix.deleted),
                             "store.size": size, "pri.store.size": size, "dataset.size": size})
        return rows

    def info(self) -> dict:
        return {
            "name": NODE_ID, "cluster_name": self.cluster_name, "cluster_uuid": self.cluster_uuid,
            "version": {"number": VERSION, "build_flavor": "default", "build_type": "docker",
                        "build_hash": "0000000000000000000000000000000000000000",
                        "build_date": "2025-07-22T00:00:00.000000000Z", "build_snapshot": False,
                        "lucene_version": LUCENE_VERSION, "minimum_wire_compatibility_version": "8.19.0",
                        "minimum_index_compatibility_version": "8.0.0"},
            "tagline": "You Know, for Search",
        }

    def health(self) -> dict:
        n = len(self._indices)
        return {"cluster_name": self.cluster_name, "status": "green", "timed_out": False, "number_of_nodes": 1,
                "number_of_data_nodes": 1, "active_primary_shards": n, "active_shards": n,
                "relocating_shards": 0, "initializing_shards": 0, "unassigned_shards": 0,
                "unassigned_primary_shards": 0, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
                "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
                "active_shards_percent_as_number": 100.0}


def _write_shards() -> dict:
    return {"total": 1, "successful": 1, "failed": 0}


def _human_bytes(n: int, unit: str | None) -> str:
    if unit:
        factor = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}.get(unit)
        if factor is None:
            raise _illegal(f"failed to parse [bytes] with value [{unit}]; use b, kb, mb or gb")
        return str(n // factor)
    for suffix, factor in (("gb", 1024**3), ("mb", 1024**2), ("kb", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return f"{n}b"


_EXPLICIT_TYPES = {"keyword", "text", "date", "long", "integer", "short", "byte", "double", "float",
                   "half_float", "scaled_float", "boolean", "match_only_text", "wildcard", "constant_keyword"}


def _apply_mapping(ix: Index, props: dict, prefix: str) -> None:
    for name, spec in props.items():
        path = prefix + name
        if not isinstance(spec, dict):
            raise EsError(400, "mapper_parsing_exception", f"Expected map for property [{path}]")
        kind = spec.get("type", "object" if "properties" in spec else None)
        if kind in ("object", "nested", "flattened"):
            ix._objects.add(path)
            _apply_mapping(ix, spec.get("properties") or {}, path + ".")
            continue
        if kind not in _EXPLICIT_TYPES:
            raise EsError(400, "mapper_parsing_exception",
                          f"No handler for type [{kind}] declared on field [{path}]")
        kind = {"match_only_text": "text", "wildcard": "keyword", "constant_keyword": "keyword",
                "integer": "long", "short": "long", "byte": "long"}.get(kind, kind)
        ix.mapping[path] = kind
        if kind == "text" and "keyword" not in (spec.get("fields") or {}):
            ix.no_keyword.add(path)


def _mapping_json(ix: Index) -> dict:
    root: dict = {}
    for path, kind in sorted(ix.mapping.items()):
        node = root
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}).setdefault("properties", {})
        spec: dict = {"type": kind}
        if kind == "text" and path not in ix.no_keyword:
            spec["fields"] = {"keyword": {"type": "keyword", "ignore_above": IGNORE_ABOVE}}
        node[parts[-1]] = spec
    return {"properties": root}


def filter_path(obj, patterns: list[str]):
    """Elasticsearch's ``filter_path``: dotted patterns with ``*`` (within one key) and ``**`` (any
    depth); patterns starting with ``-`` exclude."""
    includes = [p.split(".") for p in patterns if p and not p.startswith("-")]
    excludes = [p[1:].split(".") for p in patterns if p.startswith("-")]

    def walk(value, path: list[str], selected: bool):
        if isinstance(value, list):
            kept = [walk(item, path, selected) for item in value]
            kept = [k for k in kept if k is not _MISSING]
            return kept if kept or selected else _MISSING
        if not isinstance(value, dict):
            return value if selected else _MISSING
        out = {}
        for key, item in value.items():
            sub = path + [key]
            if any(_full_match(e, sub) for e in excludes):
                continue
            if selected or any(_full_match(i, sub) for i in includes):
                out[key] = walk(item, sub, True) if excludes else item
            elif any(_partial_match(i, sub) for i in includes):
                kept = walk(item, sub, False)
                if kept is not _MISSING and kept != {}:
                    out[key] = kept
        return out

    return walk(obj, [], not includes)


def _full_match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return _full_match(pattern[1:], path) or (bool(path) and _full_match(pattern, path[1:]))
    return bool(path) and fnmatch.fnmatchcase(path[0], pattern[0]) and _full_match(pattern[1:], path[1:])


def _partial_match(pattern: list[str], path: list[str]) -> bool:
    if not path:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":
        return True
    return fnmatch.fnmatchcase(path[0], pattern[0]) and _partial_match(pattern[1:], path[1:])


