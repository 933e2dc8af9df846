"""Text that cannot be spoken never crashes the front end."""

from __future__ import annotations

import pytest

from emoserve.frontend import Frontend

EMPTY = "<sos/eos> <sos/eos>"


@pytest.mark.parametrize(
    "text", ["", " ", "   ", "\n\t", "😀🙂", "مرحبا", "\x00\x07\x1b", "，", "...", "!?", "「」～·", "+-;"]
)
def test_unspeakable_text_gives_only_boundaries(frontend: Frontend, text: str) -> None:
    assert frontend.phonemes(text) == EMPTY


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("你好😀世界", "你好世界"),
        ("hello 🙂 world", "hello world"),
        ("你好\x00", "你好"),
        ("مرحبا hello", "hello"),
    ],
)
def test_unknown_symbols_are_skipped(frontend: Frontend, text: str, spoken: str) -> None:
    assert frontend.phonemes(text) == frontend.phonemes(spoken)


@pytest.mark.parametrize(
    "text",
    ["版本10.5.3", "3.14.", "٣٤ apples", "１２３", "1" * 300, "你好\n世界", "Hello，世界", "ⅫⅣ²", "𝕏𝕐", "\ud800"],
)
def test_inputs_that_crash_emotivoice_give_valid_tokens(frontend: Frontend, text: str) -> None:
    ids, unknown = frontend.to_ids(frontend.phonemes(text))
    assert unknown == []
    assert ids[0] == ids[-1] == 1
