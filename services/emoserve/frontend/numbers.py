"""Chinese reading of Arabic numerals, matching EmotiVoice's text normalisation.

EmotiVoice replaces every digit run (``\\d[\\d.]*``) in the input with the
lower-case Chinese reading produced by its vendored copy of ``cn2an``'s
``An2Cn.an2cn`` -- for English text as well.  This module reimplements that
conversion so that the output is identical for every input the vendored
version accepts.

PyPI ``cn2an`` (0.5.24) is *not* used at run time because it differs from the
vendored copy: it drops the ``零`` in ``万零X千``/``亿零X千`` (10001000 reads
``一千万一千`` instead of EmotiVoice's ``一千万零一千``) and it pre-processes its
input (traditional to simplified, full-width to half-width).  The tests
cross-check against PyPI ``cn2an`` with exactly that difference allowed.

Inputs the vendored version rejects (which makes EmotiVoice raise) are read
instead of raising:

* more than one dot (``10.5.3``): trailing dots are dropped as for ``3.``,
  then each remaining dot-separated group is read as an integer and the
  groups are joined with ``点`` (``十点五点三``);
* integer parts longer than 16 digits: read digit by digit;
* decimal parts longer than 16 digits: all digits are read (the vendored
  version truncates to 16 and warns);
* non-ASCII decimal digits (full-width ``２``, Arabic-Indic ``٢`` ...):
  mapped to their ASCII value first.
"""

from __future__ import annotations

import re
import unicodedata

_DIGITS = "零一二三四五六七八九"
_UNITS = ("", "十", "百", "千", "万", "十", "百", "千", "亿", "十", "百", "千", "万", "十", "百", "千")
NUMBER_RUN = re.compile(r"\d[\d.]*")
"""A digit run as EmotiVoice matches it: a digit followed by digits and dots."""


def _ascii_digits(text: str) -> str:
    return "".join(c if c == "." or "0" <= c <= "9" else str(unicodedata.decimal(c)) for c in text)


def _spell_digits(digits: str) -> str:
    return "".join(_DIGITS[int(d)] for d in digits)


def integer_to_chinese(digits: str) -> str:
    """Reads a string of ASCII digits as a Chinese integer (``2024`` -> ``二千零二十四``).

    Args:
        digits: One or more ASCII digits; leading zeros are ignored.

    Returns:
        The lower-case Chinese reading; digit by digit beyond 16 digits.
    """
    digits = digits.lstrip("0") or "0"
    if len(digits) > len(_UNITS):
        return _spell_digits(digits)
    out = ""
    last = len(digits) - 1
    for i, d in enumerate(digits):
        place = last - i
        if d != "0":
            out += _DIGITS[int(d)] + _UNITS[place]
            continue
        if place % 4 == 0:
            out += "零" + _UNITS[place]
        if i > 0 and out[-1] != "零":
            out += "零"
    out = out.replace("零零", "零").replace("零万", "万").replace("零亿", "亿").replace("亿万", "亿").strip("零")
    if out.startswith("一十"):
        out = out[1:]
    return out or "零"


def number_to_chinese(number: str) -> str:
    """Reads one digit run (see :data:`NUMBER_RUN`) in Chinese.

    Args:
        number: Digits and dots starting with a digit, e.g. ``"3.14"``.

    Returns:
        The Chinese reading, e.g. ``"三点一四"``; ``"3."`` reads ``"三"``.
    """
    number = _ascii_digits(number)
    groups = number.split(".")
    if len(groups) > 2:
        groups = number.rstrip(".").split(".")
    if len(groups) == 1:
        return integer_to_chinese(groups[0])
    if len(groups) == 2:
        whole, fraction = groups
        return integer_to_chinese(whole) + ("点" + _spell_digits(fraction) if fraction else "")
    return "点".join(integer_to_chinese(g) for g in groups if g)


def normalize_numbers(text: str) -> str:
    """Replaces every digit run in ``text`` by its Chinese reading.

    Args:
        text: Any text.

    Returns:
        ``text`` with no decimal digits left.
    """
    return NUMBER_RUN.sub(lambda m: number_to_chinese(m.group()), text)
