"""runbooks.deploy without a cluster: parameters, image references, vault, values, diff, redaction."""

from __future__ import annotations

import base64

import pytest
import yaml

import runbooks.runbook as rb
from runbooks import deploy, errors, parameters, plans, secrets

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse battery staple"


def params(**kw):
    return parameters.validate_params(deploy.ProvisionParams, kw)


# ---- parameters ---------------------------------------------------------------------


@pytest.mark.parametrize("image, expected", [
    ("registry.example.com/shop/web:1.4.2", ("registry.example.com/shop/web", "1.4.2", "")),
    ("localhost:5000/web:v2", ("localhost:5000/web", "v2", "")),
    ("nginx:1.27", ("nginx", "1.27", "")),
    ("ghcr.io/a/b@sha256:" + "a" * 64, ("ghcr.io/a/b", "", "sha256:" + "a" * 64)),
])
def test_parse_image(image, expected):
    assert deploy.parse_image(image) == expected


@pytest.mark.parametrize("image, words", [
    ("registry.example.com/shop/web", "has no tag"),
    ("nginx", "has no tag"),
    ("Registry/UPPER:1", "not a valid image reference"),
    ("web:", "not a valid image reference"),
    ("web@sha256:short", "not a valid image reference"),
])
def test_bad_images_are_refused_with_the_reason(image, words):
    with pytest.raises(ValueError, match=words):
        deploy.parse_image(image)


@pytest.mark.parametrize("name, value, words", [
    ("host", "Bad_Host..example.com", "not a valid DNS name"),
    ("host", "localhost", "not a valid DNS name"),
    ("image", "registry.example.com/web", "has no tag"),
    ("port", 70000, "less than or equal to 65535"),
    ("port", 0, "greater than or equal to 1"),
    ("replicas", -1, "greater than or equal to 0"),
    ("release", "Web_1", "not a valid name"),
    ("namespace", "a" * 64, "at most 63"),
    ("resources", {"requests": {"cpu": "lots"}}, "not a quantity"),
    ("config", {"not-an-env": "x"}, "not valid names"),
    ("vault_password_env", "hunter 2", "not an environment variable name"),
    ("cluster_issuer", "Not_An_Issuer", "not a valid object name"),
])
def test_bad_parameters_name_the_value_and_what_is_allowed(name, value, words):
    with pytest.raises(errors.InvalidInput) as err:
        params(**{name: value})
    assert name in str(err.value) and words in str(err.value)


def test_defaults_are_valid_and_a_dry_run():
    p = params()
    assert p.dry_run is True and p.approve_plan is None
    assert parameters.params_model("provision-service") is deploy.ProvisionParams


def test_no_parameter_looks_like_a_credential():
    assert not [n for n in deploy.ProvisionParams.model_fields if secrets.is_secret_name(n)]


def test_release_spec_from_parameters(tmp_path):
    (tmp_path / "charts" / "web-service").mkdir(parents=True)
    p = params(image="registry.example.com/web:2.1.0", config={"LOG_LEVEL": "info", "DEBUG": False},
               release="api", cluster_issuer="")
    spec = deploy.ReleaseSpec.from_params(p, root=tmp_path)
    assert spec.chart == str(tmp_path / "charts" / "web-service")
    assert spec.values["image"] == {"repository": "registry.example.com/web", "tag": "2.1.0", "digest": ""}
    assert spec.values["config"] == {"LOG_LEVEL": "info", "DEBUG": "false"}
    assert spec.tls_secret == ""
    doc = yaml.safe_load(spec.values_document(deploy.VaultValues("v", {"DB_PASSWORD": "s3cret!"})))
    assert doc["secretEnv"] == {"DB_PASSWORD": "s3cret!"} and doc["replicaCount"] == 2
    assert spec.chart_args()[-2:] == ["--values", "-"]  # values (and secrets) travel on stdin


def test_repository_and_oci_charts_are_passed_through(tmp_path):
    assert deploy.resolve_path("bitnami/nginx", tmp_path) == "bitnami/nginx"
    assert deploy.resolve_path("oci://registry.example.com/charts/web", tmp_path).startswith("oci://")
    assert deploy.resolve_path("charts/missing", tmp_path) == str(tmp_path / "charts" / "missing")


# ---- vault ------------------------------------------------------------------------------


def write_vault(path, data, password=PASSWORD):
    path.write_text(deploy.encrypt_vault(yaml.safe_dump(data), password))
    return path


def test_a_whole_file_vault_decrypts_with_the_password_from_the_environment(tmp_path):
    vault = write_vault(tmp_path / "vault.yml", {"db_password": "pa55-w0rd!", "api_key": "k-123456"})
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    got = deploy.read_vault(vault, "APP_VAULT_PASS", {"DB_PASSWORD": "db_password"},
                            environ={"APP_VAULT_PASS": PASSWORD})
    assert got.values == {"DB_PASSWORD": "pa55-w0rd!"}
    assert "pa55" not in repr(got) and "pa55" not in str(got) and got.keys == ["DB_PASSWORD"]
    every = deploy.read_vault(vault, "P", environ={"P": PASSWORD})
    assert sorted(every.values) == ["api_key", "db_password"]


def test_inline_vault_strings_decrypt_too(tmp_path):
    token = deploy.encrypt_vault("inline-s3cret", PASSWORD)
    indented = "\n".join("  " + line for line in token.splitlines())
    path = tmp_path / "vars.yml"
    path.write_text(f"plain: visible\nsecret: !vault |\n{indented}\n")
    got = deploy.read_vault(path, "P", environ={"P": PASSWORD})
    assert got.values == {"plain": "visible", "secret": "inline-s3cret"}


@pytest.mark.parametrize("environ, words", [
    ({}, "is not set"),
    ({"P": "wrong password"}, "wrong password"),
])
def test_vault_problems_are_preflight_failures_without_values(tmp_path, environ, words):
    vault = write_vault(tmp_path / "vault.yml", {"db_password": "pa55-w0rd!"})
    with pytest.raises(errors.PreflightFailed, match=words) as err:
        deploy.read_vault(vault, "P", environ=environ)
    assert "pa55" not in str(err.value)


def test_missing_vault_keys_are_named(tmp_path):
    vault = write_vault(tmp_path / "vault.yml", {"db_password": "x" * 10})
    with pytest.raises(errors.PreflightFailed, match=r"no key\(s\) \['nope'\]"):
        deploy.read_vault(vault, "P", {"X": "nope"}, environ={"P": PASSWORD})
    with pytest.raises(errors.PreflightFailed, match="cannot be read"):
        deploy.read_vault(tmp_path / "absent.yml", "P", environ={"P": PASSWORD})
    assert deploy.read_vault(None) == deploy.NO_SECRETS


def test_redact_hides_values_and_their_base64():
    b64 = base64.b64encode(b"pa55-w0rd!").decode()
    text = f"error: value pa55-w0rd! or {b64} rejected"
    out = secrets.redact_text(text, ["pa55-w0rd!", "abc"])
    assert "pa55" not in out and b64 not in out and out.count(secrets.REDACTED) == 2


# ---- manifests and diffs ---------------------------------------------------------------


def test_parse_manifest_defaults_namespaces_and_skips_empty_documents():
    text = "---\n# Source: x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n" \
           "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"
    objs = deploy.parse_manifest(text, "apps")
    assert [(o["kind"], o["metadata"].get("namespace")) for o in objs] == [("ConfigMap", "apps"), ("Namespace", None)]


def test_diff_matches_containers_by_name_and_ignores_server_fields():
    live = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "w", "resourceVersion": "5", "generation": 3, "managedFields": [{}],
                         "annotations": {"checksum/config": "a"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "w:1", "ports": [{"containerPort": 80}]},
                {"name": "side", "image": "s:1"}]}}},
            "status": {"replicas": 2}}
    desired = {**live, "metadata": {**live["metadata"], "resourceVersion": "6", "generation": 4,
                                    "annotations": {"checksum/config": "b"}},
               "spec": {"replicas": 3, "template": {"spec": {"containers": [
                   {"name": "web", "image": "w:2", "ports": [{"containerPort": 80}]},
                   {"name": "side", "image": "s:1"}]}}},
               "status": {"replicas": 9}}
    diff = deploy.diff_objects(live, desired)
    assert diff == [
        {"path": "metadata.annotations[checksum/config]", "from": "a", "to": "b"},
        {"path": "spec.replicas", "from": 2, "to": 3},
        {"path": "spec.template.spec.containers[web].image", "from": "w:1", "to": "w:2"},
    ]
    assert deploy.diff_objects(live, live) == []


def test_helm_ownership_metadata_is_added_like_helm_does():
    obj = deploy.as_helm_applies({"kind": "Service", "metadata": {"name": "s", "labels": {"a": "b"}}}, "web", "apps")
    assert obj["metadata"]["labels"] == {"a": "b", "app.kubernetes.io/managed-by": "Helm"}
    assert obj["metadata"]["annotations"] == {"meta.helm.sh/release-name": "web",
                                              "meta.helm.sh/release-namespace": "apps"}


def test_last_good_revision_skips_failed_ones():
    h = [{"revision": 1, "status": "superseded"}, {"revision": 2, "status": "deployed"},
         {"revision": 3, "status": "failed"}]
    assert deploy.last_good_revision(h) == 2
    assert deploy.last_good_revision(h[:1]) is None
    assert deploy.last_good_revision([{"revision": 1, "status": "failed"}, {"revision": 2, "status": "failed"}]) is None


def test_secret_diffs_are_redacted_by_change():
    c = plans.Change(operation="patch", kind="Secret", namespace="a", name="s", body={"sha256": "x"},
                  diff=[{"path": "data", "from": "old", "to": "new"}])
    assert c.diff == [{"path": "data", "from": "<redacted>", "to": "<redacted>"}]


def test_missing_helm_says_how_to_install_it(tmp_path):
    with pytest.raises(errors.PreflightFailed, match="conda-forge kubernetes-helm.*tools/install_helm.py"):
        deploy.find_helm(str(tmp_path / "no-helm"))


def test_auto_rollback_only_follows_a_failed_upgrade_of_this_run():
    run = rb.Run("provision-service", parameters.MutatingParams(expected_context="sandbox"))
    plan = plans.Plan([plans.Change(operation="patch", kind="ConfigMap", namespace="a", name="c", body={"x": 1})])
    spec = deploy.ReleaseSpec("web", "a", "charts/web-service", {})
    ok = deploy.ApplyResult(applied=True, ok=True)
    # nothing to roll back after a successful upgrade, nor without auto_rollback or an approval
    assert deploy.apply_rollback(run, plan, None, spec, auto=True, after=ok) is deploy.NOT_APPLIED
    assert deploy.apply_rollback(run, plan, None, spec, auto=False,
                                 after=deploy.ApplyResult(applied=True, ok=False)) is deploy.NOT_APPLIED
    assert deploy.apply_rollback(run, None, None, spec, auto=True) is deploy.NOT_APPLIED


def test_an_approval_naming_no_plan_of_this_run_is_refused():
    plan = plans.Plan([plans.Change(operation="patch", kind="ConfigMap", namespace="a", name="c", body={"x": 1})])
    stale = parameters.MutatingParams(approve_plan="0123456789ab", dry_run=False)
    with pytest.raises(errors.PlanMismatch, match="0123456789ab"):
        rb.Run("provision-service", stale).check_approval(plan, None)
    approved = parameters.MutatingParams(approve_plan=plan.id, dry_run=False)
    rb.Run("provision-service", approved).check_approval(plan, None)
