"""The vocoder stage's pure model function: a batch of mels → one waveform per mel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emoserve.model.modeldir import ModelDir


@dataclass
class VocodeJob:
    """A mel window to vocode, and the part of it to return.

    The whole window is vocoded (its edges give the kept frames their context); only frames
    ``[trim, trim + keep)`` come back as audio.
    """

    mel: torch.Tensor
    """``[n_mels, frames]``."""
    trim: int = 0
    keep: int | None = None
    """Frames to return; None = all after ``trim``."""

    @property
    def frames(self) -> int:
        return int(self.mel.shape[1])


class VocoderEngine:
    """Runs the HiFi-GAN generator on padded batches of mels.

    Args:
        model_dir: the loaded model directory.
        device: torch device.
        precision: ``fp32``, ``fp16`` or ``bf16``.
    """

    engine = "torch"

    def __init__(self, model_dir: ModelDir, device: str = "cpu", precision: str = "fp32") -> None:
        self.model = model_dir.load_vocoder(device, precision)
        self.device = torch.device(device)
        self.dtype = next(self.model.parameters()).dtype
        self.n_mels = self.model.config.n_mels
        self.hop_length = self.model.hop_length

    def check(self, mel: torch.Tensor) -> None:
        """Raises ValueError unless ``mel`` is ``[n_mels, frames]`` with frames ≥ 1."""
        if mel.dim() != 2 or mel.shape[0] != self.n_mels or mel.shape[1] < 1:
            raise ValueError(f"mel must have shape ({self.n_mels}, frames>=1), got {tuple(mel.shape)}")

    def run(self, jobs: list[VocodeJob]) -> list[np.ndarray]:
        """Vocodes a batch of windows; returns the kept part of each as float32 samples."""
        lengths = torch.tensor([job.frames for job in jobs], device=self.device)
        batch = torch.zeros(len(jobs), self.n_mels, int(lengths.max()), dtype=self.dtype)
        for b, job in enumerate(jobs):
            batch[b, :, : job.frames] = job.mel
        wavs = self.model.vocode(batch.to(self.device), lengths)
        hop = self.hop_length
        out = []
        for job, wav in zip(jobs, wavs):
            keep = job.frames - job.trim if job.keep is None else job.keep
            out.append(wav[job.trim * hop : (job.trim + keep) * hop].float().cpu().numpy())
        return out

    def warmup(self, max_batch: int = 1) -> None:
        """Runs representative shapes once so the first request pays no start-up cost."""
        job = VocodeJob(torch.zeros(self.n_mels, 32, dtype=self.dtype))
        for batch in sorted({1, max_batch}):
            self.run([job] * batch)
