"""The project lexicon (``emoserve/frontend/data/lexicon.txt``): emoserve's own words, merged over the CMU
dictionary, so that "emoserve" is read as a word and not spelled letter by letter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emoserve.frontend import Frontend, cmudict_lexicon, default_lexicon, english, read_lexicon
from emoserve.model.dummy import packaged_labels

EMOSERVE = ["[IY1]", "[M]", "[OW0]", "[S]", "[ER2]", "[V]"]


@pytest.fixture
def fresh_default() -> Iterator[None]:
    default_lexicon.cache_clear()
    yield
    default_lexicon.cache_clear()


def test_emoserve_is_read_as_a_word_by_the_default_front_end() -> None:
    phonemes = Frontend(tokens=packaged_labels("tokenlist")).phonemes("Hello from emoserve.").split()
    assert phonemes[-len(EMOSERVE) - 1 : -1] == EMOSERVE and phonemes[-1] == "<sos/eos>"
    spelled = Frontend(lexicon=cmudict_lexicon()).phonemes("Hello from emoserve.").split()
    # Without the project lexicon: "E", "M", "O", "S", "E", "R", "V", "E" (the last phone gives way to the stop).
    assert spelled[-12:-1] == ["[IY1]", "[EH1]", "[M]", "[OW1]", "[EH1]", "[S]", "[IY1]", "[AA1]", "[R]", "[V]", "[IY1]"]


def test_the_default_lexicon_is_cmudict_plus_the_project_words() -> None:
    project = read_lexicon(english.PROJECT_LEXICON)
    assert {"emoserve", "emotivoice"} <= set(project)
    assert not set(project) & set(cmudict_lexicon())  # words the dictionary lacks
    assert default_lexicon() == {**cmudict_lexicon(), **project}


def test_every_project_phone_is_a_token_of_the_models() -> None:
    tokens = set(packaged_labels("tokenlist"))
    for word, phones in read_lexicon(english.PROJECT_LEXICON).items():
        assert phones and all(f"[{p}]" in tokens for p in phones), word


def test_project_entries_win_over_the_dictionary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_default: None
) -> None:
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("HELLO HH EH1 L OW0\nEMOSERVE IY1 M OW0 S ER2 V\n", encoding="utf-8")
    monkeypatch.setattr(english, "PROJECT_LEXICON", lexicon)
    assert default_lexicon()["hello"] == ["HH", "EH1", "L", "OW0"]
    assert cmudict_lexicon()["hello"] == ["HH", "AH0", "L", "OW1"]


def test_a_model_lexicon_is_used_as_given() -> None:
    frontend = Frontend(lexicon={"hello": ["HH", "AH0", "L", "OW1"]})
    assert frontend.phonemes("emoserve").split()[1:3] == ["[IY1]", "[EH1]"]  # "e", "m": spelled
