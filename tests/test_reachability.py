"""service-reachability's checks on data: Ingress path semantics, claims, hops, parameters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runbooks import reachability as r
from runbooks.errors import InvalidInput
from runbooks.parameters import params_model, validate_params

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def ingress(name, host, path="/", path_type="Prefix", *, ns="web", cls="nginx", created="2026-01-01T00:00:00Z",
            service="app", port=None, tls=None, annotations=None, lb="lb.example.net"):
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created,
                         "annotations": annotations or {}},
            "spec": {"ingressClassName": cls, "tls": tls or [],
                     "rules": [{"host": host, "http": {"paths": [{
                         "path": path, "pathType": path_type,
                         "backend": {"service": {"name": service, "port": port or {"name": "http"}}}}]}}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": lb}]}}}


def controller(name="ingress-nginx-controller", args=("--controller-class=k8s.io/ingress-nginx",), ready=2):
    return {"metadata": {"name": name, "namespace": "ingress-nginx"},
            "spec": {"template": {"spec": {"containers": [{
                "name": "controller", "image": "registry.k8s.io/ingress-nginx/controller:v1.12.1",
                "args": ["/nginx-ingress-controller", *args]}]}}},
            "status": {"readyReplicas": ready}}


def pod(name, *, ns="web", labels=None, ports=(("http", 8080),), ready=True, restarts=0):
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {"app": "app"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "c", "restartCount": restarts}]}}


def service(name="app", *, ns="web", target="http", port_name="http"):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"name": port_name, "port": 80, "targetPort": target}]}}


def endpoint_slice(service_name, pods, *, ns="web", ports=(("http", 8080),)):
    return {"metadata": {"name": f"{service_name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "ports": [{"name": n, "port": p} for n, p in ports],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": p}} for p in pods]}


def snap(ingresses, *, services=(), pods=(), slices=(), classes=None, deployments=None):
    classes = classes if classes is not None else [
        {"metadata": {"name": "nginx", "annotations": {r.DEFAULT_CLASS_ANNOTATION: "true"}},
         "spec": {"controller": "k8s.io/ingress-nginx"}}]
    by_service: dict = {}
    for s in slices:
        by_service.setdefault((s["metadata"]["namespace"], s["metadata"]["labels"]["kubernetes.io/service-name"]),
                              []).append(s)
    return r.Snapshot(
        ingresses=list(ingresses), classes={c["metadata"]["name"]: c for c in classes},
        services={(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}, slices=by_service,
        pods={(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}, secrets={},
        deployments=deployments if deployments is not None else [controller()], events={}, now=NOW)


# ---- path semantics (ingress-nginx) ---------------------------------------------------------


@pytest.mark.parametrize(("kind", "want", "path", "ok"), [
    ("Exact", "/api", "/api", True),
    ("Exact", "/api", "/api/", False),
    ("Prefix", "/api", "/api", True),
    ("Prefix", "/api", "/api/", True),
    ("Prefix", "/api", "/api/v1", True),
    ("Prefix", "/api", "/apiv1", False),
    ("Prefix", "/api/", "/api", True),
    ("Prefix", "/", "/anything", True),
    ("ImplementationSpecific", "/api", "/apiv1", True),  # an nginx prefix location
    ("ImplementationSpecific", "/api", "/other", False),
])
def test_path_types_match_as_ingress_nginx_does(kind, want, path, ok):
    assert r.path_matches(kind, want, path) is ok


def test_implementation_specific_is_a_regex_with_use_regex_or_rewrite_target():
    regex = {"nginx.ingress.kubernetes.io/use-regex": "true"}
    assert r.path_matches("ImplementationSpecific", "/api/v[0-9]+", "/API/v2/x", regex)
    assert not r.path_matches("ImplementationSpecific", "/api/v[0-9]+", "/api/vx", regex)
    rewrite = {"nginx.ingress.kubernetes.io/rewrite-target": "/$2"}
    assert r.path_matches("ImplementationSpecific", "/shop(/|$)(.*)", "/shop/cart", rewrite)


def test_longest_path_then_exact_then_oldest_wins():
    found = r.claims([
        ingress("root", "a.example.com", "/"),
        ingress("api", "a.example.com", "/api"),
        ingress("api-exact", "a.example.com", "/api", "Exact"),
        ingress("api-newer", "a.example.com", "/api", created="2026-05-01T00:00:00Z"),
    ], "a.example.com", "/api")
    assert [c.key for c in found] == ["web/api-exact", "web/api", "web/api-newer", "web/root"]
    assert r.claims([ingress("w", "*.example.com")], "a.b.example.com", "/") == []
    assert [c.key for c in r.claims([ingress("w", "*.example.com")], "a.example.com", "/")] == ["web/w"]


# ---- the Ingress hop ------------------------------------------------------------------------


def test_two_ingresses_claiming_the_same_host_and_path_break_the_ingress_hop():
    s = snap([ingress("promo-new", "p.example.com", created="2026-05-01T00:00:00Z"), ingress("promo", "p.example.com")])
    hop = r.check_ingress("p.example.com", "/", s, r.claims(s.ingresses, "p.example.com", "/"))
    assert hop.ok is False and hop.resource == "Ingress/web/promo"
    assert "web/promo (older, served)" in hop.reason and "web/promo-new (ignored)" in hop.reason


def test_ingress_class_without_a_running_controller_is_named():
    classes = [{"metadata": {"name": "internal"}, "spec": {"controller": "k8s.io/ingress-nginx-internal"}}]
    s = snap([ingress("i", "i.example.com", cls="internal")], classes=classes)
    hop = r.check_ingress("i.example.com", "/", s, r.claims(s.ingresses, "i.example.com", "/"))
    assert hop.ok is False and hop.resource == "IngressClass/internal"
    assert "k8s.io/ingress-nginx-internal" in hop.reason
    s = snap([ingress("i", "i.example.com", cls="missing")])
    hop = r.check_ingress("i.example.com", "/", s, r.claims(s.ingresses, "i.example.com", "/"))
    assert hop.ok is False and "IngressClass missing" in hop.reason
    s = snap([ingress("i", "i.example.com")], deployments=[controller(ready=0)])
    hop = r.check_ingress("i.example.com", "/", s, r.claims(s.ingresses, "i.example.com", "/"))
    assert hop.ok is False and "no ready replica" in hop.reason


def test_healthy_ingress_lists_routing_annotations():
    annotations = {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS", "other": "x"}
    s = snap([ingress("i", "i.example.com", annotations=annotations)])
    hop = r.check_ingress("i.example.com", "/", s, r.claims(s.ingresses, "i.example.com", "/"))
    assert hop.ok is True and "backend-protocol=HTTPS" in hop.reason
    assert hop.details["annotations"] == {"nginx.ingress.kubernetes.io/backend-protocol": "HTTPS"}


def test_no_ingress_for_the_host_or_the_path():
    s = snap([ingress("i", "i.example.com", "/api")])
    hop = r.check_ingress("x.example.com", "/", s, [])
    assert hop.ok is False and hop.details["no_ingress"] and "no Ingress has a rule for host x.example.com" in hop.reason
    hop = r.check_ingress("i.example.com", "/other", s, [])
    assert hop.ok is False and "web/i" in hop.reason and "no path matches /other" in hop.reason


# ---- the backend hop -------------------------------------------------------------------------


def test_target_port_naming_a_port_the_container_lacks():
    s = snap([], services=[service()], pods=[pod("app-1", ports=(("web", 8080),))],
             slices=[endpoint_slice("app", ["app-1"], ports=())])
    hop, _ = r.check_backend("web", {"name": "app", "port": {"name": "http"}}, s)
    assert hop.ok is False and hop.resource == "Service/web/app"
    assert "targets port 'http'" in hop.reason and "web:8080" in hop.reason


def test_service_port_missing_and_service_missing():
    s = snap([], services=[service()])
    hop, _ = r.check_backend("web", {"name": "app", "port": {"number": 8443}}, s)
    assert hop.ok is False and "has no port 8443" in hop.reason
    hop, _ = r.check_backend("web", {"name": "nope", "port": {"number": 80}}, s)
    assert hop.ok is False and hop.resource == "Service/web/nope" and "does not exist" in hop.reason


def test_no_ready_endpoints_and_healthy_backend():
    s = snap([], services=[service()])
    hop, _ = r.check_backend("web", {"name": "app", "port": {"name": "http"}}, s)
    assert hop.ok is False and "no ready endpoints" in hop.reason and "matches no pod" in hop.reason
    s = snap([], services=[service()], pods=[pod("app-1"), pod("app-2", restarts=3)],
             slices=[endpoint_slice("app", ["app-1", "app-2"])])
    hop, _ = r.check_backend("web", {"name": "app", "port": {"number": 80}}, s)
    assert hop.ok is True and "2 ready endpoint(s)" in hop.reason and "app-2 (3 restarts" in hop.reason


# ---- DNS -------------------------------------------------------------------------------------


def test_dns_not_configured_is_info_never_a_failure():
    hop = r.check_dns("a.example.com", ingress("i", "a.example.com"), r.Context(env="prod"))
    assert hop.ok is None and "not configured in env prod" in hop.reason


NS1 = r.AuthServer("public", "ns1:53", ("example.com",))


def test_dns_compares_answers_with_the_load_balancer():
    ing = ingress("i", "a.example.com", lb="lb.example.net")
    ctx = r.Context(env="prod", dns_providers=[NS1], dns={"a.example.com": [
        r.DnsAnswer("resolver", addresses=["192.0.2.1"], cnames=["lb.example.net"]),
        r.DnsAnswer(NS1.label, status="NXDOMAIN")]})
    hop = r.check_dns("a.example.com", ing, ctx)
    assert hop.ok is False and hop.details["problem"] == "missing"
    assert "authoritative server public (ns1:53) has no record for a.example.com (NXDOMAIN)" in hop.reason
    ctx.dns = {"a.example.com": [r.DnsAnswer("resolver", cnames=["other-lb.example.net"], addresses=["192.0.2.9"])]}
    hop = r.check_dns("a.example.com", ing, ctx)
    assert hop.ok is False and hop.details["problem"] == "mismatch"
    assert "answers other-lb.example.net, 192.0.2.9, not the Ingress's load balancer lb.example.net" in hop.reason
    ctx.dns = {"a.example.com": [r.DnsAnswer("resolver", cnames=["lb.example.net"], addresses=["192.0.2.1"])]}
    assert r.check_dns("a.example.com", ing, ctx).ok is True
    ctx.dns = {"a.example.com": [r.DnsAnswer(NS1.label, status="", error="DNS server ns1:53 did not answer")]}
    assert r.check_dns("a.example.com", ing, ctx).details["problem"] == "unanswered"


def test_a_mismatch_and_a_missing_record_are_their_own_findings():
    s = snap([ingress("i", "a.example.com", lb="lb.example.net")], services=[service()])
    ctx = r.Context(env="prod", dns_providers=[NS1], dns={"a.example.com": [
        r.DnsAnswer(NS1.label, cnames=["old-lb.example.net"])]})
    f = next(f for f in r.check_host("a.example.com", "/", s, ctx).findings if f.evidence["hop"] == "dns")
    assert f.id == "reachability/a.example.com/dns-mismatch" and f.evidence["first_broken"]
    assert f.evidence["next"] == "runbooks run dns-audit --env prod -p hostnames '[\"a.example.com\"]'"
    ctx.dns = {"a.example.com": [r.DnsAnswer(NS1.label, status="NXDOMAIN")]}
    ids = [f.id for f in r.check_host("a.example.com", "/", s, ctx).findings]
    assert "reachability/a.example.com/dns-missing" in ids


def test_no_record_for_an_ingress_without_an_address_is_the_ingress_hops_fault():
    ing = ingress("i", "a.example.com")
    ing["status"] = {}
    ctx = r.Context(env="prod", dns_providers=[NS1], dns={"a.example.com": [r.DnsAnswer(NS1.label, status="NXDOMAIN")]})
    hop = r.check_dns("a.example.com", ing, ctx)
    assert hop.ok is None and "no status.loadBalancer address for ExternalDNS to publish" in hop.reason


def test_only_the_providers_serving_the_host_are_asked():
    ctx = r.Context(env="prod", dns_providers=[NS1, r.AuthServer("apps", "ns2:53", ("apps.example.com",))])
    assert [label for label, _ in r.dns_queries(["a.example.com", "b.other.org"], ctx)] == ["public (ns1:53)"]
    hop = r.check_dns("b.other.org", ingress("i", "b.other.org"), ctx)
    assert hop.ok is None and "no configured DNS provider serves a zone of b.other.org" in hop.reason
    servers = r.auth_servers({"public": {"type": "rfc2136", "nameserver": "127.0.0.1:5353", "zones": ["example.com"]}})
    assert servers == [r.AuthServer("public", "127.0.0.1:5353", ("example.com",))]


# ---- the controller's logs ---------------------------------------------------------------------

ACCESS_503 = ('192.0.2.7 - - [03/Dec/2026:07:01:02 +0000] "GET /jobs HTTP/2.0" 503 190 "-" "curl/8.5.0" 38 0.000 '
              '[web-careers-http] [] - - - - 9f1c0e6a7b2d4c3e8f9a0b1c2d3e4f50')
ACCESS_200 = ('192.0.2.7 - - [03/Dec/2026:07:01:03 +0000] "GET / HTTP/2.0" 200 5120 "-" "curl/8.5.0" 38 0.004 '
              '[web-www-http] [] 10.244.1.5:8080 5120 0.004 200 0e443239dcc3e725ee285b338ed1fb45')
ERROR = ('2026/12/03 07:01:04 [error] 31#31: *4711 connect() failed (111: Connection refused) while connecting to '
         'upstream, client: 192.0.2.7, server: shop.example.com, request: "GET / HTTP/2.0", upstream: '
         '"http://10.244.1.9:8080/", host: "shop.example.com"')


def test_the_access_log_format_is_ingress_nginx_s_default():
    m = r.ACCESS_LINE.match(ACCESS_503)
    assert m and (m["status"], m["upstream"], m["addr"], m["upstream_status"]) == ("503", "web-careers-http", "-", "-")
    m = r.ACCESS_LINE.match(ACCESS_200)
    assert m and (m["status"], m["upstream"], m["upstream_status"]) == ("200", "web-www-http", "200")
    m = r.ERROR_LINE.search(ERROR)
    assert m and m["host"] == "shop.example.com" and m["what"].startswith("connect() failed")
    assert r.NO_ENDPOINTS_LINE.search('W1203 07:01:05.123456       7 controller.go:1216] Service "web/careers" '
                                      'does not have any active Endpoint.')["service"] == "web/careers"


def test_log_note_names_the_upstream_and_the_statuses():
    logged = {"web-careers-http": {"responses_5xx": 2, "statuses": {503: 2}, "upstream_errors": 0, "no_endpoints": 0,
                                   "example": ACCESS_503},
              "service:web/careers": {"responses_5xx": 0, "statuses": {}, "upstream_errors": 0, "no_endpoints": 3,
                                      "example": ""}}
    text, evidence = r.log_note("careers.example.com", "web-careers-http", "web/careers", logged, "15m")
    assert text.startswith("logs (15m): the controller logged 2 5xx response(s) for upstream web-careers-http (2× 503)")
    assert evidence["no_endpoints"] == 3 and evidence["statuses"] == {"503": 2}
    assert r.log_note("www.example.com", "web-www-http", "web/www", logged, "15m") == (
        "no controller errors logged for upstream web-www-http in 15m", {})


# ---- the chain and next steps -------------------------------------------------------------------


def test_every_hop_is_checked_and_only_the_first_red_one_leads():
    s = snap([ingress("i", "i.example.com")], services=[service()])
    result = r.check_host("i.example.com", "/", s, r.Context(env="prod"))
    assert result.first_broken.name == "tls"  # no TLS section
    hops = {f.evidence["hop"]: f for f in result.findings if f.severity == "critical"}
    assert set(hops) == {"tls", "backend"}
    assert hops["tls"].evidence["first_broken"] and not hops["backend"].evidence["first_broken"]
    assert "Next:" in hops["backend"].detail or hops["backend"].evidence["next"] == ""


# ---- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "fragment"), [
    ({"host": "no_underscores.example.com"}, "host 'no_underscores.example.com' is not a valid DNS name"),
    ({"host": "localhost"}, "is not a valid DNS name"),
    ({"host": "a" * 64 + ".example.com"}, "is not a valid DNS name"),
    ({"host": "www.example.com", "path": "api"}, "path 'api' is not a URL path"),
    ({"host": "www.example.com", "dns_resolver": "ns1:99999"}, "is not host[:port]"),
    ({"host": "www.example.com", "dns_providers": {"p": {"type": "route53", "zones": ["example.com"]}}},
     "type 'route53' is not supported"),
    ({"host": "www.example.com", "log_lookback": "soon"}, "'soon' is not a duration"),
    ({}, "Required parameter 'host' not supplied"),
])
def test_bad_parameters_are_refused_by_name(values, fragment):
    with pytest.raises(InvalidInput) as e:
        validate_params(params_model("service-reachability"), values)
    assert fragment in str(e.value)


def test_good_parameters():
    p = validate_params(params_model("service-reachability"),
                        {"host": "Checkout.Shop.Example.com.", "path": "/api", "dns_resolver": "system",
                         "dns_providers": {"public": {"type": "rfc2136", "nameserver": "127.0.0.1:5353",
                                                      "zones": ["example.com"]}}})
    assert p.host == "checkout.shop.example.com" and p.dns_resolver == "system"
    assert validate_params(params_model("service-reachability"), {"host": "all"}).host == "all"
    assert validate_params(params_model("service-reachability"), {"host": "*.example.com"}).host == "*.example.com"


def test_many_hosts_show_the_broken_ones_and_verdicts_put_them_first():
    s = snap([ingress(f"h{i}", f"h{i}.example.com", tls=[{"hosts": [f"h{i}.example.com"]}]) for i in range(25)],
             services=[service()], pods=[pod("app-1")], slices=[endpoint_slice("app", ["app-1"])])
    results = [r.check_host(f"h{i}.example.com", "/", s, r.Context(env="prod")) for i in range(25)]
    assert all(x.first_broken.name == "tls" for x in results)  # a TLS section without a secretName
    out = r.Reachability(results, r.Context(env="prod"))
    assert len(out.chain()) == 25 * len(r.HOPS)  # every host is broken: all shown
    healthy = r.HostResult("ok.example.com", "/", {h: r.Hop(h, True, "fine") for h in r.HOPS}, [])
    out = r.Reachability([healthy, *results], r.Context(env="prod"))
    assert "ok.example.com" not in set(out.chain()["host"])  # more than 20 hosts: the broken ones only
    assert "ok.example.com" in set(out.chain(only_broken=False)["host"])
    verdicts = out.verdicts()
    assert list(verdicts["verdict"]) == ["broken"] * 25 + ["reachable"]
    assert verdicts.iloc[0]["first_broken_hop"] == "TLS"


def test_the_probes_run_concurrently_up_to_the_bound():
    """A listener that holds every connection until four are open at once: the probes only get
    past it if four run at the same time (a sequential walk would wait for each timeout)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held, batches = [], []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if len(held) == 4:
                batches.append(len(held))
                for c in held:
                    c.close()
                held.clear()

    threading.Thread(target=serve, daemon=True).start()
    ctx = r.Context(env="prod", ingress_url=f"https://127.0.0.1:{srv.getsockname()[1]}")
    hosts = [f"h{i}.example.com" for i in range(8)]
    try:
        r.network_checks(hosts, "/", ctx, timeout=20, concurrency=4)
    finally:
        srv.close()
    assert batches == [4, 4]
    assert all(ctx.probes[h].error for h in hosts)  # the listener speaks no TLS
