"""Splitting long text into pieces the acoustic model can take in one go.

EmotiVoice feeds the whole input through a BERT-style content encoder with
512 positions and crashes on long text (EmotiVoice issue #139).  Text is
split at sentence ends first, then at clause marks, then at whitespace and
finally between characters, and neighbouring pieces are packed greedily
while both limits hold.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_SENTENCE_END = re.compile(r"(?:[。！？!?；;\n]|\.(?!\d))+[”’\"'」』）)】》]*")
_CLAUSE_END = re.compile(r"(?:[，、：]|[,:](?!\d))+[”’\"'」』）)】》]*")
_WHITESPACE = re.compile(r"\s+")
_LEVELS = (_SENTENCE_END, _CLAUSE_END, _WHITESPACE)


def _split_after(text: str, pattern: re.Pattern[str]) -> list[str]:
    pieces, start = [], 0
    for match in pattern.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


Piece = tuple[str, int]
"""A piece of text and its phoneme count."""


class Segmenter:
    """Splits text so that every piece is within a phoneme and a character limit.

    Args:
        count: Phoneme count of a piece of text.
        max_units: Largest allowed phoneme count.
        max_chars: Largest allowed number of characters.
    """

    def __init__(self, count: Callable[[str], int], max_units: int, max_chars: int) -> None:
        self._count = count
        self._max_units = max_units
        self._max_chars = max_chars

    def fits(self, text: str) -> bool:
        """Whether ``text`` is within both limits."""
        return len(text) <= self._max_chars and self._count(text) <= self._max_units

    def split(self, text: str) -> list[str]:
        """Splits ``text`` into stripped, non-empty pieces within the limits.

        A single character over the phoneme limit is returned on its own.
        """
        return [p.strip() for p, _ in self._split(text, 0) if p.strip()]

    def _split(self, text: str, level: int) -> list[Piece]:
        if level == len(_LEVELS):
            return self._split_chars(text)
        pieces: list[Piece] = []
        for part in _split_after(text, _LEVELS[level]):
            units = self._count(part) if len(part) <= self._max_chars else self._max_units + 1
            if units <= self._max_units:
                pieces.append((part, units))
            else:
                pieces += self._split(part, level + 1)
        return self._pack(pieces)

    def _pack(self, pieces: list[Piece]) -> list[Piece]:
        """Joins neighbouring pieces while the joined text fits.

        Grouping uses the sum of the pieces' counts, which joining rarely
        exceeds; every group is then counted exactly and a group over the
        limit is re-packed with exact counts.
        """
        groups: list[list[Piece]] = []
        chars = units = 0
        for text, n in pieces:
            if groups and chars + len(text) <= self._max_chars and units + n <= self._max_units:
                groups[-1].append((text, n))
                chars, units = chars + len(text), units + n
            else:
                groups.append([(text, n)])
                chars, units = len(text), n
        packed: list[Piece] = []
        for group in groups:
            text = "".join(t for t, _ in group)
            n = self._count(text) if len(group) > 1 else group[0][1]
            packed += [(text, n)] if n <= self._max_units else self._pack_exact(group)
        return packed

    def _pack_exact(self, pieces: list[Piece]) -> list[Piece]:
        packed: list[Piece] = []
        for text, n in pieces:
            if packed and len(packed[-1][0]) + len(text) <= self._max_chars:
                joined = packed[-1][0] + text
                joined_units = self._count(joined)
                if joined_units <= self._max_units:
                    packed[-1] = (joined, joined_units)
                    continue
            packed.append((text, n))
        return packed

    def _split_chars(self, text: str) -> list[Piece]:
        """Cuts ``text`` into the longest fitting prefixes (binary search)."""
        pieces: list[Piece] = []
        start = 0
        while start < len(text):
            low, high = start + 1, min(len(text), start + self._max_chars)
            low_units = self._count(text[start:low])
            while low < high:
                mid = (low + high + 1) // 2
                mid_units = self._count(text[start:mid])
                if mid_units <= self._max_units:
                    low, low_units = mid, mid_units
                else:
                    high = mid - 1
            pieces.append((text[start:low], low_units))
            start = low
        return pieces
