"""Benchmark: the ExternalDNS audit of 10,000 hostnames across both providers, side by side with a
sequential resolver loop.

Both providers (a real ``pdns_server`` with the gsqlite3 backend, a real ``named``) hold the
zone ``bench.example.com`` with N hostnames, each an A record plus its two TXT registry records
(old format and ``a-`` prefixed), written the way ExternalDNS writes them; N Ingresses ask for them.

1. ``runbooks.dnsaudit``: each provider's records read once through its protocol (PowerDNS API;
   AXFR with TSIG), a verdict per hostname and provider, then one A question per hostname asked
   of each authoritative server through ``dns.query_many`` (one UDP socket, at most
   ``--concurrency`` in flight);
2. what a script would otherwise do: for each hostname and provider, ask the authoritative
   server for the A record and both TXT registry names, one query after the other
   (``dns.query.udp`` in a loop).

Both must find the same answers and owners.

    .venv/bin/python bench/dns_audit.py [--hostnames 10000] [--concurrency 200]

Goal (issue 13): at least 10x faster than the loop, under 10 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.tsig  # noqa: E402
import dns.update  # noqa: E402

from runbooks import dnsaudit  # noqa: E402
from runbooks_sandbox import dnsservers  # noqa: E402

ZONE = "bench.example.com"
OWNER = "bench-cluster"
TARGETS = ["203.0.113.10", "203.0.113.11"]


def hostname(i: int) -> str:
    return f"app-{i:05d}.{ZONE}"


def populate(pdns: dnsservers.PowerDNS, bind: dnsservers.Named, n: int) -> None:
    key = dns.tsig.Key(dnsservers.EXTERNAL_KEY, bind.secret, dnsservers.TSIG_ALGORITHM)
    batch = 200
    for start in range(0, n, batch):
        upd = dns.update.UpdateMessage(ZONE + ".", keyring=key)
        rrsets = []
        for i in range(start, min(n, start + batch)):
            h = hostname(i)
            old, new = dnsaudit.txt_names(h, "A", "")
            value = dnsaudit.txt_value(OWNER, f"ingress/bench/app-{i:05d}")
            target = TARGETS[i % 2]
            upd.add(h + ".", 300, "A", target)
            upd.add(old + ".", 300, "TXT", value)
            upd.add(new + ".", 300, "TXT", value)
            rrsets += [{"name": h + ".", "type": "A", "ttl": 300, "changetype": "REPLACE",
                        "records": [{"content": target, "disabled": False}]},
                       {"name": old + ".", "type": "TXT", "ttl": 300, "changetype": "REPLACE",
                        "records": [{"content": value, "disabled": False}]},
                       {"name": new + ".", "type": "TXT", "ttl": 300, "changetype": "REPLACE",
                        "records": [{"content": value, "disabled": False}]}]
        resp = dns.query.tcp(upd, "127.0.0.1", port=bind.port, timeout=30)
        assert resp.rcode() == 0, resp.rcode()
        status, body = pdns.api("PATCH", f"/api/v1/servers/localhost/zones/{ZONE}.", {"rrsets": rrsets})
        assert status == 204, (status, body[:200])


def ingresses(n: int) -> list[dict]:
    return [{"metadata": {"namespace": "bench", "name": f"app-{i:05d}"},
             "spec": {"ingressClassName": "nginx", "rules": [{"host": hostname(i)}]},
             "status": {"loadBalancer": {"ingress": [{"ip": TARGETS[i % 2]}]}}} for i in range(n)]


def run_audit(settings: dict, objects: list[dict], concurrency: int) -> tuple[dict, dict]:
    steps, t = {}, time.perf_counter()
    providers = dnsaudit.connect_providers(settings)
    steps["connect and check providers"], t = time.perf_counter() - t, time.perf_counter()
    matched = {name: dnsaudit.Instance("external-dns", f"external-dns-{name}", prov.kind, OWNER, [ZONE], [],
                                       ["ingress"]) for name, prov in providers.items()}
    result = dnsaudit.Audit([], dnsaudit.audit_providers(providers, matched, objects, []), [])
    steps["zone reads and verdicts"], t = time.perf_counter() - t, time.perf_counter()
    dnsaudit.answers(result, concurrency=concurrency)
    steps["authoritative answers"] = time.perf_counter() - t
    return {(r.hostname, r.provider): (r.verdict, r.answer, r.owner) for r in result.rows}, steps


def run_loop(servers: dict[str, tuple[str, int]], n: int) -> dict:
    out = {}
    for name, (host, port) in servers.items():
        for i in range(n):
            h = hostname(i)
            answers = {}
            for qname, rtype in [(h, "A"), *((t, "TXT") for t in dnsaudit.txt_names(h, "A", ""))]:
                msg = dns.message.make_query(qname + ".", rtype)
                resp = dns.query.udp(msg, host, port=port, timeout=2)
                answers[(qname, rtype)] = sorted(rd.to_text() for rr in resp.answer for rd in rr)
            a = answers[(h, "A")]
            owners = [dnsaudit.parse_txt(v) for k, vs in answers.items() if k[1] == "TXT" for v in vs]
            owner = next((o["owner"] for o in owners if o), "")
            out[(h, name)] = ("ok" if a == [TARGETS[i % 2]] and owner == OWNER else "drift",
                              "A " + ", ".join(a) if a else "NXDOMAIN", owner)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hostnames", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    missing = dnsservers.missing_binaries()
    if missing:
        sys.exit("; ".join(missing))
    with tempfile.TemporaryDirectory(prefix="dns-bench-") as tmp:
        pdns = dnsservers.PowerDNS(Path(tmp) / "pdns", (ZONE,))
        bind = dnsservers.Named("bench", Path(tmp) / "bind", (ZONE,), dnsservers.EXTERNAL_KEY)
        try:
            pdns.start()
            bind.start()
            t = time.perf_counter()
            populate(pdns, bind, args.hostnames)
            print(f"populated {args.hostnames} hostnames x 2 providers in {time.perf_counter() - t:.1f} s")
            os.environ["BENCH_PDNS_API_KEY"], os.environ["BENCH_TSIG_SECRET"] = pdns.api_key, bind.secret
            settings = {
                "pdns": {"type": "pdns", "api_url": pdns.api_url, "api_key_env": "BENCH_PDNS_API_KEY",
                         "nameserver": f"127.0.0.1:{pdns.port}", "zones": [ZONE]},
                "rfc2136": {"type": "rfc2136", "nameserver": f"127.0.0.1:{bind.port}", "zones": [ZONE],
                            "tsig_key_name": dnsservers.EXTERNAL_KEY, "tsig_secret_env": "BENCH_TSIG_SECRET"},
            }
            objects = ingresses(args.hostnames)
            t = time.perf_counter()
            audited, steps = run_audit(settings, objects, args.concurrency)
            t_audit = time.perf_counter() - t
            t = time.perf_counter()
            looped = run_loop({"pdns": ("127.0.0.1", pdns.port), "rfc2136": ("127.0.0.1", bind.port)},
                              args.hostnames)
            t_loop = time.perf_counter() - t
        finally:
            pdns.stop()
            bind.stop()
    assert set(audited) == set(looped), "the two disagree on the hostnames"
    assert all(audited[k] == looped[k] for k in audited), "the two disagree on answers or owners"
    assert all(v[0] == "ok" for v in audited.values())
    n = len(audited)
    print(f"{'method':<44} {'seconds':>8} {'per hostname':>14}")
    print(f"{'runbooks.dnsaudit (zone reads + query_many)':<44} {t_audit:8.2f} {t_audit / n * 1e6:11.0f} us")
    for step, seconds in steps.items():
        print(f"  {step:<42} {seconds:8.2f}")
    print(f"{'sequential resolver loop (A + 2 TXT)':<44} {t_loop:8.2f} {t_loop / n * 1e6:11.0f} us")
    print(f"speed-up: {t_loop / t_audit:.1f}x over {n} hostname x provider pairs "
          f"(goal: >= 10x and under 10 s: {'met' if t_loop / t_audit >= 10 and t_audit < 10 else 'NOT met'})")


if __name__ == "__main__":
    main()
