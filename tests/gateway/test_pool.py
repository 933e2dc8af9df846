"""StagePool against real gRPC servers on loopback: health-driven rotation, balancing, retry, membership.

Each replica is a real :class:`~emoserve.runtime.server.StageServer` (health, drain) serving a small fake
``emoserve.v1.Vocoder`` that names itself in its answers and can hold, refuse or break calls on demand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from emoserve.gateway.pool import ReplicaState, StagePool
from emoserve.runtime.config import PoolConfig, ServerConfig
from emoserve.runtime.server import StageServer
from emoserve.v1 import stages_pb2, stages_pb2_grpc
from tests.pipeline.conftest import HOST, free_port

pytestmark = pytest.mark.timeout(60)

MESSAGE_BYTES = 1 << 20
CALL_TIMEOUT_S = 10.0
FAST_S = 0.5
"""Upper bound for what must happen "at once" (a fast failure, a health change pushed by Watch)."""


class FakeVocoder(stages_pb2_grpc.VocoderServicer):
    """Answers ``Info`` with its name as the model; streams two chunks. Can hold, refuse or break calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse: grpc.StatusCode | None = None
        self.break_streams = False
        self.calls = 0

    async def Info(self, request: stages_pb2.InfoRequest, context: grpc.aio.ServicerContext) -> stages_pb2.StageInfo:
        self.calls += 1
        if self.refuse is not None:
            await context.abort(self.refuse, f"{self.name} refuses")
        await self.gate.wait()
        return stages_pb2.StageInfo(stage="vocoder", model=self.name)

    async def VocodeStream(
        self, request: stages_pb2.VocodeStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[stages_pb2.VocodeChunk]:
        self.calls += 1
        if self.refuse is not None:
            await context.abort(self.refuse, f"{self.name} refuses")
        yield stages_pb2.VocodeChunk(index=0)
        await self.gate.wait()
        if self.break_streams:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} broke the stream")
        yield stages_pb2.VocodeChunk(index=1, last=True)


class Replica:
    """A StageServer with a FakeVocoder on a fixed loopback port (restartable on the same port)."""

    def __init__(self, name: str) -> None:
        self.servicer = FakeVocoder(name)
        self.port = free_port()
        self.server: StageServer | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self, serving: bool = True) -> None:
        """Binds (health NOT_SERVING) and, with ``serving``, reports SERVING."""
        server = StageServer(ServerConfig(host=HOST, port=self.port, grace_period_s=5.0), name=self.servicer.name)
        server.add_service(stages_pb2.DESCRIPTOR.services_by_name["Vocoder"], self.servicer,
                           stages_pb2_grpc.add_VocoderServicer_to_server)
        await server.start()
        self.server = server
        if serving:
            await server.mark_ready()

    async def stop(self, grace_s: float = 0.0) -> None:
        if self.server is not None:
            await self.server.stop(grace_s)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 45))


@asynccontextmanager
async def replicas(*names: str, serving: bool = True) -> AsyncIterator[list[Replica]]:
    started = [Replica(name) for name in names]
    try:
        for replica in started:
            await replica.start(serving)
        yield started
    finally:
        for replica in started:
            replica.servicer.gate.set()
            await replica.stop()


@asynccontextmanager
async def pool_of(*addresses: str, options: PoolConfig | None = None) -> AsyncIterator[StagePool]:
    pool = StagePool("vocoder", addresses, stages_pb2_grpc.VocoderStub, MESSAGE_BYTES, options=options)
    try:
        yield pool
    finally:
        await pool.close()


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
    """Waits until ``predicate()``; returns the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def states(pool: StagePool) -> dict[str, ReplicaState]:
    return {r.address: r.state for r in pool.replicas}


async def serving(pool: StagePool, *replicas: Replica, timeout: float = 5.0) -> float:
    addresses = {r.address for r in replicas}
    return await until(lambda: all(states(pool).get(a) is ReplicaState.SERVING for a in addresses),
                       f"{sorted(addresses)} to be SERVING", timeout)


async def info(pool: StagePool) -> str:
    """Which replica answered an ``Info`` call."""
    return (await pool.call("Info", stages_pb2.InfoRequest(), timeout=CALL_TIMEOUT_S)).model


async def timed_failure(call: Awaitable[Any]) -> tuple[grpc.aio.AioRpcError, float]:
    start = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value, time.monotonic() - start


async def stream_indices(pool: StagePool) -> list[int]:
    return [c.index async for c in pool.stream("VocodeStream", stages_pb2.VocodeStreamRequest(), CALL_TIMEOUT_S)]


# -- membership and readiness ----------------------------------------------------------------------------------


def test_pool_without_replicas_fails_fast_with_unavailable() -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            assert pool.replicas == ()
            for call in (info(pool), stream_indices(pool)):
                error, elapsed = await timed_failure(call)
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert "no ready replica of stage vocoder" in error.details()
                assert elapsed < FAST_S

    run(scenario)


def test_unreachable_replica_fails_fast_without_a_hang() -> None:
    async def scenario() -> None:
        async with pool_of(f"{HOST}:{free_port()}") as pool:  # nothing listens there
            error, elapsed = await timed_failure(info(pool))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert elapsed < 2.0
            await until(lambda: pool.replicas[0].state is ReplicaState.UNREACHABLE, "the replica to be unreachable")
            error, elapsed = await timed_failure(info(pool))
            assert (error.code(), elapsed < FAST_S) == (grpc.StatusCode.UNAVAILABLE, True)
            assert "no ready replica of stage vocoder (replicas: 1 unreachable)" in error.details()

    run(scenario)


def test_replica_joins_the_rotation_only_once_serving() -> None:
    async def scenario() -> None:
        async with replicas("a") as (a,), replicas("b", serving=False) as (b,), pool_of(a.address, b.address) as pool:
            await serving(pool, a)
            await until(lambda: states(pool)[b.address] is ReplicaState.NOT_SERVING, "b to be seen NOT_SERVING")
            assert [await info(pool) for _ in range(4)] == ["a"] * 4
            assert b.servicer.calls == 0

            assert b.server is not None
            await b.server.mark_ready()
            took = await serving(pool, b)
            assert took < 1.0  # polled every health_interval_s while not serving
            assert sorted([await info(pool) for _ in range(4)]) == ["a", "a", "b", "b"]

    run(scenario)


def test_draining_replica_leaves_at_once_finishes_its_calls_and_returns_after_restart() -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of(a.address, b.address) as pool:
            await serving(pool, a, b)
            a.servicer.gate.clear()
            held = asyncio.ensure_future(info(pool))  # first pick: a (least recently used)
            await until(lambda: a.servicer.calls == 1, "a call to be in flight on a")

            assert a.server is not None
            stopping = a.server.stop_soon(5.0)
            took = await until(lambda: states(pool)[a.address] is not ReplicaState.SERVING, "a to leave the rotation")
            assert took < FAST_S  # pushed by the Watch stream
            assert [await info(pool) for _ in range(3)] == ["b"] * 3

            a.servicer.gate.set()
            assert await asyncio.wait_for(held, CALL_TIMEOUT_S) == "a"  # admitted before the drain: completes
            # The pool's health stream does not hold the draining server open for its whole grace period.
            start = time.monotonic()
            await asyncio.wait_for(stopping, 5.0)
            assert time.monotonic() - start < 2.0

            await until(lambda: states(pool)[a.address] is ReplicaState.UNREACHABLE, "a to be unreachable")
            error_free = [await info(pool) for _ in range(3)]
            assert error_free == ["b"] * 3

            await a.start()  # same port
            took = await serving(pool, a)
            assert took < 2.0  # reconnection backoff is capped at max_reconnect_backoff_s
            assert "a" in {await info(pool) for _ in range(4)}

    run(scenario)


def test_no_serving_replica_is_unavailable_at_once() -> None:
    async def scenario() -> None:
        async with replicas("a", "b", serving=False) as (a, b), pool_of(a.address, b.address) as pool:
            await until(lambda: all(s is ReplicaState.NOT_SERVING for s in states(pool).values()), "both seen")
            error, elapsed = await timed_failure(info(pool))
            assert error.code() == grpc.StatusCode.UNAVAILABLE and elapsed < FAST_S
            assert "(replicas: 2 not serving)" in error.details()
            assert a.servicer.calls == b.servicer.calls == 0

    run(scenario)


def test_update_addresses_adds_and_removes_replicas() -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of() as pool:
            pool.update_addresses([a.address])
            await serving(pool, a)
            assert await info(pool) == "a"

            pool.update_addresses([a.address, b.address, a.address])  # duplicates count once
            assert [r.address for r in pool.replicas] == [a.address, b.address]
            await serving(pool, b)
            assert sorted([await info(pool) for _ in range(2)]) == ["a", "b"]

            a.servicer.gate.clear()
            b.servicer.gate.clear()
            before = a.servicer.calls + b.servicer.calls
            held = [asyncio.ensure_future(info(pool)) for _ in range(2)]  # one on each (least outstanding)
            await until(lambda: a.servicer.calls + b.servicer.calls == before + 2, "a call in flight on each")
            (removed,) = [r for r in pool.replicas if r.address == a.address]
            pool.update_addresses([b.address])
            assert [r.address for r in pool.replicas] == [b.address]
            b.servicer.gate.set()
            assert [await info(pool) for _ in range(3)] == ["b"] * 3  # no new call goes to a removed replica
            assert removed.channel.get_state() is not grpc.ChannelConnectivity.SHUTDOWN  # a call is in flight

            a.servicer.gate.set()
            assert sorted(await asyncio.wait_for(asyncio.gather(*held), CALL_TIMEOUT_S)) == ["a", "b"]
            await until(lambda: removed.channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN,
                        "the removed replica's channel to close")

            pool.update_addresses([])
            error, elapsed = await timed_failure(info(pool))
            assert error.code() == grpc.StatusCode.UNAVAILABLE and elapsed < FAST_S

    run(scenario)


def test_update_addresses_rejects_an_empty_address() -> None:
    async def scenario() -> None:
        async with pool_of() as pool:
            with pytest.raises(ValueError, match="empty address"):
                pool.update_addresses(["127.0.0.1:1", " "])
            assert pool.replicas == ()

    run(scenario)


# -- balancing and retry ---------------------------------------------------------------------------------------


def test_least_outstanding_then_least_recently_used() -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of(a.address, b.address) as pool:
            await serving(pool, a, b)
            assert [await info(pool) for _ in range(4)] == ["a", "b", "a", "b"]  # idle: take turns

            a.servicer.gate.clear()
            b.servicer.gate.clear()
            held = [asyncio.ensure_future(info(pool)) for _ in range(4)]
            await until(lambda: a.servicer.calls + b.servicer.calls == 8, "four calls in flight")
            assert sorted(r.outstanding for r in pool.replicas) == [2, 2]

            a.servicer.gate.set()
            await until(lambda: pool.replicas[0].outstanding == 0, "a's calls to finish")
            more = [asyncio.ensure_future(info(pool)) for _ in range(2)]  # b still has 2 in flight: both go to a
            assert await asyncio.wait_for(asyncio.gather(*more), CALL_TIMEOUT_S) == ["a", "a"]

            b.servicer.gate.set()
            assert sorted(await asyncio.wait_for(asyncio.gather(*held), CALL_TIMEOUT_S)) == ["a", "a", "b", "b"]
            assert [r.outstanding for r in pool.replicas] == [0, 0]

    run(scenario)


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED]
)
def test_refused_call_is_retried_on_another_replica(code: grpc.StatusCode) -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of(a.address, b.address) as pool:
            await serving(pool, a, b)
            a.servicer.refuse = code
            assert [await info(pool) for _ in range(4)] == ["b"] * 4
            assert a.servicer.calls == 1  # refused once, then avoided
            assert await stream_indices(pool) == [0, 1]

    run(scenario)


def test_last_refusal_is_the_error_when_every_replica_refuses() -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of(a.address, b.address) as pool:
            await serving(pool, a, b)
            a.servicer.refuse = b.servicer.refuse = grpc.StatusCode.RESOURCE_EXHAUSTED
            error, elapsed = await timed_failure(info(pool))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and elapsed < FAST_S
            assert a.servicer.calls == b.servicer.calls == 1

    run(scenario)


def test_other_errors_are_not_retried() -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of(a.address, b.address) as pool:
            await serving(pool, a, b)
            a.servicer.refuse = grpc.StatusCode.INVALID_ARGUMENT
            error, _ = await timed_failure(info(pool))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (a.servicer.calls, b.servicer.calls) == (1, 0)

    run(scenario)


def test_stream_that_fails_after_its_first_message_is_not_retried() -> None:
    async def scenario() -> None:
        async with replicas("a", "b") as (a, b), pool_of(a.address, b.address) as pool:
            await serving(pool, a, b)
            a.servicer.break_streams = True
            received: list[int] = []
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for chunk in pool.stream("VocodeStream", stages_pb2.VocodeStreamRequest(), CALL_TIMEOUT_S):
                    received.append(chunk.index)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert received == [0]
            assert (a.servicer.calls, b.servicer.calls) == (1, 0)
            assert pool.replicas[0].outstanding == 0

    run(scenario)


def test_consumer_leaving_a_stream_early_ends_the_call() -> None:
    async def scenario() -> None:
        async with replicas("a") as (a,), pool_of(a.address) as pool:
            await serving(pool, a)
            a.servicer.gate.clear()  # the second chunk never comes
            stream = pool.stream("VocodeStream", stages_pb2.VocodeStreamRequest(), CALL_TIMEOUT_S)
            assert (await anext(stream)).index == 0
            assert pool.replicas[0].outstanding == 1
            await stream.aclose()
            assert pool.replicas[0].outstanding == 0

    run(scenario)


def test_pool_config_is_validated() -> None:
    with pytest.raises(ValueError, match="keepalive_time_s must be >= 2"):
        PoolConfig(keepalive_time_s=1.0)
    with pytest.raises(ValueError, match="health_interval_s must be > 0"):
        PoolConfig(health_interval_s=0)
    with pytest.raises(ValueError, match="refused_avoid_s must be >= 0"):
        PoolConfig(refused_avoid_s=-1)


def test_gateway_pool_config_reaches_every_stage_pool() -> None:
    from emoserve.gateway.service import stage_pools
    from emoserve.runtime.config import load_config

    config = load_config(environ={"EMOSERVE_POOL__HEALTH_INTERVAL_S": "0.5"}, pool={"keepalive_time_s": 7.0})

    async def scenario() -> None:
        pools = stage_pools([], [], [], 1 << 20, pool=config.pool)
        try:
            for pool in pools:
                assert (pool.options.health_interval_s, pool.options.keepalive_time_s) == (0.5, 7.0)
                assert ("grpc.keepalive_time_ms", 7000) in pool._channel_options
        finally:
            for pool in pools:
                await pool.close()

    run(scenario)
