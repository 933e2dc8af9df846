"""Mandarin grapheme-to-phoneme conversion in EmotiVoice's phone set.

Text is segmented into words with jieba; each word is converted with
pypinyin (``Style.TONE3``, neutral tone written as ``5``, with the CC-CEDICT
phrase dictionary of ``pypinyin_dict`` loaded) and every syllable is split
into an initial and a tonal final.  Syllables of one word are separated by
``sp0``, words are followed by ``sp1`` and a punctuation mark replaces the
preceding boundary with ``sp3``.
"""

from __future__ import annotations

import logging
import re
import string
from functools import lru_cache

import jieba
from pypinyin import Style, pinyin
from pypinyin_dict.phrase_pinyin_data import cc_cedict

from .numbers import normalize_numbers

cc_cedict.load()

CHINESE_PUNCTUATION = "。，？！；：“”‘’《》〈〉【】『』—…、（）"
"""Full-width marks that EmotiVoice treats as Chinese punctuation."""

_PUNCTUATION = re.compile(f"[{CHINESE_PUNCTUATION}]")
_SYLLABLE = re.compile(r"[a-z]+[1-5]")
_FIRST_VOWEL = re.compile(r"[aeiouv]")
_SYLLABIC_NASAL = {"n", "ng", "m"}
_Y_GLIDE = {"ya", "yan", "yang", "yao", "ye", "yong", "you"}
_Y_VOWEL = {"yi", "yin", "ying"}
# "yue" is deliberately absent: EmotiVoice splits it as y + ve.
_Y_UMLAUT = {"yu", "yv", "yuan", "yvan", "yve", "yun", "yvn"}
_FINAL_ALIASES = {"ui": "uei", "iu": "iou", "un": "uen", "ue": "ve"}


@lru_cache(maxsize=1)
def word_segmenter() -> jieba.Tokenizer:
    """The process-wide jieba tokenizer with the default dictionary, loaded once."""
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


def split_pinyin(syllable: str) -> tuple[str, str]:
    """Splits a TONE3 pinyin syllable into EmotiVoice's initial and final.

    Args:
        syllable: Lower-case pinyin with a trailing tone digit, e.g. ``"zhi1"``.

    Returns:
        ``(initial, final)``; the initial is ``""`` for zero-initial syllables,
        e.g. ``("zh", "iii1")``, ``("", "iou3")`` for ``you3``.
    """
    body, tone = syllable[:-1], syllable[-1]
    if body in _SYLLABIC_NASAL:
        body = "e" + body
    rhotic = ""
    if body.endswith("r"):
        body, rhotic = body[:-1], "r"
    if body in ("zi", "ci", "si", "ri"):
        initial, final = body[0], "ii"
    elif body in ("zhi", "chi", "shi"):
        initial, final = body[:2], "iii"
    elif body in _Y_GLIDE:
        initial, final = "", "i" + body[1:]
    elif body in _Y_VOWEL:
        initial, final = "", body[1:]
    elif body in _Y_UMLAUT:
        initial, final = "", "v" + body[2:]
    elif body == "wu":
        initial, final = "", "u"
    elif body.startswith("w"):
        initial, final = "", "u" + body[1:]
    elif len(body) >= 2 and body[0] in "jqx" and body[1] == "u":
        initial, final = body[0], "v" + body[2:]
    else:
        vowel = _FIRST_VOWEL.search(body)
        start = vowel.start() if vowel else len(body)
        initial, final = body[:start], _FINAL_ALIASES.get(body[start:], body[start:])
    return initial, final + rhotic + tone


@lru_cache(maxsize=65536)
def _word_pinyin(word: str) -> tuple[str, ...]:
    return tuple(item[0] for item in pinyin(word, style=Style.TONE3, neutral_tone_with_five=True))


def _is_punctuation(item: str) -> bool:
    return bool(_PUNCTUATION.search(item)) or item in string.punctuation


def chinese_phonemes(text: str) -> list[str]:
    """Converts Chinese text to EmotiVoice phonemes without ``<sos/eos>``.

    Args:
        text: Chinese characters, Chinese punctuation and spaces; digits are
            read in Chinese first.

    Returns:
        Phoneme tokens, e.g. ``["n", "i3", "sp0", "h", "ao3", "sp1"]`` for 你好.
        Items pypinyin cannot read (symbols, letters) are skipped.
    """
    # The leading marker stands in for <sos/eos>: punctuation at the very start
    # replaces it, exactly as in EmotiVoice, and it is dropped on return.
    groups = ["<start>"]
    for word in word_segmenter().cut(normalize_numbers(text)):
        if word == " ":
            continue
        items = _word_pinyin(word)
        if any(_is_punctuation(item) for item in items):
            groups.pop()
            groups.append("sp3")
            continue
        syllables = [" ".join(split_pinyin(item)) for item in items if _SYLLABLE.fullmatch(item)]
        if syllables:
            groups.append(" sp0 ".join(syllables))
            groups.append("sp1")
    return " ".join(groups).split()[1:]
