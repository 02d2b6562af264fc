"""End to end: the chart's scheduled cluster-health fires from its CronJob in the sandbox.

`helm install charts/kube-runbooks` into the sandbox (CronJobs, RBAC, NetworkPolicy), with the
sandbox's process runtime (runbooks_sandbox/podrunner.py) running pods of the kube-runbooks
image as local processes of the installed `runbooks`: the CronJob controller makes the Job at
the next minute, the Job controller its pod, and the pod's command runs with the pod's env,
its ServiceAccount's token and the sandbox CA mounted where in-cluster config reads them and
KUBERNETES_SERVICE_HOST/PORT pointing at the sandbox. The test follows it to the end: the Job
fails as a cluster-health with critical findings must (exit 1), the pod reports exit code 1
and its log, the API server's audit shows the requests came from the CronJob's
ServiceAccount, the report and summary are in the bucket (an S3-protocol server, moto, with
the credentials from a Secret), and the Slack message (URL from the Secret, not a parameter)
reached a local receiver with the link to the report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from runbooks import deploy, errors
from runbooks_sandbox import stack
from runbooks_sandbox.podrunner import PodRunnerAddon, parse_run_image

from helpers import HttpReceiver, wait_for

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kube-runbooks"
IMAGE = "localhost/kube-runbooks"
pytestmark = [pytest.mark.timeout(420)]


def _helm_or_none():
    try:
        return deploy.find_helm()
    except errors.PreflightFailed:
        return None


HELM = _helm_or_none()


KEY_ID, SECRET_KEY = "AKIDSCHEDULEDTEST", "kr-scheduled-test-secret-access-key-0123"


@pytest.fixture
def bucket():
    """An S3-protocol server (moto in server mode) on a free loopback port, and a bucket in it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=KEY_ID,
                      aws_secret_access_key=SECRET_KEY)
    name = f"reports-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield url, s3, name
    server.stop()


@pytest.fixture
def slack():
    receiver = HttpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def runtime(sandbox):
    """The sandbox's process runtime for the kube-runbooks image (`runbooks sandbox up --run-image`)."""
    addon = PodRunnerAddon(sandbox, dict([parse_run_image(IMAGE)]))
    addon.start()
    yield addon.runner
    addon.stop()


def test_sandbox_up_refuses_a_bad_run_image(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runbooks.cli", "sandbox", "up", "--state-dir", str(tmp_path),
                           "--run-image", "kube-runbooks=/no/such/dir"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "'/no/such/dir' is not a directory" in proc.stderr, proc.stderr
    assert not (tmp_path / "state.json").exists()  # nothing started


def test_run_image_names_what_it_expects():
    assert parse_run_image("localhost/kube-runbooks:1.2") == ("localhost/kube-runbooks", str(Path(sys.executable).parent))
    with pytest.raises(ValueError, match="REPOSITORY"):
        parse_run_image("=bin")
    with pytest.raises(ValueError, match="is not a directory"):
        parse_run_image("kube-runbooks=/no/such/dir")


@pytest.mark.notebook
@pytest.mark.skipif(HELM is None, reason="Helm 4 is not installed (python tools/install_helm.py)")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) (util-linux) is not installed")
def test_a_scheduled_cluster_health_fires_authenticates_reports_and_notifies(
        sandbox, namespace, tmp_path, bucket, slack, runtime, monkeypatch):
    endpoint, s3, bucket_name = bucket
    api = config.new_client_from_config(str(sandbox.kubeconfig), context="sandbox")
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "kube-runbooks"}, "stringData": {
        "slack-webhook-url": f"{slack.base}/services/T0/B0/scheduled"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "reports-bucket"}, "stringData": {
        "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}})
    env = {k: v for k, v in stack.env_settings(sandbox).items()
           if k not in ("kubeconfig", "kube_context", "expected_context")}  # in-cluster config
    values = {
        "image": {"repository": IMAGE, "tag": "test"},
        "env": "sandbox", "envConfig": env,
        "serve": {"enabled": False},
        "schedules": {
            "outputDir": f"s3://{bucket_name}/scheduled", "notify": ["slack"],
            "env": [{"name": "AWS_ENDPOINT_URL", "value": endpoint}, {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
                    {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
                    {"name": "RUNBOOKS_REPORT_BASE_URL", "value": f"https://reports.example.org/{bucket_name}/scheduled"}],
            "envFromSecret": "reports-bucket",
            "runbooks": {"cluster-health": {"schedule": "* * * * *"}}},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    release = f"kr-{uuid.uuid4().hex[:6]}"
    kube = ["--kubeconfig", str(sandbox.kubeconfig), "--kube-context", "sandbox", "--namespace", namespace]
    proc = subprocess.run([HELM, "install", release, str(CHART), "-f", str(tmp_path / "values.yaml"), *kube],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    try:
        [cj] = batch.list_namespaced_cron_job(namespace).items
        assert cj.spec.concurrency_policy == "Forbid" and cj.spec.schedule == "* * * * *"
        assert len(client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items) == 1
        account = cj.spec.job_template.spec.template.spec.service_account_name
        assert account == f"{release}-read-secrets"
        sandbox.api.audit = []

        def finished_job():
            for job in batch.list_namespaced_job(namespace).items:
                if any(c.type in ("Complete", "Failed") and c.status == "True" for c in job.status.conditions or []):
                    return job
            return None

        job = wait_for(finished_job, timeout=300, interval=1.0, what="the CronJob's Job to finish")
        user = f"system:serviceaccount:{namespace}:{account}"
        audit, sandbox.api.audit = sandbox.api.audit, None
        assert job.metadata.owner_references[0].name == cj.metadata.name
        assert [c.reason for c in job.status.conditions if c.type == "Failed"] == ["BackoffLimitExceeded"]
        [pod] = core.list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}").items
        state = pod.status.container_statuses[0].state.terminated
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace, container="runbook")
        assert pod.status.phase == "Failed" and state.exit_code == 1, log  # planted critical findings
        assert "cluster-health on sandbox: findings (exit 1)" in log
        mine = [a for a in audit if a["user"] == user and "resource" in a]
        assert {("list", "nodes"), ("list", "pods")} <= {(a["verb"], a["resource"]) for a in mine}
        assert all(a["allowed"] for a in mine)
        listed = s3.list_objects_v2(Bucket=bucket_name, Prefix="scheduled/").get("Contents") or []
        names = [o["Key"] for o in listed]
        [summary_key] = [k for k in names if k.endswith("/summary.json") and "/_index/" not in k and "_index" not in k]
        run = summary_key.rsplit("/", 1)[0]
        assert f"{run}/report.html" in names
        summary = json.loads(s3.get_object(Bucket=bucket_name, Key=summary_key)["Body"].read())
        assert summary["exit_code"] == 1 and summary["kube_context"] == "in-cluster"
        assert summary["notifications"] == [{"kind": "slack", "sent": True}]
        [message] = slack.bodies()
        assert message["blocks"][0]["text"]["text"] == "cluster-health on sandbox: findings"
        [button] = [b["accessory"] for b in message["blocks"] if "accessory" in b]
        assert button["url"] == f"https://reports.example.org/{bucket_name}/{run}/report.html"
        token = (runtime.pod_dir(pod.to_dict()) / "rootfs" / "var/run/secrets/kubernetes.io/serviceaccount/token")
        text = json.dumps(message)
        for secret in (token.read_text(), SECRET_KEY):
            assert secret not in text and secret not in log
    finally:
        sandbox.api.audit = None
        subprocess.run([HELM, "uninstall", release, *kube], capture_output=True, text=True, timeout=120)
