"""runbooks.kube against the sandbox: connecting, errors, rollout history, pods of a workload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from runbooks import kube, rollouts
from runbooks.errors import Forbidden, InvalidInput, NotFound, Unavailable

from helpers import wait_for


def test_connect_refuses_missing_file_and_unknown_context(sandbox, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        kube.connect(str(tmp_path / "nope"))
    with pytest.raises(InvalidInput, match="'prod' is not in kubeconfig"):
        kube.connect(str(sandbox.kubeconfig), "prod")


def test_errors_are_translated(sandbox, cluster, tmp_path):
    with pytest.raises(NotFound, match='deployments.apps "nope" not found'):
        kube.get_object(cluster, "deployments", "shop", "nope")
    bad = yaml.safe_load(sandbox.kubeconfig.read_text())
    bad["users"][0]["user"]["token"] = "not-the-token"
    path = tmp_path / "bad-token"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(Forbidden, match="refused the credentials"):
        kube.check_api(kube.connect(str(path), "sandbox"))
    bad["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(Unavailable):
        kube.check_api(kube.connect(str(path), "sandbox"), timeout=2)


def test_rollout_history_of_checkout(sandbox, cluster):
    history = rollouts.rollout_history(cluster, "shop", "checkout")
    assert [r["revision"] for r in history] == [6, 7]
    old, new = history
    assert old["images"][0].endswith(":1.8.2") and new["images"][0].endswith(":1.9.0")
    assert old["replicas"] == 3 and old["ready"] == 3 and new["ready"] == 0
    age = sandbox.started - new["created"]  # "two hours ago" when the scenario started, however long the session
    assert timedelta(hours=1, minutes=55) < age < timedelta(hours=2, minutes=5)


def test_workload_pods_carry_revision_and_failure(cluster):
    def waiting() -> dict[int, list[dict]] | None:
        """Pods by revision, once revision 7's pod waits to restart (between its crashes it runs)."""
        out: dict[int, list[dict]] = {}
        for p in rollouts.workload_pods(cluster, "shop", "checkout"):
            out.setdefault(p["revision"], []).append(p)
        return out if any(p["waiting_reason"] for p in out.get(7, [])) else None

    by_rev = wait_for(waiting, timeout=300, interval=1, what="revision 7's pod waiting to restart")
    assert len(by_rev[6]) == 3 and all(p["ready"] and p["restarts"] == 0 for p in by_rev[6])
    (bad,) = by_rev[7]
    assert bad["waiting_reason"] == "CrashLoopBackOff" and bad["last_termination_reason"] == "OOMKilled"
    assert bad["restarts"] > 10


def test_last_modified_comes_from_managed_fields(cluster, namespace):
    cluster.core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    obj = kube.get_object(cluster, "configmaps", namespace, "cfg")
    assert abs((rollouts.last_modified(obj) - datetime.now(UTC)).total_seconds()) < 30


def test_unknown_resource_names_the_known_ones(cluster):
    with pytest.raises(InvalidInput, match="not known"):
        list(kube.iter_objects(cluster, "widgets"))


def test_read_ahead_keeps_order_raises_where_the_error_was_and_stops_when_closed():
    import threading

    from runbooks import readahead as k

    assert list(k.read_ahead(iter([[1], [2, 3], [4]]))) == [[1], [2, 3], [4]]

    def failing():
        yield [1]
        raise Unavailable("the API server went away")

    got = []
    with pytest.raises(Unavailable, match="went away"):
        for page in k.read_ahead(failing()):
            got.append(page)
    assert got == [[1]]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield [i]
            i += 1

    reader = k.read_ahead(endless(), depth=2)
    assert next(reader) == [0]
    reader.close()  # the thread stops: at most depth + 2 pages were ever fetched
    assert not any(t.name == "kube-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(produced) <= 4
