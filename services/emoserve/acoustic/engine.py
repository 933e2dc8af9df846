"""The acoustic stage's pure model function: a batch of requests → one mel per request."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from emoserve.model.acoustic import Prosody
from emoserve.model.graphs import GraphCache, bucket_up, geometric_buckets, power_of_two_buckets, side_stream, to_host
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


def check_item(item: AcousticItem, n_vocab: int, n_speakers: int, style_dim: int) -> None:
    """Rejects an item a model of these sizes cannot run, with a message naming the field.

    Raises:
        ValueError: empty or out-of-vocabulary ids, unknown speaker, wrong embedding size.
    """
    if item.ids.ndim != 1 or item.ids.size == 0:
        raise ValueError(f"phoneme_ids must be a non-empty 1-D array, got shape {tuple(item.ids.shape)}")
    if item.ids.min() < 0 or item.ids.max() >= n_vocab:
        raise ValueError(f"phoneme_ids must lie in [0, {n_vocab}), got [{item.ids.min()}, {item.ids.max()}]")
    if not 0 <= item.speaker < n_speakers:
        raise ValueError(f"speaker must lie in [0, {n_speakers}), got {item.speaker}")
    for name in ("prompt", "content"):
        shape = getattr(item, name).shape
        if shape != (style_dim,):
            raise ValueError(f"{name}_embedding must have shape ({style_dim},), got {tuple(shape)}")


def pad_items(
    items: list[AcousticItem], batch: int, tokens: int, style_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """Padded host tensors ``(ids, lengths, speakers, prompt, content, speed, pitch, energy)`` of a batch.

    Padding rows are one-token dummies (masked, then dropped); embeddings are in ``dtype``, controls fp32.
    """
    n = len(items)
    ids = torch.zeros(batch, tokens, dtype=torch.long)
    for b, it in enumerate(items):
        ids[b, : len(it.ids)] = torch.from_numpy(np.asarray(it.ids, dtype=np.int64))
    lengths = torch.ones(batch, dtype=torch.long)
    lengths[:n] = torch.tensor([len(it.ids) for it in items])
    speakers = torch.zeros(batch, dtype=torch.long)
    speakers[:n] = torch.tensor([it.speaker for it in items])
    prompt = torch.zeros(batch, style_dim)
    prompt[:n] = torch.from_numpy(np.stack([it.prompt for it in items]))
    content = torch.zeros(batch, style_dim)
    content[:n] = torch.from_numpy(np.stack([it.content for it in items]))
    controls = torch.tensor([[1.0, 0.0, 1.0]] * batch)
    controls[:n] = torch.tensor([[it.speed, it.pitch_semitones, it.energy] for it in items])
    return ids, lengths, speakers, prompt.to(dtype), content.to(dtype), *controls.T.contiguous()


class AcousticEngine:
    """Runs :class:`~emoserve.model.acoustic.AcousticModel` on padded batches.

    On CUDA the token side (encoder, predictors) and the frame side (upsampling, decoder) each replay CUDA
    graphs captured per (batch, tokens) and (batch, frames) bucket; the frame count is read between them.
    Shapes beyond the buckets run eagerly.

    Args:
        model_dir: the loaded model directory.
        device: torch device.
        precision: ``fp32``, ``fp16`` or ``bf16``.
        wire_dtype: dtype of the returned mels (fp16 travels between stages by default).
        max_batch: largest batch the stage forms (graph buckets: powers of two up to it).
        cuda_graphs: capture CUDA graphs (ignored on the CPU).
        max_graph_tokens: longest token sequence served by a graph.
        max_graph_frames: longest mel served by a graph.
        inductor: capture graphs of the model compiled by TorchInductor (``torch.compile``, dynamic shapes:
            compiled once, captured per bucket) instead of eager PyTorch; needs ``cuda_graphs``.
    """

    def __init__(
        self,
        model_dir: ModelDir,
        device: str = "cpu",
        precision: str = "fp32",
        wire_dtype: torch.dtype = torch.float16,
        max_batch: int = 8,
        cuda_graphs: bool = True,
        max_graph_tokens: int = 512,
        max_graph_frames: int = 2048,
        inductor: bool = False,
    ) -> None:
        self.model = model_dir.load_acoustic(device, precision)
        self.device = torch.device(device)
        self.stream = side_stream(self.device)
        self.dtype = next(self.model.parameters()).dtype
        self.wire_dtype = wire_dtype
        cfg = self.model.config
        self.n_vocab, self.n_speakers, self.style_dim = cfg.n_vocab, cfg.n_speakers, cfg.style_dim
        self.graphs: dict[str, GraphCache] = {}
        self.engine = "torch"
        if self.device.type == "cuda" and cuda_graphs:
            encode, decode = self._encode, self._decode
            if inductor:
                encode, decode = torch.compile(encode, dynamic=True), torch.compile(decode, dynamic=True)
            self.graphs = {"encode": GraphCache(encode), "decode": GraphCache(decode)}
            self.engine = "torch+inductor+cudagraphs" if inductor else "torch+cudagraphs"
        self.batch_buckets = power_of_two_buckets(max_batch)
        self.token_buckets = geometric_buckets(16, max_graph_tokens, factor=1.5)
        self.max_graph_tokens = self.token_buckets[-1]
        # Frames 15 % apart: the decoder's time grows with the padded frames (measured on an H100 at batch 16:
        # 2.12 ms padded from 352 to 488 frames, 1.59 ms at 352).
        self.frame_buckets = geometric_buckets(32, max_graph_frames, factor=1.15)
        self.frame_index = torch.arange(self.frame_buckets[-1], device=self.device)

    def check(self, item: AcousticItem) -> None:
        """Rejects an item the model cannot run (see :func:`check_item`)."""
        check_item(item, self.n_vocab, self.n_speakers, self.style_dim)

    def _inputs(self, items: list[AcousticItem], batch: int, tokens: int, graph: bool = False) -> tuple[torch.Tensor, ...]:
        """Padded model inputs; padding rows are one-token dummies (masked, then dropped).

        On CUDA they are pinned host tensors for a graph (each crosses into the graph's static input in one
        asynchronous copy), else device tensors."""
        host = pad_items(items, batch, tokens, self.style_dim, self.dtype)
        if self.device.type != "cuda":
            return host
        host = tuple(t.pin_memory() for t in host)
        return host if graph else tuple(t.to(self.device, non_blocking=True) for t in host)

    def _encode(self, ids, lengths, speakers, prompt, content, speed, pitch, energy):
        return self.model.encode(ids, lengths, speakers, prompt, content, Prosody(speed, pitch, energy))

    def _decode(self, hidden, durations, token_mask, frame_index):
        return (self.model.decode(hidden, durations, token_mask, frame_index.shape[0]),)

    def run(self, items: list[AcousticItem]) -> list[AcousticResult]:
        """Synthesises a batch; items must have passed :meth:`check`."""
        with torch.cuda.stream(self.stream):
            return self._run(items)

    def _run(self, items: list[AcousticItem]) -> list[AcousticResult]:
        n, tokens = len(items), max(len(it.ids) for it in items)
        batch = bucket_up(n, self.batch_buckets) if self.graphs else None
        token_bucket = bucket_up(tokens, self.token_buckets) if self.graphs else None
        with torch.inference_mode():
            if batch is None or token_bucket is None:
                inputs = self._inputs(items, n, tokens)
                hidden, durations, _, _, token_mask = self._encode(*inputs)
            else:
                inputs = self._inputs(items, batch, token_bucket, graph=True)
                hidden, durations, _, _, token_mask = self.graphs["encode"].run(
                    (batch, token_bucket), inputs, lambda outs: tuple(t.clone() for t in outs)
                )
            (totals,) = to_host(durations[:n].sum(-1))
            frames = totals.tolist()
            n_frames = max(frames)
            frame_bucket = bucket_up(n_frames, self.frame_buckets) if batch is not None and token_bucket else None
            if frame_bucket is None:
                mel = self.model.decode(hidden, durations, token_mask, n_frames)
            else:
                pad = self.max_graph_tokens - hidden.shape[1]
                decode_inputs = (
                    torch.nn.functional.pad(hidden, (0, 0, 0, pad)),
                    torch.nn.functional.pad(durations, (0, pad)),
                    torch.nn.functional.pad(token_mask, (0, pad)),
                    self.frame_index[:frame_bucket],
                )
                mel = self.graphs["decode"].run(
                    (batch, frame_bucket), decode_inputs,
                    lambda outs: outs[0][:n, :, :n_frames].to(self.wire_dtype, copy=True),
                )
            mel, durations = to_host(mel[:n].to(self.wire_dtype), durations[:n].to(torch.int32))
            durations = durations.numpy()
        return [
            AcousticResult(mel=mel[b, :, : frames[b]], durations=durations[b, : len(it.ids)])
            for b, it in enumerate(items)
        ]

    def warmup(self) -> None:
        """Captures every graph bucket (or runs one eager batch on the CPU) before the stage reports SERVING."""
        zero = np.zeros(self.style_dim, dtype=np.float32)
        item = AcousticItem(ids=np.ones(16, dtype=np.int64), speaker=0, prompt=zero, content=zero)
        if not self.graphs:
            self.run([item])
            return
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            for batch in self.batch_buckets:
                for tokens in self.token_buckets:
                    inputs = self._inputs([item], batch, tokens, graph=True)
                    self.graphs["encode"].run((batch, tokens), inputs, lambda outs: None)
                hidden = torch.zeros(batch, self.max_graph_tokens, self.model.config.hidden, device=self.device,
                                     dtype=self.dtype)
                durations = torch.ones(batch, self.max_graph_tokens, dtype=torch.long, device=self.device)
                mask = torch.ones(batch, self.max_graph_tokens, dtype=torch.bool, device=self.device)
                for frames in self.frame_buckets:
                    inputs = (hidden, durations, mask, self.frame_index[:frames])
                    self.graphs["decode"].run((batch, frames), inputs, lambda outs: None)
