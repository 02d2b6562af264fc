"""dns-audit, service-discovery side: do Services resolve as they should, and do pods find them?

In-cluster service discovery fails quietly: a Service that does not resolve the way
CoreDNS's kubernetes plugin should answer it, a pod whose ``ndots:5`` turns every
external lookup into a walk through the search list, a pod started before the Service
it reads from ``<SVC>_SERVICE_HOST`` (the kubelet injects those variables only for
Services that existed when the container started), a JVM that caches DNS answers
(forever when a security manager is installed). Each check returns findings and a
table; the DNS questions go to the cluster DNS server concurrently with a bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pandas as pd

from . import dns, kube, metrics, podview
from .errors import Forbidden, NotFound, Unavailable, cut
from .model import Finding

_HOSTLIKE = re.compile(r"(?<![\w.$-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63})(?![\w-])\.?",
                       re.IGNORECASE)
_SERVICE_ENV = re.compile(r"\b([A-Z][A-Z0-9_]*)_SERVICE_(?:HOST|PORT)\b")
JVM_IMAGE = re.compile(r"(^|[/:_-])(java|jdk|jre|openjdk|temurin|corretto|zulu|jvm)([/:_.-]|$)", re.IGNORECASE)
JVM_ENV = ("JAVA_TOOL_OPTIONS", "JAVA_OPTS", "JDK_JAVA_OPTIONS")
FILE_SUFFIXES = (".jar", ".yaml", ".yml", ".json", ".xml", ".conf", ".properties", ".sh", ".py", ".js", ".html",
                 ".txt", ".log", ".pem", ".crt", ".key")


def expected_records(svc: dict, slices: list[dict], domain: str) -> dict[tuple[str, str], list[str]]:
    """What CoreDNS's kubernetes plugin answers for one Service: (name, type) → sorted values."""
    meta, spec = svc["metadata"], svc.get("spec") or {}
    base = f"{meta['name']}.{meta['namespace']}.svc.{domain}"
    out: dict[tuple[str, str], list[str]] = {}
    if spec.get("type") == "ExternalName":
        out[(base, "CNAME")] = [spec.get("externalName", "").rstrip(".") + "."]
        return out
    ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
    if ips:
        for t, fam in (("A", lambda ip: ":" not in ip), ("AAAA", lambda ip: ":" in ip)):
            vals = sorted(ip for ip in ips if fam(ip))
            if vals:
                out[(base, t)] = vals
        for ip in ips:  # reverse lookups of the ClusterIPs
            out[(dns.reverse_name(ip), "PTR")] = [base + "."]
        for port in spec.get("ports") or []:
            if port.get("name"):
                proto = (port.get("protocol") or "TCP").lower()
                out[(f"_{port['name']}._{proto}.{base}", "SRV")] = [f"0 100 {port['port']} {base}."]
        return out
    addresses, srv = [], {}
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready", True) is False:
                continue
            for ip in ep.get("addresses") or []:
                addresses.append(ip)
                host = f"{ep.get('hostname') or ip.replace('.', '-').replace(':', '-')}.{base}."
                for port in sl.get("ports") or []:
                    if port.get("name"):
                        key = (f"_{port['name']}._{(port.get('protocol') or 'TCP').lower()}.{base}", "SRV")
                        srv.setdefault(key, []).append(f"0 100 {port.get('port')} {host}")
    v4 = sorted(a for a in addresses if ":" not in a)
    if v4:
        out[(base, "A")] = v4
    out.update({k: sorted(v) for k, v in srv.items()})
    return out


def service_resolution(cluster: kube.Cluster, server: str, *, domain: str = "cluster.local",
                       namespaces: list[str] | None = None, concurrency: int = 200,
                       timeout: float = 2.0) -> tuple[pd.DataFrame, list[Finding]]:
    """Ask the cluster DNS server about every Service; compare with what it should answer."""
    services = kube.list_objects(cluster, "services", namespaces)
    slices: dict[tuple[str, str], list[dict]] = {}
    for sl in kube.list_objects(cluster, "endpointslices", namespaces):
        svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            slices.setdefault((sl["metadata"]["namespace"], svc), []).append(sl)
    expected = {}
    for svc in services:
        m = svc["metadata"]
        for key, values in expected_records(svc, slices.get((m["namespace"], m["name"]), []), domain).items():
            expected[key] = (svc, values)
    answers = dns.query_many(server, list(expected), concurrency=concurrency, timeout=timeout)
    rows, findings = [], []
    bad: dict[str, list[str]] = {}
    for (name, rtype), (svc, want) in sorted(expected.items()):
        ans = answers.get((name, rtype.upper()))
        got = sorted(v.lower() for v in ans.values(rtype)) if ans else []
        ok = got == sorted(v.lower() for v in want)
        m = svc["metadata"]
        rows.append({"namespace": m["namespace"], "service": m["name"], "name": name, "type": rtype,
                     "expected": ", ".join(want), "answer": ", ".join(got) or (ans.rcode or ans.error if ans else ""),
                     "ok": ok})
        if not ok:
            bad.setdefault(f"{m['namespace']}/{m['name']}", []).append(
                f"{name} {rtype}: answered {', '.join(got) or (ans.rcode or ans.error if ans else '?')}, "
                f"expected {', '.join(want)}")
    for svc_id, problems in sorted(bad.items()):
        findings.append(Finding(id=f"dns-service-unresolved/{svc_id}", severity="critical",
                                title=f"Service {svc_id} does not resolve as it should in cluster DNS",
                                detail="; ".join(problems[:5]), resource=f"Service/{svc_id}"))
    return pd.DataFrame(rows, columns=["namespace", "service", "name", "type", "expected", "answer", "ok"]), findings


_ADDRESS_ENV = re.compile(r"(HOST|HOSTNAME|URL|URI|ADDR|ADDRESS|ENDPOINT|SERVER|SERVERS|API)S?$", re.IGNORECASE)


def _strings(container: dict) -> list[str]:
    out = list(container.get("command") or []) + list(container.get("args") or [])
    out += [e.get("value") or "" for e in container.get("env") or []]
    return out


def _addresses(container: dict) -> list[str]:
    """Where a container names hosts it calls: URLs anywhere, and env vars named *_HOST, *_URL, *_ENDPOINT ..."""
    out = [m.group(0) for t in _strings(container) for m in re.finditer(r"[a-z][a-z0-9+.-]*://[^\s\"',;]+", t or "")]
    out += [e.get("value") or "" for e in container.get("env") or [] if _ADDRESS_ENV.search(e.get("name") or "")]
    return out


def external_names(texts: Iterable[str], domain: str = "cluster.local") -> list[str]:
    """Hostnames outside the cluster in env values, commands and arguments (URLs included)."""
    out = []
    for text in texts:
        for m in _HOSTLIKE.finditer(text or ""):
            name = m.group(1).lower()
            if m.group(0).endswith("."):  # fully qualified: the search list is not used
                continue
            if name.endswith("." + domain) or ".svc." in name + "." or name.endswith(".svc") \
                    or name.endswith(FILE_SUFFIXES) or name.endswith(".local"):
                continue
            out.append(name)
    return sorted(set(out))


def _ndots(spec: dict) -> int | None:
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        return None  # the node's resolv.conf
    for opt in (spec.get("dnsConfig") or {}).get("options") or []:
        if opt.get("name") == "ndots":
            try:
                return int(opt.get("value"))
            except (TypeError, ValueError):
                return 5
    return 5 if policy in ("ClusterFirst", "ClusterFirstWithHostNet") else None


def _by_workload(pods: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        out.setdefault((pod["metadata"]["namespace"], kube.owner_workload(pod)), []).append(pod)
    return out


def pod_dns_findings(pods: list[dict], services: list[dict], *, domain: str = "cluster.local",
                     jvm_ttl_properties: Iterable[str] = ("networkaddress.cache.ttl", "sun.net.inetaddr.ttl")
                     ) -> tuple[pd.DataFrame, list[Finding]]:
    """ndots and dnsPolicy against the external names a pod uses; Service env vars of pods older than
    the Service; JVMs without a DNS cache TTL. One finding per workload and problem."""
    svc_created = {(s["metadata"]["namespace"], s["metadata"]["name"]): kube.parse_time(
        s["metadata"].get("creationTimestamp")) for s in services}
    rows, findings = [], []
    props = tuple(jvm_ttl_properties)
    for (ns, workload), group in sorted(_by_workload(pods).items()):
        pod = group[0]
        spec = pod.get("spec") or {}
        containers = spec.get("containers") or []
        texts = [t for c in containers for t in _strings(c)]
        ndots = _ndots(spec)
        names = external_names([a for c in containers for a in _addresses(c)], domain)
        policy = spec.get("dnsPolicy") or "ClusterFirst"
        findings += _resolver_findings(ns, workload, spec, texts, names, ndots, policy, domain)
        findings += _service_env_findings(ns, workload, group, texts, svc_created, domain)
        findings += _jvm_findings(ns, workload, containers, props)
        rows.append({"namespace": ns, "workload": workload, "pods": len(group), "dnsPolicy": policy,
                     "ndots": ndots, "external names": ", ".join(names)})
    return pd.DataFrame(rows, columns=["namespace", "workload", "pods", "dnsPolicy", "ndots", "external names"]), \
        findings


def _resolver_findings(ns: str, workload: str, spec: dict, texts: list[str], names: list[str],
                       ndots: int | None, policy: str, domain: str) -> list[Finding]:
    """ndots that sends external names through every search domain; a dnsPolicy without cluster names."""
    out = []
    slow = [n for n in names if ndots is not None and n.count(".") < ndots]
    uses_cluster = any(f".svc.{domain}" in t or ".svc:" in t for t in texts)
    if slow:
        searches = 3 + len((spec.get("dnsConfig") or {}).get("searches") or [])
        out.append(Finding(
            id=f"dns-ndots/{ns}/{workload}", severity="warning",
            title=f"{ns}/{workload}: ndots:{ndots} turns each lookup of {slow[0]} into {searches + 1} or more",
            detail=(f"{', '.join(slow)} ha{'s' if len(slow) == 1 else 've'} fewer than {ndots} dots, so the "
                    f"resolver tries the {searches} cluster search domains (and the node's own) first, "
                    "each an NXDOMAIN, for A and AAAA. "
                    "Fix: write the names fully qualified with a trailing dot, or set "
                    "spec.dnsConfig.options ndots: \"2\""),
            resource=_resource(ns, workload),
            evidence={"ndots": ndots, "names": slow, "dnsPolicy": policy}))
    if uses_cluster and ndots is None:
        out.append(Finding(
            id=f"dns-policy/{ns}/{workload}", severity="warning",
            title=f"{ns}/{workload}: dnsPolicy {policy} cannot resolve cluster names",
            detail="the pod uses *.svc names but resolves through the node's resolv.conf; use dnsPolicy "
                   "ClusterFirst (ClusterFirstWithHostNet with hostNetwork)",
            resource=_resource(ns, workload), evidence={"dnsPolicy": policy, "hostNetwork": spec.get("hostNetwork")}))
    return out


def _service_env_findings(ns: str, workload: str, group: list[dict], texts: list[str],
                          svc_created: dict[tuple[str, str], Any], domain: str) -> list[Finding]:
    """``X_SERVICE_HOST`` variables the pods read but were never given (Service newer, missing, links off)."""
    out = []
    pod = group[0]
    spec = pod.get("spec") or {}
    started = kube.parse_time((pod.get("status") or {}).get("startTime")
                              or pod["metadata"].get("creationTimestamp"))
    for var in sorted({m.group(1) for t in texts for m in _SERVICE_ENV.finditer(t)}):
        svc = var.lower().replace("_", "-")
        created = svc_created.get((ns, svc))
        if spec.get("enableServiceLinks") is False:
            problem = "enableServiceLinks is false: no Service variables are injected"
        elif created is None:
            problem = f"there is no Service {svc} in {ns}"
        elif started and isinstance(created, datetime) and created > started:
            problem = (f"Service {svc} was created {created:%Y-%m-%d %H:%M} UTC, after the pods started "
                       f"({started:%Y-%m-%d %H:%M} UTC): the kubelet injects {var}_SERVICE_HOST only for "
                       "Services that exist when a container starts")
        else:
            continue
        out.append(Finding(
            id=f"dns-service-env/{ns}/{workload}/{svc}", severity="warning",
            title=f"{ns}/{workload} reads {var}_SERVICE_HOST, which its pods do not have",
            detail=problem + f". Fix: restart the workload, or use the DNS name {svc}.{ns}.svc.{domain}",
            resource=_resource(ns, workload), evidence={"variable": f"{var}_SERVICE_HOST", "pods": len(group)}))
    return out


def _jvm_findings(ns: str, workload: str, containers: list[dict], props: tuple[str, ...]) -> list[Finding]:
    """JVM containers without a DNS cache TTL (``-Dnetworkaddress.cache.ttl=`` or the like)."""
    out = []
    for c in containers:
        envs = {e.get("name"): e.get("value") or "" for e in c.get("env") or []}
        cmd = " ".join(list(c.get("command") or []) + list(c.get("args") or []))
        jvm = bool(JVM_IMAGE.search(c.get("image") or "")) or bool(re.search(r"(^|/|\s)java(\s|$)", cmd)) \
            or any(k in envs for k in JVM_ENV)
        if not jvm:
            continue
        text = cmd + " " + " ".join(envs.values())
        if any(f"-D{p}=" in text for p in props):
            continue
        manager = "-Djava.security.manager" in text
        out.append(Finding(
            id=f"dns-jvm-cache/{ns}/{workload}/{c['name']}", severity="warning",
            title=f"{ns}/{workload}: JVM without a DNS cache TTL",
            detail=("the JVM caches DNS answers " + ("FOREVER (a security manager is installed)" if manager
                                                     else "for 30 s by default, and forever once a security "
                                                          "manager is installed")
                    + "; a moved Service or load balancer stays unreachable. Fix: add "
                      "-Dsun.net.inetaddr.ttl=30 to JAVA_TOOL_OPTIONS (or networkaddress.cache.ttl=30 in "
                      "the JDK's java.security)"),
            resource=_resource(ns, workload), evidence={"container": c["name"], "image": c.get("image")}))
    return out


def _scalar(prom: Any, promql: str) -> float | None:
    df = metrics.query(prom, promql)
    if df.empty:
        return None
    v = float(df["value"].iloc[0])
    return None if v != v else v  # NaN: no traffic


def coredns_health(prom: Any, queries: dict[str, str], *, nxdomain_warning: float, servfail_warning: float,
                   latency_warning: float) -> tuple[pd.DataFrame, list[Finding]]:
    """NXDOMAIN and SERVFAIL ratios and p99 latency of CoreDNS from Prometheus."""
    values = {k: _scalar(prom, queries[k]) for k in
              ("coredns_nxdomain_ratio", "coredns_servfail_ratio", "coredns_p99_seconds")}
    findings = []
    checks = [("coredns_nxdomain_ratio", nxdomain_warning, "NXDOMAIN ratio",
               "often ndots:5 search-list lookups of external names, or clients asking for Services that are gone"),
              ("coredns_servfail_ratio", servfail_warning, "SERVFAIL ratio",
               "the upstream resolvers CoreDNS forwards to are failing or timing out"),
              ("coredns_p99_seconds", latency_warning, "p99 latency (s)",
               "CoreDNS is saturated (CPU limits, too few replicas) or upstreams are slow")]
    for key, limit, label, why in checks:
        v = values[key]
        if v is not None and v > limit:
            findings.append(Finding(id=f"coredns-{key.split('_', 1)[1].replace('_', '-')}", severity="warning",
                                    title=f"CoreDNS {label} is {v:.3g} (above {limit:g})", detail=why,
                                    resource="Deployment/kube-system/coredns", evidence={"query": queries[key]}))
    df = pd.DataFrame([{"metric": label, "value": values[key], "warning above": limit}
                       for key, limit, label, _ in checks])
    if all(v is None for v in values.values()):
        findings.append(Finding(id="coredns-no-metrics", severity="info", title="no CoreDNS metrics in Prometheus",
                                detail="coredns_dns_responses_total and coredns_dns_request_duration_seconds have no "
                                       "data: is CoreDNS scraped (prometheus :9153)?"))
    return df, findings


def externaldns_health(prom: Any, queries: dict[str, str], *, sync_age_warning: float,
                       now: float) -> tuple[pd.DataFrame, list[Finding]]:
    """Age of each ExternalDNS instance's last sync and its registry/source error counters."""
    last = metrics.query(prom, queries["externaldns_last_sync"])
    reg = metrics.query(prom, queries["externaldns_registry_errors"])
    src = metrics.query(prom, queries["externaldns_source_errors"])

    def by_pod(df: pd.DataFrame) -> dict[tuple[str, str], float]:
        if df.empty:
            return {}
        return {(r.get("namespace", ""), r.get("pod", "")): float(r["value"]) for _, r in df.iterrows()}

    last_d, reg_d, src_d = by_pod(last), by_pod(reg), by_pod(src)
    rows, findings = [], []
    for key in sorted(set(last_d) | set(reg_d) | set(src_d)):
        age = now - last_d[key] if key in last_d else None
        rows.append({"namespace": key[0], "pod": key[1], "last sync age (s)": age,
                     "registry errors (1h)": reg_d.get(key), "source errors (1h)": src_d.get(key)})
        who = f"{key[0]}/{key[1]}"
        if age is not None and age > sync_age_warning:
            findings.append(Finding(id=f"externaldns-sync-stale/{who}", severity="critical",
                                    title=f"ExternalDNS {who} last synced {age / 60:.0f} min ago",
                                    detail="records stop following Ingresses and load balancers; see its logs "
                                           "(provider credentials, rate limits, a refused batch)",
                                    resource=who))
        for name, d, what in (("registry", reg_d, "the provider refused reads or writes of its records"),
                              ("source", src_d, "it cannot read Ingresses/Services (RBAC?)")):
            if (d.get(key) or 0) > 0:
                findings.append(Finding(id=f"externaldns-{name}-errors/{who}", severity="warning",
                                        title=f"ExternalDNS {who}: {d[key]:.0f} {name} errors in the last hour",
                                        detail=what, resource=who))
    if not rows:
        findings.append(Finding(id="externaldns-no-metrics", severity="info",
                                title="no ExternalDNS metrics in Prometheus",
                                detail="external_dns_controller_last_sync_timestamp_seconds has no data: is "
                                       "ExternalDNS scraped (:7979/metrics)?"))
    return pd.DataFrame(rows), findings


def cluster_dns_server(cluster: kube.Cluster, configured: str | None) -> str:
    """The cluster DNS server to ask: the configured ``host:port``, else the kube-dns Service's ClusterIP."""
    if configured:
        return configured
    svc = kube.get_object(cluster, "services", "kube-system", "kube-dns")
    ip = (svc.get("spec") or {}).get("clusterIP")
    port = next((p.get("port") for p in (svc.get("spec") or {}).get("ports") or []
                 if (p.get("protocol") or "UDP") == "UDP"), 53)
    return f"{ip}:{port}"


def check_service_resolution(run: Any, server: str, **kw: Any) -> pd.DataFrame:
    """:func:`service_resolution` as a runbook step: findings recorded; the DNS server down is a warning."""
    out: dict[str, Any] = {}

    def probe() -> str:
        out["table"], out["findings"] = service_resolution(run.cluster, server, **kw)
        return f"{server}: {len(out['table'])} answers"

    if not run.check_source("cluster-dns", probe):
        return pd.DataFrame()
    run.record(out["findings"])
    return out["table"]


def check_prometheus(run: Any, p: Any, queries: dict[str, str], now: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CoreDNS and ExternalDNS health from Prometheus as a runbook step (skipped without ``prometheus_url``).

    ``queries``: the PromQL by name (``dnsaudit.DEFAULT_QUERIES`` with the run's overrides).
    """
    if not p.prometheus_url:
        return pd.DataFrame(), pd.DataFrame()
    prom = metrics.connect(p.prometheus_url, verify=p.verify_tls)
    out: dict[str, Any] = {}

    def probe() -> str:
        out["coredns"] = coredns_health(prom, queries, nxdomain_warning=p.nxdomain_ratio_warning,
                                        servfail_warning=p.servfail_ratio_warning,
                                        latency_warning=p.latency_p99_warning_seconds)
        out["externaldns"] = externaldns_health(prom, queries, sync_age_warning=p.sync_age_warning_seconds, now=now)
        return p.prometheus_url

    if not run.check_source("prometheus", probe):
        return pd.DataFrame(), pd.DataFrame()
    run.record(out["coredns"][1] + out["externaldns"][1])
    return out["coredns"][0], out["externaldns"][0]


# ---- the in-cluster view: as a pod resolves --------------------------------------------------------


def pod_view_questions(services: list[dict], slices: list[dict], external: Iterable[str] = (), *,
                       domain: str = "cluster.local") -> tuple[list[tuple[str, str]], dict[str, tuple[dict, list[str]]]]:
    """What to ask from a pod: each Service's name absolute and short (``svc.ns``, through the search
    list), and the external names workloads call. Returns (questions, fqdn → (Service, expected A))."""
    by_service: dict[tuple[str, str], list[dict]] = {}
    for sl in slices:
        svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            by_service.setdefault((sl["metadata"]["namespace"], svc), []).append(sl)
    expected: dict[str, tuple[dict, list[str]]] = {}
    questions: list[tuple[str, str]] = []
    for svc in services:
        m = svc["metadata"]
        records = expected_records(svc, by_service.get((m["namespace"], m["name"]), []), domain)
        fqdn = f"{m['name']}.{m['namespace']}.svc.{domain}"
        want = records.get((fqdn, "A"))
        if not want:  # ExternalName, IPv6-only, headless without ready endpoints: nothing to compare
            continue
        expected[fqdn] = (svc, want)
        questions += [(fqdn + ".", "A"), (f"{m['name']}.{m['namespace']}", "A")]
    questions += [(name, "A") for name in external]
    return questions, expected


def pod_view_findings(view: podview.View, expected: dict[str, tuple[dict, list[str]]], external: Iterable[str] = (),
                      *, dns_service_ip: str | None = None) -> tuple[pd.DataFrame, list[Finding]]:
    """Compare a pod's answers with what the cluster should answer; one finding per Service and problem.

    The same for a probe pod (exec) and for this process in the cluster (local): ``view`` is plain data.
    """
    rows, findings = [], []
    where = f"probe pod {view.where}" if view.mode == "exec" else "this pod"
    server = ", ".join(view.conf.nameservers) or "none"
    for fqdn, (svc, want) in sorted(expected.items()):
        m = svc["metadata"]
        sid = f"{m['namespace']}/{m['name']}"
        full = view.lookups.get((fqdn + ".", "A"))
        short = view.lookups.get((f"{m['name']}.{m['namespace']}", "A"))
        for got in (full, short):
            if got is None:
                continue
            ok = got.rcode == "NOERROR" and sorted(got.values) == sorted(want) and got.qname == fqdn
            rows.append({"namespace": m["namespace"], "service": m["name"], "asked": got.name.rstrip("."),
                         "answered as": got.qname, "answer": ", ".join(got.values) or got.rcode,
                         "expected": ", ".join(want), "queries": got.queries, "ok": ok})
        if full is not None and (full.rcode != "NOERROR" or sorted(full.values) != sorted(want)):
            findings.append(Finding(
                id=f"dns-pod-view/{sid}", severity="critical",
                title=f"Service {sid} does not resolve from a pod as it should",
                detail=(f"{where} (nameserver {server}) asked {fqdn} A: "
                        f"{', '.join(full.values) or full.rcode}; expected {', '.join(want)}"),
                resource=f"Service/{sid}", evidence={"mode": view.mode, "rcode": full.rcode, "answer": full.values,
                                                     "expected": want}))
        elif short is not None and (short.qname != fqdn or sorted(short.values) != sorted(want)):
            findings.append(Finding(
                id=f"dns-pod-view-search/{sid}", severity="warning",
                title=f"{m['name']}.{m['namespace']} does not reach Service {sid} through a pod's search list",
                detail=(f"{where} resolved {m['name']}.{m['namespace']} as {short.qname}: "
                        f"{', '.join(short.values) or short.rcode} (search {' '.join(view.conf.search) or 'none'}, "
                        f"ndots:{view.conf.ndots}); expected {fqdn} {', '.join(want)}"),
                resource=f"Service/{sid}", evidence={"search": view.conf.search, "qname": short.qname}))
    slow = {}
    for name in dict.fromkeys(external):
        got = view.lookups.get((name, "A"))
        if got is not None:
            rows.append({"namespace": "", "service": "", "asked": name, "answered as": got.qname,
                         "answer": ", ".join(got.values) or got.rcode, "expected": "", "queries": got.queries,
                         "ok": True})
            if got.queries > 1:
                slow[name] = got.queries
    if slow:
        worst = max(slow, key=lambda n: slow[n])
        findings.append(Finding(
            id="dns-pod-view-ndots", severity="info",
            title=f"ndots:{view.conf.ndots} in a pod's resolv.conf: {worst} took {slow[worst]} questions",
            detail=(f"with the search list {' '.join(view.conf.search)} and ndots:{view.conf.ndots}, {len(slow)} "
                    "external name(s) the workloads call went through the search list first, each miss an NXDOMAIN "
                    "(for A and again for AAAA); the dns-ndots findings name the workloads"),
            resource="resolv.conf", evidence={"queries": slow, "ndots": view.conf.ndots}))
    if dns_service_ip and view.conf.nameservers and view.conf.nameservers[0] != dns_service_ip:
        findings.append(Finding(
            id="dns-pod-view-nameserver", severity="info",
            title=f"pods ask {view.conf.nameservers[0]}, not the kube-dns Service ({dns_service_ip})",
            detail="expected with NodeLocal DNSCache (169.254.20.10) or a kubelet --cluster-dns override; "
                   "otherwise the kubelet's clusterDNS setting is stale",
            resource="resolv.conf", evidence={"nameservers": view.conf.nameservers}))
    columns = ["namespace", "service", "asked", "answered as", "answer", "expected", "queries", "ok"]
    return pd.DataFrame(rows, columns=columns), findings


def in_cluster_view(cluster: kube.Cluster, *, mode: str, namespaces: list[str] | None, domain: str,
                    external: Iterable[str] = (), probe_namespace: str = "default",
                    probe_image: str = podview.DEFAULT_IMAGE, start_timeout: float = 60.0,
                    resolv_conf: str = podview.RESOLV_CONF, server: str | None = None,
                    timeout: float = 2.0) -> tuple[podview.View | None, pd.DataFrame, list[Finding]]:
    """Take the in-cluster view (``mode``: auto, exec, local, off) and compare it.

    A view that cannot be taken (forbidden, the probe pod not running, the resolver unreachable)
    is one warning finding naming why; never a traceback. ``off`` takes nothing.
    """
    chosen = podview.choose_mode(mode)
    if chosen == "off":
        return None, pd.DataFrame(), []
    services = kube.list_objects(cluster, "services", namespaces)
    slices = kube.list_objects(cluster, "endpointslices", namespaces)
    external = list(dict.fromkeys(external))
    questions, expected = pod_view_questions(services, slices, external, domain=domain)
    try:
        if chosen == "exec":
            view = podview.probe_view(cluster, probe_namespace, questions, image=probe_image,
                                      start_timeout=start_timeout)
        else:
            view = podview.local_view(questions, resolv_conf=resolv_conf, server=server, timeout=timeout)
    except Forbidden as exc:
        message = str(exc) if str(exc).startswith("forbidden:") else f"forbidden: {exc}"
        what = message.split(" (", 1)[0]
        return None, pd.DataFrame(), [Finding(
            id="dns-pod-view-forbidden", severity="warning", title=f"in-cluster DNS view skipped: {what}",
            detail=(f"{cut(message, 600)}. The view needs, in namespace {probe_namespace}: create, get, list and "
                    "delete pods, and get and create pods/exec (a WebSocket exec is authorized as get, and also as "
                    "create from Kubernetes 1.35); `runbooks env check` lists what is missing. Or set "
                    "in_cluster_view: off"),
            resource=f"Namespace/{probe_namespace}", evidence={"mode": chosen})]
    except (podview.ProbeFailed, Unavailable, NotFound, OSError) as exc:
        return None, pd.DataFrame(), [Finding(
            id="dns-pod-view-failed", severity="warning", title="in-cluster DNS view could not be taken",
            detail=f"{chosen}: {cut(str(exc), 400)}", resource=f"Namespace/{probe_namespace}",
            evidence={"mode": chosen, "image": probe_image})]
    dns_svc = next((s for s in services if s["metadata"]["namespace"] == "kube-system"
                    and s["metadata"]["name"] == "kube-dns"), None)
    table, findings = pod_view_findings(view, expected, external,
                                        dns_service_ip=((dns_svc or {}).get("spec") or {}).get("clusterIP"))
    return view, table, findings


def check_in_cluster_view(run: Any, p: Any, external: Iterable[str] = ()) -> pd.DataFrame:
    """:func:`in_cluster_view` as a runbook step: findings and the view's facts recorded."""
    view, table, findings = in_cluster_view(
        run.cluster, mode=p.in_cluster_view, namespaces=p.namespaces or None, domain=p.cluster_domain,
        external=external, probe_namespace=p.probe_namespace, probe_image=p.probe_image,
        start_timeout=p.probe_timeout_seconds, resolv_conf=p.resolv_conf, server=p.cluster_dns_server,
        timeout=p.query_timeout_seconds)
    if view is not None:
        run.source("in-cluster-view", True, f"{view.mode}: {view.where}, nameserver "
                   f"{', '.join(view.conf.nameservers)}, search {' '.join(view.conf.search)}, ndots:{view.conf.ndots}")
    run.record(findings)
    return table.sort_values("ok", kind="stable") if len(table) else table


def table_names(pods_table: pd.DataFrame) -> list[str]:
    """The external names of :func:`pod_dns_findings`' table (its "external names" column)."""
    if not len(pods_table):
        return []
    return sorted({n.strip() for cell in pods_table["external names"] for n in str(cell or "").split(",") if n.strip()})


def view_caption(view_table: pd.DataFrame) -> str:
    if not len(view_table):
        return "In-cluster view (not taken)"
    return (f"As a pod resolves: {int(view_table['ok'].sum())} of {len(view_table)} answers as expected; "
            "the others first")


def mismatches(resolution: pd.DataFrame) -> pd.DataFrame:
    """The records of :func:`service_resolution` that do not answer as they should."""
    return resolution[~resolution["ok"]] if len(resolution) else resolution


def resolution_caption(resolution: pd.DataFrame) -> str:
    if not len(resolution):
        return "Service records (cluster DNS not checked)"
    return (f"Records that do not answer as they should ({int(resolution['ok'].sum())} of {len(resolution)} "
            "answer correctly)")


def _resource(namespace: str, workload: str) -> str:
    """``Deployment/web/mailer`` from ``Deployment/mailer`` in ``web``."""
    kind, _, name = workload.partition("/")
    return f"{kind}/{namespace}/{name}"
