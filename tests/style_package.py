"""A fake installed style-encoder package for tests: a Hugging Face folder inside a package, with the
distribution metadata pip would write, under a folder that becomes "installed" once it is on ``sys.path``."""

from __future__ import annotations

import shutil
from pathlib import Path

PACKAGE = "fake_minilm"
DISTRIBUTION = "fake-minilm"
VERSION = "1.0"
FOLDER = "model"


def write_style_package(root: Path, bert: Path) -> Path:
    """Copies the Hugging Face folder ``bert`` into ``root/fake_minilm/model`` and writes the package's files.

    Its ``__init__`` raises: the package must be found without being imported. Returns the copied folder.
    """
    package = root / PACKAGE
    folder = package / FOLDER
    shutil.copytree(bert, folder)
    (package / "__init__.py").write_text('raise ImportError("a style package is located, never imported")\n')
    info = root / f"{PACKAGE}-{VERSION}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {VERSION}\n")
    (info / "top_level.txt").write_text(f"{PACKAGE}\n")
    return folder
