"""The secret scan that gates publishing a run (runbooks.secrets), without a kernel."""

from __future__ import annotations

import base64

import nbformat
import pytest

from runbooks import secrets as sec

TOKEN = "kubeconfig-bearer-0123456789"


def pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n"
        f"users:\n- name: a\n  user: {{token: {TOKEN}}}\n"
        "- name: b\n  user: {password: hunter2-hunter2, username: admin}\n"
    )
    return path


def notebook(*outputs: str, source: str = "print(1)"):
    cells = [nbformat.v4.new_markdown_cell("# t")]
    for text in outputs:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def test_known_secrets_from_kubeconfig_and_environment(kubeconfig):
    env = {"GITHUB_TOKEN": "ghp_abcdefgh", "DB_PASSWORD": "s3cr3t-pw", "SHORT_TOKEN": "abc",
           "TOKEN_FILE": "/var/run/token", "HOME": "/root", "MY_API_KEY": "k-1234567"}
    found = {s.kind: s.value for s in sec.known_secrets(kubeconfig, env)}
    assert found["kubeconfig bearer token"] == TOKEN
    assert found["kubeconfig password"] == "hunter2-hunter2"
    assert found["value of environment variable GITHUB_TOKEN"] == "ghp_abcdefgh"
    assert found["value of environment variable DB_PASSWORD"] == "s3cr3t-pw"
    assert found["value of environment variable MY_API_KEY"] == "k-1234567"
    values = set(found.values())
    assert "abc" not in values and "/var/run/token" not in values and "/root" not in values


def test_scan_locates_leaks_by_cell_without_values(kubeconfig):
    secrets = sec.known_secrets(kubeconfig, {"X_SECRET": "topsecretvalue"})
    nb = notebook("clean", pem(), f"Authorization: Bearer {TOKEN}",
                  base64.b64encode(b"topsecretvalue").decode())
    leaks = sec.scan_notebook(nb, secrets)
    assert [str(x) for x in leaks] == [
        "PEM private key in executed notebook, cell 2 output",
        "kubeconfig bearer token in executed notebook, cell 3 output",
        "value of environment variable X_SECRET in executed notebook, cell 4 output",
    ]
    text = sec.describe(leaks)
    assert TOKEN not in text and "topsecretvalue" not in text and "PRIVATE KEY-----" not in text


def test_scan_covers_sources_metadata_and_html(kubeconfig):
    secrets = sec.known_secrets(kubeconfig, {})
    nb = notebook("ok", source=f"token = '{TOKEN}'")
    nb.metadata["papermill"] = {"parameters": {"x": "hunter2-hunter2"}}
    where = {x.where for x in sec.scan_notebook(nb, secrets)}
    assert where == {"executed notebook, cell 1 source", "executed notebook, notebook metadata"}
    html = "<pre>" + pem().replace("\n", "<br>") + "</pre>"
    assert [x.kind for x in sec.scan_text(html, secrets, "report.html")] == ["PEM private key"]


def test_redaction_removes_every_occurrence(kubeconfig):
    secrets = sec.known_secrets(kubeconfig, {})
    nb = notebook(pem() + "\ntrailing", f"t={TOKEN}")
    sec.redact_notebook(nb, secrets)
    assert sec.scan_notebook(nb, secrets) == []
    assert "trailing" in nb.cells[1].outputs[0]["text"]
    assert sec.REDACTED in nb.cells[2].outputs[0]["text"]


def test_clean_notebook_passes(kubeconfig):
    assert sec.scan_notebook(notebook("nothing to see", "Pod/shop/web restarted 3 times"),
                             sec.known_secrets(kubeconfig, {})) == []
