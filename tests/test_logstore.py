"""The sandbox log store speaks Elasticsearch: tested over HTTP with the official client.

Expected results are computed in Python from the same synthetic documents,
so each query/aggregation case states its meaning as a predicate.
"""

from __future__ import annotations

import http.client
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

from runbooks_sandbox.logstore import LogStore, filter_path, parse_date

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2024, 3, 10, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
APPS = ("frontend", "checkout", "payments-api")
NAMESPACES = {"frontend": "shop", "checkout": "shop", "payments-api": "payments"}
LEVELS = ("info", "info", "warn", "error")


def make_docs(n: int = 3000) -> list[dict]:
    """Pairs of documents share a timestamp (ties for sorting); 97 s apart, ~4 days back."""
    docs = []
    for i in range(n):
        app = APPS[i % 3]
        moment = NOW - timedelta(seconds=(i // 2) * 97 + 30)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        level = LEVELS[i % 4]
        if level == "error":
            log = f"could not connect to database: connection refused (payments-db:5432) id={i}"
        else:
            log = f"GET /api/items/{i} status={200 if i % 5 else 404} took {i % 50} ms"
        if i % 101 == 0:
            log = "Exception in thread main " + "x" * 300  # longer than the keyword limit
        doc = {
            "@timestamp": stamp,
            "time": moment.isoformat().replace("+00:00", "Z"),
            "stream": "stderr" if level == "error" else "stdout",
            "log": log,
            "status": 500 if level == "error" else 200,
            "kubernetes": {
                "namespace_name": NAMESPACES[app],
                "pod_name": f"{app}-7d9f8-{'abcd'[i % 4]}x{i % 4}",
                "container_name": app,
                "labels": {"app": app, "app_kubernetes_io/name": app},
            },
        }
        if i % 7:
            doc["level"] = level
        if i % 10 == 0:
            doc["tags"] = ["a", "b"] if i % 20 == 0 else "a"
        docs.append(doc)
    return docs


DOCS = make_docs()


def ts_ms(doc: dict) -> int:
    return int(datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module")
def store():
    s = LogStore(clock=lambda: NOW)
    s.add(DOCS)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def es(store):
    client = Elasticsearch(store.url, request_timeout=10)
    yield client
    client.close()


def count(es, query) -> int:
    return es.search(index="logstash-*", query=query, size=0, track_total_hits=True)["hits"]["total"]["value"]


def k8s(doc, key):
    return doc["kubernetes"].get(key)


def within(doc, lo=None, hi=None):
    t = ts_ms(doc)
    return (lo is None or t >= lo) and (hi is None or t < hi)


H = 3_600_000
DAY_START = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp() * 1000)

QUERY_CASES = [
    ("match_all", {"match_all": {}}, lambda d: True),
    ("term on text (keyword semantics)", {"term": {"kubernetes.namespace_name": "shop"}},
     lambda d: k8s(d, "namespace_name") == "shop"),
    ("term on .keyword", {"term": {"kubernetes.namespace_name.keyword": {"value": "payments"}}},
     lambda d: k8s(d, "namespace_name") == "payments"),
    ("term case_insensitive", {"term": {"level.keyword": {"value": "ERROR", "case_insensitive": True}}},
     lambda d: d.get("level") == "error"),
    ("term exact case", {"term": {"level.keyword": "ERROR"}}, lambda d: False),
    ("terms", {"terms": {"level.keyword": ["warn", "error"]}}, lambda d: d.get("level") in ("warn", "error")),
    ("term numeric from string", {"term": {"status": "500"}}, lambda d: d["status"] == 500),
    ("terms on multi-valued", {"terms": {"tags.keyword": ["b"]}}, lambda d: "b" in str(d.get("tags"))),
    ("term on label with slash", {"term": {"kubernetes.labels.app_kubernetes_io/name.keyword": "checkout"}},
     lambda d: d["kubernetes"]["labels"]["app"] == "checkout"),
    ("exists", {"exists": {"field": "level"}}, lambda d: "level" in d),
    ("exists object", {"exists": {"field": "kubernetes.labels"}}, lambda d: True),
    ("exists keyword ignores long values", {"exists": {"field": "log.keyword"}}, lambda d: len(d["log"]) <= 256),
    ("prefix", {"prefix": {"kubernetes.pod_name.keyword": "checkout-"}},
     lambda d: k8s(d, "pod_name").startswith("checkout-")),
    ("wildcard", {"wildcard": {"kubernetes.pod_name.keyword": {"value": "*-ax0"}}},
     lambda d: k8s(d, "pod_name").endswith("-ax0")),
    ("regexp", {"regexp": {"kubernetes.pod_name.keyword": "pay.*-[cd]x[23]"}},
     lambda d: k8s(d, "pod_name").startswith("pay") and k8s(d, "pod_name")[-3:] in ("cx2", "dx3")),
    ("range now-2h", {"range": {"@timestamp": {"gte": "now-2h"}}}, lambda d: within(d, NOW_MS - 2 * H)),
    ("range now-1d/d rounds down", {"range": {"@timestamp": {"gte": "now-1d/d", "lt": "now/d"}}},
     lambda d: within(d, DAY_START - 24 * H, DAY_START)),
    ("range lte now/d rounds up", {"range": {"@timestamp": {"gt": "now-1d/d", "lte": "now/d"}}},
     lambda d: within(d, DAY_START) and ts_ms(d) <= DAY_START + 24 * H - 1),
    ("range ISO dates", {"range": {"@timestamp": {"gte": "2024-03-09T00:00:00Z", "lt": "2024-03-09T06:00:00.000Z"}}},
     lambda d: within(d, DAY_START - 24 * H, DAY_START - 18 * H)),
    ("range date-only lte covers the day", {"range": {"@timestamp": {"gte": "2024-03-08", "lte": "2024-03-08"}}},
     lambda d: within(d, DAY_START - 48 * H, DAY_START - 24 * H)),
    ("range epoch_millis", {"range": {"@timestamp": {"gte": NOW_MS - 5 * H, "lt": NOW_MS - 4 * H,
                                                      "format": "epoch_millis"}}},
     lambda d: within(d, NOW_MS - 5 * H, NOW_MS - 4 * H)),
    ("range anchored math", {"range": {"@timestamp": {"gte": "2024-03-09||+12h", "lt": "2024-03-09||+1d"}}},
     lambda d: within(d, DAY_START - 12 * H, DAY_START)),
    ("range time_zone", {"range": {"@timestamp": {"gte": "2024-03-10", "time_zone": "+02:00"}}},
     lambda d: within(d, DAY_START - 2 * H)),
    ("range numeric", {"range": {"status": {"gt": 200}}}, lambda d: d["status"] > 200),
    ("match one token", {"match": {"log": "database"}}, lambda d: "database" in d["log"]),
    ("match or", {"match": {"log": "database 404"}},
     lambda d: "database" in d["log"] or "status=404" in d["log"]),
    ("match and", {"match": {"log": {"query": "connection refused id", "operator": "and"}}},
     lambda d: "connection refused" in d["log"]),
    ("match_phrase", {"match_phrase": {"log": "connection refused"}}, lambda d: "connection refused" in d["log"]),
    ("match_phrase order matters", {"match_phrase": {"log": "refused connection"}}, lambda d: False),
    ("query_string field and AND", {"query_string": {"query": "level:error AND kubernetes.namespace_name:shop"}},
     lambda d: d.get("level") == "error" and k8s(d, "namespace_name") == "shop"),
    ("query_string OR NOT", {"query_string": {"query": "(level:warn OR level:error) NOT kubernetes.container_name:checkout"}},
     lambda d: d.get("level") in ("warn", "error") and k8s(d, "container_name") != "checkout"),
    ("query_string phrase default field", {"query_string": {"query": '"connection refused"'}},
     lambda d: "connection refused" in d["log"]),
    ("query_string _exists_ and range", {"query_string": {"query": "_exists_:tags AND status:[500 TO *]"}},
     lambda d: "tags" in d and d["status"] >= 500),
    ("query_string wildcard", {"query_string": {"query": "kubernetes.pod_name:pay*", "default_operator": "AND"}},
     lambda d: k8s(d, "pod_name").startswith("pay")),
    ("simple_query_string", {"simple_query_string": {"query": "database -shop", "fields": ["log", "kubernetes.namespace_name"],
                                                      "default_operator": "and"}},
     lambda d: "database" in d["log"] and k8s(d, "namespace_name") != "shop"),
    ("simple_query_string or, prefix", {"simple_query_string": {"query": "databa* | \"status=404\"", "fields": ["log"]}},
     lambda d: "database" in d["log"] or "status=404" in d["log"]),
    ("bool filter + must_not", {"bool": {"filter": [{"term": {"kubernetes.namespace_name": "shop"}}],
                                         "must_not": [{"term": {"level.keyword": "info"}}]}},
     lambda d: k8s(d, "namespace_name") == "shop" and d.get("level") != "info"),
    ("bool should alone needs one", {"bool": {"should": [{"term": {"level.keyword": "warn"}},
                                                         {"term": {"status": 500}}]}},
     lambda d: d.get("level") == "warn" or d["status"] == 500),
    ("bool should optional next to filter", {"bool": {"filter": [{"term": {"kubernetes.namespace_name": "payments"}}],
                                                      "should": [{"term": {"level.keyword": "warn"}}]}},
     lambda d: k8s(d, "namespace_name") == "payments"),
    ("minimum_should_match 2", {"bool": {"should": [{"term": {"level.keyword": "error"}}, {"term": {"status": 500}},
                                                    {"term": {"stream.keyword": "stderr"}}],
                                         "minimum_should_match": 2}},
     lambda d: sum([d.get("level") == "error", d["status"] == 500, d["stream"] == "stderr"]) >= 2),
    ("minimum_should_match percent", {"bool": {"should": [{"term": {"level.keyword": "error"}},
                                                          {"term": {"kubernetes.namespace_name": "shop"}}],
                                               "minimum_should_match": "100%"}},
     lambda d: d.get("level") == "error" and k8s(d, "namespace_name") == "shop"),
    ("nested bool", {"bool": {"must": [{"bool": {"should": [{"prefix": {"kubernetes.pod_name.keyword": "front"}},
                                                            {"prefix": {"kubernetes.pod_name.keyword": "check"}}]}}],
                              "filter": {"range": {"@timestamp": {"gte": "now-1d"}}}}},
     lambda d: k8s(d, "pod_name").startswith(("front", "check")) and within(d, NOW_MS - 24 * H)),
    ("ids", {"ids": {"values": []}}, lambda d: False),
    ("term on unmapped field", {"term": {"nope": "x"}}, lambda d: False),
    ("term _index", {"term": {"_index": "logstash-2024.03.09"}}, lambda d: d["@timestamp"].startswith("2024-03-09")),
    ("constant_score", {"constant_score": {"filter": {"term": {"level.keyword": "warn"}}}},
     lambda d: d.get("level") == "warn"),
]


@pytest.mark.parametrize("name,query,predicate", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_query_semantics(es, name, query, predicate):
    expected = sum(1 for d in DOCS if predicate(d))
    assert count(es, query) == expected
    assert es.count(index="logstash-*", query=query)["count"] == expected


def test_product_headers_and_compatible_media_type(store, es):
    info = es.info()
    assert info["version"]["number"].split(".")[0] in ("8", "9")
    assert info["tagline"] == "You Know, for Search"
    assert es.ping()
    host, port = urlsplit(store.url).hostname, urlsplit(store.url).port
    for accept, expected in (("application/vnd.elasticsearch+json; compatible-with=8",
                              "application/vnd.elasticsearch+json;compatible-with=8"),
                             ("application/json", "application/json")):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/", headers={"Accept": accept})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        assert resp.getheader("X-Elastic-Product") == "Elasticsearch"
        assert resp.getheader("Content-Type") == expected
        conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("GET", "/", headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=7"})
    resp = conn.getresponse()
    assert resp.status == 400
    assert json.loads(resp.read())["error"]["type"] == "media_type_header_exception"
    conn.close()


def test_indices_are_daily_and_listed(es):
    days = Counter(d["@timestamp"][:10].replace("-", ".") for d in DOCS)
    rows = es.cat.indices(index="logstash-*", format="json")
    assert {r["index"]: int(r["docs.count"]) for r in rows} == {f"logstash-{k}": v for k, v in days.items()}
    text = es.cat.indices(index="logstash-*", v=True, s="index")
    lines = text.strip().splitlines()
    assert lines[0].split()[:3] == ["health", "status", "index"]
    assert [line.split()[2] for line in lines[1:]] == sorted(f"logstash-{k}" for k in days)


def test_index_lists_wildcards_and_missing_indices(es):
    day = "logstash-2024.03.10"
    n_day = sum(1 for d in DOCS if d["@timestamp"].startswith("2024-03-10"))
    n_prev = sum(1 for d in DOCS if d["@timestamp"].startswith("2024-03-09"))
    assert es.count(index=day)["count"] == n_day
    assert es.count(index=f"{day},logstash-2024.03.09")["count"] == n_day + n_prev
    assert es.count(index="logstash-*,-logstash-2024.03.10")["count"] == len(DOCS) - n_day
    assert es.count(index="nothing-*")["count"] == 0
    with pytest.raises(NotFoundError) as err:
        es.search(index="logstash-1999.01.01")
    assert err.value.error == "index_not_found_exception"
    assert err.value.body["error"]["index"] == "logstash-1999.01.01"
    assert err.value.body["status"] == 404
    resp = es.search(index=f"logstash-1999.01.01,{day}", ignore_unavailable=True, size=0, track_total_hits=True)
    assert resp["hits"]["total"]["value"] == n_day
    with pytest.raises(NotFoundError):
        es.search(index="nothing-*", allow_no_indices=False)


def test_search_after_pages_through_every_document_once(es):
    query = {"bool": {"filter": [{"terms": {"level.keyword": ["info", "warn"]}}]}}
    expected = sum(1 for d in DOCS if d.get("level") in ("info", "warn"))
    for sort in ([{"@timestamp": "desc"}, {"kubernetes.pod_name.keyword": "asc"}, {"_doc": "asc"}],
                 [{"@timestamp": {"order": "asc"}}, {"_doc": "desc"}],
                 [{"kubernetes.pod_name.keyword": "asc"}, {"@timestamp": "desc"}, {"_doc": "asc"}]):
        seen, after, previous = [], None, None
        while True:
            resp = es.search(index="logstash-*", query=query, sort=sort, size=137, search_after=after,
                             track_total_hits=False)
            hits = resp["hits"]["hits"]
            if not hits:
                break
            seen.extend(h["_id"] for h in hits)
            for hit in hits:
                assert previous is None or _ordered(previous, hit["sort"], sort)
                previous = hit["sort"]
            after = hits[-1]["sort"]
        assert len(seen) == expected == len(set(seen)), sort


def _ordered(a: list, b: list, sort: list) -> bool:
    for x, y, spec in zip(a, b, sort, strict=False):
        order = next(iter(spec.values()))
        desc = (order if isinstance(order, str) else order["order"]) == "desc"
        if x != y:
            return (x > y) if desc else (x < y)
    return False


def test_point_in_time_paging_ignores_later_writes(es):
    pit = es.open_point_in_time(index="logstash-*", keep_alive="1m")["id"]
    late_index = "logstash-" + DOCS[0]["@timestamp"][:10].replace("-", ".")
    try:
        es.index(index=late_index, id="late", document={**DOCS[0], "log": "written after the pit"})
        seen, after = set(), None
        while True:
            body = {"pit": {"id": pit, "keep_alive": "1m"}, "size": 500, "sort": [{"@timestamp": "asc"}],
                    "_source": False}
            if after:
                body["search_after"] = after
            resp = es.search(**body)
            assert resp["pit_id"]
            hits = resp["hits"]["hits"]
            if not hits:
                break
            assert len(hits[-1]["sort"]) == 2  # the implicit _shard_doc tie-breaker
            seen.update(h["_id"] for h in hits)
            after = hits[-1]["sort"]
        assert len(seen) == len(DOCS) and "late" not in seen
        assert es.count(index="logstash-*")["count"] == len(DOCS) + 1
    finally:
        es.close_point_in_time(id=pit)
        es.delete(index=late_index, id="late")
    assert es.count(index="logstash-*")["count"] == len(DOCS)


def test_count_equals_total_hits_and_track_total_hits(es):
    query = {"term": {"kubernetes.namespace_name": "shop"}}
    n = es.count(index="logstash-*", query=query)["count"]
    assert n > 1000
    assert es.search(index="logstash-*", query=query, track_total_hits=True)["hits"]["total"] == \
        {"value": n, "relation": "eq"}
    assert es.search(index="logstash-*", query=query, track_total_hits=100)["hits"]["total"] == \
        {"value": 100, "relation": "gte"}
    assert "total" not in es.search(index="logstash-*", query=query, track_total_hits=False)["hits"]
    assert es.search(index="logstash-*", query=query)["hits"]["total"]["value"] == n  # default limit 10,000


def test_sort_from_size_and_source_filtering(es):
    resp = es.search(index="logstash-*", size=5, from_=3, sort=[{"@timestamp": "desc"}, {"_doc": "asc"}],
                     source_includes=["kubernetes.pod_name", "level"])
    times = sorted((ts_ms(d) for d in DOCS), reverse=True)
    assert [h["sort"][0] for h in resp["hits"]["hits"]] == times[3:8]
    for hit in resp["hits"]["hits"]:
        assert set(hit["_source"]) <= {"kubernetes", "level"}
        assert set(hit["_source"]["kubernetes"]) == {"pod_name"}
        assert hit["_score"] is None
    resp = es.search(index="logstash-*", size=2, source={"excludes": ["kubernetes.*", "log"]},
                     sort=[{"@timestamp": "asc"}], fields=["@timestamp", "level"])
    hit = resp["hits"]["hits"][0]
    assert "kubernetes" not in hit["_source"] and "log" not in hit["_source"]
    assert hit["fields"]["@timestamp"][0].endswith("Z")
    resp = es.search(index="logstash-*", size=1, source=False)
    assert "_source" not in resp["hits"]["hits"][0]


def test_date_histogram_with_nested_terms(es):
    query = {"range": {"@timestamp": {"gte": "now-6h", "lt": "now"}}}
    resp = es.search(index="logstash-*", size=0, query=query, aggs={
        "t": {"date_histogram": {"field": "@timestamp", "fixed_interval": "30m",
                                 "extended_bounds": {"min": "now-6h", "max": NOW_MS - 1}},
              "aggs": {"lvl": {"terms": {"field": "level.keyword", "missing": "unknown"},
                               "aggs": {"pods": {"terms": {"field": "kubernetes.pod_name.keyword", "size": 2}}}}}}})
    buckets = resp["aggregations"]["t"]["buckets"]
    assert len(buckets) == 12  # empty ones included: min_doc_count 0 with extended bounds
    assert buckets[0]["key"] == NOW_MS - 6 * H
    assert buckets[0]["key_as_string"] == "2024-03-10T06:00:00.000Z"
    expected: Counter = Counter()
    levels: Counter = Counter()
    for d in DOCS:
        t = ts_ms(d)
        if NOW_MS - 6 * H <= t < NOW_MS:
            key = (t // (30 * 60_000)) * 30 * 60_000
            expected[key] += 1
            levels[(key, d.get("level", "unknown"))] += 1
    for b in buckets:
        assert b["doc_count"] == expected[b["key"]]
        for lb in b["lvl"]["buckets"]:
            assert lb["doc_count"] == levels[(b["key"], lb["key"])]
            assert len(lb["pods"]["buckets"]) <= 2
            assert lb["pods"]["sum_other_doc_count"] + sum(p["doc_count"] for p in lb["pods"]["buckets"]) == \
                lb["doc_count"]


def test_date_histogram_calendar_interval_and_min_doc_count(es):
    resp = es.search(index="logstash-*", size=0, aggs={
        "d": {"date_histogram": {"field": "@timestamp", "calendar_interval": "day", "min_doc_count": 1}}})
    days = Counter(d["@timestamp"][:10] for d in DOCS)
    got = {b["key_as_string"][:10]: b["doc_count"] for b in resp["aggregations"]["d"]["buckets"]}
    assert got == dict(days)
    with pytest.raises(BadRequestError) as err:
        es.search(index="logstash-*", size=0, aggs={"d": {"date_histogram": {"field": "@timestamp",
                                                                             "calendar_interval": "2d"}}})
    assert err.value.error == "illegal_argument_exception"


def test_terms_aggregation_size_order_missing(es):
    resp = es.search(index="logstash-*", size=0, aggs={
        "pods": {"terms": {"field": "kubernetes.pod_name.keyword", "size": 3}},
        "asc": {"terms": {"field": "level.keyword", "order": {"_count": "asc"}, "missing": "none"}},
        "by_key": {"terms": {"field": "kubernetes.namespace_name.keyword", "order": {"_key": "desc"}}},
        "last": {"terms": {"field": "level.keyword", "order": {"newest": "desc"}},
                 "aggs": {"newest": {"max": {"field": "@timestamp"}}}},
    })
    aggs = resp["aggregations"]
    pods = Counter(k8s(d, "pod_name") for d in DOCS)
    top = sorted(pods.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(b["key"], b["doc_count"]) for b in aggs["pods"]["buckets"]] == top[:3]
    assert aggs["pods"]["sum_other_doc_count"] == sum(v for _, v in top[3:])
    levels = Counter(d.get("level", "none") for d in DOCS)
    assert [b["doc_count"] for b in aggs["asc"]["buckets"]] == sorted(levels.values())
    assert [b["key"] for b in aggs["by_key"]["buckets"]] == ["shop", "payments"]
    newest = [b["newest"]["value"] for b in aggs["last"]["buckets"]]
    assert newest == sorted(newest, reverse=True)
    assert aggs["last"]["buckets"][0]["newest"]["value_as_string"].endswith("Z")


def test_top_hits_inside_terms(es):
    resp = es.search(index="logstash-*", size=0, aggs={"ns": {
        "terms": {"field": "kubernetes.namespace_name.keyword"},
        "aggs": {"latest": {"top_hits": {"size": 2, "sort": [{"@timestamp": "desc"}],
                                         "_source": ["@timestamp", "log"]}}}}})
    for bucket in resp["aggregations"]["ns"]["buckets"]:
        hits = bucket["latest"]["hits"]
        assert hits["total"]["value"] == bucket["doc_count"]
        newest = max(ts_ms(d) for d in DOCS if k8s(d, "namespace_name") == bucket["key"])
        assert hits["hits"][0]["sort"] == [newest]
        assert set(hits["hits"][0]["_source"]) == {"@timestamp", "log"}


def test_terms_inside_date_histogram_inside_terms(es):
    resp = es.search(index="logstash-*", size=0, query={"range": {"@timestamp": {"gte": "now-3h"}}}, aggs={
        "lvl": {"terms": {"field": "level.keyword"}, "aggs": {
            "t": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}, "aggs": {
                "ns": {"terms": {"field": "kubernetes.namespace_name.keyword"}}}}}}})
    total = sum(n["doc_count"] for lvl in resp["aggregations"]["lvl"]["buckets"]
                for t in lvl["t"]["buckets"] for n in t["ns"]["buckets"])
    assert total == sum(1 for d in DOCS if within(d, NOW_MS - 3 * H) and "level" in d)


def test_bulk_index_create_conflict_and_mapping_error(es):
    resp = es.bulk(operations=[
        {"index": {"_index": "bulk-test", "_id": "1"}}, {"@timestamp": "2024-03-10T00:00:00Z", "n": 1},
        {"create": {"_index": "bulk-test", "_id": "1"}}, {"@timestamp": "2024-03-10T00:00:00Z", "n": 2},
        {"index": {"_index": "bulk-test"}}, {"@timestamp": "2024-03-10T00:00:01Z", "n": "not a number"},
        {"index": {"_index": "bulk-test", "_id": "1"}}, {"@timestamp": "2024-03-10T00:00:02Z", "n": 3},
    ], refresh=True)
    assert resp["errors"] is True
    statuses = [next(iter(item.values()))["status"] for item in resp["items"]]
    assert statuses == [201, 409, 400, 200]
    assert resp["items"][1]["create"]["error"]["type"] == "version_conflict_engine_exception"
    assert es.count(index="bulk-test")["count"] == 1
    assert es.get(index="bulk-test", id="1")["_source"]["n"] == 3
    es.indices.delete(index="bulk-test")
    with pytest.raises(NotFoundError):
        es.count(index="bulk-test")


def test_error_shapes(store, es):
    with pytest.raises(BadRequestError) as err:
        es.search(index="logstash-*", query={"fancy": {"field": "x"}})
    assert err.value.error == "parsing_exception"
    assert err.value.body["error"]["reason"] == "unknown query [fancy]"
    assert err.value.body["error"]["root_cause"][0]["type"] == "parsing_exception"
    with pytest.raises(BadRequestError) as err:
        es.search(index="logstash-*", aggs={"x": {"histogramm": {"field": "status"}}})
    assert err.value.error == "x_content_parse_exception"
    with pytest.raises(BadRequestError) as err:
        es.search(index="logstash-*", size=10_000, from_=1)
    assert err.value.error == "search_phase_execution_exception"
    assert err.value.body["error"]["root_cause"][0]["type"] == "illegal_argument_exception"
    with pytest.raises(BadRequestError) as err:
        es.search(index="logstash-*", aggs={"x": {"terms": {"field": "log"}}})
    assert "Fielddata is disabled on [log]" in err.value.body["error"]["root_cause"][0]["reason"]
    with pytest.raises(BadRequestError) as err:
        es.search(index="logstash-*", query={"range": {"@timestamp": {"gte": "now-2x"}}})
    assert err.value.body["error"]["type"] in ("parse_exception", "search_phase_execution_exception")
    with pytest.raises(BadRequestError):
        es.search(index="logstash-*", sort=[{"no_such_field": "asc"}])
    resp = es.search(index="logstash-*", sort=[{"no_such_field": {"order": "asc", "unmapped_type": "long"}}], size=1)
    assert resp["hits"]["hits"]
    host, port = urlsplit(store.url).hostname, urlsplit(store.url).port
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request("POST", "/logstash-*/_search", body=b"{not json", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 400 and body["error"]["type"] == "x_content_parse_exception"
    assert resp.getheader("X-Elastic-Product") == "Elasticsearch"
    conn.close()


def test_filter_and_filters_aggregations(es):
    resp = es.search(index="logstash-*", size=0, aggs={
        "errors": {"filter": {"term": {"level.keyword": "error"}},
                   "aggs": {"ns": {"terms": {"field": "kubernetes.namespace_name.keyword"}}}},
        "split": {"filters": {"filters": {"shop": {"term": {"kubernetes.namespace_name": "shop"}}},
                              "other_bucket_key": "rest"}},
        "nolevel": {"missing": {"field": "level.keyword"}},
        "span": {"stats": {"field": "@timestamp"}},
        "pods": {"cardinality": {"field": "kubernetes.pod_name.keyword"}},
    })
    aggs = resp["aggregations"]
    assert aggs["errors"]["doc_count"] == sum(1 for d in DOCS if d.get("level") == "error")
    shop = sum(1 for d in DOCS if k8s(d, "namespace_name") == "shop")
    assert aggs["split"]["buckets"]["shop"]["doc_count"] == shop
    assert aggs["split"]["buckets"]["rest"]["doc_count"] == len(DOCS) - shop
    assert aggs["nolevel"]["doc_count"] == sum(1 for d in DOCS if "level" not in d)
    assert aggs["span"]["count"] == len(DOCS)
    assert aggs["pods"]["value"] == len({k8s(d, "pod_name") for d in DOCS})


def test_field_caps_and_mapping_follow_dynamic_mapping(es):
    caps = es.field_caps(index="logstash-*", fields=["log*", "@timestamp", "status", "kubernetes.pod_name*"])
    fields = caps["fields"]
    assert fields["log"]["text"]["aggregatable"] is False
    assert fields["log.keyword"]["keyword"]["aggregatable"] is True
    assert fields["@timestamp"]["date"]["type"] == "date"
    assert fields["status"]["long"]["aggregatable"] is True
    mapping = es.indices.get_mapping(index="logstash-2024.03.10")["logstash-2024.03.10"]["mappings"]
    assert mapping["properties"]["kubernetes"]["properties"]["pod_name"]["fields"]["keyword"]["ignore_above"] == 256


def test_explicit_keyword_mapping(es):
    es.indices.create(index="typed", mappings={"properties": {"@timestamp": {"type": "date"},
                                                              "level": {"type": "keyword"},
                                                              "msg": {"type": "text"}}})
    try:
        es.index(index="typed", id="a", document={"@timestamp": "2024-03-10T00:00:00Z", "level": "ERROR", "msg": "x y"},
                 refresh=True)
        caps = es.field_caps(index="typed", fields=["level*", "msg*"])["fields"]
        assert "level.keyword" not in caps and caps["level"]["keyword"]["aggregatable"]
        assert "msg.keyword" not in caps
        assert es.count(index="typed", query={"term": {"level": "ERROR"}})["count"] == 1
    finally:
        es.indices.delete(index="typed")


def test_date_math_parsing():
    now = NOW_MS
    assert parse_date("now", now) == now
    assert parse_date("now-2h", now) == now - 2 * H
    assert parse_date("now-1d/d", now) == DAY_START - 24 * H
    assert parse_date("now-1d/d", now, round_up=True) == DAY_START - 1
    assert parse_date("now/M", now) == int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
    assert parse_date("now+1M/M", now, round_up=True) == int(datetime(2024, 5, 1, tzinfo=UTC).timestamp() * 1000) - 1
    assert parse_date("2024-01-31||+1M", now) == int(datetime(2024, 2, 29, tzinfo=UTC).timestamp() * 1000)
    assert parse_date("2024-03-10T12:00:00.123456789Z", now) == now + 123
    assert parse_date("2024-03-10T14:00:00+02:00", now) == now
    assert parse_date(str(now), now) == now
    assert parse_date(1710072000, now, fmt="epoch_second") == now
    assert parse_date("2024-03-10", now, round_up=True) == DAY_START + 24 * H - 1
    assert parse_date("now/w", now) == DAY_START - 6 * 24 * H  # 2024-03-10 is a Sunday; weeks start Monday


def test_filter_path():
    body = {"took": 1, "hits": {"total": {"value": 2}, "hits": [{"_id": "a", "_source": {"x": 1}}, {"_id": "b"}]}}
    assert filter_path(body, ["hits.hits._id"]) == {"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}}
    assert filter_path(body, ["-hits.hits", "took"]) == {"took": 1}
    assert filter_path(body, ["**._id"]) == {"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}}
