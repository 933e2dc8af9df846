"""Triton kernels of the fused HiFi-GAN generator (:mod:`emoserve.vocoder.fused`).

Activations are channels-last, ``[B, T, C]`` contiguous, with ``C`` a multiple of 16. Each convolution is
an implicit GEMM: one pipelined loop step per (tap, input-channel block) multiplies a ``[BLOCK_T, BLOCK_K]``
slice of the shifted input by a ``[BLOCK_K, BLOCK_N]`` slice of the tap's ``[C_in, C_out]`` weight, fp16/bf16
operands (fp32 ones as TF32) accumulated in fp32.
The leaky ReLU in front of a convolution is applied to the loaded tile (prologue); bias, the length mask,
the residual add, the running sum of the resblocks and its final scale are applied before the one store
(epilogue). Rows outside ``[0, T)`` read as zeros, and rows at or past ``lengths[b] * len_scale`` are
written as zeros, so a padded batch gives each item exactly what it gets alone (as the reference does).

Weights are packed ``[K, C_in, C_out]`` (see :mod:`emoserve.vocoder.fused`). Importing this module needs
``triton``; set ``TRITON_INTERPRET=1`` before importing it to run the kernels on CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class Tile:
    """Block shape and launch settings of one kernel launch."""

    block_t: int
    """Output rows (time steps) per program."""
    block_n: int
    """Output channels per program."""
    block_k: int
    """Input channels per dot step."""
    num_warps: int = 4
    num_stages: int = 2

    def check(self, c_in: int, c_out: int) -> None:
        """Raises ValueError unless the tile divides the channel counts."""
        for name, value in (("block_t", self.block_t), ("block_n", self.block_n), ("block_k", self.block_k)):
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value}")
        if c_out % self.block_n or c_in % self.block_k:
            raise ValueError(f"tile {self} does not divide c_in={c_in}, c_out={c_out}")


def _largest_pow2_divisor(n: int, cap: int) -> int:
    d = 16
    while d * 2 <= cap and n % (d * 2) == 0:
        d *= 2
    return d


def default_tile(c_in: int, c_out: int, itemsize: int = 2, wide: bool = True) -> Tile:
    """The block shape of a ``c_in`` → ``c_out`` convolution on operands of ``itemsize`` bytes.

    128-row blocks with up to 256 output channels, 8 warps from 256 input or output channels on, else 4,
    chosen from three sweeps on an H100 (batch 32 × 15 s, fp16; 2026-11-24, ``tools/profile_vocoder.py
    --sweep``, ``tools/results/h100-2026-11-24/tiles.json``): no candidate was faster in all of them, and the
    whole generator with each kernel's fastest candidate of the last sweep was not faster (6,088× against
    6,251× real time). A ``[128, 256]`` block reads each input tile once for all 256 output channels (23–29 %
    faster than two ``[128, 128]`` blocks at 256 channels); at 128 channels 4 warps beat 8 by up to 21 %.
    Blocks stay 128 channels wide for 4-byte operands (shared memory: three stages of one A and one W tile
    stay within 192 KB) and where ``wide`` is False: a launch with too few row blocks to fill the GPU with
    ``[128, 256]`` blocks (one 5 s mel or a streamed chunk: 12–19 % slower with them).
    """
    block_n = min(c_out, 256 if itemsize <= 2 and wide else 128)
    return Tile(128, block_n, _largest_pow2_divisor(c_in, 64), num_warps=8 if max(c_in, c_out) >= 256 else 4,
                num_stages=3)


@dataclass(frozen=True)
class PairTile:
    """Launch settings of the fused resblock-pair kernel (:func:`resblock_pair`); see :func:`default_pair_tile`."""

    block_t: int = 128
    """Rows of the intermediate per tile; ``block_t - (K - 1)`` output rows come out of it."""
    num_warps: int = 4
    num_stages: int = 3
    programs_per_sm: int = 4
    """Persistent programs per multiprocessor; each owns one ``[block_t, C]`` scratch tile, reused per tile."""

    def check(self, kernel_size: int) -> None:
        """Raises ValueError unless ``block_t`` is a power of two ≥ 16 that leaves output rows for the kernel."""
        if self.block_t < 16 or self.block_t & (self.block_t - 1):
            raise ValueError(f"block_t must be a power of two >= 16, got {self.block_t}")
        if self.block_t <= kernel_size - 1:
            raise ValueError(f"block_t {self.block_t} leaves no output rows for kernel size {kernel_size}")
        if self.programs_per_sm < 1:
            raise ValueError(f"programs_per_sm must be >= 1, got {self.programs_per_sm}")


def default_pair_tile(channels: int, kernel_size: int) -> PairTile:
    """The launch settings of :func:`resblock_pair` for ``channels`` and ``kernel_size``.

    Where the taps carry the work (``channels * kernel_size`` ≥ 352: 11 taps at 32 channels, 7 or 11 at 64)
    the loads are pipelined three deep with 6 programs per multiprocessor; below that, where the per-tile
    epilogue and scratch round trip weigh more, 12 programs per multiprocessor without pipelining hide the
    latency better. From sweeps on an H100 (batch 32 × 15 s, fp16; 2026-11-24: block_t 64–256,
    2–8 warps, 1–3 stages, 4–16 programs per SM): 10–29 % faster than 4 programs with 3 stages at 32
    channels; at 64 channels no consistent difference (−5 % to +4 %).
    """
    if channels * kernel_size >= 352:
        return PairTile(num_stages=3, programs_per_sm=6)
    return PairTile(num_stages=1, programs_per_sm=12)


@triton.jit
def _leaky(x, slope):
    return tl.where(x > 0, x, x * slope)


@triton.jit(do_not_specialize=["T", "K", "dil", "pad", "len_scale"])
def _conv1d_kernel(
    x_ptr, w_ptr, b_ptr, res_ptr, sum_ptr, out_ptr, len_ptr,
    T, K, dil, pad, slope, out_scale, len_scale,
    C_IN: tl.constexpr, C_OUT: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRE_ACT: tl.constexpr, HAS_RES: tl.constexpr, HAS_SUM: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    chans = tl.arange(0, BLOCK_K)
    x_base = x_ptr + b * T * C_IN
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    CHUNKS: tl.constexpr = C_IN // BLOCK_K
    for step in range(K * CHUNKS):  # one (tap, input-channel block) per step: one A and one W tile in flight
        k = step // CHUNKS
        c = (step % CHUNKS) * BLOCK_K + chans
        src = rows + (k * dil - pad)
        inside = (src >= 0) & (src < T)
        a = tl.load(x_base + src[:, None] * C_IN + c[None, :], mask=inside[:, None], other=0.0)
        if PRE_ACT:
            a = _leaky(a, slope).to(w_ptr.dtype.element_ty)
        w = tl.load(w_ptr + (k * C_IN + c)[:, None] * C_OUT + cols[None, :])
        acc = tl.dot(a, w, acc)
    acc += tl.load(b_ptr + cols).to(tl.float32)[None, :]
    limit = tl.load(len_ptr + b) * len_scale
    acc = tl.where((rows < limit)[:, None], acc, 0.0)
    offs = b * T * C_OUT + rows[:, None] * C_OUT + cols[None, :]
    in_range = (rows < T)[:, None]
    if HAS_RES:
        acc += tl.load(res_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
    if HAS_SUM:
        acc += tl.load(sum_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
    acc = acc * out_scale
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=in_range)


@triton.jit(do_not_specialize=["T_in", "stride", "ksize", "pad", "len_scale"])
def _upsample_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, len_ptr,
    T_in, stride, ksize, pad, slope, len_scale,
    C_IN: tl.constexpr, C_OUT: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Polyphase transposed convolution: output row o = q * stride + r gets x[q - n] @ W[j] for every tap
    # j = n * stride + r + pad in [0, ksize); one program computes one phase r for a block of q.
    pid_q = tl.program_id(0)
    pid_rn = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n_blocks: tl.constexpr = C_OUT // BLOCK_N
    r = pid_rn // n_blocks
    pid_n = pid_rn % n_blocks
    q = pid_q * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    chans = tl.arange(0, BLOCK_K)
    x_base = x_ptr + b * T_in * C_IN
    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    phase = r + pad
    first = phase % stride  # taps j = first, first + stride, ... < ksize serve this phase
    CHUNKS: tl.constexpr = C_IN // BLOCK_K
    for step in range(tl.cdiv(ksize - first, stride) * CHUNKS):
        j = first + (step // CHUNKS) * stride
        c = (step % CHUNKS) * BLOCK_K + chans
        src = q - (j - phase) // stride  # exact division: j ≡ phase (mod stride)
        inside = (src >= 0) & (src < T_in)
        a = tl.load(x_base + src[:, None] * C_IN + c[None, :], mask=inside[:, None], other=0.0)
        a = _leaky(a, slope).to(w_ptr.dtype.element_ty)
        w = tl.load(w_ptr + (j * C_IN + c)[:, None] * C_OUT + cols[None, :])
        acc = tl.dot(a, w, acc)
    acc += tl.load(b_ptr + cols).to(tl.float32)[None, :]
    rows = q * stride + r
    acc = tl.where((rows < tl.load(len_ptr + b) * len_scale)[:, None], acc, 0.0)
    offs = b * T_in * stride * C_OUT + rows[:, None] * C_OUT + cols[None, :]
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=(q < T_in)[:, None])


@triton.jit(do_not_specialize=["T", "K", "pad", "len_scale"])
def _post_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, len_ptr,
    T, K, pad, slope, len_scale,
    C: tl.constexpr, BLOCK_T: tl.constexpr,
):
    # One output channel: tanh(bias + sum_k sum_c leaky(x[t + k - pad, c]) * w[k, c]).
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    chans = tl.arange(0, C)
    x_base = x_ptr + b * T * C
    acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for k in range(K):
        src = rows + (k - pad)
        inside = (src >= 0) & (src < T)
        a = tl.load(x_base + src[:, None] * C + chans[None, :], mask=inside[:, None], other=0.0).to(tl.float32)
        w = tl.load(w_ptr + k * C + chans).to(tl.float32)
        acc += tl.sum(_leaky(a, slope) * w[None, :], axis=1)
    acc += tl.load(b_ptr).to(tl.float32)
    y = 2.0 * tl.sigmoid(2.0 * acc) - 1.0  # tanh
    y = tl.where(rows < tl.load(len_ptr + b) * len_scale, y, 0.0)
    tl.store(out_ptr + b * T + rows, y.to(out_ptr.dtype.element_ty), mask=rows < T)


@triton.jit(do_not_specialize=["T", "K", "dil", "len_scale", "n_tiles", "tiles_per_item"])
def _pair_kernel(
    x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, sum_ptr, out_ptr, len_ptr, scratch_ptr,
    T, K, dil, slope, out_scale, len_scale, n_tiles, tiles_per_item,
    C: tl.constexpr, BLOCK_T: tl.constexpr, HAS_SUM: tl.constexpr,
):
    # A persistent program loops over tiles of BLOCK_T - (K - 1) output rows. Phase 1 computes the first
    # convolution on the BLOCK_T rows the second one reads (its halo included) and parks leaky(h) in the
    # program's own scratch tile, which stays in L2; phase 2 reads it back at the K shifts of the second
    # convolution. The intermediate never travels to device memory, and x is read once for both the
    # first convolution and the residual.
    pid = tl.program_id(0)
    half = (K - 1) // 2
    step_t = BLOCK_T - 2 * half
    idx = tl.arange(0, BLOCK_T)
    chans = tl.arange(0, C)
    scratch = scratch_ptr + pid.to(tl.int64) * BLOCK_T * C
    bias1 = tl.load(b1_ptr + chans).to(tl.float32)[None, :]
    bias2 = tl.load(b2_ptr + chans).to(tl.float32)[None, :]
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        b = (tile // tiles_per_item).to(tl.int64)
        t0 = (tile % tiles_per_item) * step_t
        limit = tl.minimum(tl.load(len_ptr + b) * len_scale, T)
        x_base = x_ptr + b * T * C
        h_rows = t0 - half + idx
        acc = tl.zeros((BLOCK_T, C), dtype=tl.float32)
        for k in range(K):
            src = h_rows + (k - half) * dil
            a = tl.load(x_base + src[:, None] * C + chans[None, :], mask=((src >= 0) & (src < T))[:, None], other=0.0)
            a = _leaky(a, slope).to(w1_ptr.dtype.element_ty)
            acc = tl.dot(a, tl.load(w1_ptr + (k * C + chans)[:, None] * C + chans[None, :]), acc)
        h = tl.where(((h_rows >= 0) & (h_rows < limit))[:, None], acc + bias1, 0.0)
        tl.debug_barrier()  # the previous tile's phase 2 has read the scratch tile
        tl.store(scratch + idx[:, None] * C + chans[None, :], _leaky(h, slope).to(w2_ptr.dtype.element_ty))
        tl.debug_barrier()
        acc = tl.zeros((BLOCK_T, C), dtype=tl.float32)
        for k in range(K):
            r = idx + k
            hk = tl.load(scratch + r[:, None] * C + chans[None, :], mask=(r < BLOCK_T)[:, None], other=0.0)
            acc = tl.dot(hk, tl.load(w2_ptr + (k * C + chans)[:, None] * C + chans[None, :]), acc)
        rows = t0 + idx
        acc = tl.where((rows < limit)[:, None], acc + bias2, 0.0)
        keep = ((idx < step_t) & (rows < T))[:, None]
        offs = b * T * C + rows[:, None] * C + chans[None, :]
        acc += tl.load(x_ptr + offs, mask=keep, other=0.0).to(tl.float32)
        if HAS_SUM:
            acc += tl.load(sum_ptr + offs, mask=keep, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, (acc * out_scale).to(out_ptr.dtype.element_ty), mask=keep)


def _check_activation(x: torch.Tensor, channels: int, what: str) -> None:
    if x.dim() != 3 or x.size(2) != channels or not x.is_contiguous():
        raise ValueError(f"{what}: expected a contiguous [B, T, {channels}] tensor, got {tuple(x.shape)}")


def _check_outputs(what: str, shape: tuple[int, ...], **tensors: torch.Tensor | None) -> None:
    """Raises ValueError unless each given tensor (None: absent) is contiguous and of ``shape``."""
    for name, t in tensors.items():
        if t is not None and (tuple(t.shape) != shape or not t.is_contiguous()):
            raise ValueError(f"{what} {name}: expected contiguous {shape}, got {tuple(t.shape)}")


@lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _launch_tile(x: torch.Tensor, c_in: int, c_out: int, row_blocks: int) -> Tile:
    """:func:`default_tile` for a launch of ``row_blocks`` 128-row blocks (each per 256 output channels): wide
    blocks only when they give at least one program per two multiprocessors."""
    wide = row_blocks * max(1, c_out // 256) >= _multiprocessors(x.device) // 2
    return default_tile(c_in, c_out, x.element_size(), wide)


def conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lengths: torch.Tensor,
    len_scale: int,
    *,
    dilation: int = 1,
    padding: int = 0,
    pre_slope: float | None = None,
    residual: torch.Tensor | None = None,
    accumulate: torch.Tensor | None = None,
    out_scale: float = 1.0,
    out: torch.Tensor | None = None,
    tile: Tile | None = None,
) -> torch.Tensor:
    """``(mask(conv(leaky(x)) + bias) + residual + accumulate) * out_scale``, channels-last, same length.

    Args:
        x: ``[B, T, C_in]``.
        weight: ``[K, C_in, C_out]``; ``bias``: ``[C_out]``.
        lengths: ``[B]`` int64 item lengths in units of ``len_scale`` rows.
        dilation, padding: as in :func:`torch.nn.functional.conv1d` (output length must equal ``T``).
        pre_slope: leaky-ReLU slope applied to ``x`` first; None for none.
        residual, accumulate: ``[B, T, C_out]`` tensors added after the mask; ``out`` may be either of them.
        out_scale: factor applied last.
        out: the output tensor (allocated when None).
        tile: block shape (``default_tile`` when None).
    """
    k, c_in, c_out = weight.shape
    _check_activation(x, c_in, "conv1d input")
    if 2 * padding != dilation * (k - 1):
        raise ValueError(f"conv1d must keep the length: padding {padding}, dilation {dilation}, kernel {k}")
    batch, steps, _ = x.shape
    out = torch.empty(batch, steps, c_out, device=x.device, dtype=x.dtype) if out is None else out
    _check_outputs("conv1d", (batch, steps, c_out), residual=residual, accumulate=accumulate, out=out)
    tile = tile or _launch_tile(x, c_in, c_out, batch * triton.cdiv(steps, 128))
    tile.check(c_in, c_out)
    grid = (triton.cdiv(steps, tile.block_t), c_out // tile.block_n, batch)
    _conv1d_kernel[grid](
        x, weight, bias, out if residual is None else residual, out if accumulate is None else accumulate, out,
        lengths, steps, k, dilation, padding, 0.0 if pre_slope is None else float(pre_slope), float(out_scale),
        len_scale, C_IN=c_in, C_OUT=c_out, BLOCK_T=tile.block_t, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
        PRE_ACT=pre_slope is not None, HAS_RES=residual is not None, HAS_SUM=accumulate is not None,
        num_warps=tile.num_warps, num_stages=tile.num_stages,
    )
    return out


def upsample(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lengths: torch.Tensor,
    len_scale: int,
    *,
    stride: int,
    padding: int,
    slope: float,
    tile: Tile | None = None,
) -> torch.Tensor:
    """``mask(conv_transpose1d(leaky(x)))`` channels-last: ``[B, T, C_in]`` → ``[B, T * stride, C_out]``.

    ``weight`` is ``[K, C_in, C_out]``; the transposed convolution must give exactly ``T * stride`` rows
    (``K - 2 * padding == stride``). ``len_scale`` is in output rows.
    """
    k, c_in, c_out = weight.shape
    _check_activation(x, c_in, "upsample input")
    if k - 2 * padding != stride:
        raise ValueError(f"upsample must give T * stride rows: kernel {k}, stride {stride}, padding {padding}")
    batch, steps, _ = x.shape
    out = torch.empty(batch, steps * stride, c_out, device=x.device, dtype=x.dtype)
    tile = tile or _launch_tile(x, c_in, c_out, batch * stride * triton.cdiv(steps, 128))
    tile.check(c_in, c_out)
    grid = (triton.cdiv(steps, tile.block_t), stride * (c_out // tile.block_n), batch)
    _upsample_kernel[grid](
        x, weight, bias, out, lengths, steps, stride, k, padding, float(slope), len_scale,
        C_IN=c_in, C_OUT=c_out, BLOCK_T=tile.block_t, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k,
        num_warps=tile.num_warps, num_stages=tile.num_stages,
    )
    return out


def conv_post(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lengths: torch.Tensor,
    len_scale: int,
    *,
    padding: int,
    slope: float,
    block_t: int = 256,
) -> torch.Tensor:
    """``mask(tanh(conv1d(leaky(x))))`` to one channel: ``[B, T, C]`` → ``[B, T]``; ``weight`` is ``[K, C]``."""
    k, channels = weight.shape
    _check_activation(x, channels, "conv_post input")
    if 2 * padding != k - 1:
        raise ValueError(f"conv_post must keep the length: padding {padding}, kernel {k}")
    batch, steps, _ = x.shape
    out = torch.empty(batch, steps, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(steps, block_t), batch)
    _post_kernel[grid](
        x, weight, bias, out, lengths, steps, k, padding, float(slope), len_scale, C=channels, BLOCK_T=block_t,
    )
    return out


def resblock_pair(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    lengths: torch.Tensor,
    len_scale: int,
    *,
    dilation: int,
    slope: float,
    accumulate: torch.Tensor | None = None,
    out_scale: float = 1.0,
    out: torch.Tensor | None = None,
    tile: PairTile | None = None,
) -> torch.Tensor:
    """One resblock step in one kernel: ``(mask(c2(leaky(mask(c1(leaky(x)))))) + x + accumulate) * out_scale``.

    ``c1`` has ``dilation``, ``c2`` dilation 1, both ``K`` taps (odd) and length-keeping padding; weights are
    ``[K, C, C]``. ``out`` may be ``accumulate`` but not ``x`` (neighbouring tiles still read it).
    """
    k, c, c_out = w1.shape
    _check_activation(x, c, "resblock_pair input")
    if c_out != c or w2.shape != w1.shape or k % 2 == 0:
        raise ValueError(f"resblock_pair needs two [K, C, C] weights with odd K, got {tuple(w1.shape)}, "
                         f"{tuple(w2.shape)}")
    if out is not None and out.data_ptr() == x.data_ptr():
        raise ValueError("resblock_pair cannot write in place over its input")
    batch, steps, _ = x.shape
    out = torch.empty_like(x) if out is None else out
    _check_outputs("resblock_pair", tuple(x.shape), accumulate=accumulate, out=out)
    tile = tile or default_pair_tile(c, k)
    tile.check(k)
    tiles_per_item = triton.cdiv(steps, tile.block_t - (k - 1))
    n_tiles = batch * tiles_per_item
    programs = min(n_tiles, _multiprocessors(x.device) * tile.programs_per_sm)
    scratch = torch.empty(programs, tile.block_t, c, device=x.device, dtype=x.dtype)
    _pair_kernel[(programs,)](
        x, w1, b1, w2, b2, out if accumulate is None else accumulate, out, lengths, scratch,
        steps, k, dilation, float(slope), float(out_scale), len_scale, n_tiles, tiles_per_item,
        C=c, BLOCK_T=tile.block_t, HAS_SUM=accumulate is not None,
        num_warps=tile.num_warps, num_stages=tile.num_stages,
    )
    return out
