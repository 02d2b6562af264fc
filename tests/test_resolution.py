"""Findings re-evaluated after a verified change (runbooks.resolution)."""

from __future__ import annotations

from runbooks.model import Finding
from runbooks.resolution import reevaluate, resolved


def f(id_, severity, resource, title="t"):
    return Finding(id=id_, severity=severity, title=title, resource=resource, evidence={"n": 1})


def test_gone_problems_are_resolved_persisting_ones_current_and_untouched_ones_left_out():
    before = [f("tls-expiring/shop/a", "critical", "Secret/shop/a", "a expires in 5 days"),
              f("overdue/shop/a", "critical", "Certificate/shop/a"),
              f("self-signed/shop/a", "warning", "Secret/shop/a"),
              f("expired/shop/b", "critical", "Secret/shop/b"),
              f("fine/shop/a", "ok", "Secret/shop/a")]
    after = [f("self-signed/shop/a", "info", "Secret/shop/a"),
             f("new/shop/a", "warning", "Secret/shop/a"),
             f("expired/shop/b", "critical", "Secret/shop/b")]
    out = {x.id: x for x in reevaluate(before, after, {"Secret/shop/a", "Certificate/shop/a"}, "abc123def456")}
    assert set(out) == {"tls-expiring/shop/a", "overdue/shop/a", "self-signed/shop/a", "new/shop/a"}
    gone = out["tls-expiring/shop/a"]
    assert gone.severity == "ok" and gone.title == "resolved by plan abc123def456: a expires in 5 days"
    assert gone.evidence == {"resolved_by_plan": "abc123def456", "was": "critical", "before": {"n": 1}}
    assert out["overdue/shop/a"].severity == "ok"
    assert out["self-signed/shop/a"].severity == "info"  # still there: as it is now
    assert out["new/shop/a"].severity == "warning"


def test_resolved_keeps_the_id_and_resource():
    x = resolved(f("a/b", "warning", "Pod/ns/p"), "0123456789ab")
    assert (x.id, x.resource, x.severity) == ("a/b", "Pod/ns/p", "ok")
