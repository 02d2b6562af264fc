"""Import a run's modules while its kernel would otherwise wait for papermill.

A kernel that `runbooks run` starts is ready ~0.3 s before papermill sends its first cell
(papermill connects, writes the notebook, injects the parameters). A runbook's own imports (the
Kubernetes client, pandas, the Elasticsearch client: 0.5-0.8 s) can start in that time. So the
kernel loads this IPython extension, which imports the modules named in ``RUNBOOKS_PRELOAD`` in a
background thread: the modules the notebook's cells import at top level, and the client of each
data source its parameters configure (:func:`modules`). Before any cell runs, the kernel waits
for that thread to finish, so a cell never imports while it does. A module that fails to import
is left alone; the cell that imports it raises the error where the reader sees it.
"""

from __future__ import annotations

import ast
import gc
import importlib
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

ENV = "RUNBOOKS_PRELOAD"
EXTENSION = __name__

# the client module of each data source a runbook's parameters can configure
SOURCE_MODULES = {"prometheus_url": "runbooks.metrics", "elasticsearch_url": "runbooks.logs"}


def notebook_imports(sources: Iterable[str]) -> list[str]:
    """The modules that the code cells ``sources`` import at top level, in order (``from a import
    b`` gives ``a`` and ``a.b``, which may be a submodule). Cells that do not parse are skipped."""
    out: list[str] = []
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue  # IPython magics; papermill reports real syntax errors
        for node in tree.body:
            if isinstance(node, ast.Import):
                out += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module not in (None, "__future__") and not node.level:
                out += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*"]
    return list(dict.fromkeys(out))


def modules(nb: Any, parameters: Mapping[str, Any]) -> list[str]:
    """What a run of notebook ``nb`` with ``parameters`` imports early: its top-level imports,
    then the client of each configured data source."""
    cells = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    sources = [module for param, module in SOURCE_MODULES.items() if parameters.get(param)]
    return list(dict.fromkeys(notebook_imports(cells) + sources))


def import_all(names: list[str]) -> None:
    """Import ``names`` with the cyclic garbage collector paused, then freeze what they made.

    Imports make hundreds of thousands of long-lived objects and no garbage; the collector would
    walk them all again at every full collection (0.1 s each, later, in the runbook's cells)."""
    gc.disable()
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  - a name may be an attribute, not a module; cells report errors
                continue
    finally:
        gc.freeze()
        gc.enable()


def load_ipython_extension(ip: Any) -> None:
    """Start importing ``$RUNBOOKS_PRELOAD``; the first cell waits until that is done."""
    names = [name for name in os.environ.pop(ENV, "").split(",") if name]
    if not names:
        return
    worker = threading.Thread(target=import_all, args=(names,), name="runbooks-preload", daemon=True)
    worker.start()

    def wait(*_: Any) -> None:
        worker.join()
        ip.events.unregister("pre_run_cell", wait)

    ip.events.register("pre_run_cell", wait)
