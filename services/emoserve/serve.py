"""Entry points that run one process: a stage (``encoder``/``acoustic``/``vocoder``) or the gateway."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from emoserve.gateway.discovery import discovery_for, initial_addresses, parse_target
from emoserve.gateway.service import SynthesizerService, stage_pools
from emoserve.runtime.allocator import limit_malloc_arenas
from emoserve.runtime.config import StageConfig
from emoserve.runtime.heap import freeze_startup_heap, release_startup_heap
from emoserve.runtime.security import BearerTokenInterceptor, load_tokens
from emoserve.runtime.server import StageServer
from emoserve.runtime.telemetry import Telemetry
from emoserve.v1 import tts_pb2, tts_pb2_grpc

STAGES: dict[str, str] = {
    "encoder": "emoserve.encoder.service:EncoderService",
    "acoustic": "emoserve.acoustic.service:AcousticService",
    "vocoder": "emoserve.vocoder.service:VocoderService",
}
"""Each stage's servicer, imported only by the process that serves it (the gateway never loads torch)."""
GATEWAY_MALLOC_ARENAS = 2
"""glibc malloc arenas of a gateway process (:mod:`emoserve.runtime.allocator`; ``MALLOC_ARENA_MAX`` overrides)."""


@dataclass
class StageAddresses:
    """Where the gateway finds each stage: ``host:port`` items, or one ``k8s://`` / ``dns:`` URI
    (see :func:`emoserve.gateway.discovery.parse_target`)."""

    encoder: list[str]
    acoustic: list[str]
    vocoder: list[str]


def build_stage(kind: str, model_dir: str, config: StageConfig):
    """The servicer of stage ``kind`` over the model directory (the model loads in ``start_stage``)."""
    if kind not in STAGES:
        raise ValueError(f"unknown stage {kind!r}; choose from {sorted(STAGES)}")
    from emoserve.model.modeldir import ModelDir

    module, name = STAGES[kind].split(":")
    return getattr(importlib.import_module(module), name)(ModelDir(model_dir), config)


async def start_gateway(
    config: StageConfig, stages: StageAddresses, telemetry: Telemetry | None = None
) -> tuple[StageServer, SynthesizerService]:
    """Binds the gateway (NOT_SERVING), waits for every stage to answer, then reports SERVING.

    ``telemetry`` defaults to one from ``config.metrics`` and the ``OTEL_*`` variables.

    The public API requires a bearer token when ``config.auth`` yields any; the stages are reached over
    ``config.stage_tls``.
    """
    tokens = load_tokens(config.auth)
    targets = {name: parse_target(getattr(stages, name)) for name in ("encoder", "acoustic", "vocoder")}
    pools = stage_pools(
        *(initial_addresses(t) for t in targets.values()), config.server.max_message_bytes, config.stage_tls,
        config.pool,
    )
    discoveries = [d for d in map(discovery_for, targets, targets.values(), pools) if d is not None]
    telemetry = telemetry or Telemetry("gateway", config.metrics)
    service = SynthesizerService(*pools, config, metrics=telemetry.gateway_metrics())
    server = StageServer(config.server, name="gateway", telemetry=telemetry)
    if tokens:
        server.add_interceptor(BearerTokenInterceptor(tokens))
    server.add_service(
        tts_pb2.DESCRIPTOR.services_by_name["Synthesizer"], service, tts_pb2_grpc.add_SynthesizerServicer_to_server
    )
    for discovery in discoveries:
        server.add_shutdown_hook(discovery.close)
    for pool in pools:
        server.add_shutdown_hook(pool.close)
    await server.start()
    try:
        for discovery in discoveries:
            await discovery.start()
        await service.load()
    except BaseException:
        await server.stop(0)
        raise
    await server.mark_ready()
    return server, service


async def run_until_signal(server: StageServer, on_ready: Callable[[StageServer], None] | None = None) -> None:
    """Installs SIGTERM/SIGINT handlers (graceful drain) and waits for the server to stop."""
    server.install_signal_handlers()
    if on_ready is not None:
        on_ready(server)
    await server.wait()


async def serve(kind: str, config: StageConfig, model_dir: str = "", stages: StageAddresses | None = None,
                on_ready: Callable[[StageServer], None] | None = None) -> None:
    """Runs one process until SIGTERM/SIGINT: a stage over ``model_dir`` (or several joined by ``+``, e.g.
    ``acoustic+vocoder``, in one server), or the gateway over ``stages``."""
    if kind == "gateway":
        if stages is None:
            raise ValueError("the gateway needs the addresses of the encoder, acoustic and vocoder stages")
        limit_malloc_arenas(GATEWAY_MALLOC_ARENAS)  # before gRPC starts its threads
        server, _ = await start_gateway(config, stages)
    else:
        from emoserve.runtime.stage import start_stage

        server = await start_stage(*(build_stage(stage, model_dir, config) for stage in kind.split("+")))
    if config.server.gc_freeze:
        freeze_startup_heap()
    try:
        await run_until_signal(server, on_ready)
    finally:
        if config.server.gc_freeze:
            release_startup_heap()
