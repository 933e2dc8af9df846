"""ONNX Runtime engine on the CPU: providers, session options, IO binding, and parity of the stage engines."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
import torch

from emoserve.acoustic.engine import AcousticEngine, AcousticItem
from emoserve.engines.onnxruntime_engine import (
    PROVIDERS,
    OnnxRuntimeGraph,
    choose_providers,
    provider_options,
    session_options,
)
from emoserve.engines.specs import graph_spec
from emoserve.engines.stage_engines import GraphAcousticEngine, GraphVocoderEngine, split_windows
from emoserve.vocoder.engine import VocodeJob, VocoderEngine
from emoserve.vocoder.streaming import receptive_field_frames

CPU, CUDA, TRT = PROVIDERS["cpu"], PROVIDERS["cuda"], PROVIDERS["tensorrt"]
ALL = [TRT, CUDA, CPU]


@pytest.mark.parametrize(
    ("preference", "available", "device", "expected"),
    [
        (("cuda", "tensorrt", "cpu"), ALL, "cpu", [CPU]),
        (("cuda", "tensorrt", "cpu"), ALL, "cuda", [CUDA, TRT, CPU]),
        (("tensorrt", "cuda", "cpu"), ALL, "cuda", [TRT, CUDA, CPU]),
        (("cuda", "tensorrt", "cpu"), [CUDA, CPU], "cuda", [CUDA, CPU]),
        (("tensorrt", "cuda"), ALL, "cuda", [TRT, CUDA]),
    ],
)
def test_providers_follow_the_preference_among_those_available(preference, available, device, expected):
    assert choose_providers(preference, available, device) == expected


@pytest.mark.parametrize(
    ("preference", "available", "device", "message"),
    [
        (("cuda", "tensorrt", "cpu"), [CPU], "cuda", "emoserve\\[onnx-gpu\\]"),
        (("cpu",), ALL, "cuda", "no GPU provider is configured"),
        (("cuda",), ALL, "cpu", "exclude 'cpu'"),
    ],
)
def test_no_usable_provider_is_a_clear_error(preference, available, device, message):
    with pytest.raises(ValueError, match=message):
        choose_providers(preference, available, device)


def test_session_options_are_set_for_serving():
    options = session_options(threads=3)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.enable_mem_pattern is False
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_gpu_providers_run_on_the_torch_stream_and_tensorrt_caches_engines(tmp_path):
    assert provider_options(CPU, 0, None, tmp_path) == {}
    cuda = provider_options(CUDA, 1, 1234, tmp_path)
    assert cuda == {"device_id": 1, "user_compute_stream": "1234"}
    trt = provider_options(TRT, 0, 99, tmp_path)
    assert trt["user_compute_stream"] == "99" and trt["trt_engine_cache_enable"] is True
    assert trt["trt_engine_cache_path"] == str(tmp_path / "onnxruntime-tensorrt")


def test_io_binding_runs_on_torch_tensors_and_checks_shapes(fp32_graphs, tiny_model):
    spec = graph_spec("vocoder", tiny_model.manifest)
    graph = OnnxRuntimeGraph(fp32_graphs["vocoder"], spec, "cpu")
    assert graph.name == "onnxruntime+cpu" and graph.providers == (CPU,)
    mel, lengths = torch.randn(2, tiny_model.manifest.vocoder.n_mels, 20), torch.tensor([20, 11])
    out = graph.run({"mel": mel, "lengths": lengths})["wav"]
    plain = graph.session.run(None, {"mel": mel.numpy(), "lengths": lengths.numpy()})[0]
    assert isinstance(out, torch.Tensor) and out.shape == (2, 20 * tiny_model.manifest.vocoder.hop_length)
    np.testing.assert_array_equal(out.numpy(), plain)
    with pytest.raises(ValueError, match="axis 'batch'"):
        graph.run({"mel": mel, "lengths": torch.tensor([20])})
    with pytest.raises(ValueError, match="rank"):
        graph.run({"mel": mel[0], "lengths": lengths})


def _jobs(n_mels: int) -> list[VocodeJob]:
    g = torch.Generator().manual_seed(0)
    return [
        VocodeJob(torch.randn(n_mels, 30, generator=g)),
        VocodeJob(torch.randn(n_mels, 50, generator=g), trim=5, keep=20),
        VocodeJob(torch.randn(n_mels, 7, generator=g).half()),
        VocodeJob(torch.randn(n_mels, 150, generator=g)),
    ]


def test_vocoder_engine_matches_the_torch_engine(fp32_graphs, tiny_model):
    runner = OnnxRuntimeGraph(fp32_graphs["vocoder"], graph_spec("vocoder", tiny_model.manifest), "cpu")
    config = tiny_model.manifest.vocoder
    engine = GraphVocoderEngine(runner, config, receptive_field_frames(config))
    jobs = _jobs(tiny_model.manifest.vocoder.n_mels)
    for got, ref in zip(engine.run(jobs), VocoderEngine(tiny_model).run(jobs)):
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-3
    assert engine.engine == "onnxruntime+cpu"
    engine.warmup()


def test_vocoder_engine_pads_short_and_splits_long_mels_to_fit_the_graph(fp32_graphs, tiny_model):
    runner = OnnxRuntimeGraph(fp32_graphs["vocoder"], graph_spec("vocoder", tiny_model.manifest), "cpu")
    runner.bounds = {**runner.bounds, "batch": (1, 2), "frames": (16, 40)}  # like a small TensorRT profile set
    context = receptive_field_frames(tiny_model.manifest.vocoder)
    engine = GraphVocoderEngine(runner, tiny_model.manifest.vocoder, context)
    seen = []
    run = runner.run
    runner.run = lambda inputs: seen.append(tuple(inputs["mel"].shape)) or run(inputs)
    jobs = _jobs(tiny_model.manifest.vocoder.n_mels)
    for got, ref in zip(engine.run(jobs), VocoderEngine(tiny_model).run(jobs)):
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-5  # windows with the receptive field as context are exact
    assert all(b <= 2 and 16 <= f <= 40 for b, _, f in seen)


@pytest.mark.parametrize(("n_frames", "window", "context"), [(1, 10, 2), (100, 40, 15), (41, 40, 0), (500, 33, 16)])
def test_split_windows_cover_every_frame_once_within_the_window(n_frames, window, context):
    chunks = split_windows(n_frames, window, context)
    assert chunks[0].start == 0 and chunks[-1].end == n_frames
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
    assert all(c.hi - c.lo <= window and c.lo == max(0, c.start - context) for c in chunks)
    assert all(c.hi == min(n_frames, c.end + context) for c in chunks)


def test_split_windows_needs_room_beyond_the_context(fp32_graphs, tiny_model):
    with pytest.raises(ValueError, match="context"):
        split_windows(100, 30, 15)
    runner = OnnxRuntimeGraph(fp32_graphs["vocoder"], graph_spec("vocoder", tiny_model.manifest), "cpu")
    runner.bounds = {**runner.bounds, "frames": (16, 30)}
    with pytest.raises(ValueError, match="engine.tensorrt_max_frames"):
        GraphVocoderEngine(runner, tiny_model.manifest.vocoder, context_frames=15)


def _items(style_dim: int) -> list[AcousticItem]:
    rng = np.random.default_rng(0)

    def emb() -> np.ndarray:
        return rng.standard_normal(style_dim).astype(np.float32)

    return [
        AcousticItem(rng.integers(1, 400, 12), 3, emb(), emb()),
        AcousticItem(rng.integers(1, 400, 5), 10, emb(), emb(), speed=1.2, pitch_semitones=2.0),
        AcousticItem(rng.integers(1, 400, 30), 0, emb(), emb(), speed=0.9, pitch_semitones=-1.0, energy=1.1),
    ]


def _acoustic(graphs, tiny_model) -> GraphAcousticEngine:
    text = OnnxRuntimeGraph(graphs["acoustic.text"], graph_spec("acoustic.text", tiny_model.manifest), "cpu")
    frames = OnnxRuntimeGraph(graphs["acoustic.frames"], graph_spec("acoustic.frames", tiny_model.manifest), "cpu")
    return GraphAcousticEngine(text, frames, tiny_model.manifest.acoustic)


def test_acoustic_engine_matches_the_torch_engine(fp32_graphs, tiny_model):
    engine = _acoustic(fp32_graphs, tiny_model)
    items = _items(tiny_model.manifest.acoustic.style_dim)
    for got, ref in zip(engine.run(items), AcousticEngine(tiny_model).run(items)):
        np.testing.assert_array_equal(got.durations, ref.durations)
        assert got.mel.dtype == ref.mel.dtype == torch.float16 and got.mel.shape == ref.mel.shape
        assert (got.mel.float() - ref.mel.float()).abs().max() <= 1e-3 * max(1.0, ref.mel.float().abs().max())
    with pytest.raises(ValueError, match="speaker"):
        engine.check(AcousticItem(np.ones(3, dtype=np.int64), 10**6, items[0].prompt, items[0].content))
    engine.warmup()


def test_acoustic_items_beyond_the_graph_fail_alone(fp32_graphs, tiny_model):
    engine = _acoustic(fp32_graphs, tiny_model)
    items = _items(tiny_model.manifest.acoustic.style_dim)
    reference = AcousticEngine(tiny_model).run(items)
    engine.max_tokens = 20
    results = engine.run(items)
    assert isinstance(results[2], ValueError) and "30 phonemes exceed" in str(results[2])
    for got, ref in zip(results[:2], reference[:2]):
        np.testing.assert_array_equal(got.durations, ref.durations)
    engine.max_tokens, engine.max_frames = None, 40
    results = engine.run(items)
    assert [type(r).__name__ for r in results] == ["ValueError", "AcousticResult", "ValueError"]
    assert "48 mel frames exceed" in str(results[0])


def test_fp16_vocoder_engine_is_within_30_db_of_fp32_torch(fp16_graphs, tiny_model):
    runner = OnnxRuntimeGraph(fp16_graphs["vocoder"], graph_spec("vocoder", tiny_model.manifest), "cpu")
    assert runner.float_dtype == torch.float16
    config = tiny_model.manifest.vocoder
    engine = GraphVocoderEngine(runner, config, receptive_field_frames(config))
    jobs = _jobs(tiny_model.manifest.vocoder.n_mels)
    for got, ref in zip(engine.run(jobs), VocoderEngine(tiny_model).run(jobs)):
        snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((got - ref).astype(np.float64) ** 2))
        assert snr >= 30
