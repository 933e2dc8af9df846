"""Graceful drain with real processes: SIGTERM loses no admitted request, and nothing new gets in.

The pipeline runs as ``emoserve serve`` processes. A "slow" vocoder holds each job HOLD_S in its queue, so
work is reliably in flight when SIGTERM arrives:

* a vocoder replica that drains finishes the calls it admitted, refuses new ones, and the gateway sends new
  work to the other replica (none fails); the replica then exits at once, well within its grace period;
* a gateway that drains finishes the streams it admitted to their last chunk, refuses new calls, then exits.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from emoserve.client import Client, build_request
from emoserve.model.modeldir import ModelDir
from emoserve.runtime.tensors import encode
from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2
from tests.pipeline.processes import Processes, Service

pytestmark = pytest.mark.timeout(120)

TEXT = "hello world"
HOLD_US = 1_500_000
GRACE_S = 20.0
"""Grace period of the draining processes: far longer than the work they hold, to show they do not use it all."""
DEADLINE_S = 30.0
EXIT_AFTER_WORK_S = 3.0
"""A drained process exits this soon after its last admitted call has finished."""
REFUSE_S = 2.0
"""New calls are refused within this time of SIGTERM."""
PROBE_S = 0.3


@dataclass
class Base:
    """Encoder, acoustic and a fast vocoder shared by the tests; ``processes`` starts more."""

    processes: Processes
    encoder: Service
    acoustic: Service
    fast: Service

    def slow_vocoder(self, name: str) -> Service:
        return self.processes.stage("vocoder", name, grace_s=GRACE_S,
                                    batching={"max_batch_size": 64, "max_queue_delay_us": HOLD_US})


@pytest.fixture(scope="module")
def base(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    processes = Processes(tiny_model_path, tmp_path_factory.mktemp("drain"))
    try:
        encoder, acoustic = processes.stage("encoder"), processes.stage("acoustic")
        fast = processes.stage("vocoder", "vocoder-fast")
        processes.start(encoder, acoustic, fast)
        yield Base(processes, encoder, acoustic, fast)
    finally:
        processes.close()


@pytest.fixture(scope="module")
def mel(tiny_model_path: Path) -> stages_pb2.VocodeRequest:
    n_mels = ModelDir(tiny_model_path).manifest.vocoder.n_mels
    return stages_pb2.VocodeRequest(mel=encode(np.zeros((n_mels, 16), np.float32)))


def finished_at(future: Future | grpc.Future) -> Callable[[], float]:
    """Records when ``future`` completes; the returned function gives that ``time.monotonic()``."""
    done: list[float] = []
    future.add_done_callback(lambda _: done.append(time.monotonic()))
    return lambda: done[0]


def refused_soon(call: Callable[[float], object], since: float) -> None:
    """Makes ``call(timeout)`` until it is refused with UNAVAILABLE, which must happen within REFUSE_S of ``since``.

    A call that slips in before the process has handled its signal is admitted (and would be served); it gives
    up after PROBE_S, which removes it again. One that arrives in the instant the server stops accepting is
    cancelled by it (CANCELLED).
    """
    while True:
        try:
            call(PROBE_S)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return
            assert exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED), exc
        assert time.monotonic() - since < REFUSE_S, "new calls are still admitted"


def vocoder_replicas(reply: tts_pb2.SynthesizeResponse) -> set[str]:
    return {t.replica for t in reply.timings if t.stage == "vocoder"}


def test_draining_vocoder_finishes_admitted_calls_while_new_ones_go_elsewhere(
    base: Base, mel: stages_pb2.VocodeRequest
) -> None:
    slow = base.slow_vocoder("vocoder-slow")
    gateway = base.processes.gateway(base.encoder, base.acoustic, [slow, base.fast], "gateway-1")
    base.processes.start(slow, gateway)
    with grpc.insecure_channel(slow.address) as channel, Client(gateway.address, timeout=DEADLINE_S) as client:
        direct = stages_pb2_grpc.VocoderStub(channel)
        admitted = [direct.Vocode.future(mel, timeout=DEADLINE_S) for _ in range(3)]
        through_gateway = [client.stub.Synthesize.future(build_request(TEXT), timeout=DEADLINE_S) for _ in range(6)]
        time.sleep(0.5)  # the direct calls are queued at the slow vocoder, held for HOLD_S
        assert not any(f.done() for f in admitted)
        admitted_done = [finished_at(f) for f in admitted]

        slow.send(signal.SIGTERM)
        sigterm = time.monotonic()
        # New work: refused by the draining replica itself, served by the other one through the gateway.
        refused_soon(lambda timeout: direct.Vocode(mel, timeout=timeout), sigterm)
        during = [client.synthesize(TEXT) for _ in range(4)]
        assert all(vocoder_replicas(reply) == {"vocoder-fast"} for reply in during)

        replies = [f.result(timeout=DEADLINE_S) for f in admitted]  # nothing admitted is lost
        assert all(len(r.audio.data) > 0 for r in replies)
        assert all(t() > sigterm for t in admitted_done)  # they finished during the drain
        assert all(len(f.result(timeout=DEADLINE_S).audio) > 0 for f in through_gateway)

        code = slow.wait(GRACE_S)
        exited = time.monotonic()
        assert code == 0, slow.log()
        assert exited - max(t() for t in admitted_done) < EXIT_AFTER_WORK_S  # not the whole grace period
        assert "vocoder received SIGTERM, shutting down" in slow.log()
        assert "Traceback" not in slow.log(), slow.log()

        after = [client.synthesize(TEXT) for _ in range(4)]  # the gateway keeps serving on the other replica
        assert all(vocoder_replicas(reply) == {"vocoder-fast"} for reply in after)
    gateway.kill()


def stream_chunks(client: Client, first: threading.Event) -> list[tts_pb2.AudioChunk]:
    """Consumes one stream; sets ``first`` when its first chunk arrives."""
    chunks = []
    for chunk in client.stub.SynthesizeStream(build_request(TEXT), timeout=DEADLINE_S):
        chunks.append(chunk)
        first.set()
    return chunks


def test_draining_gateway_finishes_admitted_streams_and_refuses_new_calls(base: Base) -> None:
    slow = base.slow_vocoder("vocoder-slow-2")
    gateway = base.processes.gateway(base.encoder, base.acoustic, [slow], "gateway-2", grace_s=GRACE_S)
    base.processes.start(slow, gateway)
    streams = 4
    firsts = [threading.Event() for _ in range(streams)]
    with Client(gateway.address, timeout=DEADLINE_S) as client, ThreadPoolExecutor(streams) as pool:
        running = [pool.submit(stream_chunks, client, first) for first in firsts]
        for first in firsts:  # every stream is admitted and under way; the vocoder holds its next chunks
            assert first.wait(DEADLINE_S), [f.exception() for f in running if f.done()]
        assert not any(f.done() for f in running)
        stream_done = [finished_at(f) for f in running]

        gateway.send(signal.SIGTERM)
        sigterm = time.monotonic()
        refused_soon(lambda timeout: client.stub.Synthesize(build_request(TEXT), timeout=timeout), sigterm)
        refused_soon(lambda timeout: list(client.stub.SynthesizeStream(build_request(TEXT), timeout=timeout)), sigterm)

        for future in running:
            chunks = future.result(timeout=DEADLINE_S)
            assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) > 1
            assert chunks[-1].last and sum(len(c.audio) for c in chunks) > 0
        assert all(t() > sigterm for t in stream_done)  # they finished during the drain

        code = gateway.wait(GRACE_S)
        assert code == 0, gateway.log()
        assert time.monotonic() - max(t() for t in stream_done) < EXIT_AFTER_WORK_S
        assert "gateway received SIGTERM, shutting down" in gateway.log()
        assert "Traceback" not in gateway.log(), gateway.log()
    assert slow.health() is not None  # the stages are untouched
    slow.kill()
