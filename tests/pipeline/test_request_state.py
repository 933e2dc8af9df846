"""Finished requests leave nothing behind in the gateway: no task, stage call, plan or call in flight.

Whatever a request leaves behind grows with the request count, which a soak sees as a leak. The mix covers every
way a request ends: unary and streamed, completed, cancelled by the caller mid-stream (with segments still being
synthesised ahead), past its deadline, and refused.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from typing import Any

import grpc
import pytest

from emoserve.client import build_request
from emoserve.gateway.service import Plan, Rendered
from emoserve.v1 import tts_pb2_grpc
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_streaming import LONG_TEXT

pytestmark = pytest.mark.timeout(120)

SHORT = "Hello there."
SETTLE_S = 10.0


async def gateway_state(pipeline: Pipeline) -> dict[str, Any]:
    """What the gateway holds now (runs on the servers' loop; the stages share it and must be idle too)."""
    gc.collect()
    current = asyncio.current_task()
    tasks = Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks() if t is not current)
    objects = gc.get_objects()
    calls = Counter(type(o).__name__ for o in objects if type(o).__module__ == "grpc.aio._call")
    pools = (pipeline.gateway.encoder, pipeline.gateway.acoustic, pipeline.gateway.vocoder)
    return {
        "tasks": tasks,
        "stage calls": calls,
        "plans": sum(type(o) in (Plan, Rendered) for o in objects),
        "outstanding": {f"{p.stage} {r.address}": r.outstanding for p in pools for r in p.replicas},
        "pending": {kind: service.batcher.stats().pending for kind, service in pipeline.services.items()},
    }


def beyond(state: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """What ``state`` holds beyond ``idle`` (empty: nothing; idle work that has finished since is fine)."""
    extra = {key: state[key] - idle[key] for key in ("tasks", "stage calls")}
    extra["plans"] = max(state["plans"] - idle["plans"], 0)
    extra["outstanding"] = {k: n for k, n in state["outstanding"].items() if n}
    extra["pending"] = {k: n for k, n in state["pending"].items() if n}
    return {key: value for key, value in extra.items() if value}


def settled(pipeline: Pipeline, idle: dict[str, Any] | None = None) -> dict[str, Any]:
    """The gateway's state once it holds nothing beyond ``idle`` (None: once two readings 0.1 s apart agree);
    after SETTLE_S, whatever it is."""
    deadline = time.monotonic() + SETTLE_S
    state = pipeline.run(gateway_state(pipeline))
    while time.monotonic() < deadline:
        if idle is not None and not beyond(state, idle):
            break
        time.sleep(0.1)
        previous, state = state, pipeline.run(gateway_state(pipeline))
        if idle is None and state == previous:
            break
    return state


def test_finished_requests_leave_no_state_behind(pipeline: Pipeline) -> None:
    with grpc.insecure_channel(pipeline.target) as channel:
        stub = tts_pb2_grpc.SynthesizerStub(channel)
        stub.Synthesize(build_request(SHORT), timeout=60)  # first use: lazily created channels and caches
        list(stub.SynthesizeStream(build_request(SHORT), timeout=60))
        idle = settled(pipeline)
        assert not idle["plans"] and not any(idle["outstanding"].values()) and not any(idle["pending"].values())

        for i in range(6):
            assert stub.Synthesize(build_request(SHORT if i % 2 else LONG_TEXT), timeout=60).audio
            assert list(stub.SynthesizeStream(build_request(LONG_TEXT if i % 2 else SHORT), timeout=60))[-1].last
        for _ in range(6):
            stream = stub.SynthesizeStream(build_request(LONG_TEXT), timeout=60)
            assert next(stream).audio  # later segments are in flight at the stages now
            stream.cancel()
        for _ in range(4):
            with pytest.raises(grpc.RpcError) as late:
                stub.Synthesize(build_request(LONG_TEXT), timeout=0.005)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.SynthesizeStream(build_request("   "), timeout=60))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        assert beyond(settled(pipeline, idle), idle) == {}
