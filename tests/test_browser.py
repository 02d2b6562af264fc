"""The way a person uses it, in a real browser: JupyterLab against the sandbox, and a report.

Debian's chromium (installed by `make`) driven by Playwright; JupyterLab started here on a
free port with a token, its kernels pointed at a throwaway project whose
parameters/sandbox/env.yaml reaches this module's sandbox (with Prometheus, Alertmanager and
the log store). Every wait waits for the condition it asserts (a locator, a cell's execution
count, the Deployment's revision), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from runbooks import kube
from runbooks_sandbox import stack
from runbooks_sandbox.launch import Sandbox
from runbooks_sandbox.observability import missing_binaries

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRED = os.environ.get("RUNBOOKS_REQUIRE_BROWSER") not in (None, "", "0")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.notebook,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not CHROMIUM.exists() and not REQUIRED,
                       reason="no /usr/bin/chromium (make installs it; RUNBOOKS_REQUIRE_BROWSER=1 fails instead)"),
    pytest.mark.skipif(bool(missing_binaries()) and not REQUIRED, reason=f"not installed: {missing_binaries()}"),
]

NOTEBOOK = "incident-investigation.ipynb"
RUN_TIMEOUT_MS = int(os.environ.get("RUNBOOKS_BROWSER_RUN_TIMEOUT_MS", "300000"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The default scenario with Prometheus, Alertmanager and the log store on free ports."""
    box = Sandbox(tmp_path_factory.mktemp("browser-sandbox"), "default", tick=1.0)
    stack.attach(box, stack.StackOptions(certificates=False))
    box.start()
    yield box
    box.stop()


@pytest.fixture(scope="module")
def project(full, tmp_path_factory):
    """A project like the repository: notebooks, parameters/sandbox/ reaching this sandbox, outputs/."""
    root = tmp_path_factory.mktemp("browser-project")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "parameters" / "sandbox").mkdir(parents=True)
    for f in (ROOT / "parameters" / "sandbox").glob("*.yaml"):
        if f.name != "env.yaml":
            shutil.copy(f, root / "parameters" / "sandbox" / f.name)
    env = {"description": "the browser tests' sandbox", **stack.env_settings(full)}
    (root / "parameters" / "sandbox" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "outputs").mkdir()
    return root


@pytest.fixture(scope="module")
def lab(full, project, tmp_path_factory):
    """JupyterLab on a free port with a token, as `make lab` starts it (env sandbox)."""
    home = tmp_path_factory.mktemp("jupyter")
    settings = home / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell stays in the page (no virtual scrolling), so each cell's prompt can be read
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, KUBECONFIG=str(full.kubeconfig), RUNBOOKS_ENV="sandbox", RUNBOOKS_HOME=str(project),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    env.pop("RUNBOOKS_HEADLESS", None)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--ip", "127.0.0.1", "--port", str(port), "--no-browser",
           f"--ServerApp.root_dir={project / 'notebooks'}", f"--IdentityProvider.token={token}",
           "--ServerApp.port_retries=0", "--LabApp.news_url=", "--LabApp.collaborative=False"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = (home / "lab.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}: "
                                   + (home / "lab.log").read_text(errors="replace")[-2000:])
            try:
                r = requests.get(f"{base}/api/status", headers={"Authorization": f"token {token}"}, timeout=2)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not answer /api/status within 90 s: "
                                   + (home / "lab.log").read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        yield base, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # kernels too, if the server left any
        except ProcessLookupError:
            pass
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("RUNBOOKS_REQUIRE_BROWSER is set but /usr/bin/chromium is missing (make installs it)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


# ---- JupyterLab, as a person drives it ------------------------------------------------------

CELL_STATE = """() => {
  const cells = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'));
  return cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
}"""


def open_notebook(browser, base: str, token: str):
    """Open the notebook; answer JupyterLab's kernel dialog with its preferred kernel; wait for Idle."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    ready = page.locator(".jp-Dialog .jp-mod-accept, .jp-StatusBar-Widget:has-text('| Idle')").first
    deadline = time.monotonic() + 90
    while True:
        ready.wait_for(timeout=max(1, int((deadline - time.monotonic()) * 1000)))
        dialog = page.locator(".jp-Dialog .jp-mod-accept")
        if dialog.count() and dialog.first.is_visible():
            assert "Select" in dialog.first.inner_text()
            dialog.first.click()
            dialog.first.wait_for(state="detached")
            continue
        break
    return page


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel",
                 has_text=re.compile(rf"^{re.escape(item)}$")).click()


def run_all(page, shots: Path, timeout_ms: int = RUN_TIMEOUT_MS) -> list[str]:
    """Run ▸ Run All Cells, then wait until every code cell shows its execution count."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    before = page.evaluate(CELL_STATE)
    menu(page, "Run", "Run All Cells")
    try:
        page.wait_for_function(
        """(before) => {
          const cells = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'));
          const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
          if (!prompts.length) return false;
          const counts = prompts.map(p => { const m = p.match(/\\[(\\d+)\\]/); return m ? +m[1] : null; });
          const last = before.map(p => { const m = p.match(/\\[(\\d+)\\]/); return m ? +m[1] : 0; });
          const floor = Math.max(0, ...last);
          return counts.every(n => n !== null && n > floor);
        }""", arg=before, timeout=timeout_ms, polling=500)
    except PlaywrightTimeout:
        shot = shots / "run-all-timeout.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"Run All did not finish: prompts {page.evaluate(CELL_STATE)}, "
                             f"errors {error_outputs(page)}, screenshot {shot}") from None
    return page.evaluate(CELL_STATE)


def error_outputs(page) -> list[str]:
    """Texts of stderr/error outputs that carry a traceback."""
    texts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) "
                         ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t for t in texts if "Traceback" in t or re.search(r"\b\w+(Error|Failed|Refused|Mismatch)\b", t)]


def plot_points(page) -> dict[str, int]:
    """Title of each plotly chart on the page → its number of data points."""
    return page.evaluate("""() => {
      const out = {};
      document.querySelectorAll('.js-plotly-plot').forEach((d, i) => {
        const t = d.layout && d.layout.title ? (d.layout.title.text || d.layout.title) : ('plot ' + i);
        out[String(t)] = (d._fullData || []).reduce((n, tr) => n + (tr._length || 0), 0);
      });
      return out;
    }""")


def edit_parameters(page, replace: dict[str, str]) -> None:
    """Change lines of the parameters cell as a person would: click into it, select all, type."""
    cell = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").first
    text = cell.locator(".cm-content").inner_text()
    for name, value in replace.items():
        text, n = re.subn(rf"(?m)^{name} = [^#\n]*?(\s*#)", rf"{name} = {value}\1", text)
        assert n == 1, f"no line {name} = ... in the parameters cell"
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)
    page.wait_for_function("(want) => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-CodeCell .cm-content').innerText.includes(want)",
                           arg=next(f"{k} = {v}" for k, v in replace.items()))


def deployment_revision(cluster, namespace: str, name: str) -> str:
    d = kube.get_object(cluster, "deployments", namespace, name)
    return (d["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision", "")


def test_incident_notebook_runs_all_cells_in_jupyterlab(lab, browser, tmp_path):
    base, token = lab
    page = open_notebook(browser, base, token)
    try:
        prompts = run_all(page, tmp_path)
        assert prompts and all(re.search(r"\[\d+\]", p) for p in prompts), prompts
        assert error_outputs(page) == []
        try:
            page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
                .some(d => d.layout && d.layout.title && d.layout.title.text === 'Golden signals'
                           && (d._fullData || []).some(t => t._length > 0))""", timeout=60_000)
        finally:
            page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
            print(f"JupyterLab screenshot: {tmp_path / 'lab.png'}; charts: {plot_points(page)}")
        points = plot_points(page)
        assert points.get("Golden signals", 0) > 0, points
        text = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").inner_text()
        assert "not configured" not in text and "no ingress traffic" not in text
        selects = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .widget-dropdown select")
        options = [s.locator("option").all_inner_texts() for s in selects.all()]
        values = [s.input_value() for s in selects.all()]
        assert any("sandbox" in o for o in options), options  # the environment picker
        assert any("shop" in o for o in options) and "shop" in values, (options, values)
        assert any("checkout" in o for o in options) and "checkout" in values, (options, values)
    finally:
        page.close()


def test_approve_rollback_from_the_button(lab, browser, full, project, tmp_path):
    base, token = lab
    cluster = kube.connect(str(full.kubeconfig), "sandbox")
    before = deployment_revision(cluster, "shop", "checkout")
    page = open_notebook(browser, base, token)
    try:
        edit_parameters(page, {"mitigation": '"rollback"'})
        run_all(page, tmp_path)
        assert error_outputs(page) == []
        hint = page.locator(".kr-plan").inner_text()
        assert "--env sandbox --approve" in hint and "--env ENV" not in hint, hint
        button = page.get_by_role("button", name=re.compile(r"^Apply plan [0-9a-f]{12}$"))
        plan_id = button.inner_text().split()[-1]
        button.click()
        result = page.locator(".jp-OutputArea-output", has_text=re.compile(rf"Applied plan {plan_id}"))
        result.first.wait_for(timeout=120_000)
        assert button.is_disabled()
        assert "was not applied" not in page.locator(".kr-plan").locator("xpath=..").inner_text()

        deadline = time.monotonic() + 120
        while deployment_revision(cluster, "shop", "checkout") == before:
            assert time.monotonic() < deadline, "the checkout Deployment did not roll back"
            time.sleep(0.5)
        audits = list((project / "outputs" / "sandbox" / "incident-investigation").glob("*/audit.jsonl"))
        assert len(audits) == 1, audits
        entries = [json.loads(line) for line in audits[0].read_text().splitlines()]
        assert entries and entries[-1]["change"]["name"] == "checkout", entries

        verify = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell",
                              has=page.locator(".cm-content", has_text="verify_mitigation"))
        verify.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        verify.locator(".jp-OutputArea-output", has_text="Verified: Rolled back shop/checkout").wait_for(
            timeout=150_000)
        assert error_outputs(page) == []
    finally:
        page.close()


def test_report_charts_have_data(project, browser, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "run",
                           "incident-investigation", "--env", "sandbox", "--no-progress"],
                          capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, RUNBOOKS_HOME=str(project)))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    reports = sorted((project / "outputs" / "sandbox" / "incident-investigation").glob("*/report.html"),
                     key=lambda p: p.stat().st_mtime)
    assert reports, proc.stdout
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(reports[-1].as_uri())
        count = page.locator("div.kr-plot").count()
        assert count >= 4
        page.wait_for_function(
            """() => Array.from(document.querySelectorAll('div.kr-plot'))
                .every(d => (d._fullData || []).some(t => t._length > 0))""",
            timeout=60_000)
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"report screenshot: {shot}")
        page.screenshot(path=str(tmp_path / "report-top.png"))
        print(f"report top: {tmp_path / 'report-top.png'}")
        story = page.locator("p.kr-story").inner_text()
        assert story.startswith("Between ") and " UTC and " in story and "Most likely cause:" in story, story
        # a folded log line opens on click and shows the whole line
        fold = page.locator("details.kr-fold").first
        assert not fold.evaluate("d => d.open")
        fold.locator("summary").click()
        assert fold.evaluate("d => d.open") and fold.locator("pre").is_visible()
        # tables sort by a column when its heading is clicked
        table = page.locator("table.kr-findings")
        first = lambda: table.locator("tbody tr").first.locator("td").nth(0).inner_text()  # noqa: E731
        heading = table.locator("th", has_text="severity")
        heading.click()
        ascending = first()
        heading.click()
        assert first() != ascending and heading.get_attribute("class") == "kr-sorted-desc"
        timeline = page.locator("div.kr-plot", has=page.locator("text=Timeline")).first
        timeline.screenshot(path=str(tmp_path / "timeline.png"))
        print(f"timeline screenshot: {tmp_path / 'timeline.png'}")
        assert problems == []
    finally:
        page.close()
