"""English lexicon handling and the deterministic out-of-lexicon fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoserve.frontend import cmudict_lexicon, read_lexicon, write_lexicon
from emoserve.frontend.english import english_phonemes, number_to_words

LEXICON = {"hello": ["HH", "AH0", "L", "OW1"], "world": ["W", "ER1", "L", "D"], "b": ["B", "IY1"]}


def test_written_cmudict_lexicon_reads_back_identically(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    write_lexicon(path)
    assert read_lexicon(path) == cmudict_lexicon()


def test_cmudict_lexicon_keeps_the_first_pronunciation() -> None:
    lexicon = cmudict_lexicon()
    assert lexicon["a"] == ["AH0"]
    assert lexicon["don't"] == ["D", "OW1", "N", "T"]


def test_read_lexicon_lowercases_and_keeps_first_entry(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.txt"
    path.write_text("READ R IY1 D\nread R EH1 D\nLive L IH1 V\n", encoding="utf-8")
    assert read_lexicon(path) == {"read": ["R", "IY1", "D"], "live": ["L", "IH1", "V"]}


def test_words_get_engsp1_and_punctuation_engsp4() -> None:
    assert english_phonemes("Hello, world!", LEXICON) == "[HH] [AH0] [L] [OW1] engsp4 [W] [ER1] [L] [D]".split()


def test_semicolon_and_plus_separate_words_without_a_pause() -> None:
    assert english_phonemes("hello;world+hello", LEXICON) == english_phonemes("hello world hello", LEXICON)


def test_unknown_words_are_spelled_letter_by_letter_deterministically() -> None:
    first = english_phonemes("Xyz hello", LEXICON)
    assert first == "[EH1] [K] [S] [W] [AY1] [Z] [IY1] [HH] [AH0] [L] [OW1]".split()
    assert english_phonemes("Xyz hello", LEXICON) == first


def test_unknown_word_is_cleaned_before_lookup() -> None:
    assert english_phonemes("Héllo:", LEXICON) == "[HH] [AH0] [L] [OW1]".split()


def test_punctuation_after_an_unknown_word_replaces_its_last_phone_like_emotivoice() -> None:
    assert english_phonemes("xy, hello", LEXICON) == "[EH1] [K] [S] [W] engsp4 [HH] [AH0] [L] [OW1]".split()


def test_digits_in_english_are_spelled_as_number_words() -> None:
    lexicon = cmudict_lexicon()
    assert english_phonemes("room42", lexicon) == english_phonemes("room forty two", lexicon)
    assert english_phonemes("1" * 5000, lexicon) == english_phonemes("one " * 5000, lexicon)


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (42, "forty two"),
        (100, "one hundred"),
        (2024, "two thousand twenty four"),
        (1_000_001, "one million one"),
        (
            999_999_999_999,
            "nine hundred ninety nine billion nine hundred ninety nine million "
            "nine hundred ninety nine thousand nine hundred ninety nine",
        ),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words
