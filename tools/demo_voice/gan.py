"""Vocoder training losses: small multi-period and multi-scale discriminators (HiFi-GAN's MPD/MSD, narrower),
least-squares adversarial and feature-matching losses, and a multi-resolution STFT loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

LRELU = 0.1


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Widths of the discriminators (HiFi-GAN's are 32→1024 (MPD) and 128→1024 (MSD))."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (16, 32, 64, 128)
    scales: int = 3
    scale_channels: tuple[int, ...] = (16, 64, 128, 256, 256)
    scale_groups: tuple[int, ...] = (1, 4, 16, 16, 16)


def _conv_stack(convs: nn.ModuleList, post: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU convs then ``post``: the flattened logits and every layer's feature map."""
    fmaps = []
    for conv in convs:
        h = F.leaky_relu(conv(h), LRELU)
        fmaps.append(h)
    h = post(h)
    fmaps.append(h)
    return h.flatten(1), fmaps


class PeriodDiscriminator(nn.Module):
    """Looks at every ``period``-th sample: the waveform folded to ``[B, 1, T / p, p]`` through 2-D convs."""

    def __init__(self, period: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.period = period
        dims = (1, *channels)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(dims[i], dims[i + 1], (5, 1), (3, 1), padding=(2, 0))) for i in range(len(channels))
        )
        self.convs.append(weight_norm(nn.Conv2d(channels[-1], channels[-1], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        return _conv_stack(self.convs, self.post, x.view(b, 1, -1, self.period))


class ScaleDiscriminator(nn.Module):
    """Strided grouped 1-D convs over the (average-pooled) waveform."""

    def __init__(self, channels: tuple[int, ...], groups: tuple[int, ...]) -> None:
        super().__init__()
        layers = [weight_norm(nn.Conv1d(1, channels[0], 15, 1, padding=7))]
        for i in range(1, len(channels)):
            layers.append(weight_norm(nn.Conv1d(channels[i - 1], channels[i], 41, 4, groups=groups[i], padding=20)))
        layers.append(weight_norm(nn.Conv1d(channels[-1], channels[-1], 5, 1, padding=2)))
        self.convs = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv1d(channels[-1], 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.post, x.unsqueeze(1))


class Discriminators(nn.Module):
    """All period and scale discriminators; :meth:`forward` returns every logit map and feature map."""

    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, cfg.period_channels) for p in cfg.periods)
        self.scales = nn.ModuleList(ScaleDiscriminator(cfg.scale_channels, cfg.scale_groups) for _ in range(cfg.scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, fmaps = [], []
        for d in self.periods:
            out, f = d(x)
            logits.append(out)
            fmaps.append(f)
        for i, d in enumerate(self.scales):
            if i:
                x = self.pool(x.unsqueeze(1)).squeeze(1)
            out, f = d(x)
            logits.append(out)
            fmaps.append(f)
        return logits, fmaps


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Least-squares GAN: real → 1, fake → 0."""
    return sum(torch.mean((1 - r.float()) ** 2) + torch.mean(f.float() ** 2) for r, f in zip(real, fake))


def generator_adversarial_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.mean((1 - f.float()) ** 2) for f in fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminators' feature maps of real (detached) and generated audio."""
    return sum(
        torch.mean(torch.abs(r.detach().float() - f.float())) for rs, fs in zip(real, fake) for r, f in zip(rs, fs)
    )


STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
"""(n_fft, hop, window) of the multi-resolution STFT loss (Parallel WaveGAN's)."""


def multi_resolution_stft_loss(
    pred: torch.Tensor, target: torch.Tensor, resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS
) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + L1 log-magnitude distance."""
    total = pred.new_zeros((), dtype=torch.float32)
    with torch.autocast(pred.device.type, enabled=False):
        for n_fft, hop, win in resolutions:
            window = torch.hann_window(win, device=pred.device)
            mags = [
                torch.stft(x.float(), n_fft, hop, win, window, return_complex=True).abs().clamp(min=1e-5)
                for x in (pred, target)
            ]
            sc = torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1]).clamp(min=1e-7)
            total = total + sc + F.l1_loss(torch.log(mags[0]), torch.log(mags[1]))
    return total / len(resolutions)
