"""Reports in object storage: `runbooks run --output-dir s3://BUCKET/PREFIX` against an S3 server the
test starts (moto in server mode, on a free loopback port), with the real s3fs client in the product
and the real boto3 client in the test; `runbooks runs --from s3://…`; the preflight's exit 2."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from runbooks.cli import main

from helpers import HttpReceiver, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
pytestmark = pytest.mark.timeout(180)
KEY_ID, SECRET_KEY = "AKIDTESTONLY0000", "kr-test-secret-access-key-0123456789"


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(s3_server):
    """The standard AWS variables only: the product is given no other way to reach the bucket."""
    return {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull, "AWS_PROFILE": None,
            "AWS_SESSION_TOKEN": None}


@pytest.fixture
def s3(aws_env):
    import boto3

    return boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY)


@pytest.fixture
def bucket(s3):
    name = f"reports-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    return name


def keys(s3, bucket, prefix=""):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def read_json(s3, bucket, key):
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    for env in ("test", "a", "b"):
        (root / "parameters" / env).mkdir(parents=True)
    (root / "notebooks").mkdir()
    return root


def invoke(project, *args, env=None, notebooks=True):
    pre = ["--project-dir", str(project)] + (["--notebooks-dir", str(FIXTURES)] if notebooks else [])
    return CliRunner().invoke(main, [*pre, *args], env=env, catch_exceptions=False)


def local_runs(project):
    return list((project / "outputs").glob("*/*/*/summary.json"))


@pytest.mark.notebook
def test_a_run_is_uploaded_with_its_index_entry_and_runs_lists_the_fleet(project, aws_env, s3, bucket):
    url = f"s3://{bucket}/fleet"
    first = invoke(project, "run", "findings", "--env", "a", "-p", "worst", "critical", "--output-dir", url,
                   "--report-base-url", "https://reports.example.org/fleet/", env=aws_env)
    assert first.exit_code == 1, first.output
    second = invoke(project, "run", "trivial", "--env", "b", "--output-dir", url, env=aws_env)
    assert second.exit_code == 0, second.output

    found = keys(s3, bucket)
    [entry_a] = [k for k in found if k.startswith("fleet/_index/a/findings/")]
    run_id = entry_a.rsplit("/", 1)[1].removesuffix(".json")
    run = f"fleet/a/findings/{run_id}"
    assert {k for k in found if k.startswith(run + "/")} == {
        f"{run}/findings.ipynb", f"{run}/report.html", f"{run}/summary.json"}
    assert any(k.startswith("fleet/_index/b/trivial/") for k in found)
    summary = read_json(s3, bucket, f"{run}/summary.json")
    assert summary["status"] == "findings" and summary["location"] == f"s3://{bucket}/{run}"
    assert summary["report_url"] == f"https://reports.example.org/fleet/a/findings/{run_id}/report.html"
    assert f"run directory: s3://{bucket}/{run}" in first.output
    assert f"report: {summary['report_url']}" in first.output
    head = s3.head_object(Bucket=bucket, Key=f"{run}/report.html")
    assert head["ContentType"] == "text/html"
    entry = read_json(s3, bucket, entry_a)
    assert entry["path"] == f"a/findings/{run_id}" and entry["counts"]["critical"] == 1 and entry["exit_code"] == 1
    assert "findings" not in entry and "parameters" not in entry  # the index stays small
    assert local_runs(project) == []  # nothing left behind locally
    assert KEY_ID not in first.output + second.output and SECRET_KEY not in first.output

    listed = invoke(project, "runs", "--from", url, env=aws_env)
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if "/" in line and "index:" not in line]
    assert [line.split()[-1].rsplit("/", 1)[0] for line in lines] == ["b/trivial", "a/findings"]
    assert lines[1].split()[-1] == f"a/findings/{run_id}"
    assert "findings exit 1 1 critical" in " ".join(listed.output.split())
    assert f"index: s3://{bucket}/fleet/index.html" in listed.output
    index = s3.get_object(Bucket=bucket, Key="fleet/index.html")["Body"].read().decode()
    assert f"a/findings/{run_id}/report.html" in index and "b/trivial/" in index
    only_a = invoke(project, "runs", "--from", url, "--env", "a", env=aws_env)
    assert "b/trivial" not in only_a.output and f"a/findings/{run_id}" in only_a.output


def test_a_missing_bucket_or_a_bad_url_exits_2_before_a_kernel_starts(project, aws_env, s3):
    cases = {
        "s3://no-such-bucket-kr/x": "bucket 'no-such-bucket-kr' does not exist",
        "ftp://host/x": "ftp:// is not supported; allowed: a directory, or s3://, gs://",
        "s3:///x": "'' is not a bucket name",
        "s3://bkt/../x": "'.' and '..' are not allowed",
        f"s3://{KEY_ID}:{SECRET_KEY}@bucket/x": "no query, fragment or credentials in the URL",
    }
    for url, message in cases.items():
        result = invoke(project, "run", "trivial", "--env", "test", "--output-dir", url, env=aws_env)
        assert result.exit_code == 2, (url, result.output)
        assert message in result.output, (url, result.output)
        assert SECRET_KEY not in result.output
    assert local_runs(project) == [] and not (project / "outputs").exists()
    listed = invoke(project, "runs", "--from", "s3://no-such-bucket-kr/x", env=aws_env)
    assert listed.exit_code == 2 and "no-such-bucket-kr" in listed.output


def test_missing_credentials_exit_2_naming_the_standard_chain(project, aws_env, bucket):
    env = {**aws_env, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    result = invoke(project, "run", "trivial", "--env", "test", "--output-dir", f"s3://{bucket}/x", env=env)
    assert result.exit_code == 2, result.output
    assert f"--output-dir 's3://{bucket}/x': no credentials found in the AWS credential chain" in result.output


@pytest.mark.parametrize("url, extra, package", [
    ("gs://reports/x", "gcs", "gcsfs"),
    ("abs://acct.blob.core.windows.net/reports/x", "azure", "adlfs"),
])
def test_other_providers_name_the_extra_to_install(project, url, extra, package):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    result = invoke(project, "run", "trivial", "--env", "test", "--output-dir", url)
    assert result.exit_code == 2, result.output
    assert f"pip install 'kube-runbooks[{extra}]' (it brings {package})" in result.output


@pytest.mark.notebook
def test_notify_on_change_reads_the_previous_run_from_the_bucket(project, aws_env, s3, bucket):
    receiver = HttpReceiver()
    try:
        env = {**aws_env, "RUNBOOKS_WEBHOOK_URL": f"{receiver.base}/hook"}
        url = f"s3://{bucket}/p"
        for worst in ("critical", "critical", "info"):
            result = invoke(project, "run", "findings", "--env", "test", "-p", "worst", worst, "--output-dir", url,
                            "--notify", "webhook", "--notify-on", "change", "--notify-min-severity", "critical",
                            env=env)
            assert result.exit_code in (0, 1), result.output
        posted = receiver.bodies("/hook")
        assert [(p["status"], p["change"]) for p in posted] == [
            ("firing", "first run: critical"), ("resolved", "critical -> ok")]
        assert posted[0]["run_dir"].startswith(f"s3://{bucket}/p/test/findings/")
        entries = keys(s3, bucket, "p/_index/test/findings/")
        second = entries[1].rsplit("/", 1)[1].removesuffix(".json")
        stored = read_json(s3, bucket, f"p/test/findings/{second}/summary.json")
        assert stored["notifications"][0]["skipped"].startswith("no change: critical")
    finally:
        receiver.stop()


@pytest.mark.notebook
@pytest.mark.timeout(900)
def test_the_notebook_goes_up_while_running_and_an_interrupted_run_is_uploaded(project, aws_env, s3, bucket):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({k: v for k, v in aws_env.items() if v is not None})
    env["RUNBOOKS_UPLOAD_INTERVAL"] = "0.5"
    # the cell sleeps far longer than any wait below, so the run is still going whenever the test
    # looks (a loaded machine may take minutes to start the kernel); SIGTERM ends it long before
    sleeping = 3600
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbooks.cli", "--project-dir", str(project), "--notebooks-dir", str(FIXTURES),
         "run", "sleep", "--env", "test", "-p", "seconds", str(sleeping), "--output-dir", f"s3://{bucket}/live",
         "--no-progress"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        def notebook_in_bucket():
            found = [k for k in keys(s3, bucket, "live/") if k.endswith("/sleep.ipynb")]
            assert proc.poll() is None, "the run ended before its notebook was uploaded"
            if not found:
                return None
            text = s3.get_object(Bucket=bucket, Key=found[0])["Body"].read().decode()
            return found[0] if "injected-parameters" in text else None  # papermill's copy, not the source

        try:
            key = wait_for(notebook_in_bucket, timeout=300, interval=0.5, what="the running notebook in the bucket")
        except AssertionError as exc:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"{exc}; objects: {keys(s3, bucket)}; stderr: {err[-3000:]}") from exc
        assert not any(k.endswith("summary.json") for k in keys(s3, bucket, "live/"))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)  # interrupted: long before the cell's sleep would end
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 3, out + err
    run = key.rsplit("/", 1)[0]
    summary = read_json(s3, bucket, f"{run}/summary.json")
    # SIGTERM lands in the kernel's start-up or in the sleeping cell: either way the run stops, failed
    assert summary["status"] == "failed" and summary["error"]["kind"] in ("interrupted", "crashed")
    assert any(k.startswith("live/_index/test/sleep/") for k in keys(s3, bucket))
    assert f"run directory: s3://{bucket}/{run}" in out


@pytest.mark.notebook
@pytest.mark.timeout(300)
def test_cluster_health_from_the_sandbox_to_the_bucket_and_slack(sandbox_env, aws_env, s3, bucket):
    slack = HttpReceiver()
    try:
        env = {**aws_env, "RUNBOOKS_SLACK_WEBHOOK_URL": f"{slack.base}/services/T0/B0/x",
               "RUNBOOKS_REPORT_BASE_URL": f"https://reports.example.org/{bucket}"}
        result = invoke(sandbox_env, "run", "cluster-health", "--env", "sandbox", "--output-dir", f"s3://{bucket}",
                        "--notify", "slack", "--notify-on", "severity", "--notify-min-severity", "critical",
                        env=env, notebooks=False)
        assert result.exit_code == 1, result.output  # the sandbox's planted critical findings
        [entry_key] = keys(s3, bucket, "_index/sandbox/cluster-health/")
        entry = read_json(s3, bucket, entry_key)
        run = entry["path"]
        assert f"{run}/report.html" in keys(s3, bucket, run)
        [message] = slack.bodies()
        blocks = message["blocks"]
        assert len(blocks) <= 50 and blocks[0]["text"]["text"] == "cluster-health on sandbox: findings"
        fields = " ".join(f["text"] for b in blocks for f in b.get("fields", []))
        assert f"{entry['counts']['critical']} critical" in fields and "*Cluster*" in fields
        [button] = [b["accessory"] for b in blocks if "accessory" in b]
        assert button["url"] == f"https://reports.example.org/{bucket}/{run}/report.html"
        summary = read_json(s3, bucket, f"{run}/summary.json")
        assert summary["notifications"] == [{"kind": "slack", "sent": True}]
        assert not list((sandbox_env / "outputs").glob("*/*/*/summary.json"))
    finally:
        slack.stop()


def test_urls_name_bucket_and_prefix():
    from runbooks import storage

    store = storage.open_store("s3://reports//fleet/prod/")
    assert (store.url, store.bucket, store.root) == ("s3://reports/fleet/prod", "reports", "fleet/prod")
    assert store.path("a/b/c") == "reports/fleet/prod/a/b/c" and store.url_of("a") == "s3://reports/fleet/prod/a"
    bare = storage.open_store("s3://reports")
    assert (bare.url, bare.root, bare.path("x")) == ("s3://reports", "", "reports/x")
    assert storage.is_url("s3://x/y") and not storage.is_url("outputs") and not storage.is_url(None)
    assert storage.run_order("20260101T000000Z-10") > storage.run_order("20260101T000000Z-2") \
        > storage.run_order("20260101T000000Z")
