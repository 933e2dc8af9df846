"""Chinese number reading: EmotiVoice's vendored cn2an semantics, never raising."""

from __future__ import annotations

import random
import re

import pytest
from cn2an import An2Cn

from emoserve.frontend.numbers import normalize_numbers, number_to_chinese

# PyPI cn2an drops the 零 that EmotiVoice's vendored copy keeps in 万零X千 / 亿零X千.
_PYPI_ZERO_DROP = re.compile(r"([万亿])零([一二三四五六七八九]千)")


def _numbers() -> list[str]:
    rng = random.Random(0)
    numbers = [str(i) for i in range(0, 3000)] + ["2024", "3.14", "0.5", "007", "3.", "100.000", "10086"]
    numbers += [str(rng.randrange(10 ** rng.randint(1, 16))) for _ in range(3000)]
    numbers += [f"{rng.randrange(10 ** rng.randint(1, 9))}.{rng.randrange(10**6)}" for _ in range(1000)]
    return numbers


def test_reading_equals_pypi_cn2an_up_to_its_documented_zero_drop() -> None:
    pypi = An2Cn()
    mismatches = [n for n in _numbers() if _PYPI_ZERO_DROP.sub(r"\1\2", number_to_chinese(n)) != pypi.an2cn(n)]
    assert not mismatches[:10]


@pytest.mark.parametrize(
    ("number", "chinese"),
    [
        ("2024", "二千零二十四"),
        ("3.14", "三点一四"),
        ("10", "十"),
        ("110", "一百一十"),
        ("0.50", "零点五零"),
        ("3.", "三"),
        ("10001000", "一千万零一千"),
    ],
)
def test_reads_numbers_like_emotivoice(number: str, chinese: str) -> None:
    assert number_to_chinese(number) == chinese


@pytest.mark.parametrize(
    ("number", "chinese"),
    [
        ("10.5.3", "十点五点三"),
        ("3.14.", "三点一四"),
        ("12345678901234567", "一二三四五六七八九零一二三四五六七"),
        ("２０２４", "二千零二十四"),
        ("٣", "三"),
        ("1" * 5000, "一" * 5000),
    ],
)
def test_inputs_emotivoice_rejects_are_read_instead_of_raising(number: str, chinese: str) -> None:
    assert number_to_chinese(number) == chinese


def test_normalize_replaces_every_digit_run() -> None:
    assert normalize_numbers("版本10.5.3于2024年发布, 涨了3.5%") == "版本十点五点三于二千零二十四年发布, 涨了三点五%"
