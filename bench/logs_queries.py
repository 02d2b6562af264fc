"""Benchmark: the sandbox log store and runbooks.logs, side by side in one run.

1. generating the default scenario's documents (runbooks_sandbox.loggen) and loading them;
2. runbooks.logs.volume_histogram (one date_histogram > terms > terms request) against the
   same counts computed the naive way: paging through every document with search_after
   and counting client-side (what DESIGN.md's "never pull every document to count" rules out);
3. runbooks.logs.top_errors and sample_lines.

Everything runs in this process against an in-process sandbox and log store on 127.0.0.1,
through the official elasticsearch client over HTTP.

    .venv/bin/python bench/logs_queries.py [--target 120000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from datetime import timedelta

from timing import timed

from runbooks import logs
from runbooks_sandbox import loggen
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.logstore import LogStore


def naive_counts(src: logs.LogSource, namespace: str | None, start, end) -> Counter:
    """Every document of the window fetched (search_after pages of 1,000) and counted here."""
    f = src.fields
    filters = [{"range": {f.timestamp: {"gte": start.isoformat(), "lt": end.isoformat()}}}]
    if namespace:
        filters.append({"term": {f"{f.namespace}.keyword": namespace}})
    counts: Counter = Counter()
    after = None
    while True:
        body = {"query": {"bool": {"filter": filters}}, "size": 1000, "track_total_hits": False,
                "sort": [{f.timestamp: "asc"}, {"_doc": "asc"}], "_source": [f.level]}
        if after:
            body["search_after"] = after
        hits = src.client.search(index=src.index, **body)["hits"]["hits"]
        for hit in hits:
            counts[hit["_source"].get(f.level, "unknown")] += 1
        if len(hits) < 1000:
            return counts
        after = hits[-1]["sort"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, default=loggen.DEFAULT_TARGET, help="documents to generate")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        box = Sandbox(tmp, "default", tick=60.0).start()
        try:
            objects = loggen.sandbox_objects(box)
            now = box.store.clock()
        finally:
            box.stop()
    t = time.perf_counter()
    docs = list(loggen.generate_documents(objects, now, target_docs=args.target))
    gen = time.perf_counter() - t
    store = LogStore()
    t = time.perf_counter()
    store.add(docs)
    load = time.perf_counter() - t
    store.start()
    src = logs.connect(store.url)
    print(f"documents            {len(docs):>9,}  in {len(store.indices())} daily indices")
    print(f"generate             {gen:9.3f} s")
    print(f"load (add)           {load:9.3f} s")
    t = time.perf_counter()
    src.client.count(index=src.index)
    print(f"first query (sort)   {time.perf_counter() - t:9.3f} s   (indices sorted once after loading)")
    logs.exact_field(src, src.fields.pod)  # field resolution is cached per connection

    end = now
    rows = [
        ("volume 7d, all", lambda: logs.volume_histogram(src, start=end - timedelta(days=7), end=end)),
        ("volume 6h shop/checkout", lambda: logs.volume_histogram(src, "shop", "checkout", lookback="6h",
                                                                   now=end)),
        ("top_errors 6h checkout", lambda: logs.top_errors(src, "shop", "checkout", lookback="6h", now=end)),
        ("top_errors 7d all", lambda: logs.top_errors(src, lookback="7d", now=end)),
        ("sample_lines n=50", lambda: logs.sample_lines(src, "shop", "checkout", around=end - timedelta(hours=1),
                                                        n=50)),
    ]
    print(f"\n{'query':28} {'median':>9}  result")
    for name, fn in rows:
        seconds, result = timed(fn, args.repeat)
        extra = result.attrs.get("total", len(result)) if hasattr(result, "attrs") else ""
        print(f"{name:28} {seconds * 1000:7.1f} ms  {extra}")

    print("\nsame question (documents per level over 7 days), two ways:")
    agg_s, agg = timed(lambda: logs.volume_by(logs.volume_histogram(src, start=end - timedelta(days=7), end=end),
                                              "level").sum(), max(1, args.repeat // 2))
    naive_s, naive = timed(lambda: naive_counts(src, None, end - timedelta(days=7), end), 1)
    print(f"  aggregation (volume_histogram)   {agg_s * 1000:9.1f} ms")
    print(f"  fetch every document and count   {naive_s * 1000:9.1f} ms   ({naive_s / agg_s:.0f}x slower)")
    assert {k: int(v) for k, v in agg.items()} == dict(naive), (dict(agg), dict(naive))
    store.stop()


if __name__ == "__main__":
    main()
