"""Engine selection with fallback: reasons, availability checks, and stages that start on their chosen engine
or not at all."""

from __future__ import annotations

import asyncio
import importlib.util
import socket

import grpc
import numpy as np
import pytest
import torch

from emoserve.engines import selection
from emoserve.engines.selection import (
    Candidate,
    EngineSelectionError,
    onnxruntime_unavailable,
    select_engine,
    tensorrt_unavailable,
)
from emoserve.runtime import stage as stage_module
from emoserve.runtime.config import load_config
from emoserve.runtime.server import StageServer
from emoserve.runtime.stage import start_stage
from emoserve.runtime.tensors import TensorSpec, decode, encode
from emoserve.serve import build_stage
from emoserve.v1 import stages_pb2, stages_pb2_grpc
from emoserve.vocoder.engine import VocodeJob, VocoderEngine

HOST = "127.0.0.1"


class FakeEngine:
    def __init__(self, name: str, fail_warmup: bool = False) -> None:
        self.engine, self.fail_warmup, self.warmed = name, fail_warmup, False

    def warmup(self) -> None:
        if self.fail_warmup:
            raise RuntimeError("warm-up ran out of memory")
        self.warmed = True


def _failing_build() -> FakeEngine:
    raise FileNotFoundError("no plan")


def test_the_first_available_engine_is_chosen_and_warmed():
    candidates = {"tensorrt": Candidate(lambda: None, lambda: FakeEngine("tensorrt")),
                  "torch": Candidate(lambda: None, lambda: FakeEngine("torch"))}
    choice = select_engine("vocoder", ["tensorrt", "torch"], candidates)
    assert choice.name == "tensorrt" and choice.engine.warmed
    assert choice.reason == "it is the first configured engine of ['tensorrt', 'torch']"
    only = select_engine("vocoder", ["torch"], candidates, warmup=False)
    assert only.reason == "it is the only configured engine" and not only.engine.warmed


def test_unavailable_and_failing_engines_fall_back_and_say_why():
    released = []
    candidates = {
        "tensorrt": Candidate(lambda: "it needs a CUDA device, the stage runs on cpu", lambda: FakeEngine("tensorrt")),
        "onnxruntime": Candidate(lambda: None, _failing_build),
        "torch": Candidate(lambda: None, lambda: FakeEngine("torch")),
    }
    choice = select_engine("vocoder", ["tensorrt", "onnxruntime", "torch"], candidates,
                           release=lambda: released.append(True))
    assert choice.name == "torch"
    assert choice.reason == (
        "tensorrt is unavailable (it needs a CUDA device, the stage runs on cpu); "
        "onnxruntime failed (FileNotFoundError: no plan)"
    )
    assert released == [True]


def test_a_failing_warmup_falls_back_too():
    candidates = {"onnxruntime": Candidate(lambda: None, lambda: FakeEngine("ort", fail_warmup=True)),
                  "torch": Candidate(lambda: None, lambda: FakeEngine("torch"))}
    choice = select_engine("acoustic", ["onnxruntime", "torch"], candidates, release=lambda: None)
    assert choice.name == "torch" and "warm-up ran out of memory" in choice.reason


def test_no_engine_starting_is_an_error_listing_every_reason():
    candidates = {"torch": Candidate(lambda: None, _failing_build)}
    with pytest.raises(EngineSelectionError) as info:
        select_engine("encoder", ["onnxruntime", "torch"], candidates, release=lambda: None)
    message = str(info.value)
    assert "encoder: none of the configured engines ['onnxruntime', 'torch'] could start" in message
    assert "onnxruntime is unavailable (the encoder stage has no onnxruntime engine)" in message
    assert "torch failed (FileNotFoundError: no plan)" in message


def test_long_causes_are_shortened_for_the_reason():
    candidates = {"tensorrt": Candidate(lambda: "x " * 1000, lambda: None),
                  "torch": Candidate(lambda: None, lambda: FakeEngine("torch"))}
    choice = select_engine("vocoder", ["tensorrt", "torch"], candidates)
    assert len(choice.reason) < selection.MAX_CAUSE_CHARS + 40 and choice.reason.endswith("…)")


def test_tensorrt_availability(monkeypatch):
    assert tensorrt_unavailable("cpu", "fp32") == "it needs a CUDA device, the stage runs on cpu"
    assert "bf16" in tensorrt_unavailable("cuda", "bf16")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "tensorrt" else real(name))
    assert tensorrt_unavailable("cuda:0", "fp16") == "'tensorrt' not installed (pip install 'emoserve[tensorrt]')"


def test_onnxruntime_availability(monkeypatch):
    providers = ("cuda", "tensorrt", "cpu")
    assert onnxruntime_unavailable("cpu", "fp32", providers) is None
    assert "bf16" in onnxruntime_unavailable("cpu", "bf16", providers)
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert "emoserve[onnx-gpu]" in onnxruntime_unavailable("cuda", "fp16", providers)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert onnxruntime_unavailable("cpu", "fp32", providers) == (
        "'onnxruntime' not installed (pip install 'emoserve[onnx]')"
    )


def _config(**overrides):
    return load_config(environ={}, device="cpu", server={"host": HOST, "port": 0, "grace_period_s": 0.5},
                       metrics={"port": 0}, **overrides)


def test_vocoder_stage_falls_back_from_tensorrt_to_onnxruntime(tiny_model_path, fp32_graphs, onnx_dir, caplog):
    config = _config(engine={"vocoder": ["tensorrt", "onnxruntime", "torch"], "onnx_dir": str(onnx_dir)})
    service = build_stage("vocoder", str(tiny_model_path), config)
    with caplog.at_level("INFO", logger="emoserve.runtime.stage"):
        service.load()
    assert service.engine.engine == "onnxruntime+cpu"
    assert service.engine_reason == "tensorrt is unavailable (it needs a CUDA device, the stage runs on cpu)"
    assert f"vocoder: engine onnxruntime chosen because {service.engine_reason}" in caplog.text


def test_acoustic_stage_falls_back_to_torch_when_its_graphs_are_missing(tiny_model_path, tmp_path):
    engine = {"acoustic": ["onnxruntime", "torch"], "onnx_dir": str(tmp_path), "export_missing": False}
    service = build_stage("acoustic", str(tiny_model_path), _config(engine=engine))
    service.load()
    assert service.engine.engine == "torch"
    assert service.engine_reason.startswith("onnxruntime failed (FileNotFoundError: no ONNX export of the acoustic")


@pytest.mark.parametrize("compiled", [False, True])
def test_acoustic_stage_passes_torch_compile_to_its_engine_which_ignores_it_on_the_cpu(tiny_model_path, monkeypatch,
                                                                                      compiled):
    from emoserve.acoustic import service as acoustic_service

    asked = []

    class Recording(acoustic_service.AcousticEngine):
        def __init__(self, *args, **kwargs):
            asked.append(kwargs["inductor"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(acoustic_service, "AcousticEngine", Recording)
    service = build_stage("acoustic", str(tiny_model_path),
                          _config(engine={"torch_compile_acoustic": compiled}))
    service.load()
    assert asked == [compiled]
    assert service.engine.engine == "torch" and not service.engine.graphs


def test_a_stage_whose_engines_all_fail_never_comes_up(tiny_model_path, monkeypatch):
    servers: list[StageServer] = []

    class Recorded(StageServer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            servers.append(self)

    monkeypatch.setattr(stage_module, "StageServer", Recorded)
    service = build_stage("vocoder", str(tiny_model_path), _config(engine={"vocoder": ["tensorrt"]}))
    with pytest.raises(EngineSelectionError, match=r"vocoder: .*tensorrt is unavailable \(it needs a CUDA device"):
        asyncio.run(start_stage(service))
    assert service.engine is None and not service.loaded
    (server,) = servers
    with pytest.raises(OSError):  # the port it had bound is closed again
        socket.create_connection((HOST, server.port), timeout=2).close()


def test_vocoder_stage_serves_through_onnxruntime_over_grpc(tiny_model_path, fp32_graphs, onnx_dir, tiny_model):
    config = _config(engine={"vocoder": ["onnxruntime"], "onnx_dir": str(onnx_dir)})
    mel = torch.randn(tiny_model.manifest.vocoder.n_mels, 40, generator=torch.Generator().manual_seed(3))

    async def call() -> tuple[np.ndarray, stages_pb2.StageInfo]:
        service = build_stage("vocoder", str(tiny_model_path), config)
        server = await start_stage(service)
        try:
            async with grpc.aio.insecure_channel(f"{HOST}:{server.port}") as channel:
                stub = stages_pb2_grpc.VocoderStub(channel)
                reply = await stub.Vocode(stages_pb2.VocodeRequest(mel=encode(mel.numpy())), timeout=30)
                info = await stub.Info(stages_pb2.InfoRequest(), timeout=30)
        finally:
            await server.stop(0.5)
        return decode(reply.audio, TensorSpec("audio", ("int16", "float32"), rank=1)), info

    audio, info = asyncio.run(call())
    assert info.engine == "onnxruntime+cpu"
    scale = 32767.0 if audio.dtype == np.int16 else 1.0  # 16-bit PCM or float samples on the wire
    (expected,) = VocoderEngine(tiny_model).run([VocodeJob(mel)])
    assert audio.shape == expected.shape and np.abs(audio / scale - expected).max() <= 1e-3


def test_the_encoder_stage_has_torch_and_onnxruntime_engines(tiny_model_path):
    service = build_stage("encoder", str(tiny_model_path), _config())
    candidates = selection.stage_candidates("encoder", service.model_dir, "cpu", "fp32", service.config, lambda: None)
    assert list(candidates) == ["torch", "onnxruntime"]
