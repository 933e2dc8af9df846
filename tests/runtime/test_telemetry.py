"""Telemetry unit tests: instrument values after known batches and RPCs, scraped over real HTTP; trace context
propagation with tracing off; queue/execute spans; the ``OTEL_*`` exporter selection."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from emoserve.runtime import BatcherClosedError, BatchingConfig, DynamicBatcher, QueueFullError, QueueTimeoutError
from emoserve.runtime.config import ConfigError, MetricsConfig, ServerConfig, load_config
from emoserve.runtime.server import StageServer
from emoserve.runtime.telemetry import Telemetry, propagate_trace_context, service_resource, span_exporters_from_env
from emoserve.v1 import stages_pb2, stages_pb2_grpc

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
CONTRACT = {
    "emoserve_requests_total", "emoserve_request_duration_seconds", "emoserve_inflight_requests",
    "emoserve_inflight_streams", "emoserve_queue_duration_seconds", "emoserve_compute_duration_seconds",
    "emoserve_batch_size", "emoserve_pending_requests", "emoserve_queue_rejections_total", "emoserve_engine_info",
    "emoserve_time_to_first_audio_seconds", "emoserve_synthesis_duration_seconds", "emoserve_audio_seconds_total",
}
"""Every series of /work/notes/metrics.md except emoserve_gpu_memory_used_bytes (CUDA stages only)."""
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- helpers ---------------------------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``http://127.0.0.1:PORT/metrics``, keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def family_names(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        kind = family.type
        names.add(family.name + ("_total" if kind == "counter" else ""))
    return names


class Work:
    """Batch function: sleeps ``compute_s``; while ``hold`` is set it parks until released."""

    def __init__(self, compute_s: float = 0.0) -> None:
        self.compute_s = compute_s
        self.hold = False
        self.running = threading.Event()
        self.gate = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.running.set()
        if self.hold:
            assert self.gate.wait(10), "never released"
        time.sleep(self.compute_s)
        return [x * 2 for x in items]


def fake_stage(work: Work, engine: str | None = "fake-engine", **batching: Any) -> SimpleNamespace:
    """What :meth:`Telemetry.instrument_stage` reads of a StageService, around a real DynamicBatcher."""
    batcher = DynamicBatcher(work, BatchingConfig(**batching), name="acoustic")
    return SimpleNamespace(
        stage="acoustic", device="cpu", batcher=batcher,
        engine=None if engine is None else SimpleNamespace(engine=engine),
    )


@contextmanager
def telemetry_for(stage: SimpleNamespace | None = None, **kwargs: Any) -> Iterator[Telemetry]:
    telemetry = Telemetry("acoustic", MetricsConfig(host=HOST, port=0), **kwargs)
    if stage is not None:
        telemetry.instrument_stage(stage)
    telemetry.start_metrics_server(HOST)
    try:
        yield telemetry
    finally:
        telemetry.shutdown()


class Encoder(stages_pb2_grpc.EncoderServicer):
    """Encode: "bad" → INVALID_ARGUMENT, "boom" → unexpected error; records the trace id it runs under."""

    def __init__(self) -> None:
        self.trace_ids: list[int] = []

    async def Encode(self, request: stages_pb2.EncodeRequest, context: Any) -> stages_pb2.EncodeResponse:
        self.trace_ids.append(trace.get_current_span().get_span_context().trace_id)
        if request.text == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad text")
        if request.text == "boom":
            raise RuntimeError("boom")
        return stages_pb2.EncodeResponse()


class Vocoder(stages_pb2_grpc.VocoderServicer):
    """VocodeStream: two chunks, parked between them until ``release`` is set."""

    def __init__(self) -> None:
        self.between = asyncio.Event()
        self.release = asyncio.Event()

    async def VocodeStream(self, request: stages_pb2.VocodeStreamRequest, context: Any) -> AsyncIterator[Any]:
        yield stages_pb2.VocodeChunk(index=0)
        self.between.set()
        await self.release.wait()
        yield stages_pb2.VocodeChunk(index=1, last=True)


@asynccontextmanager
async def served(telemetry: Telemetry) -> AsyncIterator[tuple[grpc.aio.Channel, Encoder, Vocoder]]:
    encoder, vocoder = Encoder(), Vocoder()
    server = StageServer(ServerConfig(host=HOST, port=0, grace_period_s=0.5), name="encoder", telemetry=telemetry)
    server.add_service(stages_pb2.DESCRIPTOR.services_by_name["Encoder"], encoder,
                       stages_pb2_grpc.add_EncoderServicer_to_server)
    server.add_service(stages_pb2.DESCRIPTOR.services_by_name["Vocoder"], vocoder,
                       stages_pb2_grpc.add_VocoderServicer_to_server)
    port = await server.start()
    await server.mark_ready()
    try:
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
            yield channel, encoder, vocoder
    finally:
        await server.stop(0.5)


# -- configuration -----------------------------------------------------------------------------------------------


def test_metrics_config_default_port_bounds_and_env() -> None:
    assert load_config(environ={}).metrics == MetricsConfig(host="", port=9464)
    assert load_config(environ={"EMOSERVE_METRICS__PORT": "-1"}).metrics.port == -1
    assert load_config(environ={}, metrics={"port": 0, "host": "0.0.0.0"}).metrics.port == 0
    with pytest.raises(ConfigError, match=r"MetricsConfig.port must be within \[0, 65535\], or -1"):
        MetricsConfig(port=-2)
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(environ={}, metrics={"path": "/m"})


def test_tracing_is_off_unless_the_otel_variables_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    assert span_exporters_from_env() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert [type(e) for e in span_exporters_from_env()] == [GrpcSpanExporter]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert [type(e) for e in span_exporters_from_env()] == [HttpSpanExporter]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert span_exporters_from_env() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console, otlp")
    assert [type(e) for e in span_exporters_from_env()] == [ConsoleSpanExporter, HttpSpanExporter]
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert span_exporters_from_env() == []
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="unsupported exporter 'zipkin'"):
        span_exporters_from_env()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ConfigError, match="unsupported OTLP protocol"):
        span_exporters_from_env()


def test_service_name_defaults_to_emoserve_service_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_resource("vocoder").attributes["service.name"] == "emoserve-vocoder"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tts-vocoder-eu")
    assert service_resource("vocoder").attributes["service.name"] == "tts-vocoder-eu"


# -- batcher instruments ----------------------------------------------------------------------------------------


def test_batch_histograms_after_known_batches() -> None:
    work = Work(compute_s=0.02)
    stage = fake_stage(work, max_batch_size=4, max_queue_delay_us=30_000)

    async def run() -> None:
        assert await asyncio.gather(*(stage.batcher.submit(i) for i in range(4))) == [0, 2, 4, 6]  # one batch of 4
        assert await stage.batcher.submit(5) == 10  # a batch of 1, after the 30 ms delay
        await stage.batcher.close()

    with telemetry_for(stage) as telemetry:
        asyncio.run(run())
        m = scrape(telemetry.metrics_port)
    assert value(m, "emoserve_batch_size_count", stage="acoustic") == 2
    assert value(m, "emoserve_batch_size_sum", stage="acoustic") == 5
    assert value(m, "emoserve_batch_size_bucket", stage="acoustic", le="1") == 1
    assert value(m, "emoserve_batch_size_bucket", stage="acoustic", le="3") == 1
    assert value(m, "emoserve_batch_size_bucket", stage="acoustic", le="4") == 2
    assert value(m, "emoserve_queue_duration_seconds_count", stage="acoustic") == 5
    waited = value(m, "emoserve_queue_duration_seconds_sum", stage="acoustic")
    assert 0.025 <= waited < 1.0, waited  # the lone item waited for the 30 ms delay
    labels = {"stage": "acoustic", "engine": "fake-engine", "device": "cpu"}
    assert value(m, "emoserve_compute_duration_seconds_count", **labels) == 2
    assert 0.04 <= value(m, "emoserve_compute_duration_seconds_sum", **labels) < 1.0
    # ms-scale buckets: 20 ms batches land between the 15 ms and 50 ms bounds
    assert value(m, "emoserve_compute_duration_seconds_bucket", le="0.015", **labels) == 0
    assert value(m, "emoserve_compute_duration_seconds_bucket", le="0.05", **labels) == 2
    assert value(m, "emoserve_pending_requests", stage="acoustic") == 0


def test_pending_gauge_is_the_queue_depth() -> None:
    work = Work()
    work.hold = True
    stage = fake_stage(work, max_batch_size=2, max_queue_delay_us=0)

    async def run(telemetry: Telemetry) -> list[int]:
        first = asyncio.ensure_future(stage.batcher.submit(1))
        await asyncio.get_running_loop().run_in_executor(None, work.running.wait, 5)
        queued = [asyncio.ensure_future(stage.batcher.submit(i)) for i in range(2, 7)]
        await asyncio.sleep(0.05)
        depth = [value(scrape(telemetry.metrics_port), "emoserve_pending_requests", stage="acoustic")]
        work.hold = False
        work.gate.set()
        await asyncio.gather(first, *queued)
        depth.append(value(scrape(telemetry.metrics_port), "emoserve_pending_requests", stage="acoustic"))
        await stage.batcher.close()
        return depth

    with telemetry_for(stage) as telemetry:
        assert asyncio.run(run(telemetry)) == [5, 0]


def test_rejection_counter_by_reason() -> None:
    work = Work()
    work.hold = True
    stage = fake_stage(work, max_batch_size=1, max_queue_delay_us=0, max_queue_size=2)

    async def run() -> None:
        busy = asyncio.ensure_future(stage.batcher.submit(0))
        await asyncio.get_running_loop().run_in_executor(None, work.running.wait, 5)
        timed_out = asyncio.ensure_future(stage.batcher.submit(1, timeout_s=0.01))
        cancelled = asyncio.ensure_future(stage.batcher.submit(2))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await stage.batcher.submit(3)
        with pytest.raises(QueueTimeoutError):
            await timed_out
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        work.gate.set()
        await busy
        await stage.batcher.close()
        with pytest.raises(BatcherClosedError):
            await stage.batcher.submit(4)

    with telemetry_for(stage) as telemetry:
        asyncio.run(run())
        m = scrape(telemetry.metrics_port)
    for reason in ("queue_full", "timeout", "cancelled", "closed"):
        assert value(m, "emoserve_queue_rejections_total", stage="acoustic", reason=reason) == 1, reason


def test_engine_info_names_the_engine_and_why() -> None:
    stage = fake_stage(Work(), engine=None)
    with telemetry_for(stage) as telemetry:
        assert not [k for k in scrape(telemetry.metrics_port) if k[0] == "emoserve_engine_info"]  # still loading
        stage.engine = SimpleNamespace(engine="torch+cudagraphs")
        m = scrape(telemetry.metrics_port)
        assert value(m, "emoserve_engine_info", stage="acoustic", engine="torch+cudagraphs", reason="configured") == 1
        stage.engine_reason = "cuda graphs captured"
        m = scrape(telemetry.metrics_port)
        assert value(m, "emoserve_engine_info", stage="acoustic", engine="torch+cudagraphs",
                     reason="cuda graphs captured") == 1


def test_queue_and_execute_spans_are_children_of_the_callers_span() -> None:
    exporter = InMemorySpanExporter()
    work = Work(compute_s=0.01)
    stage = fake_stage(work, max_batch_size=4, max_queue_delay_us=20_000)

    async def run(tracer: trace.Tracer) -> None:
        async def one(i: int) -> None:
            with tracer.start_as_current_span(f"rpc-{i}"):
                await stage.batcher.submit(i)

        await asyncio.gather(one(0), one(1))
        await stage.batcher.close()

    with telemetry_for(stage, span_exporters=[exporter]) as telemetry:
        parents = TracerProvider()
        parents.add_span_processor(SimpleSpanProcessor(exporter))
        asyncio.run(run(parents.get_tracer("test")))
        telemetry.force_flush()
    spans = exporter.get_finished_spans()
    for i in range(2):
        rpc = next(s for s in spans if s.name == f"rpc-{i}")
        children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == rpc.context.span_id}
        assert set(children) == {"queue", "execute"}
        queue, execute = children["queue"], children["execute"]
        assert queue.context.trace_id == execute.context.trace_id == rpc.context.trace_id
        assert dict(execute.attributes) == {"emoserve.stage": "acoustic", "emoserve.batch_size": 2,
                                            "emoserve.engine": "fake-engine", "emoserve.device": "cpu"}
        assert rpc.start_time <= queue.start_time <= queue.end_time == execute.start_time <= execute.end_time
        assert execute.end_time <= rpc.end_time
        assert 0.01 <= (execute.end_time - execute.start_time) / 1e9 < 0.5
        assert queue.resource.attributes["service.name"] == "emoserve-acoustic"


# -- RPC instruments and context propagation ----------------------------------------------------------------------


def test_rpc_counters_durations_and_inflight_gauges() -> None:
    async def run(telemetry: Telemetry) -> tuple[dict, dict]:
        async with served(telemetry) as (channel, _, vocoder):
            encode = stages_pb2_grpc.EncoderStub(channel).Encode
            await encode(stages_pb2.EncodeRequest(text="hi"))
            for text, code in (("bad", grpc.StatusCode.INVALID_ARGUMENT), ("boom", grpc.StatusCode.UNKNOWN)):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await encode(stages_pb2.EncodeRequest(text=text))
                assert err.value.code() == code
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            stream = stages_pb2_grpc.VocoderStub(channel).VocodeStream(stages_pb2.VocodeStreamRequest())
            assert (await stream.read()).index == 0
            await vocoder.between.wait()
            during = await asyncio.to_thread(scrape, telemetry.metrics_port)
            vocoder.release.set()
            assert (await stream.read()).last
            await stream.code()
            return during, await asyncio.to_thread(scrape, telemetry.metrics_port)

    with telemetry_for() as telemetry:
        during, after = asyncio.run(run(telemetry))
    assert value(during, "emoserve_inflight_streams", service="acoustic") == 1
    assert value(during, "emoserve_inflight_requests", service="acoustic") == 1
    assert value(after, "emoserve_inflight_streams", service="acoustic") == 0
    assert value(after, "emoserve_inflight_requests", service="acoustic") == 0
    for method, code in (("Encode", "OK"), ("Encode", "INVALID_ARGUMENT"), ("Encode", "UNKNOWN"),
                         ("VocodeStream", "OK")):
        assert value(after, "emoserve_requests_total", service="acoustic", method=method, code=code) == 1
    assert value(after, "emoserve_request_duration_seconds_count", service="acoustic", method="Encode") == 3
    stream_s = value(after, "emoserve_request_duration_seconds_sum", service="acoustic", method="VocodeStream")
    assert 0 < stream_s < 5
    assert not [k for k in after if dict(k[1]).get("method") == "Check"], "health checks must not be counted"


def test_every_contract_series_is_exported_under_its_exact_name() -> None:
    stage = fake_stage(Work(), max_batch_size=1, max_queue_delay_us=0, max_queue_size=1)

    async def run(telemetry: Telemetry) -> tuple[set[str], dict]:
        await stage.batcher.submit(1)
        await stage.batcher.close()
        with pytest.raises(BatcherClosedError):
            await stage.batcher.submit(2)
        gateway = telemetry.gateway_metrics()
        gateway.first_audio("Synthesize", 0.01)
        gateway.finished("Synthesize", 0.02)
        gateway.audio(1.5)
        async with served(telemetry) as (channel, _, vocoder):  # the server shuts the telemetry down when it stops
            await stages_pb2_grpc.EncoderStub(channel).Encode(stages_pb2.EncodeRequest(text="hi"))
            vocoder.release.set()
            assert len([c async for c in stages_pb2_grpc.VocoderStub(channel).VocodeStream(
                stages_pb2.VocodeStreamRequest())]) == 2
            return (await asyncio.to_thread(family_names, telemetry.metrics_port),
                    await asyncio.to_thread(scrape, telemetry.metrics_port))

    with telemetry_for(stage) as telemetry:
        names, m = asyncio.run(run(telemetry))
    assert {n for n in names if n.startswith("emoserve_")} == CONTRACT
    assert value(m, "emoserve_audio_seconds_total") == 1.5
    assert value(m, "emoserve_time_to_first_audio_seconds_count", method="Synthesize") == 1
    assert value(m, "emoserve_synthesis_duration_seconds_count", method="Synthesize") == 1


def test_trace_context_propagates_with_tracing_off() -> None:
    parent = trace.SpanContext(int(TRACEPARENT.split("-")[1], 16), int(TRACEPARENT.split("-")[2], 16),
                               is_remote=False, trace_flags=trace.TraceFlags(1))

    async def run(telemetry: Telemetry) -> Encoder:
        async with served(telemetry) as (channel, encoder, _):
            stub = stages_pb2_grpc.EncoderStub(channel)
            await stub.Encode(stages_pb2.EncodeRequest(text="a"), metadata=(("traceparent", TRACEPARENT),))
            await stub.Encode(stages_pb2.EncodeRequest(text="b"))  # no context sent: none current
            with trace.use_span(trace.NonRecordingSpan(parent)):  # what a gateway handler holds
                traced = stages_pb2_grpc.EncoderStub(propagate_trace_context(channel))
                await traced.Encode(stages_pb2.EncodeRequest(text="c"), metadata=(("x-extra", "kept"),))
            return encoder

    with telemetry_for() as telemetry:
        assert not telemetry.tracing_enabled
        encoder = asyncio.run(run(telemetry))
    assert encoder.trace_ids == [parent.trace_id, 0, parent.trace_id]


def test_metrics_port_minus_one_disables_the_endpoint_but_serving_and_propagation_work() -> None:
    telemetry = Telemetry("encoder", MetricsConfig(port=-1), span_exporters=[])

    async def run() -> list[int]:
        async with served(telemetry) as (channel, encoder, _):
            stub = stages_pb2_grpc.EncoderStub(channel)
            await stub.Encode(stages_pb2.EncodeRequest(text="a"), metadata=(("traceparent", TRACEPARENT),))
            return encoder.trace_ids

    assert asyncio.run(run()) == [int(TRACEPARENT.split("-")[1], 16)]
    assert telemetry.metrics_port is None and not telemetry.metrics_enabled


def test_a_taken_metrics_port_fails_the_server_start() -> None:
    async def run() -> None:
        with telemetry_for() as first:
            taken = Telemetry("encoder", MetricsConfig(port=first.metrics_port), span_exporters=[])
            server = StageServer(ServerConfig(host=HOST, port=0), name="encoder", telemetry=taken)
            with pytest.raises(OSError, match="cannot bind the encoder metrics endpoint"):
                await server.start()

    asyncio.run(run())
