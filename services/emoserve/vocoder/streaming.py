"""Streaming vocoding: which mel frames each audio chunk covers, and how much context it needs.

A chunk covering frames ``[start, end)`` is vocoded from ``[start - context, end + context)`` (clipped to
the utterance) and trimmed back to ``[start * hop, end * hop)``. With ``context`` at least the generator's
receptive field, every chunk equals the matching slice of the whole-utterance waveform, so the chunks
concatenate to the unchunked output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emoserve.model.vocoder import VocoderConfig


def receptive_field_frames(config: VocoderConfig) -> int:
    """Mel frames on each side of a frame that can influence its samples (rounded up)."""
    frames = 3.0  # conv_pre, kernel 7
    scale = 1
    for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
        frames += math.ceil(kernel / rate) / scale  # transposed conv reach, in input frames
        scale *= rate
        reach = max((k - 1) // 2 * (sum(d) + len(d)) for k, d in
                    zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))
        frames += reach / scale  # parallel resblocks (averaged): the widest one bounds the reach
    frames += 3 / scale  # conv_post, kernel 7
    return math.ceil(frames)


@dataclass(frozen=True)
class Chunk:
    """One streamed piece of a mel: frames ``[start, end)``, vocoded from ``[lo, hi)``."""

    index: int
    start: int
    end: int
    lo: int
    hi: int

    @property
    def trim(self) -> int:
        """Frames of left context to drop from the vocoded window."""
        return self.start - self.lo


def chunk_plan(n_frames: int, first_frames: int, max_frames: int, context: int) -> list[Chunk]:
    """Splits ``n_frames`` into a first chunk of ``first_frames`` and then chunks of ``max_frames``.

    The small first chunk makes the first audio early. The later chunks are equal, so chunks of many streams
    batch without padding, and large, so the context vocoded twice and the per-chunk overhead stay small; a
    tail shorter than half a chunk is folded into the chunk before it.

    Raises:
        ValueError: non-positive sizes or ``first_frames > max_frames``.
    """
    if n_frames < 1 or first_frames < 1 or max_frames < first_frames or context < 0:
        raise ValueError(
            f"invalid chunking: n_frames={n_frames}, first_frames={first_frames}, max_frames={max_frames}, "
            f"context={context}"
        )
    chunks, start, size = [], 0, first_frames
    while start < n_frames:
        end = min(start + size, n_frames)
        if n_frames - end < size // 2:  # fold a short tail into this chunk
            end = n_frames
        chunks.append(Chunk(len(chunks), start, end, max(0, start - context), min(n_frames, end + context)))
        start, size = end, max_frames
    return chunks


def window_frames(first_frames: int, max_frames: int, context: int) -> tuple[int, int]:
    """Vocoded frames of a stream's first chunk and of a full later chunk (what most chunks are)."""
    return first_frames + context, max_frames + 2 * context
