"""The encoder's onnxruntime engine: the style encoder exported once, fp32 and int8 parity with torch, the
embedding cache unchanged, serving over gRPC, and fallback to torch."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import torch

from emoserve.encoder.engine import EncodeItem, EncoderEngine
from emoserve.engines.onnx_export import read_metadata
from emoserve.engines.style_onnx import (
    INT8_MIN_COSINE,
    OnnxRuntimeStyle,
    export_style,
    resolve_style_graph,
    style_sha256,
)
from emoserve.runtime.config import load_config
from emoserve.runtime.stage import start_stage
from emoserve.runtime.tensors import TensorSpec, decode
from emoserve.serve import build_stage
from emoserve.v1 import stages_pb2, stages_pb2_grpc

HOST = "127.0.0.1"
TEXTS = ["Hello there.", "开心", "A rather longer sentence, so that the batch is padded to its length.", "Sad"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def graphs(tiny_model, cache_dir: Path) -> dict[str, Path]:
    """The tiny model's fp32 and int8 style graphs, exported into the engine cache."""
    return {p: resolve_style_graph(tiny_model, str(cache_dir), int8=p == "int8") for p in ("fp32", "int8")}


def _vectors(tiny_model, backend: OnnxRuntimeStyle | None) -> np.ndarray:
    engine = EncoderEngine(tiny_model, cache_size=0, style_backend=backend)
    return engine.style.embed(TEXTS).numpy()


def test_the_export_is_cached_under_the_style_weights_hash(tiny_model, graphs, cache_dir) -> None:
    weights = style_sha256(tiny_model.style_dir)
    for precision, path in graphs.items():
        assert path.parent.parent == cache_dir / "onnx" and weights[:16] in path.parent.name
        assert read_metadata(path)["precision"] == precision
        mtime = path.stat().st_mtime_ns
        assert resolve_style_graph(tiny_model, str(cache_dir), int8=precision == "int8") == path
        assert path.stat().st_mtime_ns == mtime  # found, not exported again


def test_fp32_graph_matches_torch(tiny_model, graphs) -> None:
    backend = OnnxRuntimeStyle(graphs["fp32"])
    assert backend.name == "onnxruntime+cpu"
    got, want = _vectors(tiny_model, backend), _vectors(tiny_model, None)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-3


def test_int8_graph_is_quantized_and_close_to_torch(tiny_model, graphs) -> None:
    ops = {node.op_type for node in onnx.load(str(graphs["int8"])).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    backend = OnnxRuntimeStyle(graphs["int8"])
    assert backend.name == "onnxruntime+cpu+int8"
    got, want = _vectors(tiny_model, backend), _vectors(tiny_model, None)
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= INT8_MIN_COSINE
    assert np.abs(got - want).max() > 0  # int8 weights do change the vectors


def test_an_export_failing_its_check_leaves_nothing(tiny_model, tmp_path, monkeypatch) -> None:
    from emoserve.engines import style_onnx

    monkeypatch.setattr(style_onnx, "INT8_MIN_COSINE", 1.5)  # no vector can reach it
    out = tmp_path / "style.onnx"
    with pytest.raises(style_onnx.ExportError, match="cosine similarity"):
        export_style(tiny_model.style_dir, tiny_model.manifest.style.pooling, out, int8=True)
    assert list(tmp_path.iterdir()) == []


def test_embedding_cache_works_the_same_on_onnxruntime(tiny_model, graphs) -> None:
    engine = EncoderEngine(tiny_model, cache_size=16, style_backend=OnnxRuntimeStyle(graphs["fp32"]))
    first = engine.run([EncodeItem("The train leaves at seven.", "Happy")])[0]
    misses = engine.style.cache.misses
    second = engine.run([EncodeItem("The train leaves at seven.", "Happy")])[0]
    assert engine.style.cache.misses == misses and engine.style.cache.hits >= 2
    np.testing.assert_array_equal(first.segments[0].content, second.segments[0].content)
    np.testing.assert_array_equal(first.segments[0].prompt, second.segments[0].prompt)


def _config(cache_dir: Path, **engine):
    return load_config(environ={}, device="cpu", server={"host": HOST, "port": 0, "grace_period_s": 0.5},
                       metrics={"port": 0}, engine={"encoder": ["onnxruntime", "torch"], "cache_dir": str(cache_dir),
                                                    **engine})


@pytest.mark.parametrize("int8", [False, True])
def test_encoder_stage_serves_through_onnxruntime_over_grpc(tiny_model_path, tiny_model, graphs, cache_dir, int8):
    config = _config(cache_dir, onnxruntime_int8_style=int8)

    async def call() -> tuple[stages_pb2.EncodeResponse, stages_pb2.StageInfo, str]:
        service = build_stage("encoder", str(tiny_model_path), config)
        server = await start_stage(service)
        try:
            async with grpc.aio.insecure_channel(f"{HOST}:{server.port}") as channel:
                stub = stages_pb2_grpc.EncoderStub(channel)
                reply = await stub.Encode(stages_pb2.EncodeRequest(text="Good morning.", emotion="Happy"), timeout=30)
                info = await stub.Info(stages_pb2.InfoRequest(), timeout=30)
        finally:
            await server.stop(0.5)
        return reply, info, service.engine_reason

    reply, info, reason = asyncio.run(call())
    assert info.engine == ("onnxruntime+cpu+int8" if int8 else "onnxruntime+cpu")
    assert reason == "it is the first configured engine of ['onnxruntime', 'torch']"
    (expected,) = EncoderEngine(tiny_model).run([EncodeItem("Good morning.", "Happy")])
    (segment,) = reply.segments
    spec = TensorSpec("embedding", ("float32",), rank=1)
    for got, want in ((segment.prompt_embedding, expected.segments[0].prompt),
                      (segment.content_embedding, expected.segments[0].content)):
        got = decode(got, spec)
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
        assert cosine >= INT8_MIN_COSINE if int8 else np.abs(got - want).max() <= 1e-3


def test_encoder_falls_back_to_torch_without_onnxruntime(tiny_model_path, cache_dir, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    service = build_stage("encoder", str(tiny_model_path), _config(cache_dir))
    service.load()
    assert service.engine.engine == "torch"
    assert service.engine_reason == (
        "onnxruntime is unavailable ('onnxruntime' not installed (pip install 'emoserve[onnx]'))"
    )
    assert isinstance(service.engine.style.embed(["hi"]), torch.Tensor)


def test_encoder_falls_back_to_torch_when_the_providers_exclude_the_cpu(tiny_model_path, cache_dir) -> None:
    service = build_stage("encoder", str(tiny_model_path), _config(cache_dir, onnxruntime_providers=["cuda"]))
    service.load()
    assert service.engine.engine == "torch"
    assert "exclude 'cpu'" in service.engine_reason
