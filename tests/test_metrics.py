"""metrics.py without a Prometheus: chunk planning, query templates, frames, anomaly detection, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from runbooks import metrics
from runbooks.errors import InvalidInput, Unavailable

T0 = datetime(2026, 3, 1, 12, 0, 7, tzinfo=UTC)
WINDOWS = [timedelta(minutes=5), timedelta(minutes=17), timedelta(hours=1), timedelta(hours=6), timedelta(days=1),
           timedelta(days=3), timedelta(days=7), timedelta(days=12, hours=5), timedelta(days=30)]
STEPS = [None, 1, 5, 15, "30s", timedelta(minutes=1), "5m", "1h"]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("step", STEPS, ids=str)
def test_plan_chunks_stays_under_the_point_limit(window, step):
    start, end = T0, T0 + window
    plan = metrics.plan_chunks(start, end, step)
    assert plan
    step_s = plan[0][2]
    if step is not None:
        assert step_s == metrics.parse_duration(step)
    grid = []
    for cs, ce, st in plan:
        assert st == step_s
        n = metrics.points(cs, ce, st)
        assert 1 <= n <= metrics.MAX_POINTS
        # what Prometheus checks: (end - start) / step must not exceed 11,000
        assert (ce - cs).total_seconds() / st <= 11_000
        grid.extend(cs.timestamp() + i * st for i in range(n))
    # one grid: no duplicates, no gaps, covering the window
    diffs = np.diff(grid)
    assert (diffs == step_s).all()
    assert grid[0] <= start.timestamp() < grid[0] + step_s
    assert end.timestamp() - step_s < grid[-1] <= end.timestamp()
    assert grid[0] % step_s == 0
    if step is None:
        assert len(plan) == 1 and len(grid) <= metrics.TARGET_POINTS


def test_plan_chunks_splits_long_fine_windows():
    plan = metrics.plan_chunks(T0, T0 + timedelta(days=30), 15)
    assert len(plan) == 16  # 172,801 points at 15 s, 11,000 a request
    assert plan[1][0] - plan[0][1] == timedelta(seconds=15)
    small = metrics.plan_chunks(T0, T0 + timedelta(minutes=10), "1s", max_points=100)
    assert len(small) == 7 and all(metrics.points(a, b, s) <= 100 for a, b, s in small)


def test_plan_chunks_rejects_bad_input():
    with pytest.raises(InvalidInput, match="not after"):
        metrics.plan_chunks(T0, T0)
    with pytest.raises(InvalidInput, match="below one second"):
        metrics.plan_chunks(T0, T0 + timedelta(hours=1), 0.2)
    with pytest.raises(InvalidInput, match="not a duration"):
        metrics.plan_chunks(T0, T0 + timedelta(hours=1), "soon")
    with pytest.raises(InvalidInput, match="not a time"):
        metrics.plan_chunks("yesterday", T0)


def test_times_and_durations():
    assert metrics.to_datetime("2026-03-01T12:00:07Z") == T0
    assert metrics.to_datetime(T0.timestamp()) == T0
    assert metrics.to_datetime(datetime(2026, 3, 1, 12, 0, 7)) == T0  # naive = UTC
    assert metrics.parse_duration("1h30m") == 5400
    assert metrics.parse_duration("90") == 90
    assert metrics.format_duration(300) == "5m" and metrics.format_duration(90) == "90s"
    assert metrics.auto_step(6 * 3600) == 15 and metrics.auto_step(30 * 86400) == 1800


def test_render_query_defaults_and_overrides():
    q = metrics.render_query("error_ratio", namespace="shop", service="checkout")
    assert 'namespace="shop", service=~"checkout", ingress=~".+"' in q
    assert 'status=~"5.."' in q and "[5m]" in q and "sum by (namespace, ingress, service)" in q
    q = metrics.render_query("latency_quantile", namespace="shop", service="cart", quantile=0.95, rate_window="2m")
    assert q.startswith("histogram_quantile(0.95, sum by (namespace, ingress, service, le)") and "[2m]" in q
    q = metrics.render_query("memory_ratio", namespace="shop", workload="checkout")
    assert 'pod=~"checkout-(' in q and 'container!="POD"' in q
    custom = {"request_rate": 'sum(rate(http_requests_total{{job="{service}"}}[{rate_window}]))'}
    assert metrics.render_query("request_rate", custom, namespace="shop", service="cart") == \
        'sum(rate(http_requests_total{job="cart"}[5m]))'
    with pytest.raises(InvalidInput, match="needs the parameter 'workload'"):
        metrics.render_query("x", {"x": "{workload}"})
    with pytest.raises(InvalidInput, match="no query named"):
        metrics.render_query("error_rate", namespace="shop", service="cart")
    with pytest.raises(InvalidInput, match="not a Kubernetes name"):
        metrics.render_query("error_ratio", namespace='shop"} or vector(1) #', service="cart")
    with pytest.raises(InvalidInput, match="label names"):
        metrics.render_query("error_ratio", namespace="shop", service="cart", by="ingress) or vector(1")
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        metrics.render_query("latency_quantile", namespace="shop", service="cart", quantile="99")
    q = metrics.render_query("request_rate", namespace="shop", service='a"b')
    assert 'service=~"a\\"b"' in q  # values are escaped for PromQL strings


def test_default_pod_regex_matches_generated_names_only():
    import re

    rx = re.compile(metrics.default_pod_regex("cart"))
    for name in ("cart-85mvnqjqnz-fbstc", "cart-0", "cart-x7k2p", "cart-5d9c7b8f4-2xkzq"):
        assert rx.fullmatch(name), name
    for name in ("cart-worker-7d9f8b6c4-2xkzq", "cartographer-85mvnqjqnz-fbstc", "cart"):
        assert not rx.fullmatch(name), name


def test_frame_is_tidy():
    result = [{"metric": {"pod": "a", "ns": "x"}, "values": [[1700000000, "1"], [1700000015, "NaN"]]},
              {"metric": {"pod": "b"}, "values": [[1700000000, "2.5"]]}]
    df = metrics._frame(result)
    assert list(df.columns) == ["timestamp", "ns", "pod", "value"]
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert df["value"].isna().sum() == 1 and df.loc[2, "value"] == 2.5 and df.loc[2, "ns"] == ""
    empty = metrics._frame([])
    assert list(empty.columns) == ["timestamp", "value"] and len(empty) == 0


def test_api_errors_are_read():
    status, msg = metrics._api_error(
        "HTTP Status Code 400 (b'{\"status\":\"error\",\"errorType\":\"bad_data\",\"error\":\"parse error: x\"}')")
    assert (status, msg) == (400, "parse error: x")
    assert metrics._api_error("boom") == (0, "boom")


def test_unreachable_prometheus_is_unavailable():
    with pytest.raises(Unavailable, match="unreachable"):
        metrics.check("http://127.0.0.1:9")
    with pytest.raises(Unavailable, match="unreachable"):
        metrics.query(metrics.connect("http://127.0.0.1:9", retries=0), "up")
    with pytest.raises(InvalidInput, match="not an http"):
        metrics.connect("127.0.0.1:9090")


def test_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PROMETHEUS_TOKEN", "t0ken")
    assert metrics.connect("https://prom.example.invalid").headers == {"Authorization": "Bearer t0ken"}
    monkeypatch.delenv("PROMETHEUS_TOKEN")
    monkeypatch.setenv("PROMETHEUS_USERNAME", "u")
    monkeypatch.setenv("PROMETHEUS_PASSWORD", "p")
    prom = metrics.connect("https://prom.example.invalid")
    assert prom.auth == ("u", "p") and prom._session.verify is True
    assert metrics.connect("https://x.invalid", verify="/etc/ssl/ca.pem")._session.verify == "/etc/ssl/ca.pem"


# ---- anomaly detection ---------------------------------------------------------------


def _series(values, start=T0, step=30):
    idx = pd.date_range(start, periods=len(values), freq=f"{step}s", tz="UTC")
    return pd.Series(values, index=idx, dtype=float)


def test_detects_a_step_change_and_its_return():
    rng = np.random.default_rng(1)
    v = 0.001 + rng.normal(0, 0.0003, 400).clip(-0.0009)
    v[200:300] += 0.12
    a = metrics.detect_anomaly(_series(v), min_delta=0.01)
    assert a is not None
    assert a.start == T0 + timedelta(seconds=200 * 30)
    assert a.end == T0 + timedelta(seconds=300 * 30)
    assert 200 * 30 <= (a.peak_time - T0).total_seconds() < 300 * 30
    assert a.peak > 0.11 and a.baseline < 0.002 and not a.ongoing
    assert a.to_dict()["start"].startswith("2026-03-01T13:40")


def test_ongoing_anomaly_has_no_end_and_hysteresis_finds_the_first_rise():
    v = np.full(300, 1.0)
    v[150] = 1.3  # the first point already above the noise, below the threshold
    v[151:] = 3.0
    a = metrics.detect_anomaly(_series(v), rel_floor=0.5)
    assert a.start == T0 + timedelta(seconds=150 * 30) and a.end is None and a.ongoing


def test_hysteresis_stops_at_the_noise_the_baseline_itself_shows():
    # a p99 latency: mostly flat, but it jumps a histogram bucket now and then (far beyond its MAD)
    rng = np.random.default_rng(4)

    def p99(n):
        v = 0.5 + rng.normal(0, 0.01, n)
        for i in rng.choice(n - 12, n // 60, replace=False):
            v[i:i + 12] += 0.2  # a few minutes in the next bucket
        return v

    base = _series(p99(1440), start=T0 - timedelta(seconds=1440 * 15), step=15)
    v = p99(1440)
    v[1000:1024] = 0.5 + 0.2 + rng.normal(0, 0.01, 24)  # such a jump just before the incident
    v[1024:] = 9.5 + rng.normal(0, 0.2, 416)  # the incident: requests wait 5 s and more
    a = metrics.detect_anomaly(_series(v, step=15), base, rel_floor=0.5)
    assert a.start == T0 + timedelta(seconds=1024 * 15), a  # not 6 minutes earlier, at the jump


def test_a_level_wandering_over_the_threshold_before_the_change_is_not_its_start():
    # p99 from a quieter baseline (0.5 s: threshold 0.75 s); in the window, as traffic rises, it
    # sits at 0.70-0.77 s, over the threshold for a few points at a time, then the incident
    base = _series(0.5 + np.random.default_rng(5).normal(0, 0.01, 1440), start=T0 - timedelta(seconds=1440 * 15),
                   step=15)
    v = np.full(1440, 0.5)
    v[990:1024] = np.tile([0.77, 0.76, 0.77, 0.72, 0.70, 0.77, 0.78, 0.76, 0.71, 0.76, 0.77, 0.78], 3)[:34]
    v[1022:1024] = 0.71  # just under the threshold (the hysteresis walks back over it)
    v[1024:] = 9.5
    a = metrics.detect_anomaly(_series(v, step=15), base, rel_floor=0.5)
    assert T0 + timedelta(seconds=1022 * 15) <= a.start <= T0 + timedelta(seconds=1024 * 15), a  # not at 990
    v[1000:1006] = 6.0  # a stretch as strong as the incident is part of it
    assert metrics.detect_anomaly(_series(v, step=15), base, rel_floor=0.5).start < T0 + timedelta(seconds=1006 * 15)


def test_noise_and_short_blips_are_not_anomalies():
    rng = np.random.default_rng(2)
    v = 0.5 + rng.normal(0, 0.02, 600)
    v[300] = 5.0  # one spike: fewer than min_points
    assert metrics.detect_anomaly(_series(v)) is None
    assert metrics.detect_anomaly(_series(v), min_points=1) is not None


def test_baseline_from_the_window_before():
    base = _series(np.full(100, 10.0) + np.random.default_rng(3).normal(0, 0.1, 100),
                   start=T0 - timedelta(seconds=3000))
    current = _series(np.full(100, 14.0))  # shifted for the whole window: no leading baseline
    assert metrics.detect_anomaly(current) is None
    a = metrics.detect_anomaly(current, base)
    assert a.start == T0 and a.ongoing


def test_down_and_both_directions():
    v = np.full(200, 100.0)
    v[120:] = 20.0
    assert metrics.detect_anomaly(_series(v)) is None
    a = metrics.detect_anomaly(_series(v), direction="down")
    assert a.start == T0 + timedelta(seconds=120 * 30) and a.peak == 20.0
    assert metrics.detect_anomaly(_series(v), direction="both").start == a.start
    with pytest.raises(InvalidInput):
        metrics.detect_anomaly(_series(v), direction="sideways")


def test_tidy_frame_with_several_series_is_reduced():
    idx = pd.date_range(T0, periods=200, freq="30s", tz="UTC")
    df = pd.concat([pd.DataFrame({"timestamp": idx, "pod": "a", "value": 1.0}),
                    pd.DataFrame({"timestamp": idx, "pod": "b", "value": np.where(np.arange(200) >= 150, 9.0, 1.0)})])
    a = metrics.detect_anomaly(df)
    assert a.start == idx[150]
    assert metrics.detect_anomaly(pd.DataFrame({"timestamp": [], "value": []})) is None
    with pytest.raises(InvalidInput):
        metrics.detect_anomaly(pd.DataFrame({"t": [1]}))


def test_one_duration_parser_names_the_value_it_rejects():
    from runbooks.durations import parse_duration, positive_timedelta

    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25 and parse_duration(90) == 90
    assert positive_timedelta("2d", "lookback") == timedelta(days=2)
    with pytest.raises(InvalidInput, match=r"lookback '6 hours' is not a duration .*30s, 5m"):
        positive_timedelta("6 hours", "lookback")
    with pytest.raises(InvalidInput, match="interval must be positive, got '0s'"):
        positive_timedelta("0s", "interval")
    with pytest.raises(InvalidInput, match="step True is not a duration"):
        parse_duration(True, "step")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="lookback .* is not a duration"):
            positive_timedelta(bad, "lookback")
