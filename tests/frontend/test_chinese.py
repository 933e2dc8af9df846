"""Pinyin to initial/final splitting and Chinese prosody marks."""

from __future__ import annotations

import pytest

from emoserve.frontend.chinese import chinese_phonemes, split_pinyin


@pytest.mark.parametrize(
    ("syllable", "parts"),
    [
        ("zi3", ("z", "ii3")),
        ("shi4", ("sh", "iii4")),
        ("you3", ("", "iou3")),
        ("yi1", ("", "i1")),
        ("yuan2", ("", "van2")),
        ("yue4", ("y", "ve4")),  # EmotiVoice's rule list misses "yue"
        ("wu3", ("", "u3")),
        ("wei4", ("", "uei4")),
        ("jue2", ("j", "ve2")),
        ("qu4", ("q", "v4")),
        ("gui4", ("g", "uei4")),
        ("liu2", ("l", "iou2")),
        ("lun2", ("l", "uen2")),
        ("nve4", ("n", "ve4")),
        ("er2", ("", "er2")),
        ("n2", ("", "en2")),
        ("huar1", ("h", "uar1")),
    ],
)
def test_split_pinyin_follows_emotivoice_rules(syllable: str, parts: tuple[str, str]) -> None:
    assert split_pinyin(syllable) == parts


def test_syllables_in_a_word_are_joined_by_sp0_and_words_end_with_sp1() -> None:
    assert chinese_phonemes("你好") == ["n", "i3", "sp0", "h", "ao3", "sp1"]


def test_punctuation_replaces_the_preceding_boundary_with_sp3() -> None:
    assert chinese_phonemes("你好，世界！") == "n i3 sp0 h ao3 sp3 sh iii4 sp0 j ie4 sp3".split()


def test_leading_punctuation_produces_nothing() -> None:
    assert chinese_phonemes("，好") == chinese_phonemes("好")
