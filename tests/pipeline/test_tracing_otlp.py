"""One request is one trace across the gateway and its three stages.

* In process: every service exports to the SDK's in-memory exporter; the parent/child links, the ``queue`` and
  ``execute`` spans and their attributes are checked span by span.
* Real processes: ``emoserve up`` with only the standard ``OTEL_*`` variables set exports over OTLP/gRPC to a
  real collector (``rotel``, from PyPI), which prints what it received; all four services' spans of the
  request's trace id must arrive.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from emoserve.client import Client
from emoserve.runtime.stage import StageService, start_stage
from emoserve.runtime.telemetry import Telemetry
from emoserve.serve import StageAddresses, build_stage, start_gateway
from tests.pipeline.conftest import HOST, STAGE_KINDS, LoopThread, free_port, stage_config, stop_servers
from tests.pipeline.test_up_subprocess import alive_serve_process, children_of

pytestmark = pytest.mark.timeout(240)

TEXT = "Tracing one request. Across four services."
SERVICES = ("gateway", *STAGE_KINDS)
STAGE_METHODS = {"encoder": "Encoder/Encode", "acoustic": "Acoustic/Generate", "vocoder": "Vocoder/Vocode"}


def traceparent() -> tuple[str, str, str]:
    """A fresh sampled W3C ``traceparent`` and its trace and parent span ids (hex)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"]).removeprefix("emoserve-")


# -- in process, in-memory exporter -----------------------------------------------------------------------------


def test_one_request_one_trace_in_memory(loop_thread: LoopThread, tiny_model_path: Path) -> None:
    exporter = InMemorySpanExporter()
    telemetry = {name: Telemetry(name, stage_config().metrics, span_exporters=[exporter]) for name in SERVICES}

    async def start() -> tuple[dict[str, StageService], list]:
        services, servers = {}, []
        try:
            for kind in STAGE_KINDS:
                services[kind] = build_stage(kind, str(tiny_model_path), stage_config())
                servers.append(await start_stage(services[kind], telemetry=telemetry[kind]))
            addresses = StageAddresses(*([f"{HOST}:{s.port}"] for s in servers))
            gateway, _ = await start_gateway(stage_config(), addresses, telemetry["gateway"])
            servers.insert(0, gateway)
        except BaseException:
            await stop_servers(servers)
            raise
        return services, servers

    services, servers = loop_thread.run(start(), timeout=120)
    header, trace_id, caller_span = traceparent()
    try:
        with Client(f"{HOST}:{servers[0].port}", metadata=[("traceparent", header)]) as client:
            reply = client.synthesize(TEXT)
        for t in telemetry.values():
            t.force_flush()
        spans = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    finally:
        loop_thread.run(stop_servers(servers), timeout=60)
    assert reply.duration_s > 0

    by_id = {s.context.span_id: s for s in spans}
    gateway = [s for s in spans if s.name == "/emoserve.v1.Synthesizer/Synthesize"]
    assert len(gateway) == 1 and service_of(gateway[0]) == "gateway"
    assert f"{gateway[0].parent.span_id:016x}" == caller_span  # child of the caller's span
    segments = (len(reply.timings) - 1) // 2  # encoder, then acoustic and vocoder per segment
    assert segments >= 1
    for stage, method in STAGE_METHODS.items():
        calls = [s for s in spans if s.name == f"/emoserve.v1.{method}"]
        assert len(calls) == (1 if stage == "encoder" else segments), (stage, [s.name for s in spans])
        engine = services[stage].engine.engine
        for call in calls:
            assert service_of(call) == stage
            assert call.parent.span_id == gateway[0].context.span_id  # W3C context crossed the hop
            assert call.attributes["rpc.grpc.status_code"] == 0
            children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id}
            assert set(children) == {"queue", "execute"}, (stage, list(children))
            queue, execute = children["queue"], children["execute"]
            assert service_of(queue) == service_of(execute) == stage
            assert execute.attributes["emoserve.engine"] == engine
            assert execute.attributes["emoserve.device"] == "cpu"
            assert 1 <= execute.attributes["emoserve.batch_size"] <= 8
            assert call.start_time <= queue.start_time <= queue.end_time == execute.start_time
            assert execute.end_time <= call.end_time
    assert {service_of(s) for s in spans} == set(SERVICES)
    assert all(s.parent.span_id in by_id for s in spans if s is not gateway[0])  # one connected tree


# -- real processes, real OTLP collector --------------------------------------------------------------------------


def rotel_binary() -> Path:
    """The collector shipped in the ``rotel`` wheel (the test extra); skipped only outside CI when absent."""
    try:
        import rotel
    except ImportError:
        rotel = None
    path = None if rotel is None else Path(rotel.__file__).parent / "rotel-agent"
    if path is None or not path.is_file():
        if os.environ.get("CI"):
            pytest.fail("the rotel collector is missing: pip install -e '.[test]' installs it")
        pytest.skip("needs the rotel OTLP collector (pip install rotel)")
    return path


class Collector:
    """``rotel-agent`` receiving OTLP on loopback and printing every span it gets (its debug log)."""

    def __init__(self, tmp: Path) -> None:
        self.grpc_port, http_port = free_port(), free_port()
        self.out_path = tmp / "rotel.out"
        with open(self.out_path, "wb") as out:  # the process keeps its own handle
            self.process = subprocess.Popen(
                [str(rotel_binary()), "start", "--exporter", "blackhole", "--debug-log", "traces",
                 "--debug-log-verbosity", "detailed", "--otlp-grpc-endpoint", f"{HOST}:{self.grpc_port}",
                 "--otlp-http-endpoint", f"{HOST}:{http_port}", "--pid-file", str(tmp / "rotel.pid"),
                 "--log-file", str(tmp / "rotel.log")],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
            )

    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;]*m", "", self.out_path.read_text(errors="replace"))

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "Starting Rotel" not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"rotel did not start ({self.process.poll()}): {self.text()[-2000:]}")
            time.sleep(0.1)

    def spans(self) -> list[tuple[str, str, str]]:
        """``(service.name, trace id, span name)`` of every span received so far."""
        found, service, trace_id = [], "", ""
        for line in self.text().splitlines():
            if m := re.search(r"-> service\.name: Str\((.*)\)", line):
                service = m[1]
            elif m := re.match(r"\s*Trace ID\s*: ([0-9a-f]{32})", line):
                trace_id = m[1]
            elif m := re.match(r"\s*Name\s*: (.*)", line):
                found.append((service, trace_id, m[1].strip()))
        return found

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path)
    try:
        c.wait_listening()
        yield c
    finally:
        c.close()


def test_one_request_one_trace_through_a_real_otlp_collector(
    collector: Collector, tiny_model_path: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOSERVE_", "OTEL_"))}
    env.update({
        "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{collector.grpc_port}",  # alone, it turns tracing on
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within 0.2 s, not at shutdown
    })
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "emoserve", "up", "--model", str(tiny_model_path), "--port", str(port),
             "--device", "cpu"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
    children: list[int] = []
    try:
        deadline = time.monotonic() + 150
        while "emoserve is up" not in out_path.read_text(errors="replace"):
            assert up.poll() is None and time.monotonic() < deadline, out_path.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        children = children_of(up.pid)
        header, trace_id, _ = traceparent()
        with Client(f"{HOST}:{port}", metadata=[("traceparent", header)]) as client:
            assert client.synthesize(TEXT).duration_s > 0

        expected = {("emoserve-gateway", "/emoserve.v1.Synthesizer/Synthesize")} | {
            (f"emoserve-{stage}", name)
            for stage, method in STAGE_METHODS.items() for name in (f"/emoserve.v1.{method}", "queue", "execute")
        }
        deadline = time.monotonic() + 30
        while True:  # the services export while running (every 0.2 s), not only when they stop
            received = {(svc, name) for svc, tid, name in collector.spans() if tid == trace_id}
            if received == expected:
                break
            assert time.monotonic() < deadline, f"spans of {trace_id} received: {received}\n{collector.text()[-3000:]}"
            time.sleep(0.3)

        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0, out_path.read_text(errors="replace")[-3000:]
        assert "Traceback" not in out_path.read_text(errors="replace")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
        for pid in children:  # never leave servers behind
            if alive_serve_process(pid):
                os.kill(pid, signal.SIGKILL)
