"""The DNS client's wire reader and the dns-audit checks, on data (no server)."""

from __future__ import annotations

import dns.message
import dns.rrset
import pytest

from runbooks import discovery, dnsaudit
from runbooks import dns as dnsclient
from runbooks.errors import InvalidInput


@pytest.mark.parametrize("name, ok", [
    ("www.apps.example.com", True), ("a-b.c_d.example.com.", True), ("x" * 63 + ".com", True),
    ("x" * 64 + ".com", False), ("bad_host!.example.com", False), ("-lead.example.com", False),
    ("", False), ("a..b", False), (42, False),
])
def test_is_dns_name(name, ok):
    assert dnsclient.is_dns_name(name) is ok


def test_wire_reader_agrees_with_dnspython_on_a_compressed_answer():
    q = dns.message.make_query("cdn.apps.example.com.", "A")
    r = dns.message.make_response(q)
    r.flags |= 0x0400
    r.answer.append(dns.rrset.from_text("cdn.apps.example.com.", 300, "IN", "CNAME", "edge.cdn.example.net."))
    r.answer.append(dns.rrset.from_text("x.apps.example.com.", 30, "IN", "TXT", '"a\\"b" "c d"'))
    r.answer.append(dns.rrset.from_text("_http._tcp.s.apps.example.com.", 30, "IN", "SRV",
                                        "0 100 8080 s.apps.example.com."))
    r.answer.append(dns.rrset.from_text("v6.apps.example.com.", 30, "IN", "AAAA", "2001:db8::1"))
    parsed = dnsclient._parse(r.to_wire())
    assert parsed.id == q.id and parsed.rcode == "NOERROR" and parsed.flags & 0x0400
    assert parsed.qname == "cdn.apps.example.com"
    assert parsed.records == [
        (rr.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(rr.rdtype), rr.ttl, rd.to_text())
        for rr in r.answer for rd in rr]


def test_txt_registry_names_as_externaldns_maps_them():
    assert dnsaudit.txt_names("www.apps.example.com", "A") == ("www.apps.example.com", "a-www.apps.example.com")
    assert dnsaudit.txt_names("cdn.apps.example.com", "CNAME", "extdns-") == (
        "extdns-cdn.apps.example.com", "extdns-cname-cdn.apps.example.com")
    assert dnsaudit.txt_names("x.example.com", "AAAA", "%{record_type}-reg-") == (
        "-reg-x.example.com", "aaaa-reg-x.example.com")
    assert dnsaudit.parse_txt('"heritage=external-dns,external-dns/owner=a,external-dns/resource=ingress/n/x"') == {
        "owner": "a", "resource": "ingress/n/x"}
    assert dnsaudit.parse_txt('"v=spf1 -all"') is None


def test_ownership_reads_old_and_new_formats_under_a_prefix():
    v = dnsaudit.txt_value("me", "ingress/web/www")
    recs = {("www.z", "A"): dnsclient.RRset("www.z", "A", 300, ["1.2.3.4"]),
            ("p-a-www.z", "TXT"): dnsclient.RRset("p-a-www.z", "TXT", 300, [v]),
            ("p-www.z", "TXT"): dnsclient.RRset("p-www.z", "TXT", 300, [v]),
            ("other.z", "TXT"): dnsclient.RRset("other.z", "TXT", 300, ['"v=spf1 -all"'])}
    own = dnsaudit.ownership(recs, "p-")
    assert set(own) == {"www.z"} and own["www.z"].owner == "me" and set(own["www.z"].txt) == {"p-a-www.z", "p-www.z"}


def test_instance_flags_and_desired_endpoints():
    dep = {"metadata": {"namespace": "ed", "name": "external-dns"}, "spec": {"template": {"spec": {"containers": [{
        "image": "registry.k8s.io/external-dns/external-dns:v0.15.1",
        "args": ["--source=ingress", "--source", "service", "--provider=pdns", "--domain-filter=apps.example.com",
                 "--txt-owner-id", "prod", "--policy=upsert-only", "--txt-prefix=x-"]}]}}}}
    inst = dnsaudit.parse_instance(dep)
    assert (inst.provider, inst.owner, inst.domains, inst.sources, inst.policy, inst.prefix) == (
        "pdns", "prod", ["apps.example.com"], ["ingress", "service"], "upsert-only", "x-")
    ing = {"metadata": {"namespace": "web", "name": "a", "annotations": {
        "external-dns.alpha.kubernetes.io/hostname": "b.apps.example.com, c.other.org"}},
        "spec": {"rules": [{"host": "a.apps.example.com"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}
    cname = {"metadata": {"namespace": "web", "name": "cdn", "annotations": {
        "external-dns.alpha.kubernetes.io/target": "edge.example.net"}},
        "spec": {"rules": [{"host": "cdn.apps.example.com"}]}, "status": {}}
    svc = {"metadata": {"namespace": "web", "name": "lb", "annotations": {
        "external-dns.alpha.kubernetes.io/hostname": "lb.apps.example.com"}},
        "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.20"}]}}}
    want = dnsaudit.desired(inst, [ing, cname], [svc])
    assert {h: (e.rtype, e.targets, e.resource) for h, e in want.items()} == {
        "a.apps.example.com": ("A", ["203.0.113.10"], "ingress/web/a"),
        "b.apps.example.com": ("A", ["203.0.113.10"], "ingress/web/a"),
        "cdn.apps.example.com": ("CNAME", ["edge.example.net"], "ingress/web/cdn"),
        "lb.apps.example.com": ("A", ["203.0.113.20"], "service/web/lb"),
    }


def test_owner_ids_shared_on_one_provider_are_critical():
    a = dnsaudit.Instance("a", "e1", "pdns", "prod", ["example.com"], sources=["ingress"])
    b = dnsaudit.Instance("b", "e2", "pdns", "prod", ["apps.example.com"], sources=["ingress"])
    c = dnsaudit.Instance("c", "e3", "rfc2136", "prod", ["example.com"], sources=["ingress"])
    ids = {f.id: f.severity for f in dnsaudit.owner_findings([a, b, c])}
    assert ids == {"externaldns-owner-shared/prod": "critical"}


@pytest.mark.parametrize("settings, problem", [
    ({"type": "route53", "zones": ["a.com"], "nameserver": "127.0.0.1"}, "type 'route53' is not supported"),
    ({"type": "rfc2136", "zones": [], "nameserver": "127.0.0.1"}, "`zones` must list"),
    ({"type": "rfc2136", "zones": ["bad zone"], "nameserver": "127.0.0.1"}, "is not a DNS name"),
    ({"type": "rfc2136", "zones": ["a.com"], "nameserver": "127.0.0.1", "tsig_algorithm": "rot13"},
     "tsig_algorithm 'rot13'"),
    ({"type": "pdns", "zones": ["a.com"], "nameserver": "127.0.0.1", "api_url": "ftp://x"}, "http(s) URL"),
])
def test_provider_settings_are_checked(settings, problem):
    with pytest.raises(InvalidInput, match=problem.replace("(", r"\(").replace(")", r"\)")):
        dnsclient.provider("p", settings)


def test_params_refuse_a_hostname_that_is_not_a_dns_name():
    from runbooks.parameters import validate_params

    with pytest.raises(InvalidInput, match="'bad_host!' is not a DNS name"):
        validate_params(dnsaudit.DnsAuditParams, {"hostnames": ["bad_host!"]})


def test_expected_records_follow_the_kubernetes_dns_specification():
    svc = {"metadata": {"namespace": "n", "name": "s"},
           "spec": {"clusterIP": "10.0.0.5", "ports": [{"name": "http", "port": 80}, {"port": 81}]}}
    assert discovery.expected_records(svc, [], "cluster.local") == {
        ("s.n.svc.cluster.local", "A"): ["10.0.0.5"],
        ("5.0.0.10.in-addr.arpa", "PTR"): ["s.n.svc.cluster.local."],
        ("_http._tcp.s.n.svc.cluster.local", "SRV"): ["0 100 80 s.n.svc.cluster.local."]}
    headless = {"metadata": {"namespace": "n", "name": "h"}, "spec": {"clusterIP": "None"}}
    sl = {"endpoints": [{"addresses": ["10.1.0.2"], "conditions": {"ready": True}, "hostname": "db-0"},
                        {"addresses": ["10.1.0.3"], "conditions": {"ready": False}}],
          "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}
    assert discovery.expected_records(headless, [sl], "cluster.local") == {
        ("h.n.svc.cluster.local", "A"): ["10.1.0.2"],
        ("_pg._tcp.h.n.svc.cluster.local", "SRV"): ["0 100 5432 db-0.h.n.svc.cluster.local."]}
    ext = {"metadata": {"namespace": "n", "name": "e"}, "spec": {"type": "ExternalName", "externalName": "x.org"}}
    assert discovery.expected_records(ext, [], "cluster.local") == {("e.n.svc.cluster.local", "CNAME"): ["x.org."]}


def _pod(name, containers, *, spec=None, started="2026-01-01T00:00:00Z"):
    return {"metadata": {"namespace": "n", "name": f"{name}-abc12-x1y2z", "labels": {"pod-template-hash": "abc12"},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{name}-abc12", "controller": True}],
                         "creationTimestamp": started},
            "spec": {"containers": containers, **(spec or {})}, "status": {"phase": "Running", "startTime": started}}


def test_pod_checks_ndots_service_env_and_jvm():
    pods = [
        _pod("mailer", [{"name": "m", "image": "x/mailer:1",
                         "env": [{"name": "SMTP_HOST", "value": "smtp.sendgrid.net"},
                                 {"name": "INTERNAL_URL", "value": "http://api.n.svc.cluster.local"}]}]),
        _pod("fqdn", [{"name": "f", "image": "x/f:1", "env": [{"name": "API_URL", "value": "https://api.x.com./v1"}]}],
             spec={"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}),
        _pod("web", [{"name": "w", "image": "x/web:1", "args": ["--cache=$(CACHE_SERVICE_HOST)"]}]),
        _pod("jvm", [{"name": "j", "image": "eclipse-temurin:21-jre", "command": ["java", "-jar", "a.jar"]}]),
        _pod("jvm-ok", [{"name": "j", "image": "x/app:1", "env": [
            {"name": "JAVA_TOOL_OPTIONS", "value": "-Dsun.net.inetaddr.ttl=30"}]}]),
    ]
    services = [{"metadata": {"namespace": "n", "name": "cache", "creationTimestamp": "2026-02-01T00:00:00Z"}}]
    _, findings = discovery.pod_dns_findings(pods, services)
    assert sorted(f.id for f in findings) == [
        "dns-jvm-cache/n/Deployment/jvm/j", "dns-ndots/n/Deployment/mailer",
        "dns-service-env/n/Deployment/web/cache"]
    jvm = next(f for f in findings if f.id.startswith("dns-jvm"))
    assert "-Dsun.net.inetaddr.ttl=30" in jvm.detail and jvm.resource == "Deployment/n/jvm"


def test_the_sandboxs_externaldns_honours_namespace_and_exclude_domains():
    """The sandbox plays ExternalDNS with the flags the product reads: --namespace, --exclude-domains."""
    from runbooks_sandbox import externaldns

    dep = {"metadata": {"namespace": "external-dns", "name": "public"}, "spec": {"template": {"spec": {"containers": [{
        "image": "registry.k8s.io/external-dns/external-dns:v0.15.1",
        "args": ["--source=ingress", "--provider=rfc2136", "--domain-filter=example.com",
                 "--exclude-domains=apps.example.com", "--namespace=web"]}]}}}}
    inst = externaldns.parse_instance(dep)

    def ing(ns, host):
        return {"metadata": {"namespace": ns, "name": host.split(".")[0]}, "spec": {"rules": [{"host": host}]},
                "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}}}

    got = externaldns.desired(inst, [ing("web", "www.example.com"), ing("web", "x.apps.example.com"),
                                     ing("shop", "shop.example.com")], [])
    assert [(e["name"], e["type"], e["targets"]) for e in got] == [("www.example.com", "CNAME", ["lb.example.net"])]
    assert inst.wants("blog.example.com") and not inst.wants("blog.apps.example.com")
    # the product reads the same flags the same way
    product = dnsaudit.parse_instance(dep)
    assert product.watch_namespace == "web" and product.exclude_domains == ["apps.example.com"]
