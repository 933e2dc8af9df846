"""Traces and metrics of every emoserve process (one place): OpenTelemetry SDK, W3C trace context, Prometheus.

One :class:`Telemetry` per service (stage or gateway) owns:

* **Metrics** (the contract in README "Observability"): OpenTelemetry instruments read by a Prometheus reader
  with its own registry, served at ``http://HOST:PORT/metrics`` (:class:`~emoserve.runtime.config.MetricsConfig`;
  port -1 turns metrics off and every instrument into a no-op). Histograms use explicit, ms-scale buckets.
* **Tracing**, configured only by the standard ``OTEL_*`` variables (:func:`span_exporters_from_env`): off by
  default. When on, every RPC gets a server span (opentelemetry-instrumentation-grpc) and every batched item a
  ``queue`` and an ``execute`` span. On or off, the incoming W3C ``traceparent`` is made current for the RPC and
  :func:`propagate_trace_context` channels send it on, so one request is one trace across the gateway and its
  stages; off, no span is created and nothing is exported.

Health checks and reflection are neither counted nor traced (probes would drown the real traffic).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, NoOpMeterProvider, Observation
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry, start_http_server

from emoserve.runtime.batcher import RejectReason, Timed
from emoserve.runtime.config import MetricsConfig
from emoserve.runtime.errors import ConfigError

log = logging.getLogger(__name__)

DURATION_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""Bucket bounds of every ``*_seconds`` histogram: 0.5 ms to 1 minute, dense where serving latencies live."""
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
"""Bucket bounds of ``emoserve_batch_size``."""
UNOBSERVED_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
"""gRPC services whose calls are neither counted nor traced."""
TRACER_NAME = "emoserve"


# -- tracing configuration ------------------------------------------------------------------------------------


def span_exporters_from_env() -> list[SpanExporter]:
    """The span exporters the standard ``OTEL_*`` variables ask for; empty = tracing off (the default).

    * ``OTEL_SDK_DISABLED=true``: off, whatever else is set.
    * ``OTEL_TRACES_EXPORTER``: comma-separated ``otlp``, ``console``, ``none``. Unset: ``otlp`` when
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else ``none``.
    * ``otlp`` speaks ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the
      default, or ``http/protobuf``); the exporter reads its endpoint, headers, timeout, TLS from the usual
      ``OTEL_EXPORTER_OTLP_*`` variables.

    Raises:
        ConfigError: An exporter or protocol that is not supported.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        names = "otlp" if endpoint else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "otlp":
            exporters.append(_otlp_span_exporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={names!r}: unsupported exporter {name!r} (otlp, console, none)")
    return exporters


def _otlp_span_exporter() -> SpanExporter:
    env = os.environ
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    protocol = protocol.strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http import trace_exporter  # type: ignore[no-redef]
    else:
        raise ConfigError(f"unsupported OTLP protocol {protocol!r} for traces (grpc, http/protobuf)")
    return trace_exporter.OTLPSpanExporter()


def service_resource(service: str) -> Resource:
    """The OpenTelemetry resource of a service: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, with
    ``service.name`` defaulting to ``emoserve-<service>``."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"emoserve-{service}"}))
    return resource


# -- trace context over gRPC ------------------------------------------------------------------------------------


def _unobserved(method: str) -> bool:
    """True for ``/grpc.health.v1.Health/Check`` and the like."""
    return method.lstrip("/").rpartition("/")[0] in UNOBSERVED_SERVICES


class _PropagatingCall:
    """A multi-callable that sends the current W3C trace context with every call."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, request: Any, *, metadata: Any = None, **kwargs: Any) -> Any:
        carrier: dict[str, str] = {}
        inject(carrier)
        if carrier:
            metadata = (*(metadata or ()), *carrier.items())
        return self._inner(request, metadata=metadata, **kwargs)


class _PropagatingChannel:
    """A ``grpc.aio.Channel`` whose stubs send the caller's trace context; everything else is the channel's."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> _PropagatingCall:
        return _PropagatingCall(self._channel.unary_unary(*args, **kwargs))

    def unary_stream(self, *args: Any, **kwargs: Any) -> _PropagatingCall:
        return _PropagatingCall(self._channel.unary_stream(*args, **kwargs))

    def stream_unary(self, *args: Any, **kwargs: Any) -> _PropagatingCall:
        return _PropagatingCall(self._channel.stream_unary(*args, **kwargs))

    def stream_stream(self, *args: Any, **kwargs: Any) -> _PropagatingCall:
        return _PropagatingCall(self._channel.stream_stream(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def propagate_trace_context(channel: grpc.aio.Channel) -> Any:
    """Wraps a channel for stubs: each call carries the current trace context (W3C ``traceparent``, and
    ``baggage``; ``OTEL_PROPAGATORS`` may change the set) as metadata. Close the original channel.

    Example: ``stub = stages_pb2_grpc.EncoderStub(propagate_trace_context(channel))``.
    """
    return _PropagatingChannel(channel)


# -- RPC metrics and the server interceptor --------------------------------------------------------------------


class _RpcMetrics:
    """``emoserve_requests_total``, ``emoserve_request_duration_seconds``, in-flight requests and streams.

    The in-flight gauges are plain counters read at scrape time: two SDK calls per RPC, not six.
    """

    def __init__(self, meter: Meter, service: str) -> None:
        self.service = service
        self.inflight = 0
        self.streams = 0
        self.requests = meter.create_counter(
            "emoserve_requests_total", unit="{request}", description="Finished RPCs by gRPC status code."
        )
        self.duration = meter.create_histogram(
            "emoserve_request_duration_seconds", unit="s", description="Server-side RPC duration."
        )
        labels = {"service": service}
        meter.create_observable_gauge(
            "emoserve_inflight_requests", callbacks=[lambda options: [Observation(self.inflight, labels)]],
            unit="{request}", description="RPCs in progress (unary and streams).",
        )
        meter.create_observable_gauge(
            "emoserve_inflight_streams", callbacks=[lambda options: [Observation(self.streams, labels)]],
            unit="{stream}", description="Server-streaming RPCs in progress.",
        )

    def begin(self, streaming: bool) -> None:
        self.inflight += 1
        self.streams += streaming

    def end(self, method: str, streaming: bool, code: grpc.StatusCode, seconds: float) -> None:
        self.inflight -= 1
        self.streams -= streaming
        self.requests.add(1, {"service": self.service, "method": method, "code": code.name})
        self.duration.record(seconds, {"service": self.service, "method": method})


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    """The status an RPC ended with, as far as the server can tell."""
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else (
            grpc.StatusCode.CANCELLED
        )
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def _attach_remote_context(context: grpc.aio.ServicerContext) -> object | None:
    """Makes the caller's trace context current (when it sent one); returns the token to detach."""
    metadata = context.invocation_metadata() or ()
    if not any(key == "traceparent" for key, _ in metadata):
        return None
    return otel_context.attach(extract({key: value for key, value in metadata}))


class _ServerInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC (``rpc`` set) and, when no tracing interceptor does it, makes the caller's
    trace context current for the handler so that its stage calls carry it on (``attach_context``)."""

    def __init__(self, rpc: _RpcMetrics | None, attach_context: bool) -> None:
        self._rpc = rpc
        self._attach = attach_context

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or _unobserved(details.method):
            return handler
        method = details.method.rpartition("/")[2]
        streaming = handler.response_streaming
        kind = ("stream" if handler.request_streaming else "unary") + ("_stream" if streaming else "_unary")
        behavior = getattr(handler, kind)
        if inspect.isasyncgenfunction(behavior):
            wrapped: Any = self._wrap_generator(behavior, method, streaming)
        elif inspect.iscoroutinefunction(behavior):
            wrapped = self._wrap_coroutine(behavior, method, streaming)
        else:
            return handler
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    @contextmanager
    def _observed(self, context: grpc.aio.ServicerContext, method: str, streaming: bool) -> Iterator[None]:
        """Around one RPC's handler: the caller's trace context made current, the RPC counted and timed."""
        token = _attach_remote_context(context) if self._attach else None
        rpc, started, error = self._rpc, time.perf_counter(), None
        if rpc is not None:
            rpc.begin(streaming)
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            if rpc is not None:
                rpc.end(method, streaming, _final_code(context, error), time.perf_counter() - started)
            if token is not None:
                otel_context.detach(token)

    def _wrap_coroutine(self, behavior: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with self._observed(context, method, streaming):
                return await behavior(request, context)

        return observed

    def _wrap_generator(self, behavior: Callable[..., Any], method: str, streaming: bool) -> Callable[..., Any]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with self._observed(context, method, streaming):
                async for response in behavior(request, context):
                    yield response

        return observed


# -- stage (batcher) and gateway instruments -----------------------------------------------------------------


class _StageInstruments:
    """The batcher histograms and counter of one process (shared by the stages it serves)."""

    def __init__(self, meter: Meter) -> None:
        self.queue = meter.create_histogram(
            "emoserve_queue_duration_seconds", unit="s", description="Time each item waited in the batcher queue."
        )
        self.compute = meter.create_histogram(
            "emoserve_compute_duration_seconds", unit="s", description="Execution time of each batch."
        )
        self.batch = meter.create_histogram(
            "emoserve_batch_size", unit="{request}", description="Items per executed batch."
        )
        self.rejections = meter.create_counter(
            "emoserve_queue_rejections_total", unit="{request}",
            description="Items that left the queue unexecuted: queue_full, timeout, closed, cancelled.",
        )


class _StageObserver:
    """Batcher telemetry of one stage (a :class:`~emoserve.runtime.batcher.BatchObserver`)."""

    def __init__(
        self, instruments: _StageInstruments, engine: Callable[[], str], device: str, tracer: trace.Tracer | None
    ) -> None:
        self._instruments = instruments
        self._engine = engine
        self._device = device
        self._tracer = tracer

    def on_batch(self, batcher: str, batch_size: int, queue_s: Sequence[float], compute_s: float, failed: bool) -> None:
        labels = {"stage": batcher}
        for waited in queue_s:
            self._instruments.queue.record(waited, labels)
        self._instruments.batch.record(batch_size, labels)
        self._instruments.compute.record(compute_s, {"stage": batcher, "engine": self._engine(), "device": self._device})

    def on_reject(self, batcher: str, reason: RejectReason) -> None:
        self._instruments.rejections.add(1, {"stage": batcher, "reason": reason})

    def on_item(self, batcher: str, enqueued: float, timed: Timed) -> None:
        """Records the item's ``queue`` and ``execute`` spans, children of the current (server) span."""
        if self._tracer is None:
            return
        queued = time.time_ns() - round((time.perf_counter() - enqueued) * 1e9)
        started = queued + round(timed.queue_s * 1e9)
        attributes = {"emoserve.stage": batcher, "emoserve.batch_size": timed.batch_size}
        self._tracer.start_span("queue", start_time=queued, attributes=attributes).end(end_time=started)
        attributes.update({"emoserve.engine": self._engine(), "emoserve.device": self._device})
        span = self._tracer.start_span("execute", start_time=started, attributes=attributes)
        span.end(end_time=started + round(timed.compute_s * 1e9))


class GatewayMetrics:
    """The gateway's own instruments: time to first audio, end-to-end latency, audio produced.

    Args:
        meter: Where the instruments live (:meth:`Telemetry.gateway_metrics`); :meth:`disabled` for none.
    """

    def __init__(self, meter: Meter) -> None:
        self._first_audio = meter.create_histogram(
            "emoserve_time_to_first_audio_seconds", unit="s",
            description="Request start to its first audio leaving the gateway (unary: the whole response).",
        )
        self._total = meter.create_histogram(
            "emoserve_synthesis_duration_seconds", unit="s", description="End-to-end latency of successful requests."
        )
        self._audio = meter.create_counter(
            "emoserve_audio_seconds_total", unit="s", description="Seconds of audio sent to clients (RTFX)."
        )

    @classmethod
    def disabled(cls) -> GatewayMetrics:
        """Instruments that record nothing."""
        return cls(NoOpMeterProvider().get_meter(TRACER_NAME))

    def first_audio(self, method: str, seconds: float) -> None:
        """The request's first audio is leaving, ``seconds`` after it started."""
        self._first_audio.record(seconds, {"method": method})

    def audio(self, seconds: float) -> None:
        """``seconds`` of audio were sent."""
        self._audio.add(seconds)

    def finished(self, method: str, seconds: float) -> None:
        """The request completed successfully ``seconds`` after it started."""
        self._total.record(seconds, {"method": method})


# -- one service's telemetry ------------------------------------------------------------------------------------


class Telemetry:
    """Metrics endpoint, instruments and tracing of one service.

    Args:
        service: "encoder", "acoustic", "vocoder" or "gateway" (the ``service`` label, and ``service.name``
            ``emoserve-<service>`` unless ``OTEL_SERVICE_NAME`` says otherwise).
        config: The metrics endpoint (port -1: no metrics).
        span_exporters: Where spans go; None reads the ``OTEL_*`` variables (:func:`span_exporters_from_env`);
            empty: tracing off.

    Raises:
        ConfigError: The ``OTEL_*`` variables ask for an unsupported exporter.
    """

    def __init__(self, service: str, config: MetricsConfig, *, span_exporters: Sequence[SpanExporter] | None = None) -> None:
        self.service = service
        self.config = config
        exporters = span_exporters_from_env() if span_exporters is None else list(span_exporters)
        resource = service_resource(service)
        self._tracer_provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if exporters:
            self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            for exporter in exporters:
                self._tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
            self._tracer = self._tracer_provider.get_tracer(TRACER_NAME)
        self._registry: CollectorRegistry | None = None
        self._meter_provider: MeterProvider | None = None
        if config.port >= 0:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            self._registry = CollectorRegistry(auto_describe=True)
            reader = PrometheusMetricReader(scope_info_enabled=False, registry=self._registry)
            views = [
                View(instrument_type=Histogram, instrument_name="*_seconds",
                     aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S)),
                View(instrument_name="emoserve_batch_size", aggregation=ExplicitBucketHistogramAggregation(
                    BATCH_SIZE_BUCKETS)),
            ]
            self._meter_provider = MeterProvider(
                metric_readers=[reader], resource=resource, views=views, shutdown_on_exit=False
            )
            self.meter: Meter = self._meter_provider.get_meter(TRACER_NAME)
        else:
            self.meter = NoOpMeterProvider().get_meter(TRACER_NAME)
        self._rpc = _RpcMetrics(self.meter, service) if self.metrics_enabled else None
        self._stage_instruments: _StageInstruments | None = None
        self._stages: list[tuple[Any, Callable[[], str]]] = []
        self._gpus: dict[str, int] = {}
        self._http: Any = None
        self._http_thread: Any = None
        self._port: int | None = None

    @property
    def tracing_enabled(self) -> bool:
        """True when spans are recorded and exported."""
        return self._tracer is not None

    @property
    def metrics_enabled(self) -> bool:
        """True unless the metrics port is -1."""
        return self.config.port >= 0

    @property
    def metrics_port(self) -> int | None:
        """The port of the running metrics endpoint (the actual one when configured as 0), else None."""
        return self._port

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The interceptors a server of this service needs, outermost first."""
        interceptors: list[grpc.aio.ServerInterceptor] = []
        if self._rpc is not None or self._tracer_provider is None:
            interceptors.append(_ServerInterceptor(self._rpc, attach_context=self._tracer_provider is None))
        if self._tracer_provider is not None:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor

            interceptors.append(aio_server_interceptor(
                tracer_provider=self._tracer_provider, filter_=lambda details: not _unobserved(details.method)
            ))
        return interceptors

    def start_metrics_server(self, default_host: str) -> int | None:
        """Starts ``http://HOST:PORT/metrics`` (in a thread); no-op when metrics are off.

        Args:
            default_host: Interface used when the config names none (the gRPC server's).

        Returns:
            The bound port, or None when metrics are off.

        Raises:
            OSError: The port could not be bound.
        """
        if self._registry is None or self._http is not None:
            return self._port
        host = (self.config.host or default_host).strip("[]")
        try:
            self._http, self._http_thread = start_http_server(self.config.port, addr=host, registry=self._registry)
        except OSError as exc:
            raise OSError(f"cannot bind the {self.service} metrics endpoint {host}:{self.config.port}: {exc}") from exc
        self._port = self._http.server_port
        log.info("%s metrics on http://%s:%d/metrics", self.service, host, self._port)
        return self._port

    def instrument_stage(self, service: Any) -> None:
        """Observes a :class:`~emoserve.runtime.stage.StageService`: its batcher (queue, compute, batch size,
        rejections, pending; ``queue``/``execute`` spans), its engine and, on CUDA, GPU memory. A process serving
        several stages calls this once per stage; the gauges report every stage (and each device once).

        Uses the service's ``stage``, ``device``, ``batcher``, ``engine`` (``.engine`` name, once loaded) and
        optional ``engine_reason``. A CUDA device is labelled with its index (``cuda:0``).
        """
        device, index = service.device, None
        if device.startswith("cuda"):
            import torch

            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index
            device = f"cuda:{index}"

        def engine() -> str:
            return str(getattr(service.engine, "engine", "unknown"))

        if self._stage_instruments is None:
            self._stage_instruments = _StageInstruments(self.meter)
        service.batcher.observer = _StageObserver(self._stage_instruments, engine, device, self._tracer)
        if not self.metrics_enabled:
            return
        first = not self._stages
        self._stages.append((service, engine))
        if index is not None:
            self._gpus[device] = index
        if first:
            self._register_stage_gauges()

    def _register_stage_gauges(self) -> None:
        """The pending-requests, engine and GPU memory gauges, over every instrumented stage."""

        def pending(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(s.batcher.stats().pending, {"stage": s.stage}) for s, _ in self._stages]

        def engine_info(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(1, {"stage": s.stage, "engine": engine(), "reason": str(getattr(s, "engine_reason",
                                                                                            "configured"))})
                for s, engine in self._stages if s.engine is not None
            ]

        def gpu_memory(options: CallbackOptions) -> Iterable[Observation]:
            import torch

            return [Observation(torch.cuda.memory_allocated(i), {"device": d}) for d, i in self._gpus.items()]

        self.meter.create_observable_gauge(
            "emoserve_pending_requests", callbacks=[pending], unit="{request}",
            description="Items queued in the batcher, not yet executing (queue depth).",
        )
        self.meter.create_observable_gauge(
            "emoserve_engine_info", callbacks=[engine_info], description="1 for the engine a stage runs, and why."
        )
        self.meter.create_observable_gauge(
            "emoserve_gpu_memory_used_bytes", callbacks=[gpu_memory], unit="By",
            description="GPU memory held by tensors (torch.cuda.memory_allocated).",
        )

    def gateway_metrics(self) -> GatewayMetrics:
        """The gateway's time-to-first-audio, end-to-end and audio instruments."""
        return GatewayMetrics(self.meter)

    def force_flush(self, timeout_s: float = 10.0) -> None:
        """Exports the spans ended so far."""
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Stops the metrics endpoint and flushes and closes the exporters (blocking; idempotent)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http_thread.join(5)
            self._http = self._http_thread = None
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()
            self._tracer_provider = None
        if self._meter_provider is not None:
            self._meter_provider.shutdown()
            self._meter_provider = None
