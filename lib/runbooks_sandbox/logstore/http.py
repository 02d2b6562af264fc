"""The HTTP API on 127.0.0.1 that the official client talks to (routes, media types, errors)."""

from __future__ import annotations

import gzip
import json
import re
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from .common import EsError, _illegal, _parsing, log

if TYPE_CHECKING:
    from .store import LogStore
from .store import _COMMON_PARAMS, _SEARCH_PARAMS, _bool_param, _mapping_json, filter_path

# -- HTTP -------------------------------------------------------------------------------------

_COMPAT = re.compile(r"compatible-with\s*=\s*(\d+)")
_NAME = r"(?P<index>[^/_][^/]*)"
_TARGET = r"(?P<index>[^/]+)"
_ROUTES: list[tuple[set[str], re.Pattern, str]] = [(set(m.split("|")), re.compile(p), h) for m, p, h in (
    ("GET|HEAD", r"^/$", "info"),
    ("POST|PUT", r"^/_bulk$", "bulk"),
    ("POST|PUT", rf"^/{_NAME}/_bulk$", "bulk"),
    ("GET|POST", r"^/_search$", "search"),
    ("GET|POST", rf"^/{_TARGET}/_search$", "search"),
    ("GET|POST", r"^/_count$", "count"),
    ("GET|POST", rf"^/{_TARGET}/_count$", "count"),
    ("POST", rf"^/{_TARGET}/_pit$", "open_pit"),
    ("DELETE", r"^/_pit$", "close_pit"),
    ("GET", r"^/_cat/indices(?:/(?P<index>[^/]+))?$", "cat_indices"),
    ("GET", r"^/_cluster/health(?:/(?P<index>[^/]+))?$", "health"),
    ("GET", r"^/_mapping$", "mapping"),
    ("GET", rf"^/{_TARGET}/_mapping$", "mapping"),
    ("GET|POST", r"^/_field_caps$", "field_caps"),
    ("GET|POST", rf"^/{_TARGET}/_field_caps$", "field_caps"),
    ("GET|POST", r"^/_refresh$", "refresh"),
    ("GET|POST", rf"^/{_TARGET}/_refresh$", "refresh"),
    ("POST", rf"^/{_NAME}/_doc$", "index_doc"),
    ("POST|PUT", rf"^/{_NAME}/_doc/(?P<id>[^/]+)$", "index_doc"),
    ("POST|PUT", rf"^/{_NAME}/_create/(?P<id>[^/]+)$", "create_doc"),
    ("GET|HEAD", rf"^/{_NAME}/_doc/(?P<id>[^/]+)$", "get_doc"),
    ("DELETE", rf"^/{_NAME}/_doc/(?P<id>[^/]+)$", "delete_doc"),
    ("PUT", rf"^/{_NAME}$", "create_index"),
    ("DELETE", rf"^/{_TARGET}$", "delete_index"),
    ("HEAD", rf"^/{_TARGET}$", "index_exists"),
    ("GET", rf"^/{_TARGET}$", "get_index"),
)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server_version = "sandbox-logstore"
    store: LogStore  # set by LogStore.start on its subclass of this handler

    def log_message(self, fmt: str, *args) -> None:  # requests go to the debug log, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_HEAD(self):
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        compat = None
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip" and raw:
                raw = gzip.decompress(raw)
            compat = self._compat()
            status, body, content_type = self.store_dispatch(method, raw)
        except EsError as e:
            status, body, content_type = e.status, e.body(), None
        except Exception as e:  # a bug here must still answer like a server, and be visible
            log.exception("log store failed on %s %s", method, self.path)
            err = EsError(500, "exception", f"sandbox log store error: {type(e).__name__}: {e}")
            status, body, content_type = 500, err.body(), None
        self._respond(method, status, body, content_type, compat)

    def _compat(self) -> int | None:
        versions = set()
        for header in ("Accept", "Content-Type"):
            value = self.headers.get(header) or ""
            m = _COMPAT.search(value)
            if m:
                versions.add(int(m.group(1)))
        if not versions:
            return None
        bad = sorted(v for v in versions if v not in (8, 9))
        if bad:
            raise EsError(400, "media_type_header_exception", "Invalid media-type value on headers [Accept, "
                          "Content-Type]", caused_by={"type": "status_exception", "reason":
                          f"Accept version must be either version 8 or 9, but found {bad[0]}. "
                          f"Accept={self.headers.get('Accept')}"})
        return max(versions)

    def store_dispatch(self, method: str, raw: bytes):
        parts = urlsplit(self.path)
        path = parts.path if len(parts.path) == 1 else parts.path.rstrip("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        known_path = False
        for methods, pattern, handler in _ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            known_path = True
            if method not in methods:
                continue
            groups = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            return getattr(self, "h_" + handler)(params, raw, **groups)
        if known_path:
            allowed = sorted({x for methods, pattern, _ in _ROUTES if pattern.match(path) for x in methods})
            raise EsError(405, "method_not_allowed",
                          f"Incorrect HTTP method for uri [{self.path}] and method [{method}], allowed: {allowed}")
        raise _illegal(f"no handler found for uri [{self.path}] and method [{method}]")

    def _json(self, raw: bytes):
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise EsError(400, "x_content_parse_exception", f"[1:1] Failed to parse object: {e}",
                          caused_by={"type": "json_parse_exception", "reason": str(e)}) from None

    def _respond(self, method, status, body, content_type, compat):
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
            content_type = content_type or "text/plain; charset=UTF-8"
        else:
            if params.get("filter_path") and isinstance(body, dict) and status < 300:
                body = filter_path(body, params["filter_path"].split(","))
            indent = 2 if "pretty" in params and _bool_param(params["pretty"], False) else None
            data = json.dumps(body, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"),
                              default=str).encode()
            if compat is not None:
                content_type = f"application/vnd.elasticsearch+json;compatible-with={compat}"
            else:
                content_type = content_type or "application/json"
        self.send_response(status)
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if method == "HEAD" else str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    # ---- handlers ----

    def _check_params(self, params: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(params) - allowed - _COMMON_PARAMS)
        if unknown:
            raise _illegal(f"request [{where}] contains unrecognized parameter: [{unknown[0]}]")

    def h_info(self, params, raw):
        return 200, self.store.info(), None

    def h_health(self, params, raw, index=None):
        return 200, self.store.health(), None

    def h_bulk(self, params, raw, index=None):
        self._check_params(params, {"refresh", "timeout", "wait_for_active_shards", "routing", "pipeline",
                                    "require_alias", "_source", "_source_includes", "_source_excludes",
                                    "list_executed_pipelines", "require_data_stream"}, "/_bulk")
        if not raw.strip():
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
        return 200, self.store.bulk(raw, index, params), None

    def h_search(self, params, raw, index=None):
        if "scroll" in params:
            raise _illegal("[scroll] is not supported by the sandbox log store: page with search_after "
                           "(and a point in time) instead")
        self._check_params(params, _SEARCH_PARAMS, "/_search")
        body = self._json(raw)
        if body is not None and not isinstance(body, dict):
            raise _parsing("request body must be an object")
        return 200, self.store.search(index, body, params), None

    def h_count(self, params, raw, index=None):
        self._check_params(params, {"q", "df", "default_operator", "analyze_wildcard", "lenient",
                                    "ignore_unavailable", "allow_no_indices", "expand_wildcards", "routing",
                                    "preference", "min_score", "terminate_after", "ignore_throttled"}, "/_count")
        body = self._json(raw)
        return 200, self.store.count(index, body, params), None

    def h_open_pit(self, params, raw, index):
        return 200, self.store.open_pit(index, params), None

    def h_close_pit(self, params, raw):
        status, body = self.store.close_pit(self._json(raw) or {})
        return status, body, None

    def h_cat_indices(self, params, raw, index=None):
        rows = self.store.cat_indices(index, params)
        columns = ["health", "status", "index", "uuid", "pri", "rep", "docs.count", "docs.deleted",
                   "store.size", "pri.store.size", "dataset.size"]
        aliases = {"h": "health", "s": "status", "i": "index", "idx": "index", "id": "uuid", "p": "pri",
                   "r": "rep", "dc": "docs.count", "docsCount": "docs.count", "dd": "docs.deleted",
                   "ss": "store.size", "storeSize": "store.size"}
        if params.get("h"):
            columns = [aliases.get(c.strip(), c.strip()) for c in params["h"].split(",")]
            for column in columns:
                if rows and column not in rows[0]:
                    raise _illegal(f"header [{column}] is not supported; use one of {', '.join(rows[0])}")
        if params.get("s"):
            for spec in reversed(params["s"].split(",")):
                column, _, order = spec.partition(":")
                column = aliases.get(column, column)
                numeric = column in ("docs.count", "docs.deleted", "pri", "rep")
                rows.sort(key=lambda r, c=column, num=numeric: int(r.get(c, 0)) if num else r.get(c, ""),
                          reverse=order == "desc")
        fmt = params.get("format")
        if fmt == "json":
            return 200, [{c: r.get(c) for c in columns} for r in rows], None
        if fmt not in (None, "", "txt", "text"):
            raise _illegal(f"Unsupported format [{fmt}]; use json or leave it out for text")
        table = [[r.get(c, "") for c in columns] for r in rows]
        if "v" in params and _bool_param(params["v"], False):
            table.insert(0, columns)
        if not table:
            return 200, "", "text/plain; charset=UTF-8"
        widths = [max(len(str(row[i])) for row in table) for i in range(len(columns))]
        numeric = {i for i, c in enumerate(columns) if c in ("pri", "rep", "docs.count", "docs.deleted")}
        lines = [" ".join(str(v).rjust(widths[i]) if i in numeric else str(v).ljust(widths[i])
                          for i, v in enumerate(row)).rstrip() for row in table]
        return 200, "\n".join(lines) + "\n", "text/plain; charset=UTF-8"

    def h_mapping(self, params, raw, index=None):
        return 200, self.store.mapping(index, params), None

    def h_field_caps(self, params, raw, index=None):
        body = self._json(raw) or {}
        fields = params.get("fields") or body.get("fields")
        if not fields:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: specified fields can't be null or empty;")
        fields = fields.split(",") if isinstance(fields, str) else list(fields)
        return 200, self.store.field_caps(index, fields, params), None

    def h_refresh(self, params, raw, index=None):
        with self.store._lock:
            indices = self.store._resolve(index, params)
            for ix in indices:
                ix.flush()
        return 200, {"_shards": {"total": len(indices), "successful": len(indices), "failed": 0}}, None

    def h_index_doc(self, params, raw, index, id=None):
        body = self._json(raw)
        if not isinstance(body, dict):
            raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: the document must be an object")
        op = "create" if params.get("op_type") == "create" else "index"
        status, out = self.store.index_doc(index, id, body, op)
        return status, out, None

    def h_create_doc(self, params, raw, index, id):
        body = self._json(raw)
        if not isinstance(body, dict):
            raise EsError(400, "document_parsing_exception", "[1:1] failed to parse: the document must be an object")
        status, out = self.store.index_doc(index, id, body, "create")
        return status, out, None

    def h_get_doc(self, params, raw, index, id):
        status, out = self.store.get_doc(index, id)
        return status, out, None

    def h_delete_doc(self, params, raw, index, id):
        status, out = self.store.delete_doc(index, id)
        return status, out, None

    def h_create_index(self, params, raw, index):
        return 200, self.store.create_index(index, self._json(raw)), None

    def h_delete_index(self, params, raw, index):
        return 200, self.store.delete_index(index, params), None

    def h_index_exists(self, params, raw, index):
        try:
            with self.store._lock:
                found = self.store._resolve(index, {**params, "allow_no_indices": "false"})
        except EsError:
            found = []
        return (200 if found else 404), {}, None

    def h_get_index(self, params, raw, index):
        with self.store._lock:
            indices = self.store._resolve(index, params)
            return 200, {ix.name: {"aliases": {}, "mappings": _mapping_json(ix), "settings": {"index": {
                "number_of_shards": "1", "number_of_replicas": "0", "uuid": ix.uuid,
                "creation_date": str(ix.created_ms), "provided_name": ix.name}}} for ix in indices}, None
