"""Long input is split into pieces the model can take (EmotiVoice issue #139)."""

from __future__ import annotations

import re
import time

import pytest

from emoserve.frontend import Frontend

MAX_PHONEMES, MAX_CHARS = 400, 200
LONG_TEXTS = {
    "chinese": "今天天气真不错，我们一起去公园散步吧。他说：“好的！”然后出发了；2024年的春天来得特别早？\n",
    "english": "The quick brown fox jumps over the lazy dog. Are you coming with us? Yes, I am! ",
    "mixed": "我今天很happy, 打开 the door 好吗？I have 3 apples. 版本10.5.3发布了。",
    "chinese_without_punctuation": "今天天气真不错我们一起去公园散步吧",
    "english_without_punctuation": "the quick brown fox jumps over the lazy dog ",
    "one_giant_english_word": "a",
    "one_giant_chinese_run": "好",
    "digits_only": "1234567890",
    "short_lines": "你好\n",
    "clauses_only": "一二三四五六七八九十，",
}


def _non_space(text: str) -> str:
    return re.sub(r"\s", "", text)


def test_text_that_fits_is_returned_unchanged(frontend: Frontend) -> None:
    assert frontend.segments("  你好，world! ") == ["  你好，world! "]
    assert frontend.segments("") == [""]


@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_long_text_segments_quickly_within_limits_without_losing_text(frontend: Frontend, name: str) -> None:
    text = (LONG_TEXTS[name] * 20000)[:20000]
    start = time.perf_counter()
    segments = frontend.segments(text, MAX_PHONEMES, MAX_CHARS)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{name}: {elapsed:.2f}s"
    assert len(segments) > 1
    for segment in segments:
        assert 0 < len(segment) <= MAX_CHARS
        assert len(frontend.phonemes(segment).split()) <= MAX_PHONEMES
    assert "".join(_non_space(s) for s in segments) == _non_space(text)


def test_splits_prefer_sentence_ends(frontend: Frontend) -> None:
    sentence = "今天天气真不错，我们一起去公园散步吧。"
    segments = frontend.segments(sentence * 30)
    assert all(s.endswith("。") for s in segments)


def test_decimal_points_are_not_sentence_ends(frontend: Frontend) -> None:
    segments = frontend.segments("圆周率约等于3.14159。" * 40, max_phonemes=60)
    assert all("3.14159" in s for s in segments)


def test_smaller_limits_are_respected(frontend: Frontend) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 10
    for segment in frontend.segments(text, max_phonemes=30, max_chars=25):
        assert len(segment) <= 25 and len(frontend.phonemes(segment).split()) <= 30
