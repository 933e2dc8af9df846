"""The vocoder stage's pure model function: a batch of mels → one waveform per mel."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from emoserve.model.graphs import GraphCache, bucket_up, geometric_buckets, power_of_two_buckets
from emoserve.model.modeldir import ModelDir
from emoserve.vocoder.fused import FusedHiFiGAN, triton_available

log = logging.getLogger(__name__)


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

    On CUDA, batches up to ``max_graph_batch`` items and ``max_graph_frames`` frames replay CUDA graphs
    captured per (batch, frames) bucket; larger ones run eagerly at their exact shape (a large batch is not
    launch-bound, and padding it up to a bucket would waste up to half of its compute). With Triton installed,
    the generator on CUDA is the fused channels-last one (:mod:`emoserve.vocoder.fused`); if its kernels fail
    to compile at warm-up, the engine logs why and serves with the cuDNN generator instead.

    Args:
        model_dir: the loaded model directory.
        device: torch device.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        max_batch: largest batch the stage forms.
        max_graph_batch: largest batch served by a graph (buckets: powers of two up to it and ``max_batch``).
        cuda_graphs: capture CUDA graphs (ignored on the CPU).
        fused: use the fused Triton generator on CUDA when Triton is installed.
        max_graph_frames: longest mel served by a graph.
    """

    def __init__(
        self,
        model_dir: ModelDir,
        device: str = "cpu",
        precision: str = "fp32",
        max_batch: int = 8,
        cuda_graphs: bool = True,
        max_graph_batch: int = 8,
        max_graph_frames: int = 1024,
        fused: bool = True,
    ) -> None:
        self.model = self.reference = model_dir.load_vocoder(device, precision)
        self.device = torch.device(device)
        self.dtype = next(self.model.parameters()).dtype
        self.n_mels = self.model.config.n_mels
        self.hop_length = self.model.hop_length
        on_cuda = self.device.type == "cuda"
        self.graphs = GraphCache(lambda mel, lengths: (self.model(mel, lengths),)) if on_cuda and cuda_graphs else None
        self.batch_buckets = power_of_two_buckets(min(max_batch, max_graph_batch))
        self.frame_buckets = geometric_buckets(16, max_graph_frames, factor=1.5)
        if fused and self.device.type == "cuda" and triton_available():
            self.model = FusedHiFiGAN.from_model(self.reference)
        self.engine = self._name()

    def _name(self) -> str:
        return ("torch+triton" if self.model is not self.reference else "torch") + (
            "+cudagraphs" if self.graphs is not None else ""
        )

    def _stage(self, jobs: list[VocodeJob], batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pads the jobs into a (batch, n_mels, frames) tensor on the device (through pinned memory on CUDA)."""
        mel = torch.zeros(batch, self.n_mels, frames, dtype=self.dtype)
        lengths = torch.ones(batch, dtype=torch.long)
        for b, job in enumerate(jobs):
            mel[b, :, : job.frames] = job.mel
            lengths[b] = job.frames
        if self.device.type == "cuda":
            mel, lengths = mel.pin_memory(), lengths.pin_memory()
        return mel.to(self.device, non_blocking=True), lengths.to(self.device, non_blocking=True)

    def _take(self, jobs: list[VocodeJob], wav: torch.Tensor) -> list[np.ndarray]:
        host = wav[: len(jobs)].float().cpu().numpy()  # one device-to-host copy for the batch
        hop, out = self.hop_length, []
        for job, samples in zip(jobs, host):
            keep = job.frames - job.trim if job.keep is None else job.keep
            out.append(samples[job.trim * hop : (job.trim + keep) * hop].copy())
        return out

    def run(self, jobs: list[VocodeJob]) -> list[np.ndarray]:
        """Vocodes a batch of windows; returns the kept part of each as float32 samples."""
        frames = max(job.frames for job in jobs)
        if self.graphs is not None:
            batch, bucket = bucket_up(len(jobs), self.batch_buckets), bucket_up(frames, self.frame_buckets)
            if batch is not None and bucket is not None:
                inputs = self._stage(jobs, batch, bucket)
                return self.graphs.run((batch, bucket), inputs, lambda outs: self._take(jobs, outs[0]))
        mel, lengths = self._stage(jobs, len(jobs), frames)
        with torch.inference_mode():
            wav = self.model(mel, None if all(job.frames == frames for job in jobs) else lengths)
        return self._take(jobs, wav)

    def warmup(self) -> None:
        """Compiles the fused kernels, then captures every graph bucket (or runs one eager batch on the CPU)
        before the stage reports SERVING."""
        if self.model is not self.reference:
            try:
                self.run([VocodeJob(torch.zeros(self.n_mels, 32, dtype=self.dtype))])
            except Exception as exc:  # noqa: BLE001 - e.g. a kernel that does not fit this GPU
                log.warning("vocoder: fused Triton generator unavailable (%s); using the cuDNN generator", exc)
                self.model = self.reference
                if self.graphs is not None:
                    self.graphs = GraphCache(lambda mel, lengths: (self.model(mel, lengths),))
                self.engine = self._name()
        if self.graphs is None:
            self.run([VocodeJob(torch.zeros(self.n_mels, 32, dtype=self.dtype))])
            return
        for batch in self.batch_buckets:
            for frames in self.frame_buckets:
                self.run([VocodeJob(torch.randn(self.n_mels, frames).to(self.dtype))] * batch)
