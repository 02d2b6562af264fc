"""Traffic paths: Services without ready endpoints, Ingresses with a missing backend or TLS
Secret, TLS Secrets that expire.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .. import certs
from ..model import Finding
from .core import Check, frame


def check_services(services: Iterable[dict], endpoints: Iterable[dict]) -> Check:
    """Services with a selector but no ready endpoint: requests to them fail."""
    ready = {}
    for ep in endpoints:
        key = (ep["metadata"].get("namespace"), ep["metadata"]["name"])
        ready[key] = sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])
    rows, findings = [], []
    for svc in services:
        meta, spec = svc["metadata"], svc.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            continue
        ns, name = meta.get("namespace"), meta["name"]
        n = ready.get((ns, name), 0)
        rows.append({"namespace": ns, "service": name, "ready_endpoints": n})
        if n == 0:
            findings.append(Finding(id=f"service-no-endpoints/{ns}/{name}", severity="critical",
                                    title=f"Service {ns}/{name} has no ready endpoints",
                                    detail="No pod matching its selector is ready: requests to it fail.",
                                    resource=f"Service/{ns}/{name}", evidence={"selector": spec["selector"]}))
    return Check(frame(rows, ["namespace", "service", "ready_endpoints"]), findings)


def check_ingresses(ingresses: Iterable[dict], services: Iterable[dict], secrets: Iterable[dict]) -> Check:
    """Ingresses whose backend Service or TLS Secret does not exist."""
    svc_names = {(s["metadata"].get("namespace"), s["metadata"]["name"]) for s in services}
    secret_names = {(o["metadata"].get("namespace"), o["metadata"]["name"])
                    for o in (getattr(s, "object", s) for s in secrets)}  # kube.SecretKeys or Secret dicts
    rows, findings = [], []
    for ing in ingresses:
        meta, spec = ing["metadata"], ing.get("spec") or {}
        ns, name = meta.get("namespace"), meta["name"]
        backends = set()
        default = ((spec.get("defaultBackend") or {}).get("service") or {}).get("name")
        if default:
            backends.add(default)
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                svc = ((path.get("backend") or {}).get("service") or {}).get("name")
                if svc:
                    backends.add(svc)
        tls = [t.get("secretName") for t in spec.get("tls") or [] if t.get("secretName")]
        hosts = [r.get("host", "") for r in spec.get("rules") or []]
        missing_svc = sorted(b for b in backends if (ns, b) not in svc_names)
        missing_tls = sorted(t for t in tls if (ns, t) not in secret_names)
        rows.append({"namespace": ns, "ingress": name, "hosts": ", ".join(hosts),
                     "backends": ", ".join(sorted(backends)), "tls_secrets": ", ".join(tls),
                     "problem": "; ".join([f"missing service {m}" for m in missing_svc]
                                          + [f"missing secret {m}" for m in missing_tls])})
        for m in missing_svc:
            findings.append(Finding(id=f"ingress-missing-service/{ns}/{name}/{m}", severity="critical",
                                    title=f"Ingress {ns}/{name} routes to missing Service {m}",
                                    detail=f"Requests for {', '.join(hosts)} get 503 from the ingress controller.",
                                    resource=f"Ingress/{ns}/{name}"))
        for m in missing_tls:
            findings.append(Finding(id=f"ingress-missing-tls-secret/{ns}/{name}/{m}", severity="critical",
                                    title=f"Ingress {ns}/{name} references missing TLS Secret {m}",
                                    detail="The ingress controller serves its default (fake) certificate "
                                           f"for {', '.join(hosts)}.", resource=f"Ingress/{ns}/{name}"))
    return Check(frame(rows, ["namespace", "ingress", "hosts", "backends", "tls_secrets", "problem"]), findings)


def check_tls_secrets(secrets: Iterable[Any], *, warning_days: int = 30, critical_days: int = 7,
                      now: datetime | None = None) -> Check:
    """kubernetes.io/tls Secrets that are expired or expire soon (fingerprints only, no key material)."""
    now = now or datetime.now(UTC)
    rows, findings = [], []
    for s in secrets:  # kube.SecretKeys (their certificates) or Secret dicts
        if getattr(s, "object", s).get("type") != certs.TLS_TYPE:
            continue
        row = certs.tls_secret_summary(s, now)
        ns, name = row["namespace"], row["name"]
        resource = f"Secret/{ns}/{name}"
        rows.append({k: row[k] for k in ("namespace", "name", "hosts", "issuer", "not_after", "days_left",
                                         "self_signed", "sha256", "error")})
        if row["error"]:
            findings.append(Finding(id=f"tls-unreadable/{ns}/{name}", severity="warning",
                                    title=f"TLS Secret {ns}/{name} cannot be parsed", detail=row["error"],
                                    resource=resource))
            continue
        expiry = certs.expiry_finding(ns, name, row["days_left"], row["not_after"], row["sha256"], row["hosts"],
                                      warning_days=warning_days, critical_days=critical_days)
        if expiry is not None:
            findings.append(expiry)
    cols = ["namespace", "name", "hosts", "issuer", "not_after", "days_left", "self_signed", "sha256", "error"]
    return Check(frame(rows, cols), findings)
