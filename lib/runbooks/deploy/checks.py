"""Preflight of a release: what must hold in the cluster before anything is planned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import kube
from ..errors import NotFound, PreflightFailed
from ..helm import Helm, error_text
from ..model import Finding
from .plan import namespace_exists
from .release import ReleaseSpec


def preflight(cluster: Any, helm: Helm, spec: ReleaseSpec, p: Any) -> list[Finding]:
    """Cluster-side checks before anything is planned; a blocking problem raises.

    Namespace exists or will be created, the host is not another Ingress's,
    the ClusterIssuer exists, the chart exists, Helm is present, the vault is
    readable (checked by :func:`read_vault`).

    Raises:
        PreflightFailed: naming every blocking problem (exit 2, nothing changed).
    """
    problems: list[str] = []
    findings: list[Finding] = []
    resource = f"Release/{spec.namespace}/{spec.release}"
    if namespace_exists(cluster, spec.namespace):
        findings.append(Finding(id=f"preflight/namespace/{spec.namespace}", severity="ok",
                                   title=f"namespace {spec.namespace} exists", resource=resource))
    elif spec.create_namespace:
        findings.append(Finding(id=f"preflight/namespace/{spec.namespace}", severity="info",
                                   title=f"namespace {spec.namespace} will be created", resource=resource))
    else:
        problems.append(f"namespace {spec.namespace!r} does not exist (set create_namespace=True to create it)")
    for ing in _list(cluster, "/apis/networking.k8s.io/v1/ingresses"):
        meta = ing["metadata"]
        if (meta.get("namespace"), meta.get("name")) == (spec.namespace, spec.release):
            continue
        hosts = {r.get("host") for r in (ing.get("spec") or {}).get("rules") or []}
        if spec.host in hosts:
            problems.append(f"host {spec.host!r} is already served by Ingress "
                            f"{meta.get('namespace')}/{meta['name']}: choose another host or remove that rule")
    issuer = p.cluster_issuer
    if issuer:
        try:
            kube.request(cluster, "GET", f"/apis/cert-manager.io/v1/clusterissuers/{issuer}")
            findings.append(Finding(id=f"preflight/issuer/{issuer}", severity="ok",
                                       title=f"ClusterIssuer {issuer} exists", resource=f"ClusterIssuer/{issuer}"))
        except NotFound:
            names = [i["metadata"]["name"] for i in _list(cluster, "/apis/cert-manager.io/v1/clusterissuers")]
            problems.append(f"ClusterIssuer {issuer!r} does not exist (cert-manager could not issue the "
                            f"certificate); existing: {', '.join(names) or 'none'}")
    problem = check_chart(helm, spec)
    if problem:
        problems.append(problem)
    for f in spec.values_files:
        if not Path(f).is_file():
            problems.append(f"values file {f!r} does not exist")
    if p.vault_file and not Path(p.vault_file).is_file():
        problems.append(f"vault file {p.vault_file!r} does not exist")
    if problems:
        raise PreflightFailed("preflight of provision-service: " + "; ".join(problems))
    return findings


def check_chart(helm: Helm, spec: ReleaseSpec) -> str | None:
    """Why the chart cannot be used, or None: a local directory needs Chart.yaml; a repository or
    OCI reference must resolve (``helm show chart``)."""
    chart = Path(spec.chart)
    if chart.is_dir():
        return None if (chart / "Chart.yaml").is_file() else f"chart {spec.chart!r} is a directory without Chart.yaml"
    if chart.is_file():
        return None
    if "://" not in spec.chart and (chart.is_absolute() or spec.chart.startswith(".") or spec.chart.endswith(".tgz")
                                    or (chart.parent.exists() and str(chart.parent) not in ("", "."))):
        return (f"chart {spec.chart!r} does not exist; give a chart directory, a packaged .tgz, a "
                "repository reference (repo/chart) or an oci:// reference")
    args = ["show", "chart", spec.chart] + (["--version", spec.chart_version] if spec.chart_version else [])
    proc = helm.run(*args, timeout=60, check=False)
    if proc.returncode != 0:
        return f"chart {spec.chart!r} cannot be found: {error_text(proc.stderr)}"
    return None


def _list(cluster: Any, path: str) -> list[dict[str, Any]]:
    try:
        return (kube.request(cluster, "GET", path) or {}).get("items") or []
    except NotFound:
        return []
