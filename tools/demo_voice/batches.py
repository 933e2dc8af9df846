"""Training batches rendered on the fly from the neutral recordings, on the training device.

The whole data set lives on the device as float waveforms. An acoustic-model batch renders each sentence
in a style (:mod:`.styles`) and extracts its mel, energy and F0 tracks; a vocoder batch cuts random
segments of randomly pitch-shifted and scaled audio and their mels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from emoserve.tools.demo_voice.dataset import VoiceData
from emoserve.tools.demo_voice.features import (
    LOG_FLOOR,
    FeatureConfig,
    frame_energy,
    interpolate_unvoiced,
    log_mel,
    magnitude,
    mel_spectrogram,
    yin_f0,
)
from emoserve.tools.demo_voice.styles import resample, shift_pitch, stretch_batch


@dataclass
class AcousticBatch:
    """Inputs and frame-level targets of one acoustic-model step."""

    ids: torch.Tensor
    """``[B, T]`` token ids (0-padded)."""
    text_lengths: torch.Tensor
    prompt: torch.Tensor
    """``[B, D]`` prompt embeddings."""
    content: torch.Tensor
    """``[B, D]`` content embeddings."""
    mel: torch.Tensor
    """``[B, n_mels, F]`` log-mel (``log(LOG_FLOOR)`` past each length)."""
    mel_lengths: torch.Tensor
    f0: torch.Tensor
    """``[B, F]`` Hz with unvoiced frames interpolated."""
    energy: torch.Tensor
    """``[B, F]``."""
    styles: torch.Tensor
    """``[B]`` style index of each item."""


@dataclass(frozen=True)
class Stats:
    """Normalisation constants measured on the neutral recordings."""

    pitch: tuple[float, float]
    """Mean and std of F0 over voiced frames (Hz)."""
    energy: tuple[float, float]
    """Mean and std of frame energy."""
    mel: tuple[float, float]
    """Mean and std of log-mel values (for the aligner's input)."""

    def to_dict(self) -> dict:
        return {"pitch": list(self.pitch), "energy": list(self.energy), "mel": list(self.mel)}

    @classmethod
    def from_dict(cls, d: dict) -> Stats:
        return cls(tuple(d["pitch"]), tuple(d["energy"]), tuple(d["mel"]))


def _pad_stack(rows: list[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    length = max(r.size(-1) for r in rows)
    return torch.stack([F.pad(r, (0, length - r.size(-1)), value=value) for r in rows])


class DeviceData:
    """A :class:`~.dataset.VoiceData` on a torch device, with batch renderers.

    Args:
        data: the sentences and style prompts.
        device: where batches are built (and models run).
        features: STFT/mel/F0 parameters.
    """

    def __init__(self, data: VoiceData, device: torch.device, features: FeatureConfig | None = None) -> None:
        features = features or FeatureConfig()
        if data.sample_rate != features.sample_rate:
            raise ValueError(f"data is {data.sample_rate} Hz but the features expect {features.sample_rate} Hz")
        self.data = data
        self.device = device
        self.features = features
        self.audio = [torch.from_numpy(a.astype(np.float32) / 32768.0).to(device) for a in data.audio]
        self.ids = [torch.from_numpy(i).to(device) for i in data.ids]
        self.content = torch.from_numpy(data.content).to(device)
        self.prompt_emb = torch.from_numpy(data.prompt_emb).to(device)
        self.prompt_style = data.prompt_style.astype(np.int64)
        self.style_params = data.style_params.astype(np.float64)

    def __len__(self) -> int:
        return len(self.audio)

    @torch.no_grad()
    def measure_stats(self, max_items: int = 400, chunk: int = 16) -> Stats:
        """Pitch, energy and mel statistics of the neutral recordings (the first ``max_items``)."""
        hop = self.features.hop_length
        f0s, energies, mels = [], [], []
        items = list(range(min(max_items, len(self))))
        for start in range(0, len(items), chunk):
            group = items[start : start + chunk]
            wav = _pad_stack([self.audio[i] for i in group])
            mag = magnitude(wav, self.features)
            mel, energy, f0 = log_mel(mag, self.features), frame_energy(mag), yin_f0(wav, self.features)
            for row, i in enumerate(group):
                n = self.audio[i].numel() // hop
                f0s.append(f0[row, :n][f0[row, :n] > 0])
                energies.append(energy[row, :n])
                mels.append(mel[row, :, :n].flatten())
        f0_all, energy_all, mel_all = torch.cat(f0s), torch.cat(energies), torch.cat(mels)
        if f0_all.numel() < 2:
            raise ValueError("no voiced frames found in the recordings")
        return Stats(
            pitch=(float(f0_all.mean()), float(f0_all.std())),
            energy=(float(energy_all.mean()), float(energy_all.std())),
            mel=(float(mel_all.mean()), float(mel_all.std())),
        )

    def _shifted(self, items: list[int], semitones: list[float]) -> list[torch.Tensor]:
        """Each sentence pitch-shifted by resampling; one batched FFT per distinct shift."""
        out: list[torch.Tensor | None] = [None] * len(items)
        for shift in sorted(set(semitones)):
            group = [k for k, s in enumerate(semitones) if s == shift]
            for k, w in zip(group, shift_pitch([self.audio[items[k]] for k in group], shift)):
                out[k] = w
        return out

    @torch.no_grad()
    def acoustic_batch(self, items: list[int], prompts: list[int]) -> AcousticBatch:
        """Renders sentence ``items[b]`` in the style of prompt ``prompts[b]``."""
        cfg, hop = self.features, self.features.hop_length
        styles = [int(self.prompt_style[p]) for p in prompts]
        params = torch.tensor(self.style_params[styles], dtype=torch.float32, device=self.device)  # [B, 3]
        waves = self._shifted(items, [float(self.style_params[s][0]) for s in styles])
        wav = (_pad_stack(waves) * params[:, 2:3]).clamp(-1.0, 1.0)
        frames = torch.tensor([w.numel() // hop for w in waves], device=self.device)
        mag = magnitude(wav, cfg)
        f0 = interpolate_unvoiced(yin_f0(wav, cfg), frames)
        tempo = params[:, 1]
        mel, lengths = stretch_batch(log_mel(mag, cfg), frames, tempo)
        f0, _ = stretch_batch(f0, frames, tempo)
        energy, _ = stretch_batch(frame_energy(mag), frames, tempo)
        past = torch.arange(mel.size(-1), device=self.device)[None, :] >= lengths[:, None]
        ids = [self.ids[i] for i in items]
        return AcousticBatch(
            ids=_pad_stack(ids).long(),
            text_lengths=torch.tensor([x.numel() for x in ids], device=self.device),
            prompt=self.prompt_emb[prompts],
            content=self.content[items],
            mel=mel.masked_fill(past[:, None, :], math.log(LOG_FLOOR)),
            mel_lengths=lengths,
            f0=f0.masked_fill(past, 0.0),
            energy=energy.masked_fill(past, 0.0),
            styles=torch.tensor(styles, device=self.device),
        )

    @torch.no_grad()
    def vocoder_batch(
        self, items: list[int], semitones: float, gains: list[float], starts: list[float], segment: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segments of ``segment`` samples (a multiple of hop) of pitch-shifted, scaled sentences.

        Args:
            items: sentence per segment.
            semitones: pitch shift of the whole batch (resampling, as the styles do; one batched FFT).
            gains: amplitude factor per segment.
            starts: position of each segment in its sentence, as a fraction in [0, 1].
            segment: samples per segment.

        Returns:
            ``(mel [B, n_mels, segment / hop], wav [B, segment])``.
        """
        if segment % self.features.hop_length:
            raise ValueError(f"segment {segment} is not a multiple of hop {self.features.hop_length}")
        factor = 2.0 ** (semitones / 12.0)
        need = math.ceil(segment * factor) + 2 * self.features.n_fft  # margins absorb the FFT's wrap-around
        windows = []
        for i, pos in zip(items, starts):
            audio = self.audio[i]
            if audio.numel() < need:
                audio = F.pad(audio, (0, need - audio.numel()))
            start = int(pos * (audio.numel() - need))
            windows.append(audio[start : start + need])
        shifted = resample(torch.stack(windows), round(need / factor))
        offset = (shifted.size(-1) - segment) // 2
        gain = torch.tensor(gains, dtype=shifted.dtype, device=shifted.device)[:, None]
        wav = (shifted[:, offset : offset + segment] * gain).clamp(-1.0, 1.0)
        return mel_spectrogram(wav, self.features), wav
