"""The vocoder stage's pure model function: a batch of mels → one waveform per mel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from emoserve.model.graphs import GraphCache, bucket_up, geometric_buckets, power_of_two_buckets, side_stream, to_host
from emoserve.model.modeldir import ModelDir
from emoserve.runtime.pcm import FULL_SCALE
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

    On CUDA, batches of up to ``max_graph_frames`` frames replay CUDA graphs captured per (batch, frames)
    bucket; longer ones run eagerly at their exact shape. A graph is one launch, where an eager batch launches
    hundreds of kernels, each letting go of the GIL and winning it back from the stage's event loop; for the
    same reason batches are padded in pinned host memory and cross to the GPU in one copy, and the waveform is
    converted to 16-bit PCM inside the graph. With Triton installed, the generator on CUDA is the fused
    channels-last one (:mod:`emoserve.vocoder.fused`); if its kernels fail to compile at warm-up, the engine
    logs why and serves with the cuDNN generator instead.

    Args:
        model_dir: the loaded model directory.
        device: torch device.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        max_batch: largest batch the stage forms (graph buckets: powers of two up to it, and it).
        cuda_graphs: capture CUDA graphs (ignored on the CPU).
        fused: use the fused Triton generator on CUDA when Triton is installed.
        max_graph_frames: longest mel served by a graph.
        exact_frames: mel lengths that get a graph bucket of their own (the streaming chunk windows, so the
            chunks most batches are made of are not padded).
        pcm16: return 16-bit PCM (:func:`emoserve.runtime.pcm.to_pcm16`, computed on the device: half the bytes
            to copy back and no per-sample host work) instead of float32 samples.
    """

    def __init__(
        self,
        model_dir: ModelDir,
        device: str = "cpu",
        precision: str = "fp32",
        max_batch: int = 8,
        cuda_graphs: bool = True,
        max_graph_frames: int = 1024,
        fused: bool = True,
        exact_frames: Sequence[int] = (),
        pcm16: bool = False,
    ) -> None:
        self.model = self.reference = model_dir.load_vocoder(device, precision)
        self.device = torch.device(device)
        self.dtype = next(self.model.parameters()).dtype
        self.n_mels = self.model.config.n_mels
        self.hop_length = self.model.hop_length
        on_cuda = self.device.type == "cuda"
        self.stream = side_stream(self.device)
        self.pcm16 = pcm16
        self.graphs = GraphCache(lambda mel, lengths: (self._generate(mel, lengths),)) if on_cuda and cuda_graphs else None
        self.batch_buckets = power_of_two_buckets(max_batch)
        # Fine buckets (15 % apart): the vocoder's compute grows with the padded length, and at 1.5 apart a
        # 350-frame mel ran as 488 frames (measured on an H100: B16 22.4 ms, 39 % more than needed).
        self.frame_buckets = tuple(sorted(
            set(geometric_buckets(16, max_graph_frames, factor=1.15)) | {f for f in exact_frames if f < max_graph_frames}
        ))
        if fused and self.device.type == "cuda" and triton_available():
            self.model = FusedHiFiGAN.from_model(self.reference)
        self.engine = self._name()

    def _name(self) -> str:
        return ("torch+triton" if self.model is not self.reference else "torch") + (
            "+cudagraphs" if self.graphs is not None else ""
        )

    def _generate(self, mel: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """The generator's waveforms ``[batch, samples]``, as 16-bit PCM with ``pcm16`` (converted on the
        device, inside the captured graph), else float32."""
        wav = self.model(mel, lengths).float()
        return torch.round(wav.clamp(-1.0, 1.0) * FULL_SCALE).to(torch.int16) if self.pcm16 else wav

    def _host_batch(self, jobs: list[VocodeJob], batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The jobs padded into host tensors ``(mel [batch, n_mels, frames], lengths [batch])``.

        On CUDA they are written straight into pinned memory, so each crosses to the device in one
        asynchronous copy (into a graph's static input where one serves the batch)."""
        staged = torch.float16 if self.dtype == torch.float16 else torch.float32
        pinned = self.device.type == "cuda"
        mel = torch.empty((batch, self.n_mels, frames), dtype=staged, pin_memory=pinned)
        lengths = torch.ones(batch, dtype=torch.int64, pin_memory=pinned)
        padded, counts = mel.numpy(), lengths.numpy()
        padded[len(jobs):] = 0
        for b, job in enumerate(jobs):
            padded[b, :, : job.frames] = _as_numpy(job.mel)
            padded[b, :, job.frames :] = 0
            counts[b] = job.frames
        return mel, lengths

    def _on_device(self, host: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A host batch on the engine's device, the mel in the model's dtype."""
        mel, lengths = (t.to(self.device, non_blocking=True) for t in host)
        return mel.to(self.dtype), lengths

    def _take(self, jobs: list[VocodeJob], wav: torch.Tensor) -> list[np.ndarray]:
        """The kept samples of each job: views of one host copy of the batch (one row per job)."""
        (host,) = to_host(wav)  # one device-to-host copy for the batch
        host = host.numpy()
        hop, out = self.hop_length, []
        for job, samples in zip(jobs, host):
            keep = job.frames - job.trim if job.keep is None else job.keep
            out.append(samples[job.trim * hop : (job.trim + keep) * hop])
        return out

    def run(self, jobs: list[VocodeJob]) -> list[np.ndarray]:
        """Vocodes a batch of windows; returns the kept part of each (float32 samples, or int16 with ``pcm16``)."""
        with torch.cuda.stream(self.stream):
            return self._run(jobs)

    def _run(self, jobs: list[VocodeJob]) -> list[np.ndarray]:
        frames = max(job.frames for job in jobs)
        if self.graphs is not None:
            batch, bucket = bucket_up(len(jobs), self.batch_buckets), bucket_up(frames, self.frame_buckets)
            if batch is not None and bucket is not None:
                inputs = self._host_batch(jobs, batch, bucket)
                if inputs[0].dtype != self.dtype:  # bfloat16, which numpy lacks, is staged as float32
                    inputs = self._on_device(inputs)
                wav = self.graphs.run((batch, bucket), inputs, lambda outs: outs[0][: len(jobs)].clone())
                return self._take(jobs, wav)
        mel, lengths = self._on_device(self._host_batch(jobs, len(jobs), frames))
        with torch.inference_mode():
            wav = self._generate(mel, None if all(job.frames == frames for job in jobs) else lengths)
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
                    self.graphs = GraphCache(lambda mel, lengths: (self._generate(mel, lengths),))
                self.engine = self._name()
        if self.graphs is None:
            self.run([VocodeJob(torch.zeros(self.n_mels, 32, dtype=self.dtype))])
            return
        for batch in self.batch_buckets:
            for frames in self.frame_buckets:
                self.run([VocodeJob(torch.randn(self.n_mels, frames).to(self.dtype))] * batch)


def _as_numpy(mel: torch.Tensor) -> np.ndarray:
    """A host mel as a numpy array (bfloat16, which numpy lacks, as float32)."""
    return (mel.float() if mel.dtype == torch.bfloat16 else mel).numpy()
