"""kube-runbooks: runbook and observability notebooks for Kubernetes operators."""

import os
import sys

__version__ = "0.1.0"

# Start-up cost: `import kubernetes` pulls in jsonschema (through kubernetes.dynamic ->
# kubernetes_validate), and jsonschema imports `rfc3987_syntax` when it is installed (Jupyter
# installs it), which compiles a grammar for 1-2 s in every process and kernel. Nothing in a
# runbook validates IRIs, so the import is skipped unless the process already made it or
# RUNBOOKS_KEEP_RFC3987=1 asks to keep it; jsonschema then just lacks the "iri" format check.
if not os.environ.get("RUNBOOKS_KEEP_RFC3987") and "jsonschema" not in sys.modules:
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
