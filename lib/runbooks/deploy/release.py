"""What to deploy: the release spec built from the parameters, and what Helm renders of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..helm import Helm, parse_manifest
from ..vault import NO_SECRETS, VaultValues
from .params import parse_image


@dataclass(frozen=True)
class ReleaseSpec:
    """A release to install or upgrade: chart, values (never secrets) and limits.

    Build it from the runbook's parameters with :meth:`from_params`.
    """

    release: str
    namespace: str
    chart: str
    values: dict[str, Any]
    values_files: tuple[str, ...] = ()
    chart_version: str | None = None
    create_namespace: bool = True
    timeout: int = 300
    host: str = ""
    tls_secret: str = ""

    @classmethod
    def from_params(cls, p: Any, root: str | os.PathLike[str] | None = None) -> ReleaseSpec:
        """The spec for ``ProvisionParams`` ``p``; relative paths are relative to ``root``.

        ``root`` defaults to ``$RUNBOOKS_HOME`` (set by ``runbooks run``) or the working directory.
        """
        base = Path(root or os.environ.get("RUNBOOKS_HOME") or ".")
        repository, tag, digest = parse_image(p.image)
        values: dict[str, Any] = {
            "image": {"repository": repository, "tag": tag, "digest": digest},
            "replicaCount": p.replicas,
            "containerPort": p.port,
            "resources": p.resources,
            "config": {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in p.config.items()},
            "podAnnotations": dict(p.pod_annotations),
            "ingress": {"enabled": True, "host": p.host, "className": p.ingress_class,
                        "clusterIssuer": p.cluster_issuer},
        }
        return cls(
            release=p.release, namespace=p.namespace, chart=resolve_path(p.chart, base),
            values=values, values_files=tuple(resolve_path(f, base) for f in p.values_files),
            chart_version=p.chart_version, create_namespace=p.create_namespace,
            timeout=p.timeout_seconds, host=p.host,
            tls_secret=f"{p.release}-tls" if p.cluster_issuer else "",
        )

    def values_document(self, secrets: VaultValues = NO_SECRETS) -> bytes:
        """The values Helm reads on stdin (``--values -``): parameters plus the vault's secrets."""
        doc = json.loads(json.dumps(self.values))
        if secrets:
            doc["secretEnv"] = dict(secrets.values)
        return yaml.safe_dump(doc, sort_keys=True).encode()

    def chart_args(self) -> list[str]:
        args = [self.release, self.chart, "--namespace", self.namespace]
        if self.chart_version:
            args += ["--version", self.chart_version]
        for f in self.values_files:
            args += ["--values", f]
        return args + ["--values", "-"]


def resolve_path(path: str, base: Path) -> str:
    """A local path relative to ``base``; repository (``repo/chart``) and ``oci://`` references as given."""
    if "://" in path or Path(path).is_absolute():
        return path
    candidate = base / path
    local = candidate.exists() or path.startswith((".", "charts" + os.sep)) or path.endswith(".tgz")
    return str(candidate) if local else path


def helm_for(p: Any, secrets: VaultValues = NO_SECRETS) -> Helm:
    """A :class:`Helm` for the runbook's connection parameters that redacts ``secrets``."""
    return Helm(p.kubeconfig, p.kube_context, timeout=120, secrets=secrets.values.values())




def render(helm: Helm, spec: ReleaseSpec, secrets: VaultValues = NO_SECRETS) -> list[dict[str, Any]]:
    """``helm template`` of the release (no cluster needed): the objects it would create.

    Raises:
        HelmFailed: the chart does not render (schema violation, ``fail`` in a template).
    """
    proc = helm.run("template", *spec.chart_args(), stdin=spec.values_document(secrets), parse=True)
    return parse_manifest(proc.stdout, spec.namespace)


def objects_table(objects: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per rendered object: kind, name, and what matters about it (never Secret data)."""
    rows = []
    for obj in objects:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        kind = obj.get("kind", "")
        what = ""
        if kind == "Deployment":
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            what = f"{spec.get('replicas', '(hpa)')} replica(s), " + ", ".join(c.get("image", "") for c in containers)
        elif kind == "Service":
            what = ", ".join(f"{p.get('port')}→{p.get('targetPort')}" for p in spec.get("ports") or [])
        elif kind == "Ingress":
            hosts = [r.get("host") for r in spec.get("rules") or []]
            tls = [t.get("secretName") for t in spec.get("tls") or []]
            what = ", ".join(h for h in hosts if h) + (f" (TLS secret {', '.join(tls)})" if tls else "")
        elif kind == "ConfigMap":
            what = f"{len(obj.get('data') or {})} key(s): {', '.join(sorted(obj.get('data') or {}))}"
        elif kind == "Secret":
            what = f"{len(obj.get('data') or {})} key(s) (values not shown)"
        rows.append({"kind": kind, "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                     "summary": what})
    return pd.DataFrame(rows, columns=["kind", "namespace", "name", "summary"])
