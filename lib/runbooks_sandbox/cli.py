"""`runbooks sandbox up|status|down|kubeconfig`: the embedded cluster for demos, tests and labs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from . import launch


def _state_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("RUNBOOKS_SANDBOX_DIR") or ".sandbox")


state_option = click.option("--state-dir", default=None, metavar="DIR",
                            help="Where the kubeconfig, CA and state file live (default .sandbox, "
                                 "or $RUNBOOKS_SANDBOX_DIR).")


@click.group()
def sandbox() -> None:
    """The embedded sandbox cluster on 127.0.0.1 (no real cluster needed)."""


@sandbox.command()
@state_option
@click.option("--scenario", default="default", show_default=True, help="Scenario to load.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="API port (0 picks a free one).")
@click.option("--api-only", is_flag=True, help="Only the Kubernetes API: no Prometheus, Alertmanager, "
              "log store, cert-manager or ingress endpoint.")
@click.option("--free-ports", is_flag=True, help="Serve Prometheus, Alertmanager, the log store and the ingress "
              "on free loopback ports instead of the fixed ones parameters/sandbox/env.yaml names "
              "(for a second sandbox; `up` prints them and `env` writes an env.yaml for them).")
@click.option("--alert-webhook", default=None, metavar="URL", envvar="RUNBOOKS_SANDBOX_ALERT_WEBHOOK",
              help="Send Alertmanager's alerts to this webhook (e.g. http://127.0.0.1:8787/alertmanager of "
                   "`runbooks serve`); its bearer token comes from $RUNBOOKS_SANDBOX_ALERT_WEBHOOK_TOKEN "
                   "or $RUNBOOKS_SERVE_TOKEN. Default: $RUNBOOKS_SANDBOX_ALERT_WEBHOOK.")
@click.option("--run-image", "run_images", multiple=True, metavar="REPOSITORY[=BINDIR]",
              help="Run pods of this image as local processes of BINDIR's executables (default: this "
                   "Python's directory, where `runbooks` is installed), with the pod's env, volumes and "
                   "ServiceAccount token mounted in a private mount namespace (root): e.g. "
                   "`--run-image kube-runbooks` for the chart's CronJobs. Repeatable.")
def up(state_dir: str | None, scenario: str, port: int, api_only: bool, free_ports: bool,
       alert_webhook: str | None, run_images: tuple[str, ...]) -> None:
    """Start the sandbox in the background and write its kubeconfig."""
    from .podrunner import parse_run_image
    from .scenario import list_scenarios

    try:
        images = dict(parse_run_image(text) for text in run_images)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--run-image") from None

    if scenario not in list_scenarios():
        raise click.BadParameter(f"{scenario!r} is not a scenario; choose one of: {', '.join(list_scenarios())}",
                                 param_hint="--scenario")
    d = _state_dir(state_dir)
    try:
        state = launch.start_background(d, scenario, port, api_only=api_only, free_ports=free_ports,
                                        alert_webhook=alert_webhook, run_images=images)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    verb = "already running" if state.get("already_running") else "started"
    click.echo(f"sandbox {verb}: {state['url']} (pid {state['pid']}, scenario {state['scenario']})")
    click.echo(f"kubeconfig: {state['kubeconfig']}   (context {launch.CONTEXT})")
    for name, url in sorted((state.get("services") or {}).items()):
        click.echo(f"{name}: {url}")
    click.echo(f"try: KUBECONFIG={state['kubeconfig']} kubectl get pods -A")


@sandbox.command()
@state_option
def down(state_dir: str | None) -> None:
    """Stop the background sandbox started by `up` (only that process)."""
    if launch.stop_background(_state_dir(state_dir)):
        click.echo("sandbox stopped")
    else:
        click.echo("no sandbox was running")


@sandbox.command()
@state_option
def status(state_dir: str | None) -> None:
    """Say whether the sandbox runs, and summarise its cluster over its REST API."""
    from .summary import cluster_summary

    d = _state_dir(state_dir)
    state = launch.read_state(d)
    if not state or not launch.pid_alive(state["pid"]):
        click.echo("sandbox: not running (start it with `runbooks sandbox up`)")
        sys.exit(1)
    click.echo(f"sandbox: running at {state['url']} (pid {state['pid']}, scenario {state['scenario']})")
    click.echo(cluster_summary(Path(state["kubeconfig"])))


@sandbox.command()
@state_option
def kubeconfig(state_dir: str | None) -> None:
    """Print the path of the sandbox kubeconfig (`export KUBECONFIG=$(runbooks sandbox kubeconfig)`)."""
    state = launch.read_state(_state_dir(state_dir))
    if not state:
        raise click.ClickException("the sandbox is not running; start it with `runbooks sandbox up`")
    click.echo(state["kubeconfig"])


@sandbox.command()
@state_option
def env(state_dir: str | None) -> None:
    """Print an env.yaml (parameters/ENV/env.yaml) that reaches the running sandbox's API and services."""
    import yaml

    from .stack import env_from_urls

    state = launch.read_state(_state_dir(state_dir))
    if not state or not launch.pid_alive(state["pid"]):
        raise click.ClickException("the sandbox is not running; start it with `runbooks sandbox up`")
    settings = {"description": f"the sandbox started by `runbooks sandbox up` (pid {state['pid']})",
                **env_from_urls(state["kubeconfig"], state.get("services") or {})}
    click.echo(yaml.safe_dump(settings, sort_keys=False), nl=False)


@sandbox.command(hidden=True)
@state_option
@click.option("--scenario", default="default")
@click.option("--port", default=0, type=int)
@click.option("--bulk-pods", default=0, type=click.IntRange(0), help="Extra pods for benchmarks.")
@click.option("--bulk-namespaces", default=1, type=click.IntRange(1), help="Spread the extra pods over N namespaces.")
@click.option("--bulk-nodes", default=0, type=click.IntRange(0), help="Extra Ready nodes the extra pods spread over.")
@click.option("--bulk-unhealthy", default=0.0, type=click.FloatRange(0, 100),
              help="Percent of the extra pods (whole workloads) that crash-loop.")
@click.option("--api-only", is_flag=True)
@click.option("--free-ports", is_flag=True)
@click.option("--alert-webhook", default=None)
@click.option("--run-image", "run_images", multiple=True)
def serve(state_dir: str | None, scenario: str, port: int, bulk_pods: int, bulk_namespaces: int, bulk_nodes: int,
          bulk_unhealthy: float, api_only: bool, free_ports: bool, alert_webhook: str | None,
          run_images: tuple[str, ...]) -> None:
    """Run the sandbox in the foreground (what `up` starts in the background)."""
    from .podrunner import parse_run_image

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    launch.serve_forever(_state_dir(state_dir), scenario, port, bulk_pods, api_only, free_ports, alert_webhook,
                         bulk_namespaces, bulk_nodes, bulk_unhealthy,
                         run_images=dict(parse_run_image(text) for text in run_images))
