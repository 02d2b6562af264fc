"""The Dockerfile: what an image build would do, checked without a container daemon.

Parsed as Docker's frontend reads it (continuation lines joined, instructions case-insensitive,
exec form as JSON); the product-alone test (tests/test_product_alone.py) installs exactly what
it COPYs, so the build context is proven to be enough.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(30)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, as the Dockerfile frontend joins lines."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def test_slim_python_311_base(steps):
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["python:3.11-slim"]


def test_the_product_only(steps):
    copies = [args.split() for word, args in steps if word in ("COPY", "ADD")]
    assert all(word != "ADD" for word, _ in steps)  # COPY only: no remote URLs or auto-extraction
    sources = [s.rstrip("/") for c in copies for s in c[:-1] if not s.startswith("--")]
    assert sources == ["pyproject.toml", "README.md", "notebooks", "lib/runbooks"]
    for source in sources:
        assert (ROOT / source).exists(), source
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(r'pip install --no-cache-dir "\.\[\$\{EXTRAS\}\]"', runs)  # the product (+ a storage backend)
    assert "ARG EXTRAS=s3" in (ROOT / "Dockerfile").read_text()
    assert "runbooks_sandbox" not in runs and "-e " not in runs and "[test]" not in runs
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "lib/runbooks_sandbox" in ignored and ".venv" in ignored and ".git" in ignored


def test_runs_as_a_non_root_user_with_runbooks_as_entrypoint(steps):
    words = [w for w, _ in steps]
    users = [args for word, args in steps if word == "USER"]
    assert len(users) == 1 and users[0].split(":")[0] not in ("0", "root")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")  # nothing runs as root after
    run = " ".join(args for word, args in steps if word == "RUN")
    uid = users[0].split(":")[0]
    assert f"--uid {uid}" in run  # the user exists in the image
    [entrypoint] = [args for word, args in steps if word == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["runbooks"]  # exec form: signals reach runbooks
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "RUNBOOKS_HOME=/var/lib/kube-runbooks" in env


def test_the_chart_mounts_the_environment_where_the_image_looks(steps):
    """The chart's CronJobs mount env.yaml under the image's $RUNBOOKS_HOME, and run as its user."""
    values = (ROOT / "charts" / "kube-runbooks" / "templates" / "cronjobs.yaml").read_text()
    home = next(args for word, args in steps if word == "ENV" and "RUNBOOKS_HOME=" in args)
    home = re.search(r"RUNBOOKS_HOME=(\S+)", home).group(1)
    assert f"mountPath: {home}/parameters/{{{{ $.Values.env }}}}" in values
    uid = next(args for word, args in steps if word == "USER").split(":")[0]
    assert f"runAsUser: {uid}" in values
