"""The vocoder and acoustic stages' model functions on exported graphs (ONNX Runtime or TensorRT).

Same interface as the torch engines (``run(items) -> results``, ``warmup()``, ``engine``), over a
:class:`GraphRunner`. Both models are exactly masked, so padding a batch up to a graph's smallest accepted
size changes nothing; what exceeds a graph's largest size is handled per item:

* the vocoder splits a mel longer than the graph's frame range into windows with
  ``receptive_field_frames`` of context on each side (as streaming does) and joins the kept parts;
* the acoustic model cannot be split (attention is global): such an item fails alone with a message naming
  the limit, the rest of its batch is served.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch

from emoserve.acoustic.engine import AcousticItem, AcousticResult, check_item, pad_items
from emoserve.model.acoustic import AcousticConfig
from emoserve.model.vocoder import VocoderConfig
from emoserve.vocoder.engine import VocodeJob
from emoserve.vocoder.streaming import Chunk

TEXT_INPUTS = ("ids", "lengths", "speakers", "prompt", "content", "speed", "pitch", "energy")
"""Inputs of the ``acoustic.text`` graph, in :func:`~emoserve.acoustic.engine.pad_items` order."""


class GraphRunner(Protocol):
    """One exported graph behind an engine: :class:`~emoserve.engines.onnxruntime_engine.OnnxRuntimeGraph`
    or :class:`~emoserve.engines.tensorrt_engine.TensorRTGraph`."""

    name: str
    """Engine label, e.g. ``onnxruntime+cuda``, ``tensorrt``."""
    device: torch.device
    float_dtype: torch.dtype
    bounds: dict[str, tuple[int, int | None]]
    """Smallest and largest accepted size per axis (``batch``, ``tokens``, ``frames``; None = unbounded)."""

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def warmup_sizes(self) -> list[dict[str, int]]: ...


def split_windows(n_frames: int, window: int, context: int) -> list[Chunk]:
    """Covers ``n_frames`` with chunks whose windows (chunk plus ``context`` frames each side) fit ``window``.

    Raises:
        ValueError: ``window`` leaves no room for a frame besides the context.
    """
    step = window - 2 * context
    if step < 1 or n_frames < 1:
        raise ValueError(f"cannot split {n_frames} frames into windows of {window} with {context} frames of context")
    chunks, start = [], 0
    while start < n_frames:
        end = min(start + step, n_frames)
        chunks.append(Chunk(len(chunks), start, end, max(0, start - context), min(n_frames, end + context)))
        start = end
    return chunks


def _groups(indices: list[int], size: int | None) -> list[list[int]]:
    size = size or max(1, len(indices))
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def _staged(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, through pinned memory (an asynchronous copy) when that is a GPU."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


class GraphVocoderEngine:
    """The vocoder (``vocoder`` graph) behind the vocoder stage.

    Args:
        runner: the graph.
        config: the vocoder's shape (mel bins, hop).
        context_frames: frames of context per side when a mel is split (the receptive field).

    Raises:
        ValueError: the graph's frame range is too small to split long mels with that context.
    """

    def __init__(self, runner: GraphRunner, config: VocoderConfig, context_frames: int) -> None:
        self.runner = runner
        self.engine = runner.name
        self.n_mels, self.hop_length = config.n_mels, config.hop_length
        self.context_frames = context_frames
        self.min_frames, self.max_frames = runner.bounds["frames"]
        self.max_batch = runner.bounds["batch"][1]
        if self.max_frames is not None and self.max_frames <= 2 * context_frames:
            raise ValueError(
                f"the {self.engine} vocoder takes at most {self.max_frames} frames, too few to split long mels with "
                f"{context_frames} frames of context on each side; allow more (engine.tensorrt_max_frames)"
            )

    def _vocode(self, mels: list[torch.Tensor]) -> list[np.ndarray]:
        """Whole-window audio of mels that fit the graph, in batches it accepts."""
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(mels)
        for group in _groups(list(range(len(mels))), self.max_batch):
            frames = max(self.min_frames, max(mels[i].shape[1] for i in group))
            batch = torch.zeros(len(group), self.n_mels, frames, dtype=self.runner.float_dtype)
            lengths = torch.empty(len(group), dtype=torch.long)
            for b, i in enumerate(group):
                batch[b, :, : mels[i].shape[1]] = mels[i]
                lengths[b] = mels[i].shape[1]
            device = self.runner.device
            wav = self.runner.run({"mel": _staged(batch, device), "lengths": _staged(lengths, device)})
            host = wav["wav"].float().cpu().numpy()  # one device-to-host copy per batch
            for b, i in enumerate(group):
                out[i] = host[b, : mels[i].shape[1] * self.hop_length]
        return out

    def run(self, jobs: list[VocodeJob]) -> list[np.ndarray]:
        """Vocodes a batch of windows; returns the kept part of each as float32 samples."""
        pieces: list[torch.Tensor] = []
        plans: list[list[Chunk] | None] = []
        for job in jobs:
            if self.max_frames is None or job.frames <= self.max_frames:
                plans.append(None)
                pieces.append(job.mel)
            else:
                plan = split_windows(job.frames, self.max_frames, self.context_frames)
                plans.append(plan)
                pieces.extend(job.mel[:, c.lo : c.hi] for c in plan)
        audio = iter(self._vocode(pieces))
        hop, out = self.hop_length, []
        for job, plan in zip(jobs, plans):
            if plan is None:
                whole = next(audio)
            else:
                whole = np.concatenate([next(audio)[c.trim * hop : (c.trim + c.end - c.start) * hop] for c in plan])
            keep = job.frames - job.trim if job.keep is None else job.keep
            out.append(whole[job.trim * hop : (job.trim + keep) * hop].copy())
        return out

    def warmup(self) -> None:
        """Runs the graph once per warm-up shape of its runner (TensorRT: every profile)."""
        for sizes in self.runner.warmup_sizes():
            mel = torch.zeros(self.n_mels, sizes["frames"], dtype=self.runner.float_dtype)
            self.run([VocodeJob(mel)] * sizes["batch"])


class GraphAcousticEngine:
    """The acoustic model (``acoustic.text`` then ``acoustic.frames``) behind the acoustic stage.

    Args:
        text: the token-side graph.
        frames: the frame-side graph.
        config: the model's shape.
        wire_dtype: dtype of the returned mels (fp16 travels between stages).
    """

    def __init__(
        self, text: GraphRunner, frames: GraphRunner, config: AcousticConfig, wire_dtype: torch.dtype = torch.float16
    ) -> None:
        self.text, self.frames = text, frames
        self.engine = text.name
        self.config = config
        self.wire_dtype = wire_dtype
        self.max_tokens = min((b for b in (text.bounds["tokens"][1], frames.bounds["tokens"][1]) if b), default=None)
        self.min_tokens = max(text.bounds["tokens"][0], frames.bounds["tokens"][0])
        self.min_frames, self.max_frames = frames.bounds["frames"]
        self.max_batch = min((b for b in (text.bounds["batch"][1], frames.bounds["batch"][1]) if b), default=None)

    def check(self, item: AcousticItem) -> None:
        """Rejects an item the model cannot run, with a message naming the field (see ``check_item``)."""
        check_item(item, self.config.n_vocab, self.config.n_speakers, self.config.style_dim)

    def run(self, items: list[AcousticItem]) -> list[AcousticResult | Exception]:
        """Synthesises a batch (items must have passed :meth:`check`).

        Returns:
            One result per item, or the error of an item beyond the graphs' token or frame range.
        """
        results: list[AcousticResult | Exception | None] = [None] * len(items)
        fits = []
        for i, item in enumerate(items):
            if self.max_tokens is not None and len(item.ids) > self.max_tokens:
                results[i] = ValueError(
                    f"{len(item.ids)} phonemes exceed the {self.engine} engine's limit of {self.max_tokens}"
                )
            else:
                fits.append(i)
        for group in _groups(fits, self.max_batch):
            self._run_group(items, group, results)
        return results  # type: ignore[return-value]

    def _run_group(self, items: list[AcousticItem], group: list[int], results: list) -> None:
        batch = [items[i] for i in group]
        tokens = max(self.min_tokens, max(len(it.ids) for it in batch))
        host = pad_items(batch, len(batch), tokens, self.config.style_dim, self.text.float_dtype)
        out = self.text.run({name: _staged(t, self.text.device) for name, t in zip(TEXT_INPUTS, host)})
        durations, lengths = out["durations"], host[1].to(out["durations"].device)
        frames = durations.sum(-1).tolist()  # the one host read between the graphs: the output length
        keep = []
        for row, (i, n) in enumerate(zip(group, frames)):
            if self.max_frames is not None and n > self.max_frames:
                results[i] = ValueError(f"{n} mel frames exceed the {self.engine} engine's limit of {self.max_frames}")
            else:
                keep.append(row)
        if not keep:
            return
        rows = torch.tensor(keep, device=durations.device)
        n_frames = max(self.min_frames, max(frames[r] for r in keep))
        mel = self.frames.run({
            "hidden": out["hidden"].index_select(0, rows),
            "durations": durations.index_select(0, rows),
            "lengths": lengths.index_select(0, rows),
            "frame_index": torch.arange(n_frames, device=durations.device),
        })["mel"]
        mel = mel.to(self.wire_dtype).cpu()
        host_durations = durations.index_select(0, rows).to(torch.int32).cpu().numpy()
        for b, row in enumerate(keep):
            item = batch[row]
            results[group[row]] = AcousticResult(
                mel=mel[b, :, : frames[row]], durations=host_durations[b, : len(item.ids)]
            )

    def warmup(self) -> None:
        """Runs both graphs once per warm-up shape of the text graph's runner."""
        zero = np.zeros(self.config.style_dim, dtype=np.float32)
        for sizes in self.text.warmup_sizes():
            item = AcousticItem(ids=np.ones(sizes["tokens"], dtype=np.int64), speaker=0, prompt=zero, content=zero)
            self.run([item] * sizes["batch"])
