"""The whole pipeline in-process: three stages and the gateway on real loopback gRPC ports.

Every server runs on ONE asyncio event loop owned by a background thread (:class:`LoopThread`), so tests
can drive it with the blocking :class:`emoserve.client.Client` from the main thread, and run coroutines
(the asyncio client, batcher inspection) on the servers' loop with :meth:`LoopThread.run`.

The default pipeline (:func:`pipeline`) is shared by the whole package; tests that need a differently
configured stage start their own with :func:`start_stages` / :func:`start_gateway_for` on the same loop
and stop it with :func:`stop_servers`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emoserve.client import Client
from emoserve.gateway.service import SynthesizerService
from emoserve.runtime.config import StageConfig, load_config
from emoserve.runtime.server import StageServer
from emoserve.runtime.stage import StageService, start_stage
from emoserve.serve import StageAddresses, build_stage, start_gateway
from emoserve.v1 import stages_pb2_grpc

T = TypeVar("T")

HOST = "127.0.0.1"
STAGE_KINDS = ("encoder", "acoustic", "vocoder")
STOP_GRACE_S = 0.5
"""Grace period given to in-flight RPCs when a test pipeline stops."""
BATCHING = {"max_batch_size": 8, "max_queue_delay_us": 1000}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STUBS = {
    "encoder": stages_pb2_grpc.EncoderStub,
    "acoustic": stages_pb2_grpc.AcousticStub,
    "vocoder": stages_pb2_grpc.VocoderStub,
}


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="pipeline-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedules ``coro`` on the loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Runs ``coro`` on the loop and waits (at most ``timeout`` s) for its result."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Cancels what is left on the loop, stops it, joins the thread and closes the loop."""

        async def drain() -> None:
            current = asyncio.current_task()
            leftovers = [t for t in asyncio.all_tasks() if t is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.run(drain(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            if not self._thread.is_alive():
                self.loop.close()


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stage_config(
    port: int = 0, batching: dict[str, Any] | None = None, server: dict[str, Any] | None = None, **overrides: Any
) -> StageConfig:
    """A CPU stage/gateway config listening on loopback (``port`` 0: any free port; metrics on a free port)."""
    return load_config(
        environ={},
        device="cpu",
        server={"host": HOST, "port": port, "grace_period_s": STOP_GRACE_S, **(server or {})},
        batching={**BATCHING, **(batching or {})},
        **{"metrics": {"port": 0}, **overrides},
    )


async def stop_servers(servers: list[StageServer]) -> None:
    """Stops servers in order with a short grace period (gateway first, then the stages)."""
    for server in servers:
        with contextlib.suppress(Exception):
            await server.stop(STOP_GRACE_S)


async def start_stages(
    model_path: Path, kinds: tuple[str, ...] = STAGE_KINDS, **config: Any
) -> tuple[dict[str, StageService], dict[str, StageServer]]:
    """Builds and starts stages (each SERVING once this returns); stops the started ones on failure."""
    services, servers = {}, {}
    try:
        for kind in kinds:
            services[kind] = build_stage(kind, str(model_path), stage_config(**config))
            servers[kind] = await start_stage(services[kind])
    except BaseException:
        await stop_servers(list(servers.values()))
        raise
    return services, servers


async def start_gateway_for(
    encoder: str, acoustic: str, vocoder: str, **config: Any
) -> tuple[StageServer, SynthesizerService]:
    """Starts a gateway over the given stage addresses (SERVING once this returns)."""
    return await start_gateway(stage_config(**config), StageAddresses([encoder], [acoustic], [vocoder]))


@dataclass
class Pipeline:
    """A running pipeline: stage servicers and servers, the gateway, and the loop they run on."""

    loop: LoopThread
    model_path: Path
    services: dict[str, StageService]
    servers: dict[str, StageServer]
    gateway: SynthesizerService
    clients: list[Client] = field(default_factory=list)

    def address(self, name: str = "gateway") -> str:
        """``host:port`` of ``name``: "gateway" or a stage kind."""
        return f"{HOST}:{self.servers[name].port}"

    @property
    def target(self) -> str:
        return self.address("gateway")

    def client(self, timeout: float | None = 60.0) -> Client:
        """A blocking client of the gateway (closed when the pipeline stops)."""
        client = Client(self.target, timeout=timeout)
        self.clients.append(client)
        return client

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.loop.run(coro, timeout)


@pytest.fixture(scope="package")
def loop_thread() -> Iterator[LoopThread]:
    """The one background event loop every in-process server of this package runs on."""
    loop = LoopThread()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="package")
def pipeline(loop_thread: LoopThread, tiny_model_path: Path) -> Iterator[Pipeline]:
    """Encoder, acoustic, vocoder and gateway on loopback ports over the tiny dummy model."""

    async def start() -> tuple[dict[str, StageService], dict[str, StageServer], SynthesizerService]:
        services, servers = await start_stages(tiny_model_path)
        try:
            gateway_server, gateway = await start_gateway_for(
                *(f"{HOST}:{servers[k].port}" for k in STAGE_KINDS)
            )
        except BaseException:
            await stop_servers(list(servers.values()))
            raise
        return services, {**servers, "gateway": gateway_server}, gateway

    services, servers, gateway = loop_thread.run(start(), timeout=120)
    pipe = Pipeline(loop_thread, tiny_model_path, services, servers, gateway)
    try:
        yield pipe
    finally:
        for client in pipe.clients:
            client.close()
        loop_thread.run(stop_servers([servers["gateway"], *(servers[k] for k in STAGE_KINDS)]), timeout=60)


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[Client]:
    """A blocking client of the shared gateway."""
    with Client(pipeline.target, timeout=60.0) as c:
        yield c


# -- helpers shared by the test modules ----------------------------------------------------------------


def health_check(address: str, service: str = "", timeout: float = 5.0, wait_for_ready: bool = False) -> int:
    """``grpc.health.v1`` status of ``service`` at ``address`` (blocking; ``wait_for_ready``: until bound)."""
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, wait_for_ready=wait_for_ready
        )
    return reply.status


@contextlib.contextmanager
def stage_stub(address: str, kind: str) -> Iterator[Any]:
    """A blocking stub of stage ``kind`` at ``address``."""
    with grpc.insecure_channel(address) as channel:
        yield STUBS[kind](channel)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls ``predicate`` on the loop until true; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


async def wait_for(awaitable: Awaitable[T], timeout: float = 10.0) -> T:
    return await asyncio.wait_for(awaitable, timeout)
