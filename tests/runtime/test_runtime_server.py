"""StageServer on a real loopback port: health, reflection, limits, graceful shutdown, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
from typing import Any, AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from emoserve.runtime import (
    BatcherClosedError,
    NotFoundError,
    QueueFullError,
    QueueTimeoutError,
    ServerConfig,
    StageServer,
    TensorValidationError,
    grpc_status_for,
)
from emoserve.v1 import stages_pb2, stages_pb2_grpc

pytestmark = pytest.mark.timeout(15)

ENCODER = stages_pb2.DESCRIPTOR.services_by_name["Encoder"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class SlowEncoder(stages_pb2_grpc.EncoderServicer):
    """Encode sleeps `delay_s` then echoes the text in one segment."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.started = asyncio.Event()

    async def Encode(self, request: stages_pb2.EncodeRequest, context: Any) -> stages_pb2.EncodeResponse:
        self.started.set()
        await asyncio.sleep(self.delay_s)
        return stages_pb2.EncodeResponse(segments=[stages_pb2.EncodedSegment(text=request.text)])

    async def Info(self, request: stages_pb2.InfoRequest, context: Any) -> stages_pb2.StageInfo:
        return stages_pb2.StageInfo(stage="encoder")


def encoder_server(servicer: stages_pb2_grpc.EncoderServicer, **cfg: Any) -> StageServer:
    server = StageServer(ServerConfig(host="127.0.0.1", port=0, **cfg), name="encoder")
    server.add_service(ENCODER, servicer, stages_pb2_grpc.add_EncoderServicer_to_server)
    return server


@contextlib.asynccontextmanager
async def started(server: StageServer) -> AsyncIterator[int]:
    """Starts ``server`` and always stops it, so a failing test cannot leave it running."""
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


async def health_status(channel: grpc.aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return reply.status


def test_health_is_not_serving_until_mark_ready_then_serving() -> None:
    async def body() -> None:
        server = encoder_server(SlowEncoder())
        async with started(server) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert port == server.port > 0
            assert await health_status(channel, "") == NOT_SERVING
            assert await health_status(channel, "emoserve.v1.Encoder") == NOT_SERVING
            await server.mark_ready()
            assert server.ready
            assert await health_status(channel, "") == SERVING
            assert await health_status(channel, "emoserve.v1.Encoder") == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health_status(channel, "emoserve.v1.Nope")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(body())


def test_reflection_lists_registered_health_and_reflection_services() -> None:
    def query(port: int) -> tuple[list[str], str]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            return list(db.get_services()), db.FindFileContainingSymbol("emoserve.v1.Tensor").name

    async def body() -> None:
        async with started(encoder_server(SlowEncoder())) as port:
            services, tensor_file = await asyncio.to_thread(query, port)
        assert {"emoserve.v1.Encoder", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
        assert tensor_file == "emoserve/v1/stages.proto"

    asyncio.run(body())


def test_messages_over_the_configured_limit_are_rejected() -> None:
    async def body() -> None:
        server = encoder_server(SlowEncoder(), max_message_bytes=64 * 1024)
        async with started(server) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = stages_pb2_grpc.EncoderStub(channel)
            ok = await stub.Encode(stages_pb2.EncodeRequest(text="x" * 1000), timeout=2)
            assert ok.segments[0].text == "x" * 1000
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Encode(stages_pb2.EncodeRequest(text="x" * 100_000), timeout=2)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    asyncio.run(body())


def test_second_server_on_a_taken_port_fails_to_bind() -> None:
    async def body() -> None:
        async with started(encoder_server(SlowEncoder())) as port:
            second = StageServer(ServerConfig(host="127.0.0.1", port=port), name="dup")
            with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
                await second.start()

    asyncio.run(body())


def test_stop_finishes_in_flight_rpc_refuses_new_ones_then_runs_hooks() -> None:
    async def body() -> None:
        servicer = SlowEncoder(delay_s=0.3)
        server = encoder_server(servicer)
        events: list[str] = []

        async def hook() -> None:
            events.append("hook")

        server.add_shutdown_hook(hook)
        async with started(server) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await server.mark_ready()
            stub = stages_pb2_grpc.EncoderStub(channel)
            in_flight = asyncio.ensure_future(stub.Encode(stages_pb2.EncodeRequest(text="hi"), timeout=5))
            await servicer.started.wait()
            stopping = server.stop_soon(grace_s=5)
            await asyncio.sleep(0.05)
            assert not server.ready
            assert events == []  # hooks wait for in-flight RPCs
            reply = await in_flight
            assert reply.segments[0].text == "hi"
            await asyncio.wait_for(stopping, 5)
            await asyncio.wait_for(server.wait(), 1)
            assert events == ["hook"]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Encode(stages_pb2.EncodeRequest(text="late"), timeout=1)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(body())


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from emoserve.runtime import ServerConfig, StageServer

    async def main():
        server = StageServer(ServerConfig(host="127.0.0.1", port=0, grace_period_s=2), name="t")

        async def ready():
            print(server.port, flush=True)

        async def hook():
            print("drained", flush=True)

        server.add_shutdown_hook(hook)
        await server.run(ready=ready)
        print("exited", flush=True)

    asyncio.run(main())
    """
)


def test_sigterm_shuts_down_gracefully_and_exits_zero() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        assert port > 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert out.split() == ["drained", "exited"]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TensorValidationError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (ValueError("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (QueueFullError("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (QueueTimeoutError("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (NotFoundError("voice"), grpc.StatusCode.NOT_FOUND),
        (BatcherClosedError("closing"), grpc.StatusCode.UNAVAILABLE),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL),
    ],
)
def test_runtime_exceptions_map_to_grpc_status_codes(exc: BaseException, code: grpc.StatusCode) -> None:
    assert grpc_status_for(exc) == code
