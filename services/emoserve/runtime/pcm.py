"""16-bit PCM: the audio format between the vocoder and the gateway, and of ``LINEAR_PCM``/``WAV`` output.

A float waveform in [-1, 1] maps to ``round(x * 32767)``, clipped; the vocoder converts once, so the gateway
passes 16-bit audio through untouched unless it must resample or answer in ``FLOAT32``.
"""

from __future__ import annotations

import numpy as np

FULL_SCALE = 32767.0


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] (clipped beyond) → int16; int16 samples are already PCM and pass unchanged."""
    if wave.dtype == np.int16:
        return wave
    return np.rint(np.clip(wave, -1.0, 1.0) * FULL_SCALE).astype(np.int16)


def to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → float32 in [-1, 1]."""
    return pcm.astype(np.float32) / np.float32(FULL_SCALE)
