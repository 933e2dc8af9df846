"""What every stage servicer shares: the engine-behind-a-batcher shell, error mapping, timings, start-up.

A stage subclasses :class:`StageService` (its engine, the length of a batch item, its RPCs);
:func:`start_stage` does the rest: bind, health NOT_SERVING, load + warm-up, SERVING; shutdown drains. One
process may serve several stages.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from emoserve.runtime.batcher import DynamicBatcher, Timed
from emoserve.runtime.config import StageConfig, resolve_device, resolve_precision
from emoserve.runtime.errors import grpc_status_for
from emoserve.runtime.server import AddToServer, StageServer
from emoserve.runtime.telemetry import Telemetry
from emoserve.v1 import stages_pb2, tts_pb2

if TYPE_CHECKING:
    from emoserve.model.modeldir import ModelDir

log = logging.getLogger(__name__)
T = TypeVar("T")


async def answer(context: grpc.aio.ServicerContext, work: Awaitable[T] | Callable[[], T]) -> T:
    """Awaits ``work`` (or calls it, if it is a plain function); on failure aborts the RPC with the status
    mapped from the exception.

    Unexpected exceptions are logged with their traceback and reported as ``INTERNAL``. When the RPC has
    already ended (the caller cancelled, or its deadline passed: it has its status), there is nobody to
    answer and the handler is cancelled instead.
    """
    try:
        return await work if inspect.isawaitable(work) else work()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a gRPC status
        remaining = context.time_remaining()
        if context.done() or (remaining is not None and remaining <= 0):
            raise asyncio.CancelledError from exc
        code = grpc_status_for(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("internal error")
        await context.abort(code, str(exc) or type(exc).__name__)
        raise  # unreachable: abort raises


def timing(stage: str, timed: Timed[Any], replica: str) -> tts_pb2.StageTiming:
    """The ``StageTiming`` of one request served through a batcher."""
    return tts_pb2.StageTiming(
        stage=stage, queue_ms=timed.queue_ms, compute_ms=timed.compute_ms, batch_size=timed.batch_size, replica=replica
    )


def deadline_s(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left before the caller's deadline, or None without one (used as queue timeout)."""
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 1e-3)


class StageService:
    """Base of the encoder, acoustic and vocoder servicers: one engine behind one dynamic batcher.

    Subclasses set :attr:`stage`, :attr:`service` (name in ``stages.proto``) and :attr:`add_to_server`, and
    implement :meth:`build_engine` (an object with ``run(items) -> results`` and ``warmup()``) and
    :meth:`length_of` (for length bucketing). The engine is built and warmed in :meth:`load` (blocking; run
    in a worker thread while health says NOT_SERVING).
    """

    stage: str
    service: str
    add_to_server: AddToServer

    def __init__(self, model_dir: ModelDir, config: StageConfig) -> None:
        self.model_dir = model_dir
        self.config = config
        self.replica = config.replica
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.engine: Any = None
        self.engine_reason = ""
        """Why :attr:`engine` was chosen (see :meth:`load`); logged and exported with the engine's name."""
        self.batcher = DynamicBatcher(
            self.execute, config.batching, length_of=self.length_of, name=self.stage
        )
        self.loaded = False

    def build_engine(self) -> Any:
        """Loads the stage's model (blocking)."""
        raise NotImplementedError

    def execute(self, items: list[Any]) -> list[Any]:
        """One batch through the engine (in the batcher's worker thread, off the event loop)."""
        return self.engine.run(items)

    @staticmethod
    def length_of(item: Any) -> int:
        """Length of a batch item (tokens, characters or frames) for length bucketing."""
        raise NotImplementedError

    def load(self) -> None:
        """Builds and warms up the first engine of the stage's configured preference (``engine`` in the config)
        that is available and starts; :meth:`build_engine` is its ``torch`` engine. A failing engine is
        released before the next is tried; when none starts, this raises
        :class:`~emoserve.engines.selection.EngineSelectionError` and the stage never reports SERVING.
        """
        from emoserve.engines.selection import select_engine, stage_candidates

        preference = getattr(self.config.engine, self.stage, ("torch",))
        candidates = stage_candidates(
            self.stage, self.model_dir, self.device, self.precision, self.config, self.build_engine
        )
        choice = select_engine(self.stage, preference, candidates, warmup=self.config.warmup)
        self.engine, self.engine_reason = choice.engine, choice.reason
        log.info("%s: engine %s chosen because %s", self.stage, choice.name, choice.reason)

    def info_fields(self) -> dict[str, Any]:
        """Stage-specific ``StageInfo`` fields (voices, mel bins) added to the common ones."""
        return {}

    async def Info(self, request: stages_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> stages_pb2.StageInfo:
        """Describes the loaded model; UNAVAILABLE while loading (the gateway reads an answer as "ready")."""
        await self.ensure_loaded(context)
        m = self.model_dir.manifest
        fields = dict(
            stage=self.stage, model=m.name, sample_rate_hz=m.audio.sample_rate, hop_length=m.audio.hop_length,
            n_mels=m.audio.n_mels, device=self.device, precision=self.precision, engine=self.engine.engine,
        )
        return stages_pb2.StageInfo(**{**fields, **self.info_fields()})

    async def ensure_loaded(self, context: grpc.aio.ServicerContext) -> None:
        """Aborts with UNAVAILABLE while the model is still loading."""
        if not self.loaded:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.stage} is loading its model")


async def start_stage(*services: StageService, telemetry: Telemetry | None = None) -> StageServer:
    """Binds (health NOT_SERVING), loads and warms the models in a worker thread, then reports SERVING.

    Several stages in one process share one server and one CUDA context: on a GPU they share, their kernels
    interleave inside that context instead of time-slicing the GPU between processes (``emoserve up
    --colocate``). They are configured alike (the first service's server settings).

    ``telemetry`` (default: from the first service's ``config.metrics`` and the ``OTEL_*`` variables) observes
    the stages' RPCs, batchers and engines. Shutdown (:meth:`StageServer.stop`) drains every batcher after
    in-flight RPCs finish.
    """
    if not services:
        raise ValueError("start_stage needs at least one stage")
    first = services[0]
    name = "+".join(service.stage for service in services)
    telemetry = telemetry or Telemetry(name, first.config.metrics)
    server = StageServer(first.config.server, name=name, telemetry=telemetry)
    for service in services:
        telemetry.instrument_stage(service)
        server.add_service(stages_pb2.DESCRIPTOR.services_by_name[service.service], service, service.add_to_server)
        server.add_shutdown_hook(service.batcher.close)
    await server.start()
    try:
        for service in services:
            await asyncio.get_running_loop().run_in_executor(None, service.load)
    except BaseException:
        await server.stop(0)
        raise
    for service in services:
        service.loaded = True
    await server.mark_ready()
    return server
