"""Model directories whose style encoder comes from an installed package (``style.package`` in model.json):
the same vectors as a copied fp16 folder, the ONNX cache keyed by the rounding, and clear errors when the
package is missing, of another version or lacks its folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from emoserve.encoder.engine import EncoderEngine
from emoserve.engines.style_onnx import OnnxRuntimeStyle, resolve_style_graph, style_sha256
from emoserve.model.modeldir import (
    MANIFEST,
    ModelDir,
    ModelManifest,
    StyleConfig,
    StylePackageError,
    package_style_folder,
    write_model_dir,
)
from emoserve.model.style import StyleEncoder
from emoserve.tools.demo_voice.dataset import export_style_encoder
from tests.style_package import DISTRIBUTION, FOLDER, PACKAGE, VERSION, write_style_package

TEXTS = ["Happy", "very sad", "开心", "Hello from emoserve.", "A longer sentence, so that the batch is padded."]


def package_style(**changes: str) -> StyleConfig:
    style = StyleConfig(directory=FOLDER, pooling="pooler", package=PACKAGE,
                        requirement=f"{DISTRIBUTION}=={VERSION}", dtype="float16")
    return replace(style, **changes)


def with_style(src: Path, out: Path, style: StyleConfig, style_folder: Path | None) -> Path:
    """A copy of model directory ``src`` with ``style`` in its manifest and ``style_folder`` (or none) as style/."""
    shutil.copytree(src, out)
    shutil.rmtree(out / "style")
    if style_folder is not None:
        shutil.copytree(style_folder, out / style.directory)
    data = json.loads((out / MANIFEST).read_text())
    data["style"] = {"directory": style.directory, "pooling": style.pooling, "max_tokens": style.max_tokens,
                     "package": style.package, "requirement": style.requirement, "dtype": style.dtype}
    (out / MANIFEST).write_text(json.dumps(data))
    return out


@pytest.fixture(scope="module")
def site(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the fake package, which ships the tiny model's (fp32) BERT."""
    root = tmp_path_factory.mktemp("site")
    write_style_package(root, tiny_model_path / "style")
    return root


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture(scope="module")
def models(tiny_model_path: Path, site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model three ways: its fp32 style/, a copied fp16 style/ (what the demo data holds) and a
    reference to the package rounded to fp16."""
    tmp = tmp_path_factory.mktemp("styles")
    fp16 = export_style_encoder(site / PACKAGE / FOLDER, tmp / "fp16-style")
    copied = StyleConfig(pooling="pooler")
    return {
        "fp32": tiny_model_path,
        "copied": with_style(tiny_model_path, tmp / "copied", copied, fp16),
        "package": with_style(tiny_model_path, tmp / "package", package_style(), None),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_package_reference_gives_exactly_the_vectors_of_the_copied_fp16_folder(
    models: dict[str, Path], installed: Path, dtype: torch.dtype
) -> None:
    package = ModelDir(models["package"])
    assert package.style_dir == installed / PACKAGE / FOLDER and not (models["package"] / "style").exists()
    assert package.manifest.style.weights_dtype == torch.float16
    copied = StyleEncoder.for_model(ModelDir(models["copied"]), dtype=dtype).embed(TEXTS)
    referenced = StyleEncoder.for_model(package, dtype=dtype).embed(TEXTS)
    assert torch.equal(referenced, copied)
    unrounded = StyleEncoder.for_model(ModelDir(models["fp32"]), dtype=dtype).embed(TEXTS)
    assert not torch.equal(referenced, unrounded)  # the rounding is what makes them equal


def test_the_encoder_stage_loads_the_referenced_encoder(models: dict[str, Path], installed: Path) -> None:
    engines = {k: EncoderEngine(ModelDir(models[k]), cache_size=0) for k in ("copied", "package")}
    assert torch.equal(engines["package"].style.embed(TEXTS), engines["copied"].style.embed(TEXTS))


def test_the_onnx_style_graph_is_keyed_by_the_rounding_and_matches_torch(
    models: dict[str, Path], installed: Path, tmp_path: Path
) -> None:
    package = ModelDir(models["package"])
    assert style_sha256(package.style_dir, torch.float16) != style_sha256(package.style_dir)
    graph = resolve_style_graph(package, str(tmp_path))
    assert style_sha256(package.style_dir, torch.float16)[:16] in graph.parent.name
    got = StyleEncoder.for_model(package, backend=OnnxRuntimeStyle(graph)).embed(TEXTS).numpy()
    want = StyleEncoder.for_model(ModelDir(models["copied"])).embed(TEXTS).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_missing_package_names_the_pip_command(models: dict[str, Path]) -> None:
    with pytest.raises(StylePackageError, match=rf"not installed: pip install '{DISTRIBUTION}=={VERSION}'"):
        package_style_folder(ModelDir(models["package"]).manifest.style)
    with pytest.raises(StylePackageError, match="not installed"):
        StyleEncoder.for_model(ModelDir(models["package"]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"requirement": f"{DISTRIBUTION}==2.0"}, rf"needs '{DISTRIBUTION}==2.0', but {DISTRIBUTION} 1.0 is installed"),
        ({"package": "not_the_fake_minilm"}, "package 'not_the_fake_minilm' cannot be found"),
        ({"directory": "weights"}, "has no model folder 'weights' with a config.json"),
    ],
)
def test_an_unusable_package_is_refused_by_name(
    models: dict[str, Path], installed: Path, tmp_path: Path, changes: dict[str, str], message: str
) -> None:
    model = with_style(models["fp32"], tmp_path / "model", package_style(**changes), None)
    with pytest.raises(StylePackageError, match=message):
        EncoderEngine(ModelDir(model))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dtype": "fp16"}, "style.dtype must be empty or one of"),
        ({"requirement": ""}, "must be given together"),
        ({"package": "", "dtype": ""}, "must be given together"),
        ({"package": "fake-minilm"}, "must be a Python import name"),
        ({"requirement": "fake minilm ==="}, "is not a pip requirement"),
        ({"directory": "../model"}, "relative path inside its folder"),
        ({"directory": "/abs/model"}, "relative path inside its folder"),
        ({"directory": ""}, "relative path inside its folder"),
        ({"pooling": "max"}, "style.pooling must be"),
    ],
)
def test_invalid_style_sections_are_rejected(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        package_style(**changes)


def test_a_package_manifest_round_trips_and_writes_no_style_folder(tiny_model: ModelDir, tmp_path: Path) -> None:
    manifest = replace(tiny_model.manifest, style=package_style())
    assert ModelManifest.from_json(manifest.to_json()) == manifest
    acoustic, vocoder = tiny_model.load_acoustic(), tiny_model.load_vocoder()
    with pytest.raises(ValueError, match="give style_src exactly when"):
        write_model_dir(tmp_path / "both", manifest, acoustic, vocoder, tiny_model.style_dir)
    with pytest.raises(ValueError, match="give style_src exactly when"):
        write_model_dir(tmp_path / "neither", tiny_model.manifest, acoustic, vocoder, None)
    out = write_model_dir(tmp_path / "model", manifest, acoustic, vocoder, None)
    assert sorted(p.name for p in out.iterdir()) == ["acoustic.safetensors", "model.json", "vocoder.safetensors"]
    assert ModelDir(out).manifest.style == package_style()
