"""Secrets are redacted in the Kubernetes layer itself: whatever reads a Secret through `runbooks.kube`
(a get, a list, the generated client, a watch, an error answer) sees `<redacted sha256:…>` digests,
never a value. Key material is handed out only by `kube.read_secret_keys`: certificates, and whether
the key matches its certificate."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest
from kubernetes import watch
from kubernetes.client.rest import ApiException

from runbooks import errors, kube
from runbooks import secrets as sec
from test_rotation_backups import tls_secret

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def no_key(text: str, key_pem: str) -> bool:
    """Neither the key, its base64 (as Secret data holds it) nor any other encoding of a key is in text."""
    b64 = base64.b64encode(key_pem.encode()).decode()
    body = "".join(key_pem.strip().splitlines()[1:-1])
    return (key_pem not in text and b64 not in text and body not in sec.fold(text)
            and sec.encoded_key(sec.fold(text)) is None and not sec.PEM_BLOCK.search(text))


# ---- on data --------------------------------------------------------------------------------------


def test_every_shape_of_answer_is_redacted_and_stays_comparable():
    secret, key_pem = tls_secret()
    item = {k: v for k, v in secret.items() if k not in ("kind", "apiVersion")}  # list items carry no kind
    answers = {
        "get": secret,
        "list": {"kind": "SecretList", "apiVersion": "v1", "items": [item]},
        "List": {"kind": "List", "apiVersion": "v1", "items": [secret]},
        "watch": {"type": "MODIFIED", "object": secret},
    }
    for what, answer in answers.items():
        out = kube.redact_body(json.dumps(answer).encode())
        assert no_key(out.decode(), key_pem), what
        assert no_key(json.dumps(kube.redact_secrets(answer)), key_pem), what
    # a list read from a secrets path whose items say nothing of their kind
    listed = kube.redact_body(json.dumps({"items": [item]}).encode(), "/api/v1/namespaces/p/secrets")
    assert no_key(listed.decode(), key_pem)
    # pretty-printed JSON is one document, not lines
    assert no_key(kube.redact_body(json.dumps(secret, indent=2)), key_pem)
    # watch events, one per line
    stream = "\n".join(json.dumps({"type": t, "object": secret}) for t in ("ADDED", "DELETED")) + "\n"
    out = kube.redact_body(stream.encode(), "/api/v1/secrets")
    assert no_key(out.decode(), key_pem) and len(out.decode().splitlines()) == 2
    # digests: equal values give equal digests, and redacting twice changes nothing
    once = kube.redact_secrets(secret)
    assert once["data"]["tls.key"] == sec.redacted_digest(secret["data"]["tls.key"])
    assert kube.redact_secrets(once) == once
    assert once["metadata"]["annotations"][sec.LAST_APPLIED].startswith("<redacted sha256:")
    assert once["metadata"]["annotations"]["team"] == "payments"
    # other objects are untouched, and not even parsed when they never say Secret
    pods = json.dumps({"kind": "PodList", "items": [{"data": {"a": "b"}}]}).encode()
    assert kube.redact_body(pods, "/api/v1/pods") is pods


def test_an_error_answer_holding_a_secret_has_no_key():
    secret, key_pem = tls_secret()
    err = kube.check_response(409, json.dumps(secret), "PUT secrets")
    assert isinstance(err, errors.Conflict) and no_key(str(err), key_pem)
    status = {"kind": "Status", "message": f"Secret is invalid: data[tls.key]: {key_pem}"}
    assert no_key(str(kube.check_response(422, json.dumps(status), "POST secrets")), key_pem)
    api_error = ApiException(status=500)
    api_error.body = json.dumps(secret)
    assert no_key(str(kube.translate(api_error, "reading secrets")), key_pem)


def test_secret_keys_hand_out_certificates_and_facts_never_the_key():
    secret, key_pem = tls_secret()
    keys = kube.SecretKeys(secret, None)
    assert keys.key_matches() is True
    assert keys.certificate().startswith(b"-----BEGIN CERTIFICATE-----")
    for shown in (repr(keys), str(keys), json.dumps(keys.object), f"{keys}"):
        assert no_key(shown, key_pem) and "tls.key" in repr(keys)
    assert keys.digest("tls.key") == sec.redacted_digest(secret["data"]["tls.key"])
    with pytest.raises(errors.InvalidInput):
        keys.certificate("tls.key")
    with pytest.raises(TypeError):
        pickle.dumps(keys)
    # what was read is known to the output scan
    assert any(s.value == key_pem.strip() for s in sec.known_secrets(environ={}))
    hexed = key_pem.encode().hex()
    assert sec.scan_text(f"oops {hexed}", sec.known_secrets(environ={}), "x")
    # a tls.crt that holds the key too gives out its certificates only
    bundle = base64.b64decode(secret["data"]["tls.crt"]) + key_pem.encode()
    mixed = kube.SecretKeys({**secret, "data": {**secret["data"], "tls.crt": base64.b64encode(bundle).decode()}},
                            None)
    assert no_key(mixed.certificate().decode(), key_pem) and mixed.key_matches() is True


# ---- against the sandbox ---------------------------------------------------------------------------


def create(cluster, namespace):
    secret, key_pem = tls_secret()
    body = {**secret, "metadata": {"name": "pay-tls", "namespace": namespace,
                                   "annotations": secret["metadata"]["annotations"]}}
    created = kube.request(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=body)
    return secret, key_pem, created


@pytest.mark.timeout(60)
def test_no_read_of_the_kubernetes_layer_shows_a_key(cluster, namespace):
    secret, key_pem, created = create(cluster, namespace)
    path = f"/api/v1/namespaces/{namespace}/secrets/pay-tls"
    reads = {
        "create's answer": created,
        "request": kube.request(cluster, "GET", path),
        "get_object": kube.get_object(cluster, "secrets", namespace, "pay-tls"),
        "get_raw": kube.get_raw(cluster, path).decode(),
        "iter_objects": list(kube.iter_objects(cluster, "secrets", namespace)),
        "all namespaces": [s for s in kube.iter_objects(cluster, "secrets")
                           if s["metadata"]["namespace"] == namespace],
        "generated client": cluster.core.read_namespaced_secret("pay-tls", namespace).to_dict(),
        "generated list": cluster.core.list_namespaced_secret(namespace).to_dict(),
        "watch": list(kube.watch(cluster, "secrets", namespace, timeout_seconds=1)),
        "generated watch": [{"object": e["object"].to_dict(), "raw_object": e["raw_object"]} for e in watch.Watch()
                            .stream(cluster.core.list_namespaced_secret, namespace, timeout_seconds=1)],
    }
    for what, value in reads.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        assert "pay-tls" in text, what
        assert no_key(text, key_pem), what
    assert reads["request"]["data"]["tls.key"] == sec.redacted_digest(secret["data"]["tls.key"])  # comparable
    assert reads["watch"][0]["type"] == "ADDED"
    # on purpose: the certificate and whether the key matches, nothing more
    keys = kube.read_secret_keys(cluster, namespace, "pay-tls")
    assert keys.key_matches() is True and keys.certificate() == base64.b64decode(secret["data"]["tls.crt"])
    assert [k.name for k in kube.iter_secret_keys(cluster, namespace)] == ["pay-tls"]


@pytest.mark.timeout(60)
def test_an_exception_from_a_secret_answer_has_no_key(cluster, namespace):
    secret, key_pem, _ = create(cluster, namespace)
    # a common mistake: PEM text in data (which must be base64): the server refuses it, quoting what it got
    bad = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bad-tls", "namespace": namespace},
           "data": {"tls.key": key_pem}}
    with pytest.raises(errors.RunbookError) as refused:
        kube.request(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=bad)
    assert no_key(str(refused.value), key_pem)
    with pytest.raises(errors.Conflict) as exists:  # an answer about an existing Secret
        kube.request(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=secret | {
            "metadata": {"name": "pay-tls", "namespace": namespace}})
    assert no_key(str(exists.value), key_pem)
    with pytest.raises(ApiException) as raw:  # the generated client's own exception carries the body
        cluster.core.create_namespaced_secret(namespace, {**secret, "metadata": {"name": "pay-tls"}})
    assert no_key(str(raw.value), key_pem)


@pytest.mark.timeout(60)
def test_a_copy_is_written_by_digest_and_refused_when_the_source_changed(cluster, namespace):
    secret, key_pem, created = create(cluster, namespace)
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "pay-tls-copy", "namespace": namespace}, "data": created["data"]}
    assert no_key(json.dumps(body), key_pem)  # the body names the values by their digests
    out = kube.write_secret_copy(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets", body,
                                 (namespace, "pay-tls"))
    assert no_key(json.dumps(out), key_pem)
    copy = kube.read_secret_keys(cluster, namespace, "pay-tls-copy")
    assert copy.key_matches() is True and copy.digest("tls.key") == created["data"]["tls.key"]
    other, _ = tls_secret()
    kube.request(cluster, "PATCH", f"/api/v1/namespaces/{namespace}/secrets/pay-tls", body={"data": other["data"]},
                 content_type="application/merge-patch+json")
    with pytest.raises(errors.Conflict, match="changed since the plan"):
        kube.write_secret_copy(cluster, "POST", f"/api/v1/namespaces/{namespace}/secrets",
                               {**body, "metadata": {"name": "pay-tls-copy2", "namespace": namespace}},
                               (namespace, "pay-tls"))


# ---- a notebook that prints Secrets --------------------------------------------------------------


@pytest.mark.notebook
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["print", "raise"])
def test_a_notebook_printing_secrets_read_through_the_product_shows_no_key(sandbox, sandbox_env, mode):
    from click.testing import CliRunner

    from runbooks.cli import main

    raw = sandbox.store.find(sandbox.registry.by_kind_any_version("Secret"), "shop", "shop-frontend-tls")
    key_pem = base64.b64decode(raw["data"]["tls.key"]).decode()
    result = CliRunner().invoke(main, [
        "--project-dir", str(sandbox_env), "--notebooks-dir", str(FIXTURES), "run", "show-secrets",
        "--env", "sandbox", "--no-progress", "-p", "mode", mode], catch_exceptions=False)
    run_dir = next((sandbox_env / "outputs" / "sandbox" / "show-secrets").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["secret_scan"]["clean"] is True, summary["secret_scan"]
    if mode == "print":
        assert result.exit_code == 0, result.output
        assert (run_dir / "report.html").exists()
    else:
        assert result.exit_code == 3 and summary["status"] == "failed", result.output
        assert "RuntimeError" in json.dumps(summary["error"]) and "redacted sha256" in json.dumps(summary["error"])
    notebook = (run_dir / "show-secrets.ipynb").read_text()
    assert "redacted sha256" in notebook and "SecretKeys(shop/shop-frontend-tls" in notebook
    texts = [result.output, notebook, (run_dir / "summary.json").read_text()]
    if (run_dir / "report.html").exists():
        texts.append((run_dir / "report.html").read_text())
    for text in texts:
        assert no_key(text, key_pem)


@pytest.mark.notebook
@pytest.mark.timeout(180)
def test_a_key_the_kernel_read_is_known_to_the_scan_of_its_run(sandbox, sandbox_env):
    """The kernel read shop-frontend-tls's key on purpose (key_matches); printed as hex (a form no shape
    finds), the run's scan still knows it: the kernel told `runbooks run` over its socket."""
    from click.testing import CliRunner

    from runbooks.cli import main

    result = CliRunner().invoke(main, [
        "--project-dir", str(sandbox_env), "--notebooks-dir", str(FIXTURES), "run", "show-secrets",
        "--env", "sandbox", "--no-progress", "-p", "mode", "hex"], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    run_dir = next((sandbox_env / "outputs" / "sandbox" / "show-secrets").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "leaked" and not (run_dir / "report.html").exists()
    kinds = {leak["kind"] for leak in summary["secret_scan"]["leaks"]}
    assert "tls.key of Secret shop/shop-frontend-tls" in kinds, summary["secret_scan"]
