"""The acoustic stage's pure model function: a batch of requests → one mel per request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emoserve.model.acoustic import Prosody
from emoserve.model.modeldir import ModelDir


@dataclass
class AcousticItem:
    """One segment to synthesise."""

    ids: np.ndarray
    """``[T]`` int64 token ids, including the ``<sos/eos>`` marks."""
    speaker: int
    prompt: np.ndarray
    """``[style_dim]`` float32 emotion-prompt embedding."""
    content: np.ndarray
    """``[style_dim]`` float32 content embedding."""
    speed: float = 1.0
    pitch_semitones: float = 0.0
    energy: float = 1.0


@dataclass
class AcousticResult:
    """Mel and durations of one item, on the CPU."""

    mel: torch.Tensor
    """``[n_mels, frames]`` in the engine's wire dtype."""
    durations: np.ndarray
    """``[T]`` int32 frames per token."""


class AcousticEngine:
    """Runs :class:`~emoserve.model.acoustic.AcousticModel` on padded batches.

    Args:
        model_dir: the loaded model directory.
        device: torch device.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        wire_dtype: dtype of the returned mels (fp16 travels between stages by default).
    """

    def __init__(
        self, model_dir: ModelDir, device: str = "cpu", precision: str = "fp32", wire_dtype: torch.dtype = torch.float16
    ) -> None:
        self.model = model_dir.load_acoustic(device, precision)
        self.device = torch.device(device)
        self.dtype = next(self.model.parameters()).dtype
        self.wire_dtype = wire_dtype
        cfg = self.model.config
        self.n_vocab, self.n_speakers, self.style_dim = cfg.n_vocab, cfg.n_speakers, cfg.style_dim

    def check(self, item: AcousticItem) -> None:
        """Rejects an item the model cannot run, with a message naming the field.

        Raises:
            ValueError: empty or out-of-vocabulary ids, unknown speaker, wrong embedding size.
        """
        if item.ids.ndim != 1 or item.ids.size == 0:
            raise ValueError(f"phoneme_ids must be a non-empty 1-D array, got shape {tuple(item.ids.shape)}")
        if item.ids.min() < 0 or item.ids.max() >= self.n_vocab:
            raise ValueError(f"phoneme_ids must lie in [0, {self.n_vocab}), got [{item.ids.min()}, {item.ids.max()}]")
        if not 0 <= item.speaker < self.n_speakers:
            raise ValueError(f"speaker must lie in [0, {self.n_speakers}), got {item.speaker}")
        for name in ("prompt", "content"):
            shape = getattr(item, name).shape
            if shape != (self.style_dim,):
                raise ValueError(f"{name}_embedding must have shape ({self.style_dim},), got {tuple(shape)}")

    def run(self, items: list[AcousticItem]) -> list[AcousticResult]:
        """Synthesises a batch; items must have passed :meth:`check`."""
        dev = self.device
        lengths = torch.tensor([len(it.ids) for it in items], device=dev)
        ids = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)
        for b, it in enumerate(items):
            ids[b, : len(it.ids)] = torch.from_numpy(np.asarray(it.ids, dtype=np.int64))
        out = self.model.generate(
            ids.to(dev),
            lengths,
            torch.tensor([it.speaker for it in items], device=dev),
            torch.from_numpy(np.stack([it.prompt for it in items])).to(dev, self.dtype),
            torch.from_numpy(np.stack([it.content for it in items])).to(dev, self.dtype),
            Prosody(
                speed=torch.tensor([it.speed for it in items], device=dev),
                pitch_semitones=torch.tensor([it.pitch_semitones for it in items], device=dev),
                energy=torch.tensor([it.energy for it in items], device=dev),
            ),
        )
        mel = out.mel.to(self.wire_dtype).cpu()
        frames = out.mel_lengths.tolist()
        durations = out.durations.to(torch.int32).cpu().numpy()
        return [
            AcousticResult(mel=mel[b, :, : frames[b]], durations=durations[b, : len(it.ids)])
            for b, it in enumerate(items)
        ]

    def warmup(self, max_batch: int = 1) -> None:
        """Runs representative shapes once so the first request pays no start-up cost."""
        zero = np.zeros(self.style_dim, dtype=np.float32)
        item = AcousticItem(ids=np.ones(16, dtype=np.int64), speaker=0, prompt=zero, content=zero)
        for batch in sorted({1, max_batch}):
            self.run([item] * batch)
