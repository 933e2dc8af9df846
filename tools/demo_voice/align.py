"""Alignment learned during acoustic-model training (as JETS / EmotiVoice / RAD-TTS do).

An :class:`AlignmentModule` scores every (frame, token) pair by the L2 distance of small convolutional
encodings of the text and of the mel, adds a static beta-binomial prior that favours the diagonal (it
makes alignment converge in hundreds rather than thousands of steps), and normalises over tokens. The
forward-sum loss (CTC over the monotonic paths) trains the soft alignment, monotonic alignment search
(:func:`monotonic_alignment`, a Viterbi pass) reads the hard alignment off it, whose token durations train
the duration predictor and drive the decoder, and the bin loss pulls the soft alignment towards the hard one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MASKED = -1e4
"""Log-probability given to padded tokens (finite, so CTC gradients stay finite)."""


class AlignmentModule(nn.Module):
    """Text/mel encoders whose negative L2 distance gives ``log p(token | frame)``."""

    def __init__(self, text_dim: int, n_mels: int, dim: int = 128) -> None:
        super().__init__()
        self.text = nn.Sequential(nn.Conv1d(text_dim, dim, 3, padding=1), nn.ReLU(), nn.Conv1d(dim, dim, 1))
        self.mel = nn.Sequential(
            nn.Conv1d(n_mels, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(dim, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(dim, dim, 1),
        )

    def forward(
        self, text: torch.Tensor, mel: torch.Tensor, token_mask: torch.Tensor, log_prior: torch.Tensor | None
    ) -> torch.Tensor:
        """Soft alignment.

        Args:
            text: ``[B, T, C]`` token features.
            mel: ``[B, n_mels, F]`` (normalised) mel.
            token_mask: ``[B, T]``.
            log_prior: ``[B, F, T]`` or None.

        Returns:
            ``[B, F, T]`` float32 log-probabilities over tokens (``MASKED`` at padded tokens).
        """
        t = self.text(text.transpose(1, 2)).float()  # [B, D, T]
        m = self.mel(mel).float()  # [B, D, F]
        dist = torch.cdist(m.transpose(1, 2), t.transpose(1, 2))  # [B, F, T]
        score = -dist
        mask = ~token_mask[:, None, :]
        score = torch.log_softmax(score.masked_fill(mask, MASKED), dim=-1)
        if log_prior is not None:
            score = torch.log_softmax((score + log_prior).masked_fill(mask, MASKED), dim=-1)
        return score.masked_fill(mask, MASKED)


def beta_binomial_prior(text_lengths: torch.Tensor, mel_lengths: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Log of the beta-binomial alignment prior ``[B, F_max, T_max]`` (0 outside each item).

    Frame ``j`` (1-based) of ``F`` frames over ``T`` tokens gets ``BetaBinomial(T - 1, scale * j,
    scale * (F - j + 1))`` over token index ``i``: a band along the diagonal.
    """
    device = text_lengths.device
    t_max, f_max = int(text_lengths.max()), int(mel_lengths.max())
    n = (text_lengths.double() - 1)[:, None, None]  # [B, 1, 1]
    frames = mel_lengths.double()[:, None, None]
    i = torch.arange(t_max, dtype=torch.float64, device=device)[None, None, :]
    j = torch.arange(1, f_max + 1, dtype=torch.float64, device=device)[None, :, None]
    inside = (i <= n) & (j <= frames)
    i, j = torch.minimum(i, n), torch.minimum(j, frames)  # keep lgamma's arguments positive outside
    alpha, beta = scale * j, scale * (frames - j + 1)

    def log_beta(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(a) + torch.lgamma(c) - torch.lgamma(a + c)

    log_comb = torch.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
    log_prior = log_comb + log_beta(i + alpha, n - i + beta) - log_beta(alpha, beta)
    return torch.where(inside, log_prior, torch.zeros_like(log_prior)).float()


def forward_sum_loss(log_p: torch.Tensor, text_lengths: torch.Tensor, mel_lengths: torch.Tensor, blank_logprob: float = -1.0) -> torch.Tensor:
    """CTC loss summing over every monotonic alignment of tokens to frames (mean per token, over the batch)."""
    padded = F.pad(log_p.float(), (1, 0), value=blank_logprob)  # blank at index 0
    padded = torch.log_softmax(padded, dim=-1).transpose(0, 1)  # [F, B, T + 1]
    t_max = log_p.size(-1)
    targets = torch.arange(1, t_max + 1, device=log_p.device)[None, :].expand(log_p.size(0), -1)
    return F.ctc_loss(padded, targets, mel_lengths, text_lengths, blank=0, reduction="mean", zero_infinity=True)


def monotonic_alignment(log_p: np.ndarray, text_lengths: np.ndarray, mel_lengths: np.ndarray) -> np.ndarray:
    """Monotonic alignment search: the most likely path where every token gets ≥ 1 consecutive frame.

    Args:
        log_p: ``[B, F, T]`` log-probabilities.
        text_lengths: ``[B]`` tokens per item.
        mel_lengths: ``[B]`` frames per item; must be ≥ the item's token count.

    Returns:
        ``[B, T]`` int64 durations summing to each item's frame count (0 at padded tokens).
    """
    b, f_max, t_max = log_p.shape
    if np.any(mel_lengths < text_lengths):
        raise ValueError(f"an item has fewer frames than tokens: frames {mel_lengths}, tokens {text_lengths}")
    value = np.full((b, t_max), -np.inf)
    value[:, 0] = log_p[:, 0, 0]
    from_prev = np.zeros((b, f_max, t_max), dtype=bool)
    rows = np.arange(b)
    for j in range(1, f_max):
        shifted = np.concatenate([np.full((b, 1), -np.inf), value[:, :-1]], axis=1)
        take = shifted > value
        from_prev[:, j] = take
        step = np.where(take, shifted, value) + log_p[:, j]
        active = (j < mel_lengths)[:, None]
        value = np.where(active, step, value)
    durations = np.zeros((b, t_max), dtype=np.int64)
    token = text_lengths.astype(np.int64) - 1
    for j in range(f_max - 1, -1, -1):
        active = j < mel_lengths
        durations[rows[active], token[active]] += 1
        back = active & from_prev[rows, j, np.maximum(token, 0)] & (token > 0)
        token = token - back
    return durations


def hard_alignment(durations: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``[B, F, T]`` 0/1 matrix with frame ``f`` assigned to the token whose span holds it."""
    ends = durations.cumsum(-1)
    starts = ends - durations
    f = torch.arange(n_frames, device=durations.device)[None, :, None]
    return ((f >= starts[:, None, :]) & (f < ends[:, None, :])).float()


def bin_loss(log_p: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """``-mean log p`` of the hard path under the soft alignment."""
    return -(log_p.float() * hard).sum() / hard.sum().clamp(min=1)


def average_by_duration(values: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """Mean of a frame track ``[B, F]`` over each token's frames → ``[B, T]`` (0 for zero-length tokens)."""
    ends = durations.cumsum(-1)
    starts = ends - durations
    cs = F.pad(values.float().cumsum(-1), (1, 0))
    total = torch.gather(cs, 1, ends) - torch.gather(cs, 1, starts)
    return torch.where(durations > 0, total / durations.clamp(min=1), torch.zeros_like(total))
