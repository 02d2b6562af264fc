"""What the ingress controller says about each host: its metrics (5xx ratio, p99) and its logs.

ingress-nginx's own series (``nginx_ingress_controller_requests``,
``nginx_ingress_controller_request_duration_seconds_bucket``) and its access and error log
lines, parsed with its default formats; service-reachability's live-probe hop quotes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .errors import cut

FIVE_XX_QUERY = (
    '(sum by (host) (rate(nginx_ingress_controller_requests{{status=~"5..",{sel}}}[15m]))'
    ' or sum by (host) (rate(nginx_ingress_controller_requests{{{sel}}}[15m])) * 0)'
    ' / sum by (host) (rate(nginx_ingress_controller_requests{{{sel}}}[15m]))'
)
P99_QUERY = (
    "histogram_quantile(0.99, sum by (host, le) "
    "(rate(nginx_ingress_controller_request_duration_seconds_bucket{{{sel}}}[15m])))"
)


def ingress_metrics(prom: Any, hosts: Sequence[str]) -> dict[str, dict[str, float]]:
    """5xx ratio and p99 latency per host over the last 15 minutes (one query each, all hosts)."""
    from . import metrics

    if len(hosts) == 1:  # one host: only its series; none given: every host
        sel = f'host="{metrics.promql_string(hosts[0])}"'
    else:
        sel = 'host!=""'
    out: dict[str, dict[str, float]] = {}
    for key, promql in (("ratio_5xx", FIVE_XX_QUERY), ("p99", P99_QUERY)):
        df = metrics.query(prom, promql.format(sel=sel))
        if "host" not in df.columns:
            continue
        for row in df.itertuples():
            out.setdefault(str(row.host), {})[key] = float(row.value)
    return out


ACCESS_LINE = re.compile(
    r'^\S+ - \S+ \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) \d+ "[^"]*" "[^"]*" \d+ \S+ '
    r'\[(?P<upstream>[^\]]*)\] \[[^\]]*\] (?P<addr>\S+) \S+ \S+ (?P<upstream_status>\S+)')
"""ingress-nginx's default ``log-format-upstream``: ``$remote_addr - $remote_user [$time_local] "$request"
$status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time
[$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length
$upstream_response_time $upstream_status $req_id``."""
ERROR_LINE = re.compile(r'\[error\] .*?(?P<what>upstream [^,]*|connect\(\) failed [^,]*|no live upstreams[^,]*),'
                        r'.*?, upstream: "(?P<upstream>[^"]*)", host: "(?P<host>[^"]+)"')
"""nginx's error log for a failed upstream (``... while connecting to upstream, client: ..., server: ...,
request: "...", upstream: "http://10.0.0.5:8080/", host: "shop.example.com"``)."""
NO_ENDPOINTS_LINE = re.compile(r'Service "(?P<service>[^"]+)" does not have any active Endpoint')
"""The controller's warning for a Service with no ready endpoint (it answers 503 for it)."""


def upstream_errors(src: Any, controller: str, *, lookback: str = "15m", max_docs: int = 20_000,
                    now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """What the ingress controller logged against each upstream in the window, from its own lines.

    Keys: the upstream name (``namespace-service-port``) with ``responses_5xx``, ``statuses``
    (5xx status → count), ``upstream_errors`` (nginx ``[error]`` lines: connect failures, timeouts)
    and an ``example`` line; ``host:<name>`` for error lines naming the request's host;
    ``service:<ns>/<name>`` with ``no_endpoints`` (the controller's "does not have any active
    Endpoint" warnings). One search narrows the controller's lines to the ones that can be
    errors; each is then parsed with the formats above.
    """
    from . import logs

    ns, _, name = controller.partition("/")
    out: dict[str, dict[str, Any]] = {}

    def entry(key: str) -> dict[str, Any]:
        return out.setdefault(key, {"responses_5xx": 0, "statuses": {}, "upstream_errors": 0, "no_endpoints": 0,
                                    "example": ""})

    words = " ".join(str(c) for c in range(500, 512)) + " error Endpoint"
    for line in logs.lines_matching(src, ns or None, name or None, words, lookback=lookback, max_docs=max_docs,
                                    now=now):
        m = ACCESS_LINE.match(line)
        if m:
            status = int(m.group("status"))
            if status >= 500:
                e = entry(m.group("upstream"))
                e["responses_5xx"] += 1
                e["statuses"][status] = e["statuses"].get(status, 0) + 1
                e["example"] = line
            continue
        m = ERROR_LINE.search(line)
        if m:
            e = entry(f"host:{m.group('host').lower()}")
            e["upstream_errors"] += 1
            e["example"] = line
            continue
        m = NO_ENDPOINTS_LINE.search(line)
        if m:
            e = entry(f"service:{m.group('service')}")
            e["no_endpoints"] += 1
            e["example"] = line
    return out


def log_note(host: str, upstream: str | None, service: str | None, log_errors: Mapping[str, dict[str, Any]],
             lookback: str) -> tuple[str, dict[str, Any]]:
    """The log check's sentence for one host, and its evidence (empty when nothing was logged)."""
    parts, evidence = [], {}
    up = log_errors.get(upstream or "") or {}
    if up.get("responses_5xx"):
        statuses = ", ".join(f"{n}× {code}" for code, n in sorted(up["statuses"].items()))
        parts.append(f"the controller logged {up['responses_5xx']} 5xx response(s) for upstream {upstream} "
                     f"({statuses})")
        evidence["responses_5xx"] = up["responses_5xx"]
        evidence["statuses"] = {str(k): v for k, v in up["statuses"].items()}
        evidence["example"] = cut(up["example"], 300)
    by_host = log_errors.get(f"host:{host}") or {}
    if by_host.get("upstream_errors"):
        parts.append(f"{by_host['upstream_errors']} upstream error(s) for host {host}")
        evidence["upstream_errors"] = by_host["upstream_errors"]
        evidence.setdefault("example", cut(by_host["example"], 300))
    svc = log_errors.get(f"service:{service}") or {}
    if svc.get("no_endpoints"):
        parts.append(f"{svc['no_endpoints']} \"Service {service} does not have any active Endpoint\" warning(s)")
        evidence["no_endpoints"] = svc["no_endpoints"]
    if not parts:
        return f"no controller errors logged for upstream {upstream or '-'} in {lookback}", {}
    evidence["upstream"] = upstream
    return "logs (" + lookback + "): " + "; ".join(parts), evidence
