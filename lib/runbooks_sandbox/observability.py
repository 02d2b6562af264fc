"""The sandbox's real Prometheus and Alertmanager, seeded from the Kubernetes scenario.

`Observability(state_dir, objects, now).start()` does, on 127.0.0.1 only:

1. generates the scenario's metric history (:mod:`.promgen`) as OpenMetrics and
   backfills it with ``promtool tsdb create-blocks-from openmetrics`` into a fresh
   data directory (every start: instant queries at "now" see nothing 5 minutes
   after the data ends, and Prometheus writes into its data directory);
2. serves the same series live from a tiny in-process exporter, which Prometheus
   scrapes (``honor_labels``), so the data goes on after "now";
3. starts Alertmanager (no clustering, its own storage) and Prometheus with the
   alerting rules in ``sandbox/rules/``; the rules look back over the history, so
   they fire at the first evaluation and reach Alertmanager through the real
   pipeline.

Binaries come from ``$RUNBOOKS_PROMETHEUS_BIN``, ``$RUNBOOKS_PROMTOOL_BIN`` and
``$RUNBOOKS_ALERTMANAGER_BIN`` or the PATH (Debian names the Alertmanager binary
``prometheus-alertmanager``). `stop()` stops only the processes this object
started; :func:`stop_recorded` stops those recorded in a state directory by a
process that is gone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import promgen, servers
from .servers import Binary, MissingBinary, Unavailable  # noqa: F401 - this module's errors

log = logging.getLogger(__name__)

RULES_DIR = Path(__file__).with_name("rules")
WEBHOOK_ENV = "RUNBOOKS_SANDBOX_ALERT_WEBHOOK"
WEBHOOK_TOKEN_ENV = "RUNBOOKS_SANDBOX_ALERT_WEBHOOK_TOKEN"
TIMING_ENV = "RUNBOOKS_SANDBOX_ALERT_TIMING"
DEFAULT_TIMING = {"group_wait": "5s", "group_interval": "30s", "repeat_interval": "12h"}


def parse_timing(text: str) -> dict[str, str]:
    """``group_wait=1s,group_interval=2s,repeat_interval=10s`` -> a dict (ValueError names a bad key)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in DEFAULT_TIMING or not value:
            raise ValueError(f"{part!r} is not one of {', '.join(DEFAULT_TIMING)}=DURATION")
        out[key] = value
    return out
STATE_FILE = "observability.json"
READY_TIMEOUT = 60.0

BINARIES: dict[str, Binary] = {
    "prometheus": Binary("RUNBOOKS_PROMETHEUS_BIN", ("prometheus",), "prometheus"),
    "promtool": Binary("RUNBOOKS_PROMTOOL_BIN", ("promtool",), "prometheus"),
    "alertmanager": Binary("RUNBOOKS_ALERTMANAGER_BIN", ("alertmanager", "prometheus-alertmanager"),
                           "prometheus-alertmanager"),
}


def find_binary(name: str) -> str:
    """Path of `name` (prometheus, promtool, alertmanager), or MissingBinary saying how to get it."""
    return servers.find_binary(BINARIES, name)


def missing_binaries() -> list[str]:
    """One message per missing binary (empty when everything is installed)."""
    return servers.missing_binaries(BINARIES)


def sandbox_objects(box: Any) -> list[dict]:
    """Every object an embedded :class:`~runbooks_sandbox.launch.Sandbox` holds, as the API serves them."""
    objects: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for rt in box.registry.all():
        ident = (getattr(rt, "group", ""), getattr(rt, "kind", ""))
        if ident in seen:
            continue
        seen.add(ident)
        try:
            objects.extend(box.store.items(rt))
        except Exception:  # noqa: BLE001 - subresources and virtual kinds have no items
            continue
    return objects


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"User-Agent": "runbooks-sandbox"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _Exporter:
    """The live half of the scenario's metrics: /metrics from the model, on 127.0.0.1."""

    def __init__(self, model: promgen.Model, objects: Callable[[], Iterable[dict]] | None):
        self.model = model
        self.objects = objects
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # TCP_NODELAY: no stall between headers and body
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = exporter.render().encode()
                except Exception:  # noqa: BLE001 - a scrape error must not kill the server
                    log.exception("sandbox exporter failed")
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="sandbox-exporter", daemon=True)

    def render(self) -> str:
        objects = None
        if self.objects is not None:
            try:
                objects = list(self.objects())
            except Exception:  # noqa: BLE001 - keep serving the last known cluster
                log.exception("sandbox exporter: cannot read the cluster's objects")
        with self.lock:
            return self.model.exposition(time.time(), objects)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Observability:
    """Real Prometheus + Alertmanager for the sandbox: `start()` -> URLs, `stop()`.

    Args:
        state_dir: where configs, data directories and logs go (recreated data on every start).
        objects: the cluster's objects (a list), or a callable returning them; with a callable
            the live series follow the cluster as it changes (e.g. after a rollback).
        now: where the backfilled history ends (default: the current time).
        history: how far back the history goes; step: its finest resolution in seconds.
    """

    def __init__(self, state_dir: Path | str, objects: Iterable[dict] | Callable[[], Iterable[dict]],
                 now: datetime | None = None, *, history: timedelta = promgen.DEFAULT_HISTORY,
                 step: int = promgen.DEFAULT_STEP, evaluation_interval: int = 5, seed: int | str = 0,
                 prometheus_port: int = 0, alertmanager_port: int = 0, alert_webhook: str | None = None,
                 alert_webhook_token: str | None = None, alert_timing: dict[str, str] | None = None):
        self.state_dir = Path(state_dir).resolve()
        self._objects_fn = objects if callable(objects) else None
        self._objects = None if callable(objects) else list(objects)
        self.now = now
        self.history = history
        self.step = step
        self.evaluation_interval = evaluation_interval
        self.seed = seed
        self.ports = {"prometheus": prometheus_port, "alertmanager": alertmanager_port}  # 0: a free port
        self.alert_webhook = alert_webhook or os.environ.get(WEBHOOK_ENV) or None
        self.alert_webhook_token = (alert_webhook_token or os.environ.get(WEBHOOK_TOKEN_ENV)
                                    or os.environ.get("RUNBOOKS_SERVE_TOKEN") or None)
        self.alert_timing = dict(DEFAULT_TIMING) | parse_timing(os.environ.get(TIMING_ENV, "")) \
            | dict(alert_timing or {})
        self.procs: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.exporter: _Exporter | None = None
        self.model: promgen.Model | None = None
        self.timings: dict[str, float] = {}
        self.stats: dict[str, int] = {}

    # ---- public ----

    def start(self) -> dict[str, str]:
        """Backfill, start Alertmanager and Prometheus; return {"prometheus": url, "alertmanager": url}."""
        if self.procs:
            return dict(self.urls)
        bins = {name: find_binary(name) for name in BINARIES}
        t0 = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        prom_dir, am_dir = self.state_dir / "prometheus", self.state_dir / "alertmanager"
        for d in (prom_dir / "data", am_dir / "data"):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        objects = list(self._objects_fn()) if self._objects_fn else self._objects or []
        # never past the real clock: Prometheus would refuse live samples older than the history's end
        real_now = datetime.now(UTC)
        now = min(self.now, real_now) if self.now else real_now
        self.model = promgen.Model(objects, now, history=self.history, step=self.step, seed=self.seed)
        self._backfill(bins["promtool"], prom_dir)
        try:
            self.exporter = _Exporter(self.model, self._objects_fn)
            self.exporter.start()
            t1 = time.monotonic()
            am_port = self._launch("alertmanager", lambda: self._start_alertmanager(bins["alertmanager"], am_dir))
            self._launch("prometheus", lambda: self._start_prometheus(bins["prometheus"], prom_dir, am_port))
            self.timings["servers_ready"] = round(time.monotonic() - t1, 3)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t0, 3)
        self._write_state()
        log.info("observability ready in %.1fs: %s (%s samples)", self.timings["total"], self.urls,
                 self.stats.get("samples"))
        return dict(self.urls)

    def stop(self) -> None:
        """Stop the servers this object started (and nothing else)."""
        for name in ("prometheus", "alertmanager"):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            servers.stop(proc, grace=15)
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        self.urls = {}

    @property
    def incidents(self) -> list[promgen.Incident]:
        return self.model.incidents if self.model else []

    def __enter__(self) -> Observability:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- steps ----

    def _backfill(self, promtool: str, prom_dir: Path) -> None:
        """Write the history as two OpenMetrics files and backfill them with two promtool processes.

        promtool parses on one core; splitting the history at the time that halves the
        samples gives two blocks that do not overlap (nothing for the TSDB to merge) and
        uses both cores of small machines: the older half is backfilled while the newer
        half is written.
        """
        assert self.model is not None
        t0 = time.monotonic()
        work = prom_dir / "backfill"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        outs = [o for o in self.model.iter_history() if len(o.times)]
        self.timings["generate"] = round(time.monotonic() - t0, 3)
        cut = int(np.median(np.concatenate([o.times for o in outs]))) if outs else 0
        halves: list[dict[str, list[promgen.Out]]] = [{}, {}]
        for o in outs:
            i = int(np.searchsorted(o.times, cut, side="left"))
            for half, sl in ((0, slice(None, i)), (1, slice(i, None))):
                if len(o.times[sl]):
                    halves[half].setdefault(o.family, []).append(
                        promgen.Out(o.family, o.kind, o.name, o.labels, o.times[sl], o.values[sl]))
        procs = []
        series: set[tuple[str, tuple]] = {(o.name, o.labels) for o in outs}
        samples = 0
        t1 = time.monotonic()
        for i, families in enumerate(halves):
            if not families:
                continue
            path = work / f"history-{i}.om"
            with path.open("w", encoding="utf-8") as fp:
                samples += promgen.write_families(fp, families)["samples"]
            out_dir = work / f"blocks-{i}"
            procs.append((path, out_dir, subprocess.Popen(
                [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                 "--max-block-duration=2400h", str(path), str(out_dir)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
        self.timings["write"] = round(time.monotonic() - t1, 3)
        for path, out_dir, proc in procs:
            output, _ = proc.communicate()
            if proc.returncode != 0:
                raise Unavailable(f"promtool could not backfill {path.name} (exit {proc.returncode}): "
                                  f"{output.decode(errors='replace')[-800:]}")
            for block in out_dir.iterdir():
                if block.is_dir():
                    block.rename(prom_dir / "data" / block.name)
        shutil.rmtree(work, ignore_errors=True)
        self.stats = {"series": len(series), "samples": samples}
        self.timings["backfill"] = round(time.monotonic() - t0, 3)

    def _launch(self, name: str, starter: Callable[[], Any]) -> Any:
        """Start a server and wait until it is ready; on a port taken meanwhile, pick another."""
        for attempt in range(3):
            result = starter()
            try:
                self._wait_ready(name)
                return result
            except Unavailable as exc:
                if attempt == 2 or "address already in use" not in str(exc):
                    raise
                log.info("%s: port taken before it could bind it, retrying", name)
                self.procs.pop(name, None)
        raise AssertionError("unreachable")

    def _spawn(self, name: str, argv: list[str], log_path: Path) -> None:
        log_file = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        main = threading.current_thread() is threading.main_thread()
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=servers.die_with_parent if main else None)  # noqa: PLW1509
        finally:
            log_file.close()

    def alertmanager_config(self, am_dir: Path) -> dict[str, Any]:
        """Alertmanager's configuration: alerts go nowhere, or to the webhook when one is named.

        With a webhook (``--alert-webhook`` / ``$RUNBOOKS_SANDBOX_ALERT_WEBHOOK``), every alert but
        Watchdog goes to it with ``send_resolved``; its bearer token (from
        ``$RUNBOOKS_SANDBOX_ALERT_WEBHOOK_TOKEN`` or ``$RUNBOOKS_SERVE_TOKEN``) is written to a
        file only the owner can read and named with ``credentials_file``, never put in the config.
        """
        route: dict[str, Any] = {"receiver": "null", "group_by": ["alertname", "namespace"],
                                 **self.alert_timing}
        receivers: list[dict[str, Any]] = [{"name": "null"}]
        if self.alert_webhook:
            hook: dict[str, Any] = {"url": self.alert_webhook, "send_resolved": True, "max_alerts": 0}
            if self.alert_webhook_token:
                token_file = am_dir / "webhook-token"
                token_file.touch(mode=0o600)
                token_file.chmod(0o600)
                token_file.write_text(self.alert_webhook_token)
                hook["http_config"] = {"authorization": {"type": "Bearer",
                                                         "credentials_file": str(token_file)}}
            receivers.append({"name": "runbooks", "webhook_configs": [hook]})
            route["routes"] = [{"receiver": "null", "matchers": ['alertname="Watchdog"']},
                               {"receiver": "runbooks"}]
        return {"route": route, "receivers": receivers}

    def _start_alertmanager(self, binary: str, am_dir: Path) -> int:
        config = self.alertmanager_config(am_dir)
        (am_dir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = self.ports["alertmanager"] or free_port()
        self.urls["alertmanager"] = f"http://127.0.0.1:{port}"
        self._spawn("alertmanager", [
            binary, f"--config.file={am_dir / 'alertmanager.yml'}", f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            f"--web.external-url=http://127.0.0.1:{port}",
        ], am_dir / "alertmanager.log")
        return port

    def _prometheus_config(self, prom_dir: Path, am_port: int, with_rules: bool) -> None:
        assert self.exporter is not None
        config: dict[str, Any] = {
            "global": {"scrape_interval": f"{self.step}s", "scrape_timeout": f"{min(self.step, 10)}s",
                       "evaluation_interval": f"{self.evaluation_interval}s"},
            "alerting": {"alertmanagers": [{"api_version": "v2",
                                            "static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "sandbox-exporter", "honor_labels": True,
                                "static_configs": [{"targets": [f"127.0.0.1:{self.exporter.port}"]}]}],
        }
        if with_rules:
            config["rule_files"] = [str(prom_dir / "rules" / "*.yaml")]
        tmp = prom_dir / "prometheus.yml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(prom_dir / "prometheus.yml")

    def _start_prometheus(self, binary: str, prom_dir: Path, am_port: int) -> int:
        rules = prom_dir / "rules"
        shutil.rmtree(rules, ignore_errors=True)
        rules.mkdir()
        for f in sorted(RULES_DIR.glob("*.yaml")):
            shutil.copy(f, rules / f.name)
        self._prometheus_config(prom_dir, am_port, with_rules=True)
        port = self.ports["prometheus"] or free_port()
        self.urls["prometheus"] = f"http://127.0.0.1:{port}"
        self._spawn("prometheus", [
            binary, f"--config.file={prom_dir / 'prometheus.yml'}", f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
            "--web.enable-lifecycle", f"--web.external-url=http://127.0.0.1:{port}",
            # the first evaluations run before the notifier has discovered Alertmanager (its
            # service discovery updates every 5 s) and their alerts are dropped: resend soon
            f"--rules.alert.resend-delay={self.evaluation_interval}s",
        ], prom_dir / "prometheus.log")
        return port

    def _wait_ready(self, name: str) -> None:
        url, proc = self.urls[name], self.procs[name]
        log_path = self.state_dir / name / f"{name}.log"
        try:
            servers.wait_ready(proc, name, lambda: _get(f"{url}/-/ready", timeout=1.0)[0] == 200, log_path,
                               READY_TIMEOUT)
        except Unavailable:
            if log_path.exists() and proc.poll() is not None:
                log_path.replace(log_path.with_suffix(".failed.log"))
            raise

    def _write_state(self) -> None:
        state = {name: {"pid": proc.pid, "url": self.urls[name]} for name, proc in self.procs.items()}
        state["exporter"] = {"url": f"http://127.0.0.1:{self.exporter.port}/metrics"} if self.exporter else {}
        state["timings"] = self.timings
        state["samples"] = self.stats.get("samples", 0)
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_state(state_dir: Path | str) -> dict | None:
    try:
        return json.loads((Path(state_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def stop_recorded(state_dir: Path | str) -> list[int]:
    """Stop the servers recorded in `state_dir` (by a process that cannot stop them any more).

    A pid is signalled only if its command line still names this state directory,
    so a recycled pid is never touched. Returns the pids stopped.
    """
    state_dir = Path(state_dir).resolve()
    state = read_state(state_dir) or {}
    stopped = []
    for name in ("prometheus", "alertmanager"):
        pid = (state.get(name) or {}).get("pid")
        if not pid:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(state_dir).encode() not in cmdline:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped
