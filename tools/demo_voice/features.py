"""Audio features shared by training and evaluation: log-mel spectrogram, frame energy and a YIN F0 tracker.

All functions are batched torch code (CPU or CUDA) computed in float32, whatever autocast is active.
Frame ``i`` of every feature is centred on sample ``i * hop + hop / 2`` (the signal is padded by
``(n_fft - hop) / 2`` on both sides, as HiFi-GAN does), so ``L`` samples give ``L // hop`` frames and a
vocoder fed ``F`` frames returns the ``F * hop`` samples they describe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from emoserve.model.modeldir import AudioConfig

LOG_FLOOR = 1e-5
"""Magnitudes are clamped to this before the log (log-mel floor ≈ -11.5)."""


@dataclass(frozen=True)
class FeatureConfig(AudioConfig):
    """STFT/mel parameters (emoserve's :class:`~emoserve.model.modeldir.AudioConfig`) plus the F0 tracker's."""

    f0_min: float = 50.0
    """Lowest F0 the tracker reports (Hz)."""
    f0_max: float = 500.0
    """Highest F0 the tracker reports (Hz)."""
    yin_window: int = 384
    """YIN integration window (samples)."""
    yin_threshold: float = 0.25
    """A frame is voiced when its cumulative mean normalised difference dips below this."""
    octave_range: float = 1.7
    """Per item, an F0 more than this factor away from the item's median F0 is tried an octave down (or up)
    and dropped (unvoiced) when that lag is not periodic either."""
    silence_db: float = -50.0
    """Frames whose RMS is below this (dBFS) are unvoiced."""

    def __post_init__(self) -> None:
        if (self.n_fft - self.hop_length) % 2:
            raise ValueError(f"n_fft - hop_length must be even, got {self.n_fft} - {self.hop_length}")
        if self.yin_window + self.sample_rate / self.f0_min + 2 > self.n_fft:
            raise ValueError(
                f"yin_window {self.yin_window} + longest period {self.sample_rate / self.f0_min:.0f} "
                f"does not fit in one {self.n_fft}-sample frame"
            )


def _hz_to_mel(hz: float | torch.Tensor) -> torch.Tensor:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(hz >= min_log_hz, min_log_mel + torch.log(hz.clamp(min=1e-10) / min_log_hz) / logstep, hz / f_sp)


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return torch.where(mel >= min_log_mel, min_log_hz * torch.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: FeatureConfig) -> torch.Tensor:
    """``[n_mels, n_fft // 2 + 1]`` triangular filters, Slaney scale and area normalisation (librosa's default)."""
    fft_hz = torch.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(_hz_to_mel(cfg.fmin)), float(_hz_to_mel(cfg.fmax)), cfg.n_mels + 2, dtype=torch.float64)
    edges = _mel_to_hz(mels)
    widths = edges[1:] - edges[:-1]
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


def _frames_padded(wav: torch.Tensor, cfg: FeatureConfig, mode: str) -> torch.Tensor:
    pad = (cfg.n_fft - cfg.hop_length) // 2
    usable = wav[..., : wav.size(-1) // cfg.hop_length * cfg.hop_length]
    if usable.size(-1) <= pad:  # reflection needs more samples than the padding
        mode = "constant"
    return F.pad(usable.float().unsqueeze(1), (pad, pad), mode=mode).squeeze(1)


def magnitude(wav: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """STFT magnitude ``[B, n_fft // 2 + 1, L // hop]`` of ``[B, L]`` samples."""
    with torch.autocast(wav.device.type, enabled=False):
        x = _frames_padded(wav, cfg, "reflect")
        window = torch.hann_window(cfg.win_length, device=wav.device)
        spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, window, center=False, return_complex=True)
        return torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)


def log_mel(mag: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Natural-log mel spectrogram ``[B, n_mels, F]`` from an STFT magnitude."""
    fb = mel_filterbank(cfg).to(mag.device)
    return torch.log(torch.clamp(torch.matmul(fb, mag.float()), min=LOG_FLOOR))


def mel_spectrogram(wav: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Log-mel ``[B, n_mels, L // hop]`` of ``[B, L]`` samples in [-1, 1]."""
    return log_mel(magnitude(wav, cfg), cfg)


def frame_energy(mag: torch.Tensor) -> torch.Tensor:
    """Per-frame energy ``[B, F]``: the L2 norm of the STFT magnitude (FastSpeech 2's definition)."""
    return torch.linalg.vector_norm(mag.float(), dim=1)


def yin_f0(wav: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """F0 in Hz per frame ``[B, L // hop]`` (0 where unvoiced) with the YIN method.

    Per frame: the difference function over lags up to ``sr / f0_min`` (via FFT cross-correlation and
    running energies), its cumulative mean normalisation, the first lag in range whose value is below
    ``yin_threshold`` and at a local minimum, refined by parabolic interpolation. Frames below
    ``silence_db`` RMS are unvoiced. Octave errors are then corrected against each item's median F0
    (``octave_range``).
    """
    with torch.autocast(wav.device.type, enabled=False):
        x = _frames_padded(wav, cfg, "constant").unfold(-1, cfg.n_fft, cfg.hop_length)  # [B, F, N]
        w = cfg.yin_window
        tau_min = max(2, int(cfg.sample_rate / cfg.f0_max))
        tau_max = math.ceil(cfg.sample_rate / cfg.f0_min)
        n = 2 * cfg.n_fft
        corr = torch.fft.irfft(torch.fft.rfft(x, n) * torch.fft.rfft(x[..., :w], n).conj(), n)[..., : tau_max + 2]
        power = F.pad(torch.cumsum(x * x, dim=-1), (1, 0))
        lags = torch.arange(tau_max + 2, device=wav.device)
        energy_tau = power[..., lags + w] - power[..., lags]
        diff = (power[..., w : w + 1] + energy_tau - 2 * corr).clamp(min=0)
        cum = torch.cumsum(diff[..., 1:], dim=-1)
        cmnd = torch.ones_like(diff)
        cmnd[..., 1:] = diff[..., 1:] * lags[1:] / cum.clamp(min=1e-12)
        inner = cmnd[..., tau_min : tau_max + 1]
        after = cmnd[..., tau_min + 1 : tau_max + 2]
        candidate = (inner < cfg.yin_threshold) & (inner <= after)
        found = candidate.any(-1)
        tau = candidate.float().argmax(-1) + tau_min
        left = torch.gather(cmnd, -1, (tau - 1).unsqueeze(-1)).squeeze(-1)
        mid = torch.gather(cmnd, -1, tau.unsqueeze(-1)).squeeze(-1)
        right = torch.gather(cmnd, -1, (tau + 1).unsqueeze(-1)).squeeze(-1)
        curvature = left - 2 * mid + right
        shift = torch.where(curvature.abs() > 1e-9, 0.5 * (left - right) / curvature, torch.zeros_like(mid))
        period = tau.float() + shift.clamp(-1, 1)
        rms = torch.sqrt((x[..., :w] ** 2).mean(-1) + 1e-20)
        voiced = found & (20 * torch.log10(rms) > cfg.silence_db)
        return _fix_octaves(cmnd, period, voiced, tau_min, tau_max, cfg)


def _fix_octaves(
    cmnd: torch.Tensor, period: torch.Tensor, voiced: torch.Tensor, tau_min: int, tau_max: int, cfg: FeatureConfig
) -> torch.Tensor:
    """Moves F0 values far above (below) the item's median an octave down (up) where that lag is periodic."""
    median = torch.nanmedian(torch.where(voiced, period, torch.full_like(period, float("nan"))), dim=-1).values
    median = median.nan_to_num(1.0)[:, None]
    out = period.clone()
    for too_far, factor in ((period < median / cfg.octave_range, 2.0), (period > median * cfg.octave_range, 0.5)):
        lag = (period * factor).round().long()
        in_range = (lag >= tau_min) & (lag <= tau_max)
        value = torch.gather(cmnd, -1, lag.clamp(tau_min, tau_max).unsqueeze(-1)).squeeze(-1)
        fixable = too_far & in_range & (value < cfg.yin_threshold)
        out = torch.where(fixable, period * factor, out)
        voiced = voiced & (~too_far | fixable)
    return torch.where(voiced, cfg.sample_rate / out, torch.zeros_like(out))


def interpolate_unvoiced(f0: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Fills unvoiced frames (0) by linear interpolation between voiced neighbours (held flat at the ends).

    Args:
        f0: ``[B, F]`` Hz, 0 where unvoiced.
        lengths: ``[B]`` valid frames per item; frames past it stay 0.

    Returns:
        ``[B, F]``; an item with no voiced frame is all 0.
    """
    n_frames = f0.size(-1)
    t = torch.arange(n_frames, device=f0.device).expand_as(f0)
    valid = t < lengths.to(f0.device)[:, None]
    voiced = (f0 > 0) & valid
    prev = torch.cummax(torch.where(voiced, t, torch.full_like(t, -1)), dim=-1).values
    after = torch.where(voiced, t, torch.full_like(t, n_frames)).flip(-1)
    nxt = torch.cummin(after, dim=-1).values.flip(-1)
    prev = torch.where(prev < 0, nxt, prev)  # before the first voiced frame: hold it
    nxt = torch.where(nxt >= n_frames, prev, nxt)  # after the last one: hold it
    has_voice = voiced.any(-1, keepdim=True)
    prev, nxt = prev.clamp(0, n_frames - 1), nxt.clamp(0, n_frames - 1)
    v0, v1 = torch.gather(f0, -1, prev), torch.gather(f0, -1, nxt)
    span = (nxt - prev).clamp(min=1).to(f0.dtype)
    filled = v0 + (t - prev).to(f0.dtype) / span * (v1 - v0)
    filled = torch.where(nxt > prev, filled, v0)
    return torch.where(valid & has_voice, torch.where(voiced, f0, filled), torch.zeros_like(f0))
