"""CUDA graphs for bucketed shapes: one captured graph per (batch, length) bucket.

Small batches of these models are kernel-launch bound (hundreds of small kernels); replaying a captured
graph removes the launch gaps. Inputs are padded up to the bucket's shape (the models are exactly masked,
so padding changes nothing) and copied into the graph's static buffers; outputs are the graph's static
buffers, valid until the next replay of the same bucket, so callers copy what they keep.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

Tensors = tuple[torch.Tensor, ...]
R = TypeVar("R")


def bucket_up(value: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket ≥ ``value``; None when ``value`` exceeds the largest."""
    i = bisect.bisect_left(buckets, value)
    return buckets[i] if i < len(buckets) else None


def power_of_two_buckets(maximum: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``maximum``, and ``maximum`` itself."""
    return tuple(sorted({1 << i for i in range(maximum.bit_length()) if 1 << i < maximum} | {maximum}))


def geometric_buckets(low: int, high: int, factor: float = 1.25, multiple: int = 8) -> tuple[int, ...]:
    """Sizes from ``low`` up to ``high`` (the last), each ~``factor`` × the last, rounded up to ``multiple``."""
    sizes, size = [], max(low, multiple)
    while True:
        size = -(-size // multiple) * multiple
        if size >= high:
            return (*sizes, high)
        sizes.append(size)
        size = int(size * factor) + 1


def to_host(*tensors: torch.Tensor) -> Tensors:
    """Copies tensors to host memory, waiting only for the GPU work queued before the copies.

    ``tensor.cpu()`` waits for everything queued on the stream, including batches that other worker threads
    queued after this one (``batching.instances`` > 1); this copies into pinned buffers asynchronously and
    waits on an event recorded right after the copies. Tensors already on the host are returned as they are.
    """
    if not any(t.is_cuda for t in tensors):
        return tensors
    host = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True) if t.is_cuda else t for t in tensors)
    for target, source in zip(host, tensors):
        if source.is_cuda:
            target.copy_(source, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    copied.synchronize()
    return host


def side_stream(device: torch.device) -> torch.cuda.Stream | None:
    """A CUDA stream of an engine's own on a CUDA ``device`` (None elsewhere: ``torch.cuda.stream(None)`` is a
    no-op). Engines sharing a process and a GPU each queue their work on their own stream, so neither waits
    for the other's kernels, and :func:`to_host` waits only for its own."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


class CapturedGraph:
    """``fn`` captured once for fixed input shapes and dtypes.

    Args:
        fn: a function of tensors returning a tuple of tensors, free of host synchronisation.
        example: inputs of the exact shapes to capture (copied into static buffers on the current CUDA device;
            host inputs, here and at replay, should be in pinned memory so that they cross asynchronously).
        pool: a graph memory pool shared with other graphs of the same model.
    """

    def __init__(self, fn: Callable[..., Tensors], example: Tensors, pool=None) -> None:
        device = torch.device("cuda", torch.cuda.current_device())
        self.inputs = tuple(t.clone() if t.is_cuda else t.to(device) for t in example)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(2):  # warm-up outside capture (cuDNN/cuBLAS autotuning, allocator)
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool), torch.inference_mode():
            self.outputs = fn(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> Tensors:
        for static, value in zip(self.inputs, inputs):
            static.copy_(value, non_blocking=True)
        self.graph.replay()
        return self.outputs


class GraphCache:
    """Lazily captured graphs of one function, keyed by bucket; thread-safe.

    Args:
        fn: the function to capture (see :class:`CapturedGraph`).
    """

    def __init__(self, fn: Callable[..., Tensors]) -> None:
        self.fn = fn
        self.graphs: dict[tuple, CapturedGraph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.lock = threading.Lock()

    def run(self, key: tuple, inputs: Tensors, take: Callable[[Tensors], R]) -> R:
        """Replays (capturing first if needed) the graph for ``key`` on ``inputs`` already padded to it.

        ``take`` receives the static outputs and must copy what it keeps on the device (it runs under the
        cache's lock, so no other replay overwrites them meanwhile); copy to the host after this returns
        (:func:`to_host`), so that another thread's replay is queued while this one's results travel.
        """
        with self.lock:
            graph = self.graphs.get(key)
            if graph is None:
                graph = self.graphs[key] = CapturedGraph(self.fn, inputs, self.pool)
            return take(graph(*inputs))
