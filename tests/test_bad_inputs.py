"""Bad input always exits 2, names the parameter and what is allowed, shows no traceback and
changes nothing, for every runbook and the CLI (validated in execute.prepare, before any kernel)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from runbooks import kube
from runbooks.cli import main

BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
        'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
        'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n')
LONG = "a" * 64

CH, II, CR, PS = "cluster-health", "incident-investigation", "certificate-rotation", "provision-service"

# (id, runbook, extra arguments, texts the message must hold: the parameter, then what is allowed)
CASES = [
    # the CLI itself
    ("unknown runbook", "nope", [], ["unknown runbook 'nope'", "known runbooks"]),
    ("unknown env", CH, ["--env", "prod"], ["unknown env 'prod'", "known envs: sandbox"]),
    ("timeout zero", CH, ["--timeout", "0"], ["--timeout 0", "from 1 to 86400"]),
    ("timeout huge", CH, ["--timeout", "99999999999999"], ["--timeout 99999999999999", "from 1 to 86400"]),
    ("output dir is a file", CH, ["--output-dir", "TMP/file"], ["--output-dir", "is not a directory"]),
    ("approve not an id", II, ["--approve", "xyz"], ["--approve 'xyz'", "12 hex digits"]),
    ("approve read-only runbook", CH, ["--approve", "0123456789ab"], ["approve_plan", "changes nothing"]),
    ("guard from -p", II, ["-p", "expected_context", "sandbox"], ["expected_context", "env.yaml only"]),
    ("guard from -f", II, ["-f", "TMP/guard.yaml"], ["expected_context", "env.yaml only"]),
    ("missing -f", CH, ["-f", "TMP/none.yaml"], ["none.yaml", "cannot be read"]),
    ("yaml bomb -f", CH, ["-f", "TMP/bomb.yaml"], ["bomb.yaml", "more than 10000 values"]),
    ("yaml bomb -p", CH, ["-p", "namespaces", "TMP-BOMB"], ["-p namespaces", "more than 10000 values"]),
    ("-f not a mapping", CH, ["-f", "TMP/list.yaml"], ["list.yaml", "must be a mapping"]),
    ("-f not yaml", CH, ["-f", "TMP/broken.yaml"], ["broken.yaml", "not valid YAML"]),
    ("huge -p value", II, ["-p", "silence_comment", "x" * 70000], ["-p silence_comment", "64 KiB"]),
    ("secret name", CH, ["-p", "password", "hunter2hunter2"], ["'password'", "looks like a credential"]),
    ("unknown name", CH, ["-p", "nosuch", "hunter2hunter2"], ["'nosuch'", "known parameters"]),
    ("secret-looking unknown name", CH, ["-p", "dbpass", "hunter2hunter2"], ["'dbpass'", "looks like a credential"]),
    ("pw", CH, ["-p", "pw", "hunter2hunter2"], ["'pw'", "looks like a credential"]),
    ("auth header", CH, ["-p", "auth_header", "Bearer hunter2hunter2"], ["'auth_header'", "looks like a credential"]),
    ("kubeconfig not a kubeconfig", CH, ["-p", "kubeconfig", "TMP/list.yaml"], ["list.yaml", "cannot be read"]),
    ("kubeconfig missing", CH, ["-p", "kubeconfig", "TMP/none"], ["kubeconfig", "does not exist"]),
    ("unknown context", CH, ["-p", "kube_context", "staging"], ["context 'staging'", "available: sandbox"]),
    ("a key file as notebook", "TMP/some.key", [], ["some.key", "allowed are a runbook name or a .ipynb"]),
    # cluster-health
    ("ch missing namespace", CH, ["-p", "namespaces", "[shpo]"], ["'shpo'", "does not exist"]),
    ("ch bad namespace", CH, ["-p", "namespaces", "[Shop]"], ["'Shop'", "RFC 1123"]),
    ("ch long namespace", CH, ["-p", "namespaces", f"[{LONG}]"], [LONG, "at most 63 characters"]),
    ("ch namespace newline", CH, ["-p", "namespaces", '["shop\\n"]'], ["'namespaces'", "one line"]),
    ("ch threshold bool", CH, ["-p", "restart_threshold", "true"], ["'restart_threshold'", "a number"]),
    ("ch threshold zero", CH, ["-p", "restart_threshold", "0"], ["'restart_threshold'", ">= 1"]),
    ("ch threshold text", CH, ["-p", "restart_threshold", "lots"], ["'restart_threshold'", "int"]),
    ("ch pending negative", CH, ["-p", "pending_minutes", "-1"], ["'pending_minutes'", ">= 0"]),
    ("ch window zero", CH, ["-p", "event_window_hours", "0"], ["'event_window_hours'", ">= 1"]),
    ("ch window huge", CH, ["-p", "event_window_hours", "100000"], ["'event_window_hours'", "<= 720"]),
    ("ch days text", CH, ["-p", "cert_warning_days", "soon"], ["'cert_warning_days'", "int"]),
    ("ch critical > warning", CH, ["-p", "cert_critical_days", "40"], ["cert_critical_days=40",
                                                                        "must not exceed"]),
    # incident-investigation
    ("ii missing namespace", II, ["-p", "namespace", "shpo"], ["'shpo'", "does not exist"]),
    ("ii long namespace", II, ["-p", "namespace", LONG], ["'namespace'", "the limit is 63"]),
    ("ii bad namespace", II, ["-p", "namespace", "Shop"], ["'namespace'", "RFC 1123"]),
    ("ii bad service", II, ["-p", "service", "check out"], ["'service'", "RFC 1123"]),
    ("ii service newline", II, ["-p", "service", "checkout\n"], ["'service'", "one line"]),
    ("ii lookback zero", II, ["-p", "lookback", "0m"], ["'lookback'", "positive duration"]),
    ("ii lookback text", II, ["-p", "lookback", "a while"], ["'lookback'", "30s, 5m"]),
    ("ii silence 90d", II, ["-p", "silence_duration", "90d"], ["'silence_duration'", "30d"]),
    ("ii comment long", II, ["-p", "silence_comment", "x" * 2000], ["'silence_comment'", "at most 1000"]),
    ("ii comment empty", II, ["-p", "silence_comment", ""], ["'silence_comment'", "at least 1"]),
    ("ii ingress regex", II, ["-p", "ingress", "("], ["ingress '('", "regular expression"]),
    ("ii alert name", II, ["-p", "alert_name", "\\"], ["alert_name", "letters, digits"]),
    ("ii log index", II, ["-p", "log_index", "a b"], ["log_index 'a b'", "index pattern"]),
    ("ii mitigation", II, ["-p", "mitigation", "reboot"], ["'mitigation'", "'rollback'"]),
    ("ii revision zero", II, ["-p", "rollback_to_revision", "0"], ["'rollback_to_revision'", ">= 1"]),
    ("ii revision bool", II, ["-p", "rollback_to_revision", "true"], ["'rollback_to_revision'", "a number"]),
    ("ii rollout window", II, ["-p", "rollout_window_minutes", "0"], ["'rollout_window_minutes'", ">= 1"]),
    ("ii start text", II, ["-p", "start", "yesterday"], ["start='yesterday'", "ISO 8601"]),
    ("ii start after end", II, ["-p", "start", "2026-01-02T00:00:00Z", "-p", "end", "2026-01-01T00:00:00Z"],
     ["start 2026-01-02", "must be before end"]),
    ("ii window too long", II, ["-p", "lookback", "60d"], ["window", "longer than 31 days"]),
    ("ii url scheme", II, ["-p", "prometheus_url", "ftp://x"], ["prometheus_url 'ftp://x'", "http(s) URL"]),
    ("ii url credentials", II, ["-p", "alertmanager_url", "http://u:p@127.0.0.1:9"], ["alertmanager_url",
                                                                                     "without credentials"]),
    ("ii unknown query", II, ["-p", "queries", "{nope: up}"], ["'queries'", "known:"]),
    ("ii verify_tls", II, ["-p", "verify_tls", "perhaps"], ["'verify_tls'", "bool"]),
    ("ii approve without apply", II, ["-p", "approve_plan", "0123456789ab"], ["approve_plan", "dry_run=False"]),
    # provision-service
    ("ps release", PS, ["-p", "release", "Web"], ["release 'Web'", "RFC 1123"]),
    ("ps release newline", PS, ["-p", "release", "web\nx"], ["'release'", "one line"]),
    ("ps host", PS, ["-p", "host", "bad host"], ["host 'bad host'", "DNS name"]),
    ("ps host newline", PS, ["-p", "host", "web.example.com\n"], ["'host'", "one line"]),
    ("ps image without tag", PS, ["-p", "image", "nginx"], ["image 'nginx'", "has no tag"]),
    ("ps replicas", PS, ["-p", "replicas", "-1"], ["'replicas'", ">= 0"]),
    ("ps replicas bool", PS, ["-p", "replicas", "true"], ["'replicas'", "a number"]),
    ("ps port", PS, ["-p", "port", "70000"], ["'port'", "<= 65535"]),
    ("ps secret config key", PS, ["-p", "config", "{DB_PASSWORD: x}"], ["DB_PASSWORD", "vault_keys"]),
    ("ps values outside", PS, ["-p", "values_files", "[/etc/shadow]"], ["/etc/shadow", "outside the project"]),
    ("ps quantity", PS, ["-p", "resources", "{limits: {memory: lots}}"], ["'resources'", "lots"]),
    ("ps vault env", PS, ["-p", "vault_password_env", "hunter 2"], ["vault_password_env", "variable name"]),
    ("ps timeout", PS, ["-p", "timeout_seconds", "5"], ["'timeout_seconds'", ">= 10"]),
    ("ps long namespace", PS, ["-p", "namespace", LONG], ["'namespace'", "at most 63"]),
    ("ps annotation key", PS, ["-p", "pod_annotations", "{'bad key': x}"], ["annotation keys", "bad key"]),
    # certificate-rotation
    ("cr empty internal domain", CR, ["-p", "internal_domains", "['']"], ["internal domain ''", "domain suffix"]),
    ("cr certificate ref", CR, ["-p", "certificates", "[nope]"], ["'certificates'", "namespace/name"]),
    ("cr missing namespace", CR, ["-p", "namespaces", "[shpo]"], ["'shpo'", "does not exist"]),
    ("cr probe timeout", CR, ["-p", "probe_timeout_seconds", "0"], ["'probe_timeout_seconds'", "> 0"]),
    ("cr concurrency", CR, ["-p", "probe_concurrency", "1000"], ["'probe_concurrency'", "<= 256"]),
    ("cr ingress url", CR, ["-p", "ingress_url", "not a url"], ["ingress_url 'not a url'", "https://host"]),
    ("cr critical > warning", CR, ["-p", "critical_days", "40"], ["critical_days=40", "must not exceed"]),
    ("cr controller ref", CR, ["-p", "ingress_controller", "x"], ["'ingress_controller'", "namespace/name"]),
]


def state(cluster) -> dict:
    """What a runbook could change: Deployments' specs, Secrets, Certificates' specs, namespaces."""
    out = {}
    for d in kube.iter_objects(cluster, "deployments"):
        out[("Deployment", d["metadata"]["namespace"], d["metadata"]["name"])] = d["metadata"].get("generation")
    for s in kube.iter_objects(cluster, "secrets"):
        out[("Secret", s["metadata"]["namespace"], s["metadata"]["name"])] = s["metadata"]["resourceVersion"]
    for c in kube.iter_objects(cluster, "certificates"):
        out[("Certificate", c["metadata"]["namespace"], c["metadata"]["name"])] = c["metadata"].get("generation")
    for n in kube.iter_objects(cluster, "namespaces"):
        out[("Namespace", n["metadata"]["name"])] = n["metadata"].get("uid")
    return out


def test_there_are_at_least_60_cases_across_every_runbook():
    assert len(CASES) >= 60
    assert {CH, II, CR, PS} <= {c[1] for c in CASES}


@pytest.fixture(scope="module")
def before(sandbox):
    return state(kube.connect(str(sandbox.kubeconfig), "sandbox"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("case", "runbook", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_it_and_changes_nothing(sandbox_env, cluster, before, tmp_path,
                                                         case, runbook, args, expected):
    (tmp_path / "file").write_text("x")
    (tmp_path / "guard.yaml").write_text("expected_context: sandbox\n")
    (tmp_path / "bomb.yaml").write_text(BOMB)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "broken.yaml").write_text("a: [unclosed\n")
    (tmp_path / "some.key").write_text("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB0123456789\n")
    bomb_value = "[" + BOMB.replace("\n", ", ").replace("a: &a", "&a").rstrip(", ") + "]"
    bomb_value = ("[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
                  "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], "
                  "&f [*e,*e,*e,*e,*e,*e,*e,*e,*e], [*f,*f,*f,*f,*f,*f,*f,*f,*f]]")
    args = [bomb_value if a == "TMP-BOMB" else a.replace("TMP/", f"{tmp_path}/") for a in args]
    runbook = runbook.replace("TMP/", f"{tmp_path}/")
    env = [] if "--env" in args else ["--env", "sandbox"]
    result = CliRunner().invoke(main, ["--project-dir", str(sandbox_env), "run", runbook, *env, "--no-progress",
                                       *args], catch_exceptions=False)
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    for text in expected:
        assert text.replace("TMP/", f"{tmp_path}/") in output, (text, output)
    assert "BEGIN EC PRIVATE KEY" not in output and "hunter2hunter2" not in output  # never echo a value
    assert not list((sandbox_env / "outputs").rglob("summary.json"))  # nothing executed
    assert state(cluster) == before  # nothing changed


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("source", "param", "variable"), [
    ("Prometheus", "prometheus_url", "PROMETHEUS_TOKEN"),
    ("Alertmanager", "alertmanager_url", "ALERTMANAGER_PASSWORD"),
    ("Elasticsearch", "elasticsearch_url", "ES_API_KEY"),
])
def test_credentials_never_go_over_plain_http_to_another_host(sandbox_env, source, param, variable):
    extra = {"ALERTMANAGER_USERNAME": "sre"} if variable == "ALERTMANAGER_PASSWORD" else {}
    env = {variable: "s3cr3t-value-0123", **extra}
    result = CliRunner().invoke(main, [
        "--project-dir", str(sandbox_env), "run", II, "--env", "sandbox", "--no-progress",
        "-p", param, "http://192.0.2.10:9000"], env=env, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"{source} at 192.0.2.10 is reached over plain http://" in result.output
    assert variable in result.output and "s3cr3t" not in result.output
    assert not list((sandbox_env / "outputs").rglob("summary.json"))


def test_credentials_over_http_to_loopback_or_https_are_allowed(monkeypatch):
    from runbooks import params

    monkeypatch.setenv("PROMETHEUS_TOKEN", "s3cr3t-value-0123")
    for url in ("http://127.0.0.1:9090", "http://localhost:9090", "http://[::1]:9090", "https://prom.example"):
        params.IncidentParams(prometheus_url=url)
    monkeypatch.delenv("PROMETHEUS_TOKEN")
    params.IncidentParams(prometheus_url="http://prom.example:9090")  # no credentials: nothing to protect


@pytest.mark.timeout(60)
@pytest.mark.parametrize("token", ["foreign-token-0123456789\nrest", "foreign-token-0123456789\x7f"])
def test_a_foreign_kubeconfig_token_is_never_echoed(sandbox_env, sandbox, tmp_path, token):
    import yaml

    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    kc = tmp_path / "foreign"
    kc.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main, ["--project-dir", str(sandbox_env), "run", CH, "--env", "sandbox",
                                       "--no-progress", "-p", "kubeconfig", str(kc)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "foreign-token" not in result.output and "Traceback" not in result.output
    assert "credentials" in result.output
