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


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    return dict(split_requirement(r) for r in reqs)


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


BACKENDS = ("kube", "metrics", "alerts", "logs", "certs", "deploy")
DISPLAY = ("plotly", "IPython", "ipywidgets", "matplotlib")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative ones as runbooks.X)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ("runbooks." if node.level else "") + (node.module or "")
            found.add(base.rstrip("."))
            found.update(f"{base}.{a.name}".replace("runbooks..", "runbooks.") for a in node.names
                         if node.level and not node.module)
    return found


def test_backends_import_no_other_backend_and_nothing_that_draws():
    """DESIGN.md's module boundaries: backends return plain data; jobs and `report` combine and draw."""
    lib = Path(__file__).resolve().parents[1] / "lib" / "runbooks"
    for name in BACKENDS:
        imports = _imports(lib / f"{name}.py")
        others = {f"runbooks.{b}" for b in BACKENDS if b != name}
        assert not imports & others, f"{name}.py imports {sorted(imports & others)}"
        assert not {m for m in imports if m.split(".")[0] in DISPLAY or m == "runbooks.report"}, name
