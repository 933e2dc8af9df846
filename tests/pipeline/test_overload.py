"""Overload and deadlines with real processes: a full stage queue refuses at once, expired work leaves the queue.

The vocoder process queues at most two jobs and holds each for 4 s (its batch never fills), so the queue's
state is known from the outside: two admitted requests fill it, a third is refused with RESOURCE_EXHAUSTED
at once, and a request whose deadline passes while queued frees its place for the next one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from emoserve.client import Client, build_request
from emoserve.model.modeldir import ModelDir
from emoserve.runtime.tensors import encode
from emoserve.v1 import stages_pb2, stages_pb2_grpc
from tests.pipeline.processes import Processes, Service

pytestmark = pytest.mark.timeout(120)

TEXT = "hello"  # one segment: one vocoder job per unary request
HOLD_S = 4.0
QUEUE_SIZE = 2
REJECT_S = 0.25
"""Bound on a refusal straight from the vocoder."""
GATEWAY_REJECT_S = 1.0
"""Bound on a refusal through the gateway (encoder and acoustic run first); far below HOLD_S."""
LONG_DEADLINE_S = 20.0
EXPIRING_DEADLINE_S = 2.5
"""Shorter than HOLD_S: the request expires while its job waits in the vocoder queue."""
QUEUED_S = 0.5
"""Time a job sent straight to the vocoder needs, at most, to be queued there."""
THROUGH_GATEWAY_S = 1.0
"""Time a request sent to the gateway needs, at most, to have its job queued at the vocoder."""
ADMIT_S = 0.3
"""Time the place of an expired job may take to free up (far less than what is left of HOLD_S then)."""


class Pipeline:
    def __init__(self, processes: Processes) -> None:
        encoder, acoustic = processes.stage("encoder"), processes.stage("acoustic")
        self.vocoder = processes.stage("vocoder", batching={
            "max_batch_size": 64, "max_queue_delay_us": int(HOLD_S * 1e6), "max_queue_size": QUEUE_SIZE,
        })
        self.gateway = processes.gateway(encoder, acoustic, [self.vocoder])
        processes.start(encoder, acoustic, self.vocoder, self.gateway)
        self.services: list[Service] = [encoder, acoustic, self.vocoder, self.gateway]


@pytest.fixture(scope="module")
def pipeline(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    processes = Processes(tiny_model_path, tmp_path_factory.mktemp("overload"))
    try:
        yield Pipeline(processes)
    finally:
        processes.close()


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[Client]:
    with Client(pipeline.gateway.address, timeout=LONG_DEADLINE_S) as c:
        yield c


@pytest.fixture
def vocoder(pipeline: Pipeline) -> Iterator[stages_pb2_grpc.VocoderStub]:
    """A stub of the vocoder process itself."""
    with grpc.insecure_channel(pipeline.vocoder.address) as channel:
        yield stages_pb2_grpc.VocoderStub(channel)


@pytest.fixture(scope="module")
def mel(tiny_model_path: Path) -> stages_pb2.VocodeRequest:
    n_mels = ModelDir(tiny_model_path).manifest.vocoder.n_mels
    return stages_pb2.VocodeRequest(mel=encode(np.zeros((n_mels, 8), np.float32)))


def refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, float]:
    """Runs ``call``, which must fail; returns the status and how long it took."""
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), time.monotonic() - start


def hold(vocoder: stages_pb2_grpc.VocoderStub, mel: stages_pb2.VocodeRequest, count: int) -> list[grpc.Future]:
    """``count`` vocoder jobs sent straight to the vocoder, where they wait for HOLD_S."""
    held = [vocoder.Vocode.future(mel, timeout=LONG_DEADLINE_S) for _ in range(count)]
    time.sleep(QUEUED_S)
    assert not any(f.done() for f in held), [f.exception() for f in held if f.done()]
    return held


def test_full_queue_refuses_at_once_and_admitted_requests_complete(
    client: Client, vocoder: stages_pb2_grpc.VocoderStub, mel: stages_pb2.VocodeRequest
) -> None:
    started = time.monotonic()
    held = hold(vocoder, mel, QUEUE_SIZE)

    code, took = refusal(lambda: vocoder.Vocode(mel, timeout=LONG_DEADLINE_S))
    assert (code, took < REJECT_S) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True), took
    code, took = refusal(lambda: client.synthesize(TEXT))
    assert (code, took < GATEWAY_REJECT_S) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True), took
    code, took = refusal(lambda: list(client.stream(TEXT)))
    assert (code, took < GATEWAY_REJECT_S) == (grpc.StatusCode.RESOURCE_EXHAUSTED, True), took

    replies = [future.result(timeout=LONG_DEADLINE_S) for future in held]  # admitted: served after the hold
    assert all(len(r.audio.data) > 0 for r in replies)
    assert HOLD_S <= time.monotonic() - started < HOLD_S + 5


def test_deadline_exceeded_while_queued_frees_the_place(
    client: Client, vocoder: stages_pb2_grpc.VocoderStub, mel: stages_pb2.VocodeRequest
) -> None:
    sent = time.monotonic()
    expiring = client.stub.Synthesize.future(build_request(TEXT), timeout=EXPIRING_DEADLINE_S)
    (held,) = hold(vocoder, mel, QUEUE_SIZE - 1)
    time.sleep(max(0.0, sent + THROUGH_GATEWAY_S - time.monotonic()))
    assert not expiring.done()
    code, _ = refusal(lambda: vocoder.Vocode(mel, timeout=LONG_DEADLINE_S))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # the expiring request's job fills the queue

    with pytest.raises(grpc.RpcError) as err:
        expiring.result(timeout=LONG_DEADLINE_S)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - sent < EXPIRING_DEADLINE_S + GATEWAY_REJECT_S  # no later than its deadline

    # The expired job left the vocoder queue with the request: a new one is admitted and served.
    admitted = _admitted(vocoder, mel)
    assert len(held.result(timeout=LONG_DEADLINE_S).audio.data) > 0
    assert len(admitted.result(timeout=LONG_DEADLINE_S).audio.data) > 0


def _admitted(vocoder: stages_pb2_grpc.VocoderStub, mel: stages_pb2.VocodeRequest) -> grpc.Future:
    """A vocoder job that is not refused, sent within ADMIT_S (the freed place may take a moment to show)."""
    deadline = time.monotonic() + ADMIT_S
    while True:
        future = vocoder.Vocode.future(mel, timeout=LONG_DEADLINE_S)
        try:
            future.result(timeout=QUEUED_S)
        except grpc.FutureTimeoutError:
            return future  # queued
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert time.monotonic() < deadline, "the expired job still holds its place in the vocoder queue"
        else:
            return future  # queued, and already served with the held job's batch


def test_every_process_is_still_healthy(pipeline: Pipeline) -> None:
    for service in pipeline.services:
        assert service.running(), service.log()
        assert "Traceback" not in service.log(), service.log()
