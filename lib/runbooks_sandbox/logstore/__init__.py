"""An Elasticsearch-compatible log store for the sandbox: in memory, standard library only.

The runbooks talk to Elasticsearch with the official ``elasticsearch`` client,
and the sandbox must exercise that same code path, so this module speaks
enough of the Elasticsearch HTTP API that the client (8.x and 9.x) works
unchanged: it answers with ``X-Elastic-Product: Elasticsearch``, accepts the
``application/vnd.elasticsearch+json; compatible-with=8|9`` media types and
echoes them, and reports errors in Elasticsearch's JSON shape with the same
types and status codes (``index_not_found_exception``, ``parsing_exception``,
``x_content_parse_exception``, ``illegal_argument_exception``, a
``search_phase_execution_exception`` around query-time failures).

Supported (everything else is answered with a 400 that names it):

* ``GET|HEAD /``, ``/_cluster/health``, ``/_cat/indices`` (text, ``v``, ``h``,
  ``s``, ``bytes``, ``format=json``), ``/<target>/_mapping``, ``_field_caps``;
* ``_bulk`` (``index``, ``create``, ``delete``), ``/<index>/_doc[/<id>]``,
  ``GET /<index>/_doc/<id>``, index create/delete/exists, ``_refresh``;
* ``_search`` and ``_count`` on comma lists and ``*`` wildcards of indices
  (``-`` exclusions, ``ignore_unavailable``, ``allow_no_indices``), point in
  time (``POST /<index>/_pit``, ``DELETE /_pit``);
* queries: ``bool`` (must/filter/should/must_not, ``minimum_should_match``),
  ``match_all``, ``match_none``, ``term``, ``terms``, ``ids``, ``exists``,
  ``prefix``, ``wildcard``, ``regexp``, ``range`` (date math such as
  ``now-2h``, ``now-1d/d``, ``2024-01-01||+1d``, ISO dates, epoch millis,
  ``format``, ``time_zone``), ``match``, ``match_phrase``, ``multi_match``,
  ``query_string``, ``simple_query_string``, ``constant_score``;
* ``sort`` (fields, ``_doc``, ``_shard_doc``, ``_score``; ``missing``,
  ``unmapped_type``), ``from``/``size`` (result window 10,000),
  ``search_after``, ``track_total_hits``, ``_source`` filtering, ``fields``,
  ``post_filter``, ``version``, ``seq_no_primary_term``, ``typed_keys``;
* aggregations ``date_histogram`` (``fixed_interval``, ``calendar_interval``,
  ``min_doc_count``, ``extended_bounds``, ``hard_bounds``, ``offset``,
  ``format``, fixed-offset ``time_zone``), ``terms`` (``size``, ``order``,
  ``min_doc_count``, ``missing``, ``include``/``exclude``), ``top_hits``,
  ``filter``, ``filters``, ``missing``, ``min``, ``max``, ``avg``, ``sum``,
  ``value_count``, ``cardinality``, ``stats``, nested to any depth.

Mapping is Elasticsearch's dynamic mapping: ``@timestamp`` and strings that
look like ISO dates are ``date``; other strings are ``text`` with a
``.keyword`` sub-field (``ignore_above: 256``), so aggregations and sorting
need ``field.keyword`` exactly as on a real cluster.  Deliberate
simplifications: ``term`` on a ``text`` field compares the whole value
(keyword semantics) instead of analysed tokens; every hit scores 1.0; the
analyser approximates the standard one (lower-cased word tokens).

Speed: each index keeps its documents sorted by ``@timestamp``, so a range on
``@timestamp`` is two bisections and a ``date_histogram`` on it bisects
bucket boundaries; keyword columns and postings are built on first use.

The sandbox store is unauthenticated and listens on 127.0.0.1 only;
``runbooks.logs`` supports API keys and basic auth (from environment
variables) and TLS for real clusters.
"""

from __future__ import annotations

from .dates import parse_date
from .store import LogStore, filter_path

__all__ = ["LogStore", "filter_path", "parse_date"]
