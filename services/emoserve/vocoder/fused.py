"""A fused HiFi-GAN generator: the weights of a loaded :class:`~emoserve.model.vocoder.HiFiGAN`, the same
output, fewer passes over memory.

The reference runs every leaky ReLU, residual add, mask and the average of the three resblocks as its own
kernel over ``[B, C, T]`` activations, between cuDNN convolutions that are small (32–256 channels) and
dilated. Here activations stay channels-last (``[B, T, C]``) and each convolution is one kernel that applies
the leaky ReLU to its input tile and adds bias, mask, residual and the running resblock sum (scaled by
``1 / num_kernels`` at the last one) before its single store; the transposed convolutions are polyphase
convolutions with the same prologue and epilogue. In the narrow, memory-bound stages (≤ 64 channels) both
convolutions of a resblock step run as one kernel whose intermediate stays on chip. Channel counts are zero-padded to multiples of 16 (powers of
two inside the network), which changes nothing: padded channels carry zero weights, biases and activations.

Two backends compute the same function: ``triton`` (:mod:`emoserve.vocoder.kernels`, for CUDA tensors, or
CPU tensors under ``TRITON_INTERPRET=1``) and ``torch`` (the same restructured math from PyTorch ops;
what runs on a CPU, and the reference the kernels are tested against).

Use::

    fused = FusedHiFiGAN.from_model(model)   # model: a loaded HiFiGAN on its device, in its dtype
    wav = fused(mel, lengths)                # same signature and output as model(mel, lengths)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from emoserve.model.vocoder import LRELU_SLOPE, HiFiGAN, VocoderConfig

if TYPE_CHECKING:
    from emoserve.vocoder.kernels import PairTile, Tile

Backend = Literal["auto", "triton", "torch"]
POST_SLOPE = 0.01
"""EmotiVoice's last activation: leaky ReLU with torch's default slope."""


def padded_channels(channels: int, inner: bool = True) -> int:
    """Channels as stored: a power of two ≥ 16 inside the network (``inner``), else a multiple of 16."""
    if inner:
        return max(16, 1 << (channels - 1).bit_length())
    return -(-channels // 16) * 16


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


class PackedConv(nn.Module):
    """A convolution's weights packed for channels-last kernels: ``weight [K, C_in, C_out]``, ``bias [C_out]``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dilation: int = 1, padding: int = 0,
                 stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False)
        self.dilation, self.padding, self.stride = dilation, padding, stride

    @classmethod
    def from_conv(cls, conv: nn.Conv1d, c_in: int, c_out: int) -> PackedConv:
        """Packs an ``nn.Conv1d`` (weight ``[C_out, C_in, K]``), zero-padding to ``c_in``/``c_out`` channels."""
        w = conv.weight.detach()
        packed = w.new_zeros(w.size(2), c_in, c_out)
        packed[:, : w.size(1), : w.size(0)] = w.permute(2, 1, 0)
        bias = w.new_zeros(c_out)
        bias[: w.size(0)] = conv.bias.detach()
        return cls(packed, bias, dilation=conv.dilation[0], padding=conv.padding[0])

    @classmethod
    def from_conv_transpose(cls, conv: nn.ConvTranspose1d, c_in: int, c_out: int) -> PackedConv:
        """Packs an ``nn.ConvTranspose1d`` (weight ``[C_in, C_out, K]``), zero-padding the channels."""
        w = conv.weight.detach()
        packed = w.new_zeros(w.size(2), c_in, c_out)
        packed[:, : w.size(0), : w.size(1)] = w.permute(2, 0, 1)
        bias = w.new_zeros(c_out)
        bias[: w.size(1)] = conv.bias.detach()
        return cls(packed, bias, padding=conv.padding[0], stride=conv.stride[0])

    @property
    def kernel_size(self) -> int:
        return int(self.weight.size(0))


def _leaky(x: torch.Tensor, slope: float | None) -> torch.Tensor:
    return x if slope is None else F.leaky_relu(x, slope)


def _row_mask(lengths: torch.Tensor, len_scale: int, steps: int, like: torch.Tensor) -> torch.Tensor:
    """``[B, T, 1]``: 1 for rows before ``lengths[b] * len_scale``."""
    rows = torch.arange(steps, device=like.device)
    return (rows[None, :] < lengths[:, None] * len_scale).unsqueeze(-1).to(like.dtype)


class TorchOps:
    """The fused kernels' functions in PyTorch ops (channels-last in and out); see :mod:`.kernels`."""

    @staticmethod
    def conv1d(x: torch.Tensor, conv: PackedConv, lengths: torch.Tensor, len_scale: int, *,
               pre_slope: float | None = None, residual: torch.Tensor | None = None,
               accumulate: torch.Tensor | None = None, out_scale: float = 1.0,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """``(mask(conv(leaky(x))) + residual + accumulate) * out_scale``; ``out`` is ignored."""
        y = F.conv1d(_leaky(x, pre_slope).transpose(1, 2), conv.weight.permute(2, 1, 0), conv.bias,
                     padding=conv.padding, dilation=conv.dilation).transpose(1, 2)
        y = y * _row_mask(lengths, len_scale, y.size(1), y)
        for extra in (residual, accumulate):
            if extra is not None:
                y = y + extra
        return (y if out_scale == 1.0 else y * out_scale).contiguous()

    @classmethod
    def pair(cls, x: torch.Tensor, c1: PackedConv, c2: PackedConv, lengths: torch.Tensor, len_scale: int, *,
             slope: float, accumulate: torch.Tensor | None = None, out_scale: float = 1.0,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """One resblock step: ``(mask(c2(leaky(mask(c1(leaky(x)))))) + x + accumulate) * out_scale``."""
        h = cls.conv1d(x, c1, lengths, len_scale, pre_slope=slope)
        return cls.conv1d(h, c2, lengths, len_scale, pre_slope=slope, residual=x, accumulate=accumulate,
                          out_scale=out_scale)

    @staticmethod
    def upsample(x: torch.Tensor, conv: PackedConv, lengths: torch.Tensor, len_scale: int, *,
                 slope: float) -> torch.Tensor:
        """``mask(conv_transpose1d(leaky(x)))``."""
        y = F.conv_transpose1d(_leaky(x, slope).transpose(1, 2), conv.weight.permute(1, 2, 0), conv.bias,
                               stride=conv.stride, padding=conv.padding).transpose(1, 2)
        return (y * _row_mask(lengths, len_scale, y.size(1), y)).contiguous()

    @staticmethod
    def conv_post(x: torch.Tensor, conv: PackedConv, lengths: torch.Tensor, len_scale: int, *,
                  slope: float) -> torch.Tensor:
        """``mask(tanh(conv1d(leaky(x))))`` to one channel: ``[B, T]``."""
        y = F.conv1d(_leaky(x, slope).transpose(1, 2), conv.weight.permute(2, 1, 0), conv.bias,
                     padding=conv.padding).squeeze(1)
        return torch.tanh(y) * _row_mask(lengths, len_scale, y.size(1), y).squeeze(-1)


class TritonOps:
    """The fused Triton kernels behind the same interface as :class:`TorchOps`.

    Args:
        tiles: block shapes by ``(c_in, c_out)``, overriding :func:`emoserve.vocoder.kernels.default_tile`.
        pair_max_channels: resblock steps of at most this many channels run as one kernel
            (:func:`emoserve.vocoder.kernels.resblock_pair`); wider ones, where the convolutions are
            compute-bound, as two.
        pair_tiles: launch settings of that kernel by ``(channels, kernel_size)``, overriding
            :func:`emoserve.vocoder.kernels.default_pair_tile`.
    """

    def __init__(self, tiles: Mapping[tuple[int, int], Tile] | None = None, pair_max_channels: int = 64,
                 pair_tiles: Mapping[tuple[int, int], PairTile] | None = None) -> None:
        from emoserve.vocoder import kernels

        self.kernels: ModuleType = kernels
        self.tiles = dict(tiles or {})
        self.pair_max_channels = pair_max_channels
        self.pair_tiles = dict(pair_tiles or {})

    def _tile(self, conv: PackedConv) -> Tile | None:
        return self.tiles.get((int(conv.weight.size(1)), int(conv.weight.size(2))))

    def conv1d(self, x: torch.Tensor, conv: PackedConv, lengths: torch.Tensor, len_scale: int, *,
               pre_slope: float | None = None, residual: torch.Tensor | None = None,
               accumulate: torch.Tensor | None = None, out_scale: float = 1.0,
               out: torch.Tensor | None = None) -> torch.Tensor:
        return self.kernels.conv1d(
            x, conv.weight, conv.bias, lengths, len_scale, dilation=conv.dilation, padding=conv.padding,
            pre_slope=pre_slope, residual=residual, accumulate=accumulate, out_scale=out_scale, out=out,
            tile=self._tile(conv),
        )

    def pair(self, x: torch.Tensor, c1: PackedConv, c2: PackedConv, lengths: torch.Tensor, len_scale: int, *,
             slope: float, accumulate: torch.Tensor | None = None, out_scale: float = 1.0,
             out: torch.Tensor | None = None) -> torch.Tensor:
        if x.size(-1) <= self.pair_max_channels:
            return self.kernels.resblock_pair(
                x, c1.weight, c1.bias, c2.weight, c2.bias, lengths, len_scale, dilation=c1.dilation, slope=slope,
                accumulate=accumulate, out_scale=out_scale, out=out,
                tile=self.pair_tiles.get((int(x.size(-1)), c1.kernel_size)),
            )
        h = self.conv1d(x, c1, lengths, len_scale, pre_slope=slope)
        return self.conv1d(h, c2, lengths, len_scale, pre_slope=slope, residual=x, accumulate=accumulate,
                           out_scale=out_scale, out=out)

    def upsample(self, x: torch.Tensor, conv: PackedConv, lengths: torch.Tensor, len_scale: int, *,
                 slope: float) -> torch.Tensor:
        return self.kernels.upsample(x, conv.weight, conv.bias, lengths, len_scale, stride=conv.stride,
                                     padding=conv.padding, slope=slope, tile=self._tile(conv))

    def conv_post(self, x: torch.Tensor, conv: PackedConv, lengths: torch.Tensor, len_scale: int, *,
                  slope: float) -> torch.Tensor:
        return self.kernels.conv_post(x, conv.weight[:, :, 0], conv.bias, lengths, len_scale, padding=conv.padding,
                                      slope=slope)


class FusedHiFiGAN(nn.Module):
    """HiFi-GAN generator with fused channels-last kernels: ``[B, n_mels, F]`` → ``[B, F * hop]``.

    Build it with :meth:`from_model`; it computes what the source model computes (same masking of padded
    batch items) in the source's dtype and on its device.

    Args:
        config: the generator's shape.
        backend: ``triton``, ``torch``, or ``auto`` (Triton for CUDA inputs when it is installed, else torch).
        tiles: Triton block shapes by ``(c_in, c_out)`` (padded channels), overriding the defaults.
        pair_max_channels: resblock steps of at most this many channels run as one Triton kernel (0: none).
        pair_tiles: launch settings of that kernel by ``(channels, kernel_size)``
            (:class:`~emoserve.vocoder.kernels.PairTile`), overriding the defaults.
    """

    def __init__(self, config: VocoderConfig, backend: Backend = "auto",
                 tiles: Mapping[tuple[int, int], Tile] | None = None, pair_max_channels: int = 64,
                 pair_tiles: Mapping[tuple[int, int], PairTile] | None = None) -> None:
        super().__init__()
        if backend not in ("auto", "triton", "torch"):
            raise ValueError(f"backend must be auto, triton or torch, got {backend!r}")
        if backend == "triton" and not triton_available():
            raise ValueError("backend='triton' needs the triton package (pip install triton)")
        self.config = config
        self.backend = backend
        self.tiles = dict(tiles or {})
        self.pair_max_channels = pair_max_channels
        self.pair_tiles = dict(pair_tiles or {})
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.mel_channels = padded_channels(config.n_mels, inner=False)
        self.conv_pre: PackedConv | None = None
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()  # per stage: per resblock: ModuleList of (conv1, conv2) pairs
        self.conv_post: PackedConv | None = None
        self._triton: TritonOps | None = None

    @classmethod
    def from_model(cls, model: HiFiGAN, backend: Backend = "auto",
                   tiles: Mapping[tuple[int, int], Tile] | None = None, pair_max_channels: int = 64,
                   pair_tiles: Mapping[tuple[int, int], PairTile] | None = None) -> FusedHiFiGAN:
        """Packs a (weight-norm-folded) ``HiFiGAN``'s weights; the result lives on its device, in its dtype."""
        c = model.config
        for rate, kernel, up in zip(c.upsample_rates, c.upsample_kernel_sizes, model.ups):
            if kernel - 2 * up.padding[0] != rate or up.output_padding[0] != 0:
                raise ValueError(f"upsampler (kernel {kernel}, rate {rate}) must produce exactly rate × frames")
        fused = cls(c, backend, tiles, pair_max_channels, pair_tiles)
        channels = [padded_channels(c.upsample_initial_channel)]
        fused.conv_pre = PackedConv.from_conv(model.conv_pre, fused.mel_channels, channels[0])
        for i, up in enumerate(model.ups):
            channels.append(padded_channels(up.out_channels))
            fused.ups.append(PackedConv.from_conv_transpose(up, channels[i], channels[i + 1]))
            stage = nn.ModuleList()
            for block in model.resblocks[i * fused.num_kernels : (i + 1) * fused.num_kernels]:
                stage.append(nn.ModuleList(
                    nn.ModuleList([PackedConv.from_conv(c1, channels[-1], channels[-1]),
                                   PackedConv.from_conv(c2, channels[-1], channels[-1])])
                    for c1, c2 in zip(block.convs1, block.convs2)
                ))
            fused.resblocks.append(stage)
        fused.conv_post = PackedConv.from_conv(model.conv_post, channels[-1], 1)
        return fused

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def _ops(self, x: torch.Tensor) -> TorchOps | TritonOps:
        use_triton = self.backend == "triton" or (self.backend == "auto" and x.is_cuda and triton_available())
        if not use_triton:
            return TorchOps()
        if self._triton is None:
            self._triton = TritonOps(self.tiles, self.pair_max_channels, self.pair_tiles)
        return self._triton

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Vocodes a batch, as :meth:`HiFiGAN.forward`.

        Args:
            mel: ``[B, n_mels, F]``.
            lengths: ``[B]`` real frame counts; ``None`` when all items fill ``F``.

        Returns:
            ``[B, F * hop]`` waveform; samples past ``lengths[b] * hop`` are zero.
        """
        if mel.dim() != 3 or mel.size(1) != self.config.n_mels:
            raise ValueError(f"mel must be [B, {self.config.n_mels}, F], got {tuple(mel.shape)}")
        batch, n_mels, frames = mel.shape
        ops = self._ops(mel)
        if lengths is None:
            lengths = torch.full((batch,), frames, dtype=torch.long, device=mel.device)
        else:
            lengths = lengths.to(device=mel.device, dtype=torch.long)
        x = mel.new_zeros(batch, frames, self.mel_channels)
        x[:, :, :n_mels] = mel.transpose(1, 2) * _row_mask(lengths, 1, frames, mel)
        x = ops.conv1d(x, self.conv_pre, lengths, 1)
        scale = 1
        for up, stage in zip(self.ups, self.resblocks):
            scale *= up.stride
            x = ops.upsample(x, up, lengths, scale, slope=LRELU_SLOPE)
            total: torch.Tensor | None = None
            for j, block in enumerate(stage):
                a = x
                for p, (c1, c2) in enumerate(block):
                    if p < len(block) - 1:  # residual chain
                        a = ops.pair(a, c1, c2, lengths, scale, slope=LRELU_SLOPE)
                    else:  # last step: add into the running sum of the resblocks, averaged at the last one
                        a = ops.pair(a, c1, c2, lengths, scale, slope=LRELU_SLOPE, accumulate=total,
                                     out_scale=1.0 / self.num_kernels if j == len(stage) - 1 else 1.0, out=total)
                total = a
            x = total
        return ops.conv_post(x, self.conv_post, lengths, scale, slope=POST_SLOPE)
