"""Health: NOT_SERVING (and UNAVAILABLE) while a model loads, SERVING once loaded and warmed up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from emoserve.runtime.stage import StageService, start_stage
from emoserve.serve import build_stage
from emoserve.v1 import stages_pb2, tts_pb2, tts_pb2_grpc
from tests.pipeline.conftest import (
    HOST,
    NOT_SERVING,
    SERVING,
    STAGE_KINDS,
    LoopThread,
    Pipeline,
    free_port,
    health_check,
    stage_config,
    stage_stub,
    start_gateway_for,
    stop_servers,
)

pytestmark = pytest.mark.timeout(60)


class SlowLoad:
    """Makes ``service.load`` block until :meth:`release` (and records that it started and finished)."""

    def __init__(self, service: StageService) -> None:
        self.entered, self.released, self.finished = threading.Event(), threading.Event(), threading.Event()
        original = service.load

        def load() -> None:
            self.entered.set()
            if not self.released.wait(30):
                raise TimeoutError("the test never released the model load")
            original()
            self.finished.set()

        service.load = load  # type: ignore[method-assign]

    def release(self) -> None:
        self.released.set()


@contextmanager
def loading_stage(loop: LoopThread, kind: str, model_path: Path) -> Iterator[tuple[str, SlowLoad, object]]:
    """A stage whose model load waits for ``SlowLoad.release``; yields (address, gate, start future)."""
    port = free_port()
    service = build_stage(kind, str(model_path), stage_config(port=port))
    gate = SlowLoad(service)
    started = loop.submit(start_stage(service))
    try:
        assert gate.entered.wait(30), "start_stage never began loading the model"
        yield f"{HOST}:{port}", gate, started
    finally:
        gate.release()
        server = started.result(30)
        loop.run(stop_servers([server]))


def acoustic_request(pipeline: Pipeline) -> stages_pb2.AcousticRequest:
    with stage_stub(pipeline.address("encoder"), "encoder") as stub:
        segment = stub.Encode(stages_pb2.EncodeRequest(text="hello"), timeout=30).segments[0]
    return stages_pb2.AcousticRequest(
        phoneme_ids=segment.phoneme_ids,
        prompt_embedding=segment.prompt_embedding,
        content_embedding=segment.content_embedding,
    )


def test_running_pipeline_reports_serving_everywhere(pipeline: Pipeline) -> None:
    assert health_check(pipeline.target) == SERVING
    assert health_check(pipeline.target, "emoserve.v1.Synthesizer") == SERVING
    for kind, service in zip(STAGE_KINDS, ("Encoder", "Acoustic", "Vocoder")):
        assert health_check(pipeline.address(kind)) == SERVING
        assert health_check(pipeline.address(kind), f"emoserve.v1.{service}") == SERVING


def test_unknown_health_service_is_not_found(pipeline: Pipeline) -> None:
    with pytest.raises(grpc.RpcError) as err:
        health_check(pipeline.target, "emoserve.v1.Nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_stage_is_not_serving_and_unavailable_until_its_model_is_loaded(
    pipeline: Pipeline, loop_thread: LoopThread, tiny_model_path: Path
) -> None:
    request = acoustic_request(pipeline)
    with loading_stage(loop_thread, "acoustic", tiny_model_path) as (address, gate, started):
        assert health_check(address) == NOT_SERVING
        assert health_check(address, "emoserve.v1.Acoustic") == NOT_SERVING
        with stage_stub(address, "acoustic") as stub:
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert not started.done() and not gate.finished.is_set()

            gate.release()
            server = started.result(30)
            assert gate.finished.is_set() and server.ready
            assert health_check(address) == SERVING
            assert health_check(address, "emoserve.v1.Acoustic") == SERVING
            reply = stub.Generate(request, timeout=10)
            assert reply.mel.shape[1] > 0


def test_gateway_is_not_serving_until_every_stage_has_loaded(
    pipeline: Pipeline, loop_thread: LoopThread, tiny_model_path: Path
) -> None:
    with loading_stage(loop_thread, "vocoder", tiny_model_path) as (vocoder, gate, stage_started):
        port = free_port()
        gateway_started = loop_thread.submit(
            start_gateway_for(pipeline.address("encoder"), pipeline.address("acoustic"), vocoder, port=port)
        )
        try:
            target = f"{HOST}:{port}"
            # The gateway binds at once (NOT_SERVING) and waits for the loading vocoder.
            assert health_check(target, timeout=10, wait_for_ready=True) == NOT_SERVING
            assert not gateway_started.done()
            assert health_check(target, "emoserve.v1.Synthesizer") == NOT_SERVING
            # A caller that does not wait for SERVING gets a retryable status, not an internal error.
            with grpc.insecure_channel(target) as channel:
                stub = tts_pb2_grpc.SynthesizerStub(channel)
                for call, request in ((stub.Synthesize, tts_pb2.SynthesizeRequest(text="Hello.")),
                                      (stub.ListVoices, tts_pb2.ListVoicesRequest())):
                    with pytest.raises(grpc.RpcError) as refused:
                        call(request, timeout=10)
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert "starting" in refused.value.details()
            gate.release()
            stage_started.result(30)
            gateway_server, _ = gateway_started.result(30)
            assert health_check(target) == SERVING
            assert health_check(target, "emoserve.v1.Synthesizer") == SERVING
        finally:
            gate.release()
            server, _ = gateway_started.result(30)
            loop_thread.run(stop_servers([server]))
