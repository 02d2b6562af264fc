"""kube-runbooks: runbook and observability notebooks for Kubernetes operators."""

import os
import sys

__version__ = "0.1.0"

# Start-up cost: optional packages that libraries import only because they are installed, and that
# no runbook uses, are skipped in every process and kernel that imports `runbooks` first:
# - `kubernetes_validate`: `import kubernetes` imports it (through kubernetes.dynamic) when it is
#   installed, with jsonschema (~75 ms); only `DynamicClient.validate` uses it.
# - `rfc3987_syntax`: jsonschema imports it when it is installed (Jupyter installs it) and it
#   compiles a grammar for 1-2 s; jsonschema then just lacks the "iri" format check.
# RUNBOOKS_KEEP_OPTIONAL_IMPORTS=1 keeps both; one already imported is never touched.
if not os.environ.get("RUNBOOKS_KEEP_OPTIONAL_IMPORTS"):
    sys.modules.setdefault("kubernetes_validate", None)  # type: ignore[arg-type]
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
