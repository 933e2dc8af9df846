"""The vocoder stage's pure model function: a batch of mels → one waveform per mel."""

from __future__ import annotations

import numpy as np
import torch

from emoserve.model.modeldir import ModelDir


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

    def run(self, mels: list[torch.Tensor]) -> list[np.ndarray]:
        """Vocodes a batch; returns float32 waveforms of ``frames * hop`` samples each."""
        lengths = torch.tensor([m.shape[1] for m in mels], device=self.device)
        batch = torch.zeros(len(mels), self.n_mels, int(lengths.max()), dtype=self.dtype)
        for b, m in enumerate(mels):
            batch[b, :, : m.shape[1]] = m
        wavs = self.model.vocode(batch.to(self.device), lengths)
        return [w.float().cpu().numpy() for w in wavs]

    def warmup(self, max_batch: int = 1) -> None:
        """Runs representative shapes once so the first request pays no start-up cost."""
        mel = torch.zeros(self.n_mels, 32, dtype=self.dtype)
        for batch in sorted({1, max_batch}):
            self.run([mel] * batch)
