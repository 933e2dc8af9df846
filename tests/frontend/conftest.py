"""Fixtures for the text front-end tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emoserve.frontend import Frontend, read_tokens

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def tokens() -> list[str]:
    """EmotiVoice's token list, copied into tests/data."""
    return read_tokens(DATA / "tokenlist")


@pytest.fixture(scope="session")
def frontend(tokens: list[str]) -> Frontend:
    """A front end with the cmudict lexicon the reference was recorded with."""
    return Frontend(tokens=tokens)


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    """Phoneme strings recorded from EmotiVoice by tools/record_frontend_reference.py."""
    return json.loads((DATA / "frontend_reference.json").read_text(encoding="utf-8"))
