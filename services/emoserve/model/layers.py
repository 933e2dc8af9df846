"""Masked building blocks of the PromptTTS acoustic model.

Every block takes a boolean ``mask`` of shape ``[B, T]`` (True = real token/frame) and zeroes padded
positions before each convolution, so a padded item in a batch computes exactly what it computes alone
(convolutions then see the same zero padding at the sequence end). Parameter names follow EmotiVoice's
modules so its state dicts load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-12


def apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of ``x`` ([B, T, C]) where ``mask`` ([B, T]) is False."""
    if mask is None:
        return x
    return x * mask.unsqueeze(-1).to(x.dtype)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, -1)).transpose(1, -1)


class ScaledPositionalEncoding(nn.Module):
    """Adds ``alpha * PE`` (sinusoidal table, learnable scale) to the input."""

    def __init__(self, dim: int, max_len: int = 5000) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("pe", self._table(max_len), persistent=False)

    def _table(self, length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32) * -(math.log(10000.0) / self.dim))
        pe = torch.zeros(length, self.dim)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        return pe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.size(1)
        if length > self.pe.size(0):
            self.pe = self._table(max(length, 2 * self.pe.size(0))).to(self.pe.device)
        return x + self.alpha * self.pe[:length].to(x.dtype)


class MultiHeadedAttention(nn.Module):
    """Multi-head self-attention with a key padding mask."""

    def __init__(self, heads: int, dim: int) -> None:
        super().__init__()
        self.h = heads
        self.d_k = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.linear_out(y.transpose(1, 2).reshape(b, t, self.h * self.d_k))


class ConvFeedForward(nn.Module):
    """Two same-padded Conv1d layers with GELU in between (the block's FFN)."""

    def __init__(self, dim: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.w_1 = nn.Conv1d(dim, hidden, kernel_size, padding=(kernel_size - 1) // 2)
        self.w_2 = nn.Conv1d(hidden, dim, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = F.gelu(self.w_1(apply_mask(x, mask).transpose(1, 2))).transpose(1, 2)
        return self.w_2(apply_mask(h, mask).transpose(1, 2)).transpose(1, 2)


class EncoderLayer(nn.Module):
    """Pre-norm transformer block: self-attention then convolutional FFN, both residual."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadedAttention(heads, dim)
        self.feed_forward = ConvFeedForward(dim, ffn_dim, kernel_size)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), mask)
        return x + self.feed_forward(self.norm2(x), mask)


class Encoder(nn.Module):
    """Positional encoding, a stack of :class:`EncoderLayer` and a final LayerNorm.

    Used for both the text encoder and the mel decoder of PromptTTS.
    """

    def __init__(self, dim: int, heads: int, layers: int, kernel_size: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(ScaledPositionalEncoding(dim))
        self.encoders = nn.ModuleList(EncoderLayer(dim, heads, dim * 4, kernel_size) for _ in range(layers))
        self.after_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.encoders:
            x = layer(x, mask)
        return self.after_norm(x)


class VariancePredictor(nn.Module):
    """Conv1d → ReLU → channel LayerNorm stack and a linear head: one value per token.

    Also used as the duration predictor (its output is log(1 + frames)).
    """

    def __init__(self, dim: int, layers: int, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(dim if i == 0 else channels, channels, kernel_size, padding=(kernel_size - 1) // 2),
                nn.ReLU(),
                ChannelLayerNorm(channels),
            )
            for i in range(layers)
        )
        self.linear = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Returns ``[B, T]`` predictions, zero at padded tokens."""
        m = mask.unsqueeze(1).to(x.dtype)
        h = x.transpose(1, 2)
        for block in self.conv:
            h = block(h * m)
        out = self.linear(h.transpose(1, 2)).squeeze(-1)
        return out * mask.to(out.dtype)


def gaussian_upsample(
    hs: torch.Tensor, durations: torch.Tensor, token_mask: torch.Tensor, n_frames: int, delta: float = 0.1
) -> torch.Tensor:
    """Spreads token features over frames with Gaussian weights centred on each token.

    Frame ``t`` attends to token centres ``c = cumsum(d) - d/2`` with ``softmax(-delta (t - c)^2)`` over the
    real tokens of its item.

    Args:
        hs: token features ``[B, T, C]``.
        durations: frames per token ``[B, T]`` (zero at padded tokens).
        token_mask: ``[B, T]``, True for real tokens.
        n_frames: number of output frames (the longest item's).
        delta: sharpness of the Gaussian.

    Returns:
        Frame features ``[B, n_frames, C]``.
    """
    d = durations.to(torch.float32)
    t = torch.arange(n_frames, device=hs.device, dtype=torch.float32)
    centres = d.cumsum(-1) - d / 2
    energy = -delta * (t[None, :, None] - centres[:, None, :]) ** 2
    energy = energy.masked_fill(~token_mask[:, None, :], float("-inf"))
    weights = torch.softmax(energy, dim=-1)
    return torch.matmul(weights.to(hs.dtype), hs)
