"""A real Prometheus (Debian's ``prometheus``) scrapes every service of a running pipeline: the contract's series
appear in its query API with the right labels and plausible values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.conftest import HOST, STAGE_KINDS, Pipeline, free_port

pytestmark = pytest.mark.timeout(180)

SCRAPE_INTERVAL = "1s"
WAIT_S = 60.0
DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "emoserve" / "dashboards" / "emoserve.json"
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$stage": ".*"}
MAY_BE_EMPTY = ("emoserve_gpu_memory_used_bytes", 'code!="OK"', "emoserve_queue_rejections_total")
"""Dashboard queries that show data only after GPU use, failures or rejections."""


def prometheus_binary() -> str:
    """Debian's ``prometheus``; CI installs it (``.ci/run``), so it is skipped only outside CI."""
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed; .ci/run installs Debian's 'prometheus' package")
        pytest.skip("needs the prometheus binary (Debian: apt-get install prometheus)")
    return path


class Prometheus:
    """Our own ``prometheus`` process: temporary config and storage, loopback port."""

    def __init__(self, targets: dict[str, str], tmp: Path) -> None:
        jobs = "".join(
            f"  - job_name: {name}\n    static_configs:\n      - targets: ['{target}']\n"
            for name, target in targets.items()
        )
        config = tmp / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n  scrape_timeout: {SCRAPE_INTERVAL}\n"
            f"scrape_configs:\n{jobs}",
            encoding="utf-8",
        )
        self.url = f"http://{HOST}:{free_port()}"
        self.log_path = tmp / "prometheus.log"
        with open(self.log_path, "wb") as log:  # the process keeps its own handle
            self.process = subprocess.Popen(
                [prometheus_binary(), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.process.returncode}): {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready within {WAIT_S} s: {self.log()}")

    def query(self, expr: str) -> list[dict]:
        """Instant query: ``[{"metric": {labels}, "value": [t, "v"]}, ...]``."""
        reply = self.get("/api/v1/query", query=expr)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def prometheus(pipeline: Pipeline, tmp_path: Path) -> Iterator[Prometheus]:
    targets = {name: f"{HOST}:{pipeline.servers[name].metrics_port}" for name in (*STAGE_KINDS, "gateway")}
    prom = Prometheus(targets, tmp_path)
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.close()


def wait_for(prom: Prometheus, expr: str, count: int, what: str) -> list[dict]:
    """Polls until ``expr`` returns at least ``count`` series with a value > 0."""
    deadline = time.monotonic() + WAIT_S
    while True:
        result = [r for r in prom.query(expr) if float(r["value"][1]) > 0]
        if len(result) >= count:
            return result
        if time.monotonic() > deadline:
            targets = prom.get("/api/v1/targets")["data"]["activeTargets"]
            health = {t["labels"]["job"]: (t["health"], t.get("lastError")) for t in targets}
            raise AssertionError(f"{what}: {expr} gave {result} after {WAIT_S} s; targets {health}; {prom.log()}")
        time.sleep(0.5)


def test_prometheus_scrapes_the_contract_series_from_every_service(pipeline: Pipeline, prometheus: Prometheus) -> None:
    client = pipeline.client()
    text = "Prometheus is watching. 你好。"
    reply = client.synthesize(text)
    chunks = list(client.stream(text))
    assert reply.duration_s > 0 and chunks[-1].last

    up = wait_for(prometheus, "up", 4, "every service is scraped")
    assert {r["metric"]["job"] for r in up} == {*STAGE_KINDS, "gateway"}

    def series(expr: str, count: int = 1) -> list[dict[str, str]]:
        return [r["metric"] for r in wait_for(prometheus, expr, count, expr)]

    # gateway: its RPCs, first audio, end to end, audio produced
    for method in ("Synthesize", "SynthesizeStream"):
        series(f'emoserve_requests_total{{job="gateway",service="gateway",method="{method}",code="OK"}}')
        series(f'emoserve_time_to_first_audio_seconds_count{{job="gateway",method="{method}"}}')
        series(f'emoserve_synthesis_duration_seconds_bucket{{job="gateway",method="{method}",le="+Inf"}}')
    audio_s = float(prometheus.query('emoserve_audio_seconds_total{job="gateway"}')[0]["value"][1])
    assert audio_s >= reply.duration_s
    series('emoserve_request_duration_seconds_count{job="gateway",method="Synthesize"}')

    # every stage: RPCs, batcher and engine series, labelled with its own name
    methods = {"encoder": "Encode", "acoustic": "Generate", "vocoder": "VocodeStream"}
    for stage in STAGE_KINDS:
        job = f'job="{stage}"'
        series(f'emoserve_requests_total{{{job},service="{stage}",method="{methods[stage]}",code="OK"}}')
        series(f'emoserve_queue_duration_seconds_count{{{job},stage="{stage}"}}')
        series(f'emoserve_batch_size_sum{{{job},stage="{stage}"}}')
        compute = series(f'emoserve_compute_duration_seconds_count{{{job},stage="{stage}"}}')
        engine = pipeline.services[stage].engine.engine
        assert {(m["engine"], m["device"]) for m in compute} == {(engine, "cpu")}
        info = series(f'emoserve_engine_info{{{job},stage="{stage}"}}')
        assert [(m["engine"], m["reason"]) for m in info] == [
            (engine, getattr(pipeline.services[stage], "engine_reason", "configured"))
        ]
        # gauges are exported (0 when idle): present, not necessarily positive
        assert prometheus.query(f'emoserve_pending_requests{{{job},stage="{stage}"}}')
        assert prometheus.query(f'emoserve_inflight_requests{{{job},service="{stage}"}}')
    assert prometheus.query('emoserve_inflight_streams{job="vocoder"}')
    # histograms are usable by PromQL: a p50 over the ms-scale buckets
    p50 = prometheus.query(
        'histogram_quantile(0.5, sum by (le) (emoserve_request_duration_seconds_bucket{job="gateway"}))'
    )
    assert 0 < float(p50[0]["value"][1]) < 60


def test_every_dashboard_query_runs_on_the_scraped_series(pipeline: Pipeline, prometheus: Prometheus) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    client = pipeline.client()
    client.synthesize("Dashboards need data.")
    list(client.stream("Dashboards need data."))
    wait_for(prometheus, "up", 4, "every service is scraped")
    time.sleep(3)  # rate() needs two scrapes after the requests
    client.synthesize("And a second request.")
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            deadline = time.monotonic() + WAIT_S
            while not prometheus.query(expr) and not any(m in expr for m in MAY_BE_EMPTY):
                assert time.monotonic() < deadline, f"panel {panel['title']!r}: {expr} returned nothing"
                time.sleep(0.5)
