"""kube-runbooks: runbook and observability notebooks for Kubernetes operators."""

__version__ = "0.1.0"
