"""ONNX export: dynamic axes, checker, parity with PyTorch (fp32 and fp16), provenance, and where stages find it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from emoserve.engines import onnx_export
from emoserve.engines.onnx_export import ExportError, random_inputs, read_metadata, resolve_graphs, verify_graph
from emoserve.engines.specs import base_name, graph_paths, graph_spec
from emoserve.model.acoustic import Prosody, lengths_to_mask
from emoserve.model.dummy import init_dummy
from emoserve.model.modeldir import ModelDir


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _run(path: Path, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in inputs.items()})


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((got - ref) ** 2)))


def test_graphs_have_dynamic_batch_and_length_axes_and_pass_the_checker(fp32_graphs, tiny_model):
    n_mels, hidden = tiny_model.manifest.vocoder.n_mels, tiny_model.manifest.acoustic.hidden
    expected = {
        "vocoder": ({"mel": ["batch", n_mels, "frames"], "lengths": ["batch"]}, {"wav": 2}),
        "acoustic.text": ({"ids": ["batch", "tokens"], "speed": ["batch"]}, {"hidden": 3, "durations": 2}),
        "acoustic.frames": (
            {"hidden": ["batch", "tokens", hidden], "durations": ["batch", "tokens"], "frame_index": ["frames"]},
            {"mel": 3},
        ),
    }
    for graph, (inputs, output_ranks) in expected.items():
        model = onnx.load(str(fp32_graphs[graph]))
        onnx.checker.check_model(model, full_check=True)
        declared = {i.name: _dims(i) for i in model.graph.input}
        for name, dims in inputs.items():
            assert declared[name] == dims, (graph, name)
        for out in model.graph.output:
            assert len(_dims(out)) == output_ranks[out.name]
            assert _dims(out)[0] == "batch"  # static rank, dynamic batch on every output


def test_metadata_ties_an_export_to_its_weights_and_precision(fp32_graphs, tiny_model):
    meta = read_metadata(fp32_graphs["acoustic.text"])
    assert meta["graph"] == "acoustic.text" and meta["part"] == "acoustic" and meta["precision"] == "fp32"
    assert meta["weights_sha256"] == onnx_export.weights_sha256(tiny_model, "acoustic")
    assert int(meta["max_tokens"]) >= 512 and int(meta["max_frames"]) >= 512


@pytest.mark.parametrize(("batch", "frames"), [(1, 3), (4, 77)])
def test_fp32_vocoder_matches_pytorch_on_shapes_it_was_not_traced_at(fp32_graphs, tiny_model, batch, frames):
    model = tiny_model.load_vocoder()
    inputs = random_inputs(graph_spec("vocoder", tiny_model.manifest), {"batch": batch, "frames": frames},
                           tiny_model, torch.float32, seed=batch)
    with torch.inference_mode():
        ref = model(inputs["mel"], inputs["lengths"]).numpy()
    (wav,) = _run(fp32_graphs["vocoder"], inputs)
    assert wav.shape == (batch, frames * tiny_model.manifest.vocoder.hop_length)
    assert np.abs(wav - ref).max() <= 1e-3


def test_fp32_acoustic_graphs_chain_to_the_pytorch_model(fp32_graphs, tiny_model):
    model = tiny_model.load_acoustic()
    spec = graph_spec("acoustic.text", tiny_model.manifest)
    inputs = random_inputs(spec, {"batch": 3, "tokens": 21}, tiny_model, torch.float32, seed=7)
    prosody = Prosody(inputs["speed"], inputs["pitch"], inputs["energy"])
    with torch.inference_mode():
        out = model.generate(inputs["ids"], inputs["lengths"], inputs["speakers"], inputs["prompt"],
                             inputs["content"], prosody)
    hidden, durations = _run(fp32_graphs["acoustic.text"], inputs)
    np.testing.assert_array_equal(durations, out.durations.numpy())
    n_frames = int(durations.sum(-1).max())
    frame_inputs = {"hidden": torch.from_numpy(hidden), "durations": torch.from_numpy(durations),
                    "lengths": inputs["lengths"], "frame_index": torch.arange(n_frames)}
    (mel,) = _run(fp32_graphs["acoustic.frames"], frame_inputs)
    assert mel.shape == tuple(out.mel.shape)
    assert np.abs(mel - out.mel.numpy()).max() <= 1e-3


def test_fp32_frame_graph_matches_decode_with_given_durations(fp32_graphs, tiny_model):
    model = tiny_model.load_acoustic()
    sizes = {"batch": 2, "tokens": 9, "frames": 61}
    inputs = random_inputs(graph_spec("acoustic.frames", tiny_model.manifest), sizes, tiny_model, torch.float32, 3)
    mask = lengths_to_mask(inputs["lengths"], sizes["tokens"])
    with torch.inference_mode():
        ref = model.decode(inputs["hidden"], inputs["durations"], mask, sizes["frames"]).numpy()
    (mel,) = _run(fp32_graphs["acoustic.frames"], inputs)
    assert np.abs(mel - ref).max() <= 1e-3


def test_fp16_exports_are_within_30_db_of_fp32_pytorch(fp16_graphs, tiny_model):
    voc = tiny_model.load_vocoder()
    inputs = random_inputs(graph_spec("vocoder", tiny_model.manifest), {"batch": 2, "frames": 40}, tiny_model,
                           torch.float32, seed=11)
    with torch.inference_mode():
        ref = voc(inputs["mel"], inputs["lengths"]).numpy()
    (wav,) = _run(fp16_graphs["vocoder"], {"mel": inputs["mel"].half(), "lengths": inputs["lengths"]})
    assert wav.dtype == np.float16
    assert snr_db(ref, wav) >= 30

    am = tiny_model.load_acoustic()
    sizes = {"batch": 2, "tokens": 9, "frames": 50}
    frames_in = random_inputs(graph_spec("acoustic.frames", tiny_model.manifest), sizes, tiny_model, torch.float32, 5)
    with torch.inference_mode():
        mel_ref = am.decode(frames_in["hidden"], frames_in["durations"],
                            lengths_to_mask(frames_in["lengths"], sizes["tokens"]), sizes["frames"]).numpy()
    (mel,) = _run(fp16_graphs["acoustic.frames"], {**frames_in, "hidden": frames_in["hidden"].half()})
    assert snr_db(mel_ref, mel) >= 30

    text_in = random_inputs(graph_spec("acoustic.text", tiny_model.manifest), {"batch": 2, "tokens": 12},
                            tiny_model, torch.float32, 6)
    with torch.inference_mode():
        hidden_ref, durations_ref, *_ = am.encode(
            text_in["ids"], text_in["lengths"], text_in["speakers"], text_in["prompt"], text_in["content"],
            Prosody(text_in["speed"], text_in["pitch"], text_in["energy"]),
        )
    half = {k: v.half() if k in ("prompt", "content") else v for k, v in text_in.items()}
    hidden, durations = _run(fp16_graphs["acoustic.text"], half)
    assert snr_db(hidden_ref.numpy(), hidden) >= 30
    assert np.abs(durations - durations_ref.numpy()).max() <= 1


def test_verification_rejects_an_export_that_differs_from_pytorch(fp32_graphs, tiny_model):
    model = tiny_model.load_vocoder()

    class Louder(torch.nn.Module):
        def forward(self, mel, lengths):
            return 1.01 * model(mel, lengths)

    spec = graph_spec("vocoder", tiny_model.manifest)
    verify_graph(fp32_graphs["vocoder"], spec, onnx_export._module("vocoder", model), tiny_model, fp16=False)
    with pytest.raises(ExportError, match="max abs error"):
        verify_graph(fp32_graphs["vocoder"], spec, Louder(), tiny_model, fp16=False)


def test_graph_file_names():
    assert base_name("vocoder", False) == "vocoder.onnx" and base_name("acoustic", True) == "acoustic.fp16.onnx"
    assert graph_paths("/m/onnx/acoustic.fp16.onnx", "acoustic") == {
        "acoustic.text": Path("/m/onnx/acoustic.fp16.text.onnx"),
        "acoustic.frames": Path("/m/onnx/acoustic.fp16.frames.onnx"),
    }
    with pytest.raises(ValueError, match=r"\.onnx"):
        graph_paths("/m/vocoder.bin", "vocoder")


def test_stages_find_exports_in_the_onnx_dir_and_reject_other_weights(fp32_graphs, onnx_dir, tiny_model, tmp_path):
    found = resolve_graphs(tiny_model, "acoustic", "fp32", cache_dir=str(tmp_path), onnx_dir=str(onnx_dir),
                           export_missing=False)
    assert found == {g: fp32_graphs[g] for g in ("acoustic.text", "acoustic.frames")}
    other = ModelDir(init_dummy(tmp_path / "other", "tiny", seed=1))
    with pytest.raises(ExportError, match="re-export"):
        resolve_graphs(other, "acoustic", "fp32", cache_dir=str(tmp_path), onnx_dir=str(onnx_dir), export_missing=False)
    with pytest.raises(FileNotFoundError, match="emoserve export-onnx"):
        resolve_graphs(other, "vocoder", "fp32", cache_dir=str(tmp_path), onnx_dir=str(tmp_path / "empty"),
                       export_missing=False)


def test_missing_exports_are_made_once_into_the_cache(fp32_graphs, tiny_model, tmp_path, monkeypatch):
    calls = []

    def export_copy(model_dir, part, out, fp16=False, verify=True):
        calls.append((part, Path(out).name, fp16))
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fp32_graphs["vocoder"], out)
        return {"vocoder": Path(out)}

    monkeypatch.setattr(onnx_export, "export_part", export_copy)
    first = resolve_graphs(tiny_model, "vocoder", "fp32", onnx_dir=str(tmp_path / "none"), cache_dir=str(tmp_path))
    second = resolve_graphs(tiny_model, "vocoder", "fp32", onnx_dir=str(tmp_path / "none"), cache_dir=str(tmp_path))
    assert first == second and first["vocoder"].is_relative_to(tmp_path / "onnx")
    assert calls == [("vocoder", "vocoder.onnx", False)]
    shutil.copy(fp32_graphs["vocoder"], first["vocoder"].with_name("vocoder.fp16.onnx"))
    with pytest.raises(ExportError, match="fp16"):  # an fp32 file where the fp16 graph belongs
        resolve_graphs(tiny_model, "vocoder", "fp16", onnx_dir=str(tmp_path / "none"), cache_dir=str(tmp_path))
