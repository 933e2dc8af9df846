"""The front end reproduces EmotiVoice's recorded output exactly."""

from __future__ import annotations

from collections import Counter
from typing import Any

from emoserve.frontend import Frontend
from emoserve.frontend.numbers import number_to_chinese


def test_phonemes_match_emotivoice_reference_exactly(frontend: Frontend, reference: dict[str, Any]) -> None:
    assert reference["lexicon"] == "cmudict"
    total: Counter[str] = Counter()
    matched: Counter[str] = Counter()
    failures = []
    for item in reference["items"]:
        total[item["language"]] += 1
        got = frontend.phonemes(item["text"])
        if got == item["phonemes"]:
            matched[item["language"]] += 1
        else:
            failures.append(f"{item['text']!r}\n  want {item['phonemes']}\n  got  {got}")
    rates = ", ".join(f"{lang} {matched[lang]}/{n}" for lang, n in sorted(total.items()))
    assert not failures, f"match rate: {rates}\n" + "\n".join(failures)


def test_reference_covers_every_language(reference: dict[str, Any]) -> None:
    counts = Counter(item["language"] for item in reference["items"])
    assert counts["zh"] >= 20 and counts["en"] >= 15 and counts["mixed"] >= 10, counts


def test_number_reading_matches_emotivoice_cn2an(reference: dict[str, Any]) -> None:
    mismatches = [
        (n["number"], n["chinese"], number_to_chinese(n["number"]))
        for n in reference["numbers"]
        if number_to_chinese(n["number"]) != n["chinese"]
    ]
    assert not mismatches
