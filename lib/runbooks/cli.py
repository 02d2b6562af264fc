"""The ``runbooks`` command: list, run, report, runs (and plugins such as ``sandbox``).

Only argument parsing and printing live here; the execution contract is in
:mod:`runbooks.execute`. Exit codes (DESIGN.md): 0 no finding at or above
``--fail-on``; 1 findings at or above it; 2 bad input, configuration or
approval (nothing executed or changed); 3 the runbook failed while running,
or its output failed the secret scan.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

import click

from runbooks import __version__
from runbooks.errors import RunbookError

EXIT_INVALID = 2


class Context:
    """What the group options decide, handed to every command (``ctx.obj``)."""

    def __init__(self, project_dir: str | None, notebooks_dir: str | None) -> None:
        self.project_dir = project_dir
        self.notebooks_dir = notebooks_dir
        self._project = None

    @property
    def project(self):
        """The :class:`runbooks.execute.Project` (found lazily: `sandbox` commands need none)."""
        from runbooks.execute import Project

        if self._project is None:
            self._project = Project.discover(self.project_dir, self.notebooks_dir)
        return self._project


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    click.echo(f"runbooks: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="runbooks")
@click.option("--project-dir", envvar="RUNBOOKS_HOME", default=None, metavar="DIR",
              help="Project root holding parameters/, outputs/ and notebooks/ that add to or override "
                   "the packaged runbooks (default: $RUNBOOKS_HOME, else the nearest such directory "
                   "upwards, else the working directory).")
@click.option("--notebooks-dir", envvar="RUNBOOKS_NOTEBOOKS", default=None, metavar="DIR",
              help="The one directory of runbook notebooks to use instead of the packaged ones "
                   "and PROJECT/notebooks.")
@click.pass_context
def main(ctx: click.Context, project_dir: str | None, notebooks_dir: str | None) -> None:
    """Kubernetes runbooks as notebooks: run them headless, read their reports."""
    ctx.obj = Context(project_dir, notebooks_dir)


@main.command("list")
@click.argument("name", required=False)
@click.pass_obj
def list_cmd(obj: Context, name: str | None) -> None:
    """List runbooks with their purpose, or NAME's parameters with defaults and help."""
    from runbooks import execute

    try:
        project = obj.project
        if name is None:
            books = project.notebooks()
            if not books:
                click.echo(f"no runbooks in {project.notebooks_dir}")
                return
            width = max(len(n) for n in books)
            for book, path in books.items():
                click.echo(f"{book:<{width}}  {execute.purpose(path)}")
            return
        path = project.notebook(name)
        params = execute.notebook_parameters(path)
    except RunbookError as exc:
        _fail(str(exc))
    click.echo(f"{path.stem}: {execute.purpose(path)}")
    if not params:
        click.echo("  (no cell tagged 'parameters')")
        return
    click.echo("parameters (set with -p NAME VALUE, -f FILE or parameters/ENV/"
               f"{path.stem}.yaml):")
    width = max(len(p.name) for p in params)
    for p in params:
        kind = "" if p.inferred_type_name in ("None", "") else f" ({p.inferred_type_name})"
        help_text = f"  # {p.help}" if p.help else ""
        click.echo(f"  {p.name:<{width}} = {p.default}{kind}{help_text}")


@main.command("run")
@click.argument("name")
@click.option("--env", "envs", multiple=True, metavar="ENV",
              help="Environment: loads parameters/ENV/env.yaml and parameters/ENV/NAME.yaml "
                   "(repeat it to run a fleet).")
@click.option("--fleet", "fleet_file", default=None, metavar="FILE",
              help="YAML file listing the environments of a fleet (and per-environment parameters).")
@click.option("--parallel", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Fleet: runs at the same time (default: min(8, environments, 4 per core)).")
@click.option("-f", "--parameters-file", "files", multiple=True, metavar="FILE",
              help="YAML mapping of parameters (repeatable; later files win).")
@click.option("-p", "--parameter", "pairs", multiple=True, nargs=2, metavar="NAME VALUE",
              help="One parameter; VALUE is parsed as YAML unless the parameter is a string.")
@click.option("--approve", metavar="PLAN_ID", default=None,
              help="Apply the plan with this id (printed by a dry run); turns dry_run off.")
@click.option("--fail-on", type=click.Choice(["info", "warning", "critical"]), default="critical",
              show_default=True, help="Exit 1 when a finding is at or above this severity.")
@click.option("--output-dir", metavar="DIR|URL", default=None,
              help="Base of run directories (default PROJECT/outputs): DIR/ENV/NAME/TIMESTAMP/; or object "
                   "storage s3://BUCKET/PREFIX, gs://..., abs://... (credentials from the provider's "
                   "standard chain, e.g. AWS_* variables; AWS_ENDPOINT_URL for another S3 endpoint).")
@click.option("--timeout", type=int, default=600, show_default=True, metavar="S",
              help="Per-cell timeout in seconds (the whole run is bounded by S x cells).")
@click.option("--progress/--no-progress", default=None,
              help="Show papermill's progress bar (default: when stderr is a terminal).")
@click.option("--notify", "notifiers", multiple=True, type=click.Choice(["slack", "webhook"]),
              help="Send the run's result: slack (Block Kit to $RUNBOOKS_SLACK_WEBHOOK_URL), webhook "
                   "(Alertmanager-shaped JSON to $RUNBOOKS_WEBHOOK_URL). Repeatable.")
@click.option("--notify-on", type=click.Choice(["always", "change", "severity"]), default="always",
              show_default=True,
              help="always: every run; change: when the state (ok, warning, critical, failed) differs from "
                   "the previous run of this runbook and env; severity: at or above --notify-min-severity.")
@click.option("--notify-min-severity", type=click.Choice(["warning", "critical"]), default="warning",
              show_default=True, help="Lowest finding severity that counts for --notify-on change/severity.")
@click.option("--notify-thread", default=None, metavar="KEY",
              help="Thread key for the notification (messages about one incident share it).")
@click.option("--report-base-url", envvar="RUNBOOKS_REPORT_BASE_URL", default=None, metavar="URL",
              help="Where --output-dir is served over HTTP(S) (default $RUNBOOKS_REPORT_BASE_URL): "
                   "messages link to URL/ENV/NAME/TIMESTAMP/report.html.")
@click.option("--fleet-id", "fleet_id", default=None, hidden=True, callback=lambda c, p, v: _fleet_id(v))
@click.pass_obj
def run_cmd(obj: Context, name: str, envs: tuple[str, ...], fleet_file: str | None, parallel: int | None,
            files: tuple[str, ...], pairs: tuple[tuple[str, str], ...], approve: str | None, fail_on: str,
            output_dir: str | None, timeout: int, progress: bool | None,
            notifiers: tuple[str, ...], notify_on: str, notify_min_severity: str,
            notify_thread: str | None, report_base_url: str | None, fleet_id: str | None) -> None:
    """Run runbook NAME headless against ENV; print the run directory and findings.

    Parameters merge, lowest first: env.yaml connections < parameters/ENV/NAME.yaml
    < -f FILE < -p NAME VALUE; they are validated before a kernel starts.
    With several --env or --fleet FILE, every environment is validated, then each runs
    as its own `runbooks run` (at most --parallel at once); the worst exit code wins.
    """
    from runbooks import execute, notify

    if fleet_file is not None or len(envs) > 1:
        _run_fleet(obj, name, envs, fleet_file, parallel, files, pairs, approve, fail_on, output_dir,
                   timeout, notifiers, notify_on, notify_min_severity, notify_thread, report_base_url)
        return
    if not envs:
        _fail("no environment: give --env ENV (repeatable for a fleet) or --fleet FILE")
    env = envs[0]
    try:
        settings = notify.Settings.from_env(notifiers, on=notify_on, min_severity=notify_min_severity,
                                            thread=notify_thread)
        base_url = execute.check_report_base_url(report_base_url)
    except RunbookError as exc:
        _fail(str(exc))

    try:
        store = execute.check_output_dir(output_dir)
        prepared = execute.prepare(obj.project, name, env, files=files, pairs=list(pairs),
                                   approve=approve, fail_on=fail_on, timeout=timeout)
    except RunbookError as exc:
        _refused(settings, name, env, notify_thread, exc)
    result = execute.execute(prepared, output_dir=store or output_dir, progress=progress,
                             echo=lambda m: click.echo(m, err=True), notify_settings=settings,
                             report_base_url=base_url, fleet=fleet_id)
    click.echo(execute.format_summary(result))
    sys.exit(result.exit_code)


def _fleet_id(value: str | None) -> str | None:
    """``--fleet-id``, set by a fleet for each of its runs: its directory ``_fleet/NAME/FLEET_ID``
    relative to the output location, recorded in the run's summary.json and index entry."""
    if value is not None and not re.fullmatch(r"_fleet/[A-Za-z0-9][A-Za-z0-9_.-]*/\d{8}T\d{6}Z(-\d+)?", value):
        raise click.BadParameter(f"{value!r} is not a fleet directory (_fleet/NAME/YYYYMMDDTHHMMSSZ)")
    return value


def _refused(settings: Any, name: str, env: str, thread: str | None, exc: RunbookError) -> None:
    """A run refused before any kernel: say so to the configured notifiers, then exit 2."""
    from runbooks import notify

    for item in settings.send(notify.Message(
            event="refused", thread=thread, runbook=name, env=env, status="rejected",
            exit_code=EXIT_INVALID, text=f"{name} on {env}: refused, nothing ran: {exc}", error=str(exc))):
        if item.get("error"):
            click.echo(f"runbooks: notification {item['kind']} not sent: {item['error']}", err=True)
    _fail(str(exc))


def _run_fleet(obj: Context, name: str, envs: tuple[str, ...], fleet_file: str | None, parallel: int | None,
               files: tuple[str, ...], pairs: tuple[tuple[str, str], ...], approve: str | None, fail_on: str,
               output_dir: str | None, timeout: int, notifiers: tuple[str, ...], notify_on: str,
               notify_min_severity: str, notify_thread: str | None, report_base_url: str | None) -> None:
    """`runbooks run NAME --env A --env B ...` / `--fleet FILE`: see :mod:`runbooks.fleet`."""
    import tempfile

    from runbooks import execute, fleet, notify

    with tempfile.TemporaryDirectory(prefix="runbooks-fleet-") as workdir:
        try:
            spec = fleet.load_fleet(fleet_file) if fleet_file is not None else None
            members = fleet.fleet_members(envs, spec)
            if parallel is None:
                parallel = (spec.parallel if spec else None) or fleet.default_parallel(len(members))
            notify.Settings.from_env(notifiers, on=notify_on, min_severity=notify_min_severity,
                                     thread=notify_thread)
            execute.check_report_base_url(report_base_url)
            store = execute.check_output_dir(output_dir)  # object storage: each run and fleet.json go there
            plan = fleet.prepare(obj.project, name, members, files=files, pairs=list(pairs),
                                 approve=approve, fail_on=fail_on, timeout=timeout, parallel=parallel,
                                 workdir=Path(workdir))
        except RunbookError as exc:
            _fail(str(exc))
        extra: list[str] = []
        for n in notifiers:
            extra += ["--notify", n]
        if notifiers:
            extra += ["--notify-on", notify_on, "--notify-min-severity", notify_min_severity]
        if notify_thread:
            extra += ["--notify-thread", notify_thread]
        if report_base_url:
            extra += ["--report-base-url", report_base_url]
        click.echo(f"fleet {plan.runbook}: {len(members)} environment(s) validated, {parallel} at a time",
                   err=True)
        result = fleet.run(plan, parallel=parallel, output_dir=store or output_dir, extra_args=extra,
                           echo=lambda m: click.echo(m, err=True),
                           child_main=lambda args: main.main(args=args, prog_name="runbooks"))
    click.echo(fleet.format_table(result))
    sys.exit(result.exit_code)


@main.command("serve")
@click.option("--env", "env", required=True, metavar="ENV",
              help="Environment the runs use (parameters/ENV/env.yaml).")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --expose.")
@click.option("--expose", is_flag=True, help="Allow --host to be a non-loopback address.")
@click.option("--routes", "routes_file", default=None, metavar="FILE",
              help="Routes file mapping alerts to runbooks (default: the one shipped with runbooks).")
@click.option("--queue-size", type=int, default=100, show_default=True,
              help="Jobs waiting for a worker; when full the webhook answers 503 (Alertmanager retries).")
@click.option("--concurrency", type=int, default=2, show_default=True, help="Runs at the same time.")
@click.option("--dedup-window", type=float, default=3600.0, show_default=True, metavar="S",
              help="Seconds during which the same runbook and parameters do not run again.")
@click.option("--max-body", type=int, default=1024 * 1024, show_default=True, metavar="BYTES",
              help="Largest request body accepted (413 above).")
@click.option("--timeout", type=int, default=600, show_default=True, metavar="S",
              help="Per-cell timeout of each run.")
@click.option("--output-dir", metavar="DIR|URL", default=None,
              help="Base of run directories (default PROJECT/outputs), or s3://BUCKET/PREFIX as for `run`.")
@click.option("--no-notify", is_flag=True,
              help="Do not post to $RUNBOOKS_WEBHOOK_URL (by default it is required).")
@click.pass_obj
def serve_cmd(obj: Context, env: str, port: int, host: str, expose: bool, routes_file: str | None,
              queue_size: int, concurrency: int, dedup_window: float, max_body: int, timeout: int,
              output_dir: str | None, no_notify: bool) -> None:
    """Receive Alertmanager's webhook (POST /alertmanager) and run the runbook each alert calls for.

    Needs $RUNBOOKS_SERVE_TOKEN (bearer token) or $RUNBOOKS_SERVE_USERNAME and
    $RUNBOOKS_SERVE_PASSWORD (basic auth). Every run is a dry run through `runbooks run`,
    whose summary goes to $RUNBOOKS_WEBHOOK_URL. Also serves /healthz and /metrics.
    """
    from runbooks import kube, serve, storage
    from runbooks.routes import load_routes

    try:
        serve.check_host(host, expose)
        auth = serve.Auth.from_env()
        config = serve.ServeConfig(
            project=obj.project, env=env, routes=load_routes(routes_file), auth=auth,
            queue_size=queue_size, concurrency=concurrency, dedup_window=dedup_window,
            max_body=max_body, timeout=timeout,
            output_dir=output_dir if storage.is_url(output_dir) else
            str(Path(output_dir).resolve()) if output_dir else None, notify=not no_notify)
        config.check()
        env_cfg = obj.project.load_env(env)
        try:  # pod labels are turned into workloads through the API (kubeconfig or in-cluster)
            cluster = kube.connect(env_cfg.kubeconfig, env_cfg.kube_context)
        except RunbookError as exc:
            cluster = None
            click.echo(f"runbooks serve: no Kubernetes connection ({exc}): alerts naming only a pod "
                       "cannot be routed", err=True)
        serve.serve(config, host, port, cluster=cluster, echo=lambda m: click.echo(m, err=True))
    except RunbookError as exc:
        _fail(str(exc))


@main.group("env")
def env_group() -> None:
    """Environments (parameters/ENV/env.yaml): write one for a cluster, check one before a page."""


@env_group.command("init")
@click.argument("name")
@click.option("--context", "kube_context", required=True, help="kubeconfig context (becomes expected_context).")
@click.option("--kubeconfig", default=None, metavar="FILE", help="kubeconfig file (default: $KUBECONFIG).")
@click.option("--prometheus-url", default=None, metavar="URL", help="Prometheus base URL.")
@click.option("--alertmanager-url", default=None, metavar="URL", help="Alertmanager base URL.")
@click.option("--elasticsearch-url", default=None, metavar="URL", help="Elasticsearch base URL.")
@click.option("--description", default="", help="free text for the file's description.")
@click.option("--force", is_flag=True, help="overwrite an existing env.yaml.")
@click.pass_obj
def env_init_cmd(obj: Context, name: str, kube_context: str, kubeconfig: str | None,
                 prometheus_url: str | None, alertmanager_url: str | None, elasticsearch_url: str | None,
                 description: str, force: bool) -> None:
    """Probe a cluster and its data sources, then write parameters/NAME/env.yaml."""
    from runbooks import onboarding

    try:
        path, rows = onboarding.init_env(
            obj.project, name, context=kube_context, kubeconfig=kubeconfig, description=description,
            force=force, urls={"prometheus_url": prometheus_url, "alertmanager_url": alertmanager_url,
                               "elasticsearch_url": elasticsearch_url})
    except RunbookError as exc:
        _fail(str(exc), getattr(exc, "exit_code", EXIT_INVALID))
    click.echo(onboarding.format_checks(rows))
    click.echo(f"wrote {path}")
    if any(r.failed for r in rows):
        _fail("written, but a data source failed its probe (see above): fix the URL or credentials "
              f"and run `runbooks env check {name}`")


@env_group.command("check")
@click.argument("name")
@click.pass_obj
def env_check_cmd(obj: Context, name: str) -> None:
    """Probe an environment: API server, each runbook's permissions, each data source (exit 2 on a failure)."""
    from runbooks import onboarding

    try:
        rows = onboarding.check_env(obj.project, name)
    except RunbookError as exc:
        _fail(str(exc), getattr(exc, "exit_code", EXIT_INVALID))
    click.echo(onboarding.format_checks(rows))
    failed = [r for r in rows if r.failed]
    if failed:
        _fail("; ".join(f"{r.what}: {r.detail}" for r in failed))


@main.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
def report_cmd(run_dir: Path) -> None:
    """Render RUN_DIR/report.html again from its notebook and summary.json."""
    from runbooks import execute

    try:
        result = execute.rerender(run_dir)
    except RunbookError as exc:
        _fail(str(exc))
    for message in result.messages:
        click.echo(message, err=True)
    if result.report is None:
        error = (result.summary.get("error") or {}).get("message")
        if error:
            click.echo(f"runbooks: {error}", err=True)
        sys.exit(execute.EXIT_FAILED)
    click.echo(str(result.report))


@main.command("runs")
@click.option("--env", default=None, help="Only runs of this environment.")
@click.option("--runbook", default=None, help="Only runs of this runbook.")
@click.option("--output-dir", "--from", "output_dir", metavar="DIR|URL", default=None,
              help="Where the runs are (default PROJECT/outputs): a directory or the object storage "
                   "of `runbooks run --output-dir` (s3://BUCKET/PREFIX: every environment of a fleet).")
@click.pass_obj
def runs_cmd(obj: Context, env: str | None, runbook: str | None, output_dir: str | None) -> None:
    """List past runs from their summary.json (or the bucket's run index) and regenerate index.html."""
    from runbooks import execute, storage

    try:
        if storage.is_url(output_dir):
            store = storage.open_store(str(output_dir))
            runs = store.entries(env, runbook)
            index = store.url_of("index.html")
            try:
                from runbooks import reporthtml

                every = runs if not (env or runbook) else store.entries()
                store.write_bytes("index.html", reporthtml.index_html(every).encode())
            except RunbookError as exc:
                index = f"not written ({exc})"
        else:
            outputs = Path(output_dir).resolve() if output_dir else obj.project.outputs_dir
            runs = execute.list_runs(outputs, env, runbook)
            index = str(execute.write_index(outputs))
    except RunbookError as exc:
        _fail(str(exc))
    if not runs:
        click.echo("no runs" + (" match" if env or runbook else " yet"))
    fleets = {rel: f"fleet {str(s['fleet']).rsplit('/', 1)[-1]}" if s.get("fleet") else "" for rel, s in runs}
    width = max(map(len, fleets.values()), default=0)  # the fleet column, when a listed run was in one
    for rel, s in runs:
        counts = s.get("counts") or {}
        plan = (s.get("plan") or {}).get("id") or ""
        click.echo(
            f"{s.get('start', '?'):20}  {s.get('status', '?'):8} exit {s.get('exit_code', '?')}  "
            f"{counts.get('critical', 0)} critical {counts.get('warning', 0)} warning  "
            f"{('plan ' + plan) if plan else '':17}  " + (f"{fleets[rel]:{width}}  " if width else "") + rel
        )
    click.echo(f"index: {index}")


PLUGIN_GROUP = "runbooks.plugins"
# Plugins the project documents, with how to get them when they are not installed.
KNOWN_PLUGINS = {
    "sandbox": "the embedded sandbox is not installed: pip install -e lib/runbooks_sandbox "
               "(from a checkout; `make` does it)",
}


def _missing_plugin(name: str, hint: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                   help=f"(not installed) {hint}", add_help_option=False)
    def missing() -> None:
        _fail(hint)

    return missing


def add_plugins(group: click.Group) -> None:
    """Commands other distributions contribute through the ``runbooks.plugins`` entry point.

    The product never imports the sandbox: ``runbooks sandbox`` exists only when the
    sandbox distribution is installed, and otherwise says how to install it.
    """
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)}
    for name in sorted(found.keys() | KNOWN_PLUGINS.keys()):
        if name in found:
            group.add_command(found[name].load(), name)
        else:
            group.add_command(_missing_plugin(name, KNOWN_PLUGINS[name]))


add_plugins(main)


if __name__ == "__main__":  # pragma: no cover
    main()
