"""Phonemes map onto EmotiVoice's token list; unknown symbols are dropped, never raised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emoserve.frontend import Frontend, read_tokens

SHARED_TOKENLIST = Path(__file__).resolve().parents[2].parent / "shared" / "emotivoice" / "tokenlist"


def test_every_reference_phoneme_is_a_known_token(frontend: Frontend, reference: dict[str, Any]) -> None:
    for item in reference["items"]:
        ids, unknown = frontend.to_ids(item["phonemes"])
        assert not unknown, (item["text"], unknown)
        assert len(ids) == len(item["phonemes"].split())


def test_ids_are_line_indices_of_the_token_list(frontend: Frontend, tokens: list[str]) -> None:
    ids, unknown = frontend.to_ids("<sos/eos> n i3 sp0 h ao3 [HH] engsp1 <sos/eos>")
    assert unknown == []
    assert [tokens[i] for i in ids] == "<sos/eos> n i3 sp0 h ao3 [HH] engsp1 <sos/eos>".split()
    assert ids[0] == 1


def test_unknown_symbols_are_dropped_and_reported(frontend: Frontend) -> None:
    ids, unknown = frontend.to_ids("<sos/eos> [XX] n 🙂 i3 <sos/eos>")
    assert unknown == ["[XX]", "🙂"]
    assert len(ids) == 4


def test_to_ids_without_a_token_list_is_a_configuration_error() -> None:
    with pytest.raises(RuntimeError, match="token list"):
        Frontend(lexicon={}).to_ids("<sos/eos>")


def test_copied_token_list_equals_the_shared_one(tokens: list[str]) -> None:
    if not SHARED_TOKENLIST.is_file():
        pytest.skip(f"shared token list not present at {SHARED_TOKENLIST}")
    assert read_tokens(SHARED_TOKENLIST) == tokens
    assert len(tokens) == 502


def test_from_files_reads_lexicon_and_token_list(tmp_path: Path) -> None:
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("HELLO HH AH0 L OW1\nHello X\nWORLD W ER1 L D\n", encoding="utf-8")
    tokenlist = Path(__file__).resolve().parents[1] / "data" / "tokenlist"
    frontend = Frontend.from_files(str(lexicon), str(tokenlist))
    phonemes = frontend.phonemes("hello world")
    assert phonemes == "<sos/eos> [HH] [AH0] [L] [OW1] engsp1 [W] [ER1] [L] [D] <sos/eos>"
    assert frontend.to_ids(phonemes)[1] == []
