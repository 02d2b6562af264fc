"""Constants and errors in Elasticsearch's own words (types, reasons, status codes)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

log = logging.getLogger(__name__)

VERSION = "9.1.0"
LUCENE_VERSION = "10.2.2"
MAX_RESULT_WINDOW = 10_000
MAX_BUCKETS = 65_536
IGNORE_ABOVE = 256
DEFAULT_TRACK_TOTAL = 10_000
TIME_FIELD = "@timestamp"
_MISSING = object()
_SHARDS_ONE = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- errors -------------------------------------------------------------------------


class EsError(Exception):
    """An error answered in Elasticsearch's shape: ``{"error": {...}, "status": N}``."""

    def __init__(self, status: int, type_: str, reason: str, *, phase: bool = False,
                 shard_index: str | None = None, **extra):
        super().__init__(reason)
        self.status, self.type, self.reason, self.phase = status, type_, reason, phase
        self.shard_index = shard_index
        self.extra = extra

    def body(self) -> dict:
        cause = {"type": self.type, "reason": self.reason, **self.extra}
        if not self.phase:
            return {"error": {"root_cause": [cause], **cause}, "status": self.status}
        shard = {"shard": 0, "index": self.shard_index or "_na_", "node": NODE_ID, "reason": cause}
        return {"error": {"root_cause": [cause], "type": "search_phase_execution_exception",
                          "reason": "all shards failed", "phase": "query", "grouped": True,
                          "failed_shards": [shard], "caused_by": cause}, "status": self.status}


def _parsing(reason: str) -> EsError:
    return EsError(400, "parsing_exception", reason, line=1, col=1)


def _xcontent(reason: str) -> EsError:
    return EsError(400, "x_content_parse_exception", f"[1:1] {reason}")


def _illegal(reason: str, *, phase: bool = False, shard_index: str | None = None) -> EsError:
    return EsError(400, "illegal_argument_exception", reason, phase=phase, shard_index=shard_index)


def _index_not_found(name: str) -> EsError:
    return EsError(404, "index_not_found_exception", f"no such index [{name}]",
                   **{"resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name})


def _fielddata(field: str, index: str) -> EsError:
    return _illegal(
        f"Fielddata is disabled on [{field}] in [{index}]. Text fields are not optimised for operations "
        "that require per-document field data like aggregations and sorting, so these operations are "
        f"disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on "
        f"[{field}] in order to load field data by uninverting the inverted index. Note that this can "
        "use significant memory.", phase=True, shard_index=index)


NODE_ID = "sandbox-node-0"


