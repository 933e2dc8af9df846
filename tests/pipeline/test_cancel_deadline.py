"""Cancellation and deadlines: a caller that goes away takes its queued stage work with it; no hangs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from emoserve.client import AsyncClient, Client, build_request
from emoserve.runtime.batcher import BatcherStats, DynamicBatcher
from emoserve.runtime.server import StageServer
from tests.pipeline.conftest import (
    HOST,
    LoopThread,
    Pipeline,
    start_gateway_for,
    start_stages,
    stop_servers,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

HOLD_US = 120_000_000
"""Vocoder queue delay: a lone job waits two minutes for its batch to fill, i.e. it stays queued for the test."""
TEXT = "hello"  # 6 tokens x 4 frames = 24 frames: one unary vocode job, two stream chunks (8 + 16 frames)


@dataclass
class Held:
    """A vocoder whose batcher holds lone jobs in its queue, behind its own gateway."""

    loop: LoopThread
    batcher: DynamicBatcher
    vocoder: StageServer
    gateway: StageServer

    @property
    def target(self) -> str:
        return f"{HOST}:{self.gateway.port}"

    def stop(self) -> BatcherStats:
        """Stops gateway and vocoder (closing the batcher runs whatever is still queued); returns final stats."""
        self.loop.run(stop_servers([self.gateway, self.vocoder]))
        return self.batcher.stats()


@pytest.fixture
def held(pipeline: Pipeline, loop_thread: LoopThread, tiny_model_path: Path) -> Iterator[Held]:
    async def start() -> Held:
        services, servers = await start_stages(
            tiny_model_path, ("vocoder",), batching={"max_queue_delay_us": HOLD_US, "max_batch_size": 8}
        )
        try:
            gateway, _ = await start_gateway_for(
                pipeline.address("encoder"), pipeline.address("acoustic"), f"{HOST}:{servers['vocoder'].port}"
            )
        except BaseException:
            await stop_servers([servers["vocoder"]])
            raise
        return Held(loop_thread, services["vocoder"].batcher, servers["vocoder"], gateway)

    h = loop_thread.run(start())
    try:
        yield h
    finally:
        h.stop()  # idempotent


def test_cancelled_unary_call_drops_its_queued_vocoder_job(held: Held) -> None:
    before = held.batcher.stats()
    assert before.pending == before.inference_count == 0

    async def scenario() -> None:
        async with AsyncClient(held.target, timeout=60) as client:
            call = asyncio.ensure_future(client.synthesize(TEXT))
            await wait_until(lambda: held.batcher.stats().pending == 1, what="the vocode job to be queued")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await wait_until(lambda: held.batcher.stats().cancelled_count == 1, what="the job to be cancelled")

    held.loop.run(scenario())
    stats = held.batcher.stats()
    assert (stats.pending, stats.in_flight, stats.inference_count, stats.exec_count) == (0, 0, 0, 0)
    # Closing the batcher runs everything still queued: the cancelled job is not there to run.
    final = held.stop()
    assert (final.inference_count, final.exec_count, final.cancelled_count) == (0, 0, 1)


def test_cancelled_stream_drops_its_queued_chunk(held: Held) -> None:
    async def scenario() -> None:
        async with AsyncClient(held.target, timeout=60) as client:

            async def consume() -> list:
                return [chunk async for chunk in client.stream(TEXT)]

            call = asyncio.ensure_future(consume())
            # The vocoder queues a stream's first chunk alone; later chunks wait until it is done.
            await wait_until(lambda: held.batcher.stats().pending == 1, what="the first stream chunk to be queued")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await wait_until(lambda: held.batcher.stats().cancelled_count == 1, what="the chunk to be cancelled")

    held.loop.run(scenario())
    stats = held.batcher.stats()
    assert (stats.pending, stats.inference_count) == (0, 0)
    final = held.stop()
    assert (final.inference_count, final.cancelled_count) == (0, 1)


def test_cancelled_blocking_stream_drops_its_queued_chunks(held: Held) -> None:
    with Client(held.target, timeout=60) as client:
        call = client.stub.SynthesizeStream(build_request(TEXT), timeout=60)
        held.loop.run(wait_until(lambda: held.batcher.stats().pending == 1, what="the first stream chunk to be queued"))
        call.cancel()
        with pytest.raises(grpc.RpcError) as err:
            list(call)
        assert err.value.code() == grpc.StatusCode.CANCELLED
        held.loop.run(wait_until(lambda: held.batcher.stats().cancelled_count == 1, what="the chunk to be cancelled"))
    assert held.stop().inference_count == 0


def test_deadline_passed_while_queued_is_deadline_exceeded_and_drops_the_job(held: Held) -> None:
    with Client(held.target, timeout=1.0) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.synthesize(TEXT)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway propagated the deadline: the job left the vocoder queue (queue timeout or cancel) unrun.
    held.loop.run(wait_until(
        lambda: (lambda s: s.pending == 0 and s.timeout_count + s.cancelled_count == 1)(held.batcher.stats()),
        what="the expired job to leave the queue",
    ))
    final = held.stop()
    assert final.inference_count == 0


@pytest.mark.parametrize("rpc", ["unary", "stream"])
def test_tiny_deadline_is_deadline_exceeded_without_a_hang(pipeline: Pipeline, rpc: str) -> None:
    with Client(pipeline.target, timeout=0.001) as client:
        with pytest.raises(grpc.RpcError) as err:
            if rpc == "unary":
                client.synthesize("Hello from emoserve. " * 20)
            else:
                list(client.stream("Hello from emoserve. " * 20))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with Client(pipeline.target, timeout=30) as client:  # still serving
        assert len(client.synthesize(TEXT).audio) == 2 * 6 * 4 * 256
