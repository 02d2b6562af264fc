"""Packaging: environment.yml lists what pyproject.toml does, and the `runbooks` command resolves."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

# conda-forge name -> PyPI name, where they differ.
CONDA_NAMES = {"python-kubernetes": "kubernetes"}
# Entries of environment.yml that are not Python dependencies of the package.
TOOLS_ONLY = {"python", "pip", "kubectl", "kubernetes-helm"}


def normalize(name: str) -> str:
    """PEP 503 normalisation: case and the characters -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(text: str) -> tuple[str, str]:
    """"PyYAML>=6.0,<7" -> ("pyyaml", ">=6.0,<7"); conda's "name >=1,<2" and "name=1" too."""
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$", text)
    assert m, text
    return normalize(m[1]), m[2].replace(" ", "")


SANDBOX_PYPROJECT = ROOT / "lib" / "runbooks_sandbox" / "pyproject.toml"


def pyproject_requirements() -> dict[str, str]:
    """The product's dependencies and test extra, plus the sandbox distribution's dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sandbox = tomllib.loads(SANDBOX_PYPROJECT.read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    reqs += sandbox["dependencies"]
    found = [split_requirement(r) for r in reqs]
    merged = dict(found)
    clashes = {n: s for n, s in found if merged[n] != s}
    assert not clashes, f"the two pyproject.toml files give different ranges for {sorted(clashes)}"
    return merged


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep.get("pip", []):
                name, spec = split_requirement(pip_dep)
                out[name] = spec
            continue
        name, spec = split_requirement(dep)
        if name in TOOLS_ONLY:
            continue
        out[normalize(CONDA_NAMES.get(name, name))] = spec
    return out


def test_environment_yml_lists_the_same_packages_as_pyproject():
    wanted, listed = pyproject_requirements(), environment_requirements()
    assert sorted(set(wanted) - set(listed)) == [], "in pyproject.toml but not in environment.yml"
    assert sorted(set(listed) - set(wanted)) == [], "in environment.yml but not in pyproject.toml"


def test_environment_yml_uses_the_same_version_ranges():
    wanted, listed = pyproject_requirements(), environment_requirements()
    differing = {name: (wanted[name], listed[name]) for name in wanted if wanted[name] != listed.get(name)}
    assert differing == {}


def test_environment_yml_pins_the_python_and_tools():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    plain = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in plain
    assert "kubectl" in plain and "kubernetes-helm" in plain
    assert env["channels"] == ["conda-forge"]


def test_console_script_resolves():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["scripts"]["runbooks"]
    eps = importlib.metadata.entry_points(group="console_scripts", name="runbooks")
    assert [ep.value for ep in eps] == [target], "reinstall with `pip install -e '.[test]'` (make test does)"
    main = next(iter(eps)).load()
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("run", "sandbox"):
        assert command in result.output


def test_gitignore_keeps_outputs_readme_only():
    lines = (ROOT / ".gitignore").read_text().splitlines()
    for entry in ("outputs/*", "!outputs/README.md", ".venv/", ".sandbox/", "__pycache__/"):
        assert entry in lines
    assert (ROOT / "outputs" / "README.md").is_file()


def test_product_dependencies_leave_the_sandbox_out():
    """Installing the product alone pulls in none of the sandbox-only packages."""
    product = {split_requirement(r)[0] for r in
               tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not product & {"jsonpatch", "kubernetes-validate"}


def test_import_contracts_hold():
    """import-linter's contracts (pyproject.toml): layers only downward, the sandbox apart."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
OVERSIZED: dict[str, str] = {
    # "module" (a module's line count) or "module.function" / "module.Class.method": why it is still long.
}
"""What exceeds the limits of ARCHITECTURE.md today, each with its reason; a new entry needs one."""


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    """Line counts of every product module, and of every function (nested ones counted in their parent)."""
    import ast

    package = ROOT / "lib" / "runbooks"
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package).with_suffix("").parts)
        text = path.read_text(encoding="utf-8")
        modules[name] = len(text.splitlines())

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    functions[f"{prefix}.{child.name}"] = (child.end_lineno or child.lineno) - first + 1
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}.{child.name}")

        visit(ast.parse(text, str(path)), name)
    return modules, functions


def test_no_module_or_function_grows_past_the_limits():
    modules, functions = _sizes()
    too_long = sorted(f"{name} ({n} lines)" for name, n in modules.items()
                      if n > MAX_MODULE_LINES and name not in OVERSIZED)
    too_long += sorted(f"{name}() ({n} lines)" for name, n in functions.items()
                       if n > MAX_FUNCTION_LINES and name not in OVERSIZED)
    assert not too_long, (f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function "
                          f"(ARCHITECTURE.md): split them, or name them with a reason in OVERSIZED: {too_long}")
    stale = sorted(name for name in OVERSIZED if max(modules.get(name, 0), functions.get(name, 0)) <= (
        MAX_MODULE_LINES if name in modules else MAX_FUNCTION_LINES))
    assert not stale, f"OVERSIZED names what is within the limits now (or no longer exists): {stale}"
