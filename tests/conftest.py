"""Shared fixtures: a tiny dummy model directory built once per session (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoserve.model.dummy import init_dummy
from emoserve.model.modeldir import ModelDir

DATA = Path(__file__).parent / "data"
FRAMES_PER_PHONEME = 4


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dummy model whose phonemes all last FRAMES_PER_PHONEME frames."""
    return init_dummy(tmp_path_factory.mktemp("models") / "tiny", "tiny", FRAMES_PER_PHONEME, seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path: Path) -> ModelDir:
    return ModelDir(tiny_model_path)
