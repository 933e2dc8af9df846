"""ONNX exports of the tiny dummy model, made once per session (the slow part of these tests: ~2 s per graph)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoserve.cli import main
from emoserve.engines.onnx_export import export_part
from emoserve.model.modeldir import ModelDir


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like ``MODEL_DIR/onnx`` (usable as ``engine.onnx_dir``)."""
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def fp32_graphs(tiny_model_path: Path, onnx_dir: Path) -> dict[str, Path]:
    """fp32 vocoder (exported through ``emoserve export-onnx``) and acoustic graphs, by graph name."""
    command = ["export-onnx", str(tiny_model_path), "--part", "vocoder", "--out", str(onnx_dir / "vocoder.onnx")]
    assert main(command) == 0
    acoustic = export_part(ModelDir(tiny_model_path), "acoustic", onnx_dir / "acoustic.onnx")
    return {"vocoder": onnx_dir / "vocoder.onnx", **acoustic}


@pytest.fixture(scope="session")
def fp16_graphs(tiny_model_path: Path, onnx_dir: Path) -> dict[str, Path]:
    """fp16 vocoder and acoustic graphs, by graph name."""
    model = ModelDir(tiny_model_path)
    return {
        **export_part(model, "vocoder", onnx_dir / "vocoder.fp16.onnx", fp16=True),
        **export_part(model, "acoustic", onnx_dir / "acoustic.fp16.onnx", fp16=True),
    }
