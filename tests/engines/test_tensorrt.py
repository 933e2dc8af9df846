"""TensorRT: everything that does not need the library (profiles, typing, cache keys, profile selection), and,
where TensorRT and a GPU exist, building and running plans.

TensorRT is not installable on any machine of this project: the GPU tests below have never run here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from emoserve.engines.specs import graph_spec
from emoserve.engines.tensorrt_build import (
    AxisRange,
    Profile,
    batch_ranges,
    cache_key,
    derive_profiles,
    inspect_onnx,
    network_flags,
    network_typing,
    plan_file,
    profile_shapes,
)
from emoserve.engines.tensorrt_engine import ShapeOutOfProfileError, profile_bounds, profile_sizes, select_profile

FRAMES = AxisRange(16, 256, 2048)
TOKENS = AxisRange(1, 64, 512)


@pytest.mark.parametrize(
    ("max_batch", "expected"),
    [
        (1, [(1, 1, 1)]),
        (2, [(1, 1, 1), (2, 2, 2)]),
        (8, [(1, 1, 1), (2, 4, 4), (5, 8, 8)]),
        (16, [(1, 1, 1), (2, 4, 4), (5, 16, 16)]),
        (100, [(1, 1, 1), (2, 4, 4), (5, 16, 16), (17, 64, 64), (65, 100, 100)]),
    ],
)
def test_batch_ranges_grow_by_four_and_are_tuned_for_their_top(max_batch, expected):
    assert [(r.min, r.opt, r.max) for r in batch_ranges(max_batch)] == expected


@given(st.integers(1, 2000))
def test_batch_ranges_cover_every_batch_exactly_once(max_batch):
    ranges = batch_ranges(max_batch)
    covered = [b for r in ranges for b in range(r.min, r.max + 1)]
    assert covered == list(range(1, max_batch + 1))


def test_bad_ranges_are_rejected():
    with pytest.raises(ValueError, match="max_batch"):
        batch_ranges(0)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        AxisRange(16, 8, 2048)
    with pytest.raises(ValueError, match="batch"):
        derive_profiles(8, {"batch": AxisRange(1, 1, 1)})


def test_profiles_share_the_length_ranges(fp32_graphs):
    profiles = derive_profiles(8, {"frames": FRAMES})
    assert [p["batch"].max for p in profiles] == [1, 4, 8]
    assert all(p["frames"] == FRAMES for p in profiles)
    dims = inspect_onnx(fp32_graphs["vocoder"]).input_dims
    shapes = profile_shapes(dims, profiles[1])
    assert shapes["mel"] == ((2, 80, 16), (4, 80, 256), (4, 80, 2048))
    assert shapes["lengths"] == ((2,), (4,), (4,))


def test_acoustic_frame_graph_profiles_range_tokens_and_frames(fp32_graphs, tiny_model):
    dims = inspect_onnx(fp32_graphs["acoustic.frames"]).input_dims
    hidden = tiny_model.manifest.acoustic.hidden
    (profile,) = derive_profiles(1, {"tokens": TOKENS, "frames": FRAMES})
    shapes = profile_shapes(dims, profile)
    assert shapes["hidden"] == ((1, 1, hidden), (1, 64, hidden), (1, 512, hidden))
    assert shapes["frame_index"] == ((16,), (256,), (2048,))
    with pytest.raises(ValueError, match="'tokens'"):
        profile_shapes(dims, derive_profiles(1, {"frames": FRAMES})[0])


def test_inspect_reads_precision_graph_and_hash(fp32_graphs, fp16_graphs):
    fp32, fp16 = inspect_onnx(fp32_graphs["vocoder"]), inspect_onnx(fp16_graphs["vocoder"])
    assert (fp32.precision, fp16.precision) == ("fp32", "fp16")
    assert fp32.graph == fp16.graph == "vocoder"
    assert fp32.sha256 != fp16.sha256 and len(fp32.sha256) == 64
    assert inspect_onnx(fp16_graphs["acoustic.text"]).precision == "fp16"  # prosody inputs stay fp32


@pytest.mark.parametrize(
    ("onnx_precision", "fp16", "has_flag", "expected"),
    [
        ("fp32", False, True, ("strong", "fp32")),
        ("fp32", False, False, ("strong", "fp32")),
        ("fp16", False, False, ("strong", "fp16")),
        ("fp16", True, False, ("strong", "fp16")),
        ("fp32", True, True, ("weak-fp16", "fp16")),
    ],
)
def test_network_typing(onnx_precision, fp16, has_flag, expected):
    assert network_typing(onnx_precision, fp16, has_flag) == expected


def test_fp16_from_an_fp32_export_needs_the_weak_typing_flag():
    with pytest.raises(ValueError, match="--fp16"):
        network_typing("fp32", True, has_fp16_flag=False)


def test_network_flags_follow_the_enum_members_of_each_tensorrt():
    trt10 = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 5}
    trt11 = {"STRONGLY_TYPED": 5}
    assert network_flags(trt10, "strong") == 0b100001
    assert network_flags(trt10, "weak-fp16") == 0b1
    assert network_flags(trt11, "strong") == 0b100000
    assert network_flags({}, "strong") == 0


KEY_ARGS = {
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "capability": (9, 0),
    "trt_version": "10.13.0",
    "onnx_sha256": "ab" * 32,
    "profiles": derive_profiles(8, {"frames": FRAMES}),
    "typing": "strong",
    "precision": "fp16",
}


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("gpu_name", "NVIDIA A100-SXM4-80GB"),
        ("capability", (8, 0)),
        ("trt_version", "11.4.0"),
        ("onnx_sha256", "cd" * 32),
        ("profiles", derive_profiles(16, {"frames": FRAMES})),
        ("profiles", derive_profiles(8, {"frames": AxisRange(16, 512, 2048)})),
        ("typing", "weak-fp16"),
        ("precision", "fp32"),
    ],
)
def test_cache_key_changes_with_everything_a_plan_depends_on(field, other):
    assert cache_key(**KEY_ARGS) == cache_key(**dict(KEY_ARGS))
    assert cache_key(**{**KEY_ARGS, field: other}) != cache_key(**KEY_ARGS)


def test_plan_file_is_named_by_graph_and_key(tmp_path):
    key = cache_key(**KEY_ARGS)
    assert plan_file(tmp_path, "vocoder", key) == tmp_path / "tensorrt" / f"vocoder-{key[:32]}.plan"


def _engine_profiles(profiles: tuple[Profile, ...], dims) -> list[dict]:
    """What ``get_tensor_profile_shape`` reports for plans built from ``profiles``."""
    return [profile_shapes(dims, p) for p in profiles]


def test_profile_selection_takes_the_smallest_batch_range_that_fits(fp32_graphs, tiny_model):
    spec = graph_spec("vocoder", tiny_model.manifest)
    dims = inspect_onnx(fp32_graphs["vocoder"]).input_dims
    profiles = _engine_profiles(derive_profiles(16, {"frames": FRAMES}), dims)

    def shapes(batch: int, frames: int) -> dict:
        return {"mel": (batch, 80, frames), "lengths": (batch,)}

    assert [select_profile(profiles, shapes(b, 100)) for b in (1, 2, 4, 5, 16)] == [0, 1, 1, 2, 2]
    assert select_profile(profiles, shapes(3, 2048)) == 1
    for batch, frames in ((17, 100), (1, 15), (1, 2049)):
        with pytest.raises(ShapeOutOfProfileError, match=r"outside every optimisation profile.*profile 2: mel"):
            select_profile(profiles, shapes(batch, frames))
    assert profile_bounds(spec, profiles) == {"batch": (1, 16), "tokens": (1, None), "frames": (16, 2048)}
    assert profile_sizes(spec, profiles[2]) == {"batch": 16, "frames": 256}


# --- on a GPU with TensorRT (never executed on this project's machines) -----------------------------------

def _gpu_tensorrt():
    trt = pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA device")
    return trt


@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_vocoder_plan_matches_pytorch(fp32_graphs, fp16_graphs, tiny_model, tmp_path, fp16):
    _gpu_tensorrt()
    from emoserve.engines.stage_engines import GraphVocoderEngine
    from emoserve.engines.tensorrt_build import cached_plan
    from emoserve.engines.tensorrt_engine import TensorRTGraph
    from emoserve.vocoder.engine import VocodeJob, VocoderEngine
    from emoserve.vocoder.streaming import receptive_field_frames

    graphs = fp16_graphs if fp16 else fp32_graphs
    profiles = derive_profiles(4, {"frames": AxisRange(16, 64, 128)})
    plan = cached_plan(graphs["vocoder"], profiles, tmp_path, torch.device("cuda"), fp16=fp16)
    assert cached_plan(graphs["vocoder"], profiles, tmp_path, torch.device("cuda"), fp16=fp16) == plan  # cache hit
    runner = TensorRTGraph(plan, graph_spec("vocoder", tiny_model.manifest), "cuda")
    assert len(runner.profiles) == 2 and runner.bounds["frames"] == (16, 128)  # batch [1] and [2, 4]
    config = tiny_model.manifest.vocoder
    engine = GraphVocoderEngine(runner, config, receptive_field_frames(config))
    engine.warmup()
    g = torch.Generator().manual_seed(0)
    jobs = [VocodeJob(torch.randn(80, n, generator=g)) for n in (5, 60, 300)]  # padded, plain, split
    for got, ref in zip(engine.run(jobs), VocoderEngine(tiny_model, cuda_graphs=False).run(jobs)):
        err = np.sum((got - ref).astype(np.float64) ** 2)
        assert 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30)) >= (30 if fp16 else 40)  # TF32
    with pytest.raises(ShapeOutOfProfileError):
        runner.run({"mel": torch.zeros(5, 80, 20, device="cuda"), "lengths": torch.ones(5, dtype=torch.long)})


def test_tensorrt_vocoder_stage_builds_its_plan_into_the_cache(tiny_model_path, fp16_graphs, onnx_dir, tmp_path):
    _gpu_tensorrt()
    from emoserve.runtime.config import load_config
    from emoserve.serve import build_stage

    engine = {"vocoder": ["tensorrt", "torch"], "onnx_dir": str(onnx_dir), "cache_dir": str(tmp_path),
              "tensorrt_max_frames": 256}
    config = load_config(environ={}, device="cuda", precision="fp16", engine=engine, batching={"max_batch_size": 4})
    service = build_stage("vocoder", str(tiny_model_path), config)
    service.load()
    assert service.engine.engine == "tensorrt"
    assert service.engine_reason == "it is the first configured engine of ['tensorrt', 'torch']"
    assert len(list((tmp_path / "tensorrt").glob("vocoder-*.plan"))) == 1


def test_tensorrt_build_rejects_profiles_missing_an_axis(fp32_graphs, tmp_path):
    _gpu_tensorrt()
    from emoserve.engines.tensorrt_build import build_plan

    with pytest.raises(ValueError, match="frames"):
        build_plan(fp32_graphs["vocoder"], derive_profiles(2, {}), tmp_path / "x.plan")
    assert not Path(tmp_path / "x.plan").exists()


def test_profile_to_dict_is_plain_data():
    (profile,) = derive_profiles(1, {"frames": FRAMES})
    assert profile.to_dict() == {"batch": [1, 1, 1], "frames": [16, 256, 2048]}
