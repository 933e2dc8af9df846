"""Packaging: every package folder ships (pyproject lists packages explicitly because tools/ is mapped in)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT / "services").parts)
        for p in (ROOT / "services").rglob("__init__.py")
    } | {
        ".".join(("emoserve", "tools", *p.parent.relative_to(ROOT / "tools").parts))
        for p in (ROOT / "tools").rglob("__init__.py")
    }
    assert found == listed
