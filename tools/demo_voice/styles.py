"""Emotion styles as controlled prosody changes of the teacher's neutral speech, and their prompts.

A style is three numbers applied to a neutral rendering:

* ``semitones``: the waveform is resampled (band-limited, FFT) so that it plays ``2**(semitones/12)``
  times faster, which raises F0 (and the formants) by ``semitones`` and speeds speech up by the same
  factor, like a tape played faster;
* ``tempo``: a further speaking-rate factor applied to the feature frames (mel, F0, energy) by linear
  interpolation in time, which leaves pitch alone;
* ``gain``: the waveform is scaled (energy and loudness).

The speaking rate of a style relative to neutral is ``2**(semitones/12) * tempo``. Each style carries
English and Chinese prompt texts; the acoustic model is trained on all of them, and the first English one is
what the evaluation and the README use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Style:
    """One emotion: a prosody change and the prompt texts that ask for it."""

    name: str
    semitones: float
    tempo: float
    gain: float
    prompts: tuple[str, ...]

    def __post_init__(self) -> None:
        if not -12 <= self.semitones <= 12:
            raise ValueError(f"style {self.name}: semitones {self.semitones} outside [-12, 12]")
        if not 0.5 <= self.tempo <= 2 or not 0.1 <= self.gain <= 4:
            raise ValueError(f"style {self.name}: tempo {self.tempo} or gain {self.gain} out of range")
        if not self.prompts:
            raise ValueError(f"style {self.name} has no prompts")

    @property
    def pitch_factor(self) -> float:
        return 2.0 ** (self.semitones / 12.0)

    @property
    def rate(self) -> float:
        """Speaking rate relative to neutral."""
        return self.pitch_factor * self.tempo


# Chinese prompts are limited to ones the style encoder (all-MiniLM-L6-v2, an English vocabulary in
# which most Chinese characters are [UNK]) tokenises differently from every other style's prompts;
# dataset.check_prompts enforces that with the real encoder.
STYLES: tuple[Style, ...] = (
    Style("neutral", 0.0, 1.0, 1.0, ("", "Neutral", "in a normal voice", "plainly", "中立", "中性")),
    Style("happy", 2.5, 1.04, 1.15, ("Happy", "very happy", "cheerful", "joyful", "开心", "高兴")),
    Style("sad", -2.5, 0.92, 0.7, ("Sad", "very sad", "unhappy", "sorrowful", "不开心", "心里难过")),
    Style("angry", 1.0, 1.12, 1.8, ("Angry", "very angry", "furious", "mad", "生气", "火大")),
    Style("surprised", 4.0, 0.95, 1.3, ("Surprised", "astonished", "amazed", "shocked", "天哪", "大吃一惊")),
    Style("calm", -1.0, 0.88, 0.8, ("Calm", "relaxed", "gentle", "soothing", "平静", "平和")),
)
"""The demo voice's styles; ``STYLES[0]`` is neutral (also the empty prompt)."""


def style_table(styles: tuple[Style, ...] = STYLES) -> tuple[list[str], list[int], torch.Tensor]:
    """Flattens styles into ``(prompts, style index of each prompt, [S, 3] semitones/tempo/gain)``."""
    prompts, owner = [], []
    for i, style in enumerate(styles):
        for prompt in style.prompts:
            if prompt in prompts:
                raise ValueError(f"prompt {prompt!r} belongs to two styles")
            prompts.append(prompt)
            owner.append(i)
    params = torch.tensor([[s.semitones, s.tempo, s.gain] for s in styles], dtype=torch.float32)
    return prompts, owner, params


def resample(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Band-limited resampling of ``[..., n]`` signals to ``length`` samples (FFT, like ``scipy.signal.resample``)."""
    n = wav.size(-1)
    if length == n:
        return wav
    with torch.autocast(wav.device.type, enabled=False):
        spec = torch.fft.rfft(wav.float())
        bins = length // 2 + 1
        if bins <= spec.size(-1):
            spec = spec[..., :bins]
        else:
            spec = F.pad(spec, (0, bins - spec.size(-1)))
        return torch.fft.irfft(spec, length) * (length / n)


def shift_pitch(waves: list[torch.Tensor], semitones: float) -> list[torch.Tensor]:
    """Plays each signal ``2**(semitones/12)`` times faster: F0 up by ``semitones``, duration divided alike.

    The signals are zero-padded to a common length and resampled in one batched FFT.
    """
    if semitones == 0 or not waves:
        return list(waves)
    factor = 2.0 ** (semitones / 12.0)
    longest = max(w.size(-1) for w in waves)
    padded = torch.stack([F.pad(w, (0, longest - w.size(-1))) for w in waves])
    shifted = resample(padded, max(1, round(longest / factor)))
    return [shifted[r, : max(1, round(w.size(-1) / factor))] for r, w in enumerate(waves)]


def stretch_batch(frames: torch.Tensor, lengths: torch.Tensor, tempo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speeds each item of a padded batch ``[B, ..., F]`` up by its ``tempo`` (linear interpolation in time).

    Item ``b`` becomes ``round(lengths[b] / tempo[b])`` frames whose first and last frames are its own.

    Returns:
        ``(stretched [B, ..., F'], new lengths [B])``; frames past each new length repeat its last frame.
    """
    new = torch.clamp(torch.round(lengths.float() / tempo.float()), min=1).long()
    t = torch.arange(int(new.max()), device=frames.device, dtype=torch.float32)[None, :]
    step = (lengths - 1).clamp(min=0).float() / (new - 1).clamp(min=1).float()
    pos = torch.minimum(t * step[:, None], (lengths - 1).clamp(min=0).float()[:, None])
    lo = pos.floor().long()
    hi = torch.minimum(lo + 1, (lengths - 1).clamp(min=0)[:, None])
    frac = (pos - lo.float()).to(frames.dtype)
    shape = (frames.size(0),) + (1,) * (frames.dim() - 2) + (t.size(-1),)
    lo_idx, hi_idx = lo.view(shape).expand(*frames.shape[:-1], -1), hi.view(shape).expand(*frames.shape[:-1], -1)
    frac = frac.view(shape)
    out = torch.gather(frames, -1, lo_idx) * (1 - frac) + torch.gather(frames, -1, hi_idx) * frac
    return out, new



def semitones_between(f0_a: float, f0_b: float) -> float:
    """Interval from ``f0_a`` to ``f0_b`` in semitones."""
    return 12.0 * math.log2(f0_b / f0_a)
