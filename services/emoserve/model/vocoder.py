"""HiFi-GAN generator (mel → waveform), weight norm folded, batched with per-item lengths.

Parameter names match EmotiVoice's ``generator.`` tensors once weight norm is folded (see
:mod:`emoserve.model.checkpoint`). In a batch of items of different lengths every convolution's output is
zeroed past the item's end, so each item gets exactly the zero padding it would get alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class VocoderConfig:
    """Shape of a HiFi-GAN generator (EmotiVoice's values by default)."""

    n_mels: int = 80
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

    @property
    def hop_length(self) -> int:
        """Samples produced per mel frame."""
        out = 1
        for rate in self.upsample_rates:
            out *= rate
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VocoderConfig":
        data = dict(data)
        for key in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes"):
            if key in data:
                data[key] = tuple(data[key])
        if "resblock_dilation_sizes" in data:
            data["resblock_dilation_sizes"] = tuple(tuple(d) for d in data["resblock_dilation_sizes"])
        return cls(**data)


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


class ResBlock(nn.Module):
    """HiFi-GAN residual block type "1": pairs of dilated and plain convolutions."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size)) for _ in dilations
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = _masked(c1(F.leaky_relu(x, LRELU_SLOPE)), mask)
            xt = _masked(c2(F.leaky_relu(xt, LRELU_SLOPE)), mask)
            x = xt + x
        return x


class HiFiGAN(nn.Module):
    """HiFi-GAN generator: ``[B, n_mels, F]`` → ``[B, F * hop]`` samples in [-1, 1]."""

    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(c.n_mels, c.upsample_initial_channel, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = c.upsample_initial_channel
        for i, (rate, kernel) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            ch = c.upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(nn.ConvTranspose1d(ch * 2, ch, kernel, rate, padding=(kernel - rate) // 2))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(ResBlock(ch, k, d))
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Vocodes a batch.

        Args:
            mel: ``[B, n_mels, F]``.
            lengths: ``[B]`` real frame counts; ``None`` when all items fill ``F`` (skips the masks).

        Returns:
            ``[B, F * hop]`` waveform; samples past ``lengths[b] * hop`` are zero.
        """
        frames = mel.size(-1)
        scale = 1

        def mask_at(upsampled: int) -> torch.Tensor | None:
            if lengths is None:
                return None
            steps = torch.arange(frames * upsampled, device=mel.device)
            return (steps[None, :] < (lengths[:, None] * upsampled)).unsqueeze(1).to(mel.dtype)

        mask = mask_at(scale)
        x = _masked(self.conv_pre(_masked(mel, mask)), mask)
        for i, (up, rate) in enumerate(zip(self.ups, self.config.upsample_rates)):
            scale *= rate
            mask = mask_at(scale)
            x = _masked(up(F.leaky_relu(x, LRELU_SLOPE)), mask)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            acc = blocks[0](x, mask)
            for block in blocks[1:]:
                acc = acc + block(x, mask)
            x = acc / self.num_kernels
        # EmotiVoice's final activation is leaky_relu with torch's default slope (0.01), not LRELU_SLOPE.
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))
        return _masked(x, mask).squeeze(1)

    @torch.inference_mode()
    def vocode(self, mel: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Vocodes a padded batch and trims each item to ``lengths[b] * hop`` samples."""
        wav = self(mel, None if bool((lengths == mel.size(-1)).all()) else lengths)
        hop = self.hop_length
        return [wav[b, : int(n) * hop] for b, n in enumerate(lengths.tolist())]
