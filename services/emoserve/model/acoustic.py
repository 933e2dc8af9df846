"""PromptTTS acoustic model: phoneme ids + voice + style embeddings → mel spectrogram.

Same architecture and parameter names as EmotiVoice's ``PromptTTS`` (under the ``am.`` prefix of its joint
checkpoint), with three differences that matter for serving:

* batches are exact: every block is masked, so an item padded into a batch gives the mel it gives alone;
* prosody controls (``speed``, ``pitch_semitones``, ``energy``) are applied to the predictions inside the
  model; their defaults reproduce EmotiVoice bit for bit;
* it returns per-item frame counts and integer durations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from emoserve.model.layers import Encoder, VariancePredictor, gaussian_upsample


@dataclass(frozen=True)
class AcousticConfig:
    """Shape of a PromptTTS model (EmotiVoice's ``config/joint/config.yaml`` values by default)."""

    n_vocab: int = 502
    n_speakers: int = 2013
    n_mels: int = 80
    hidden: int = 384
    """Width of encoder, decoder and variance adaptor."""
    heads: int = 8
    encoder_layers: int = 4
    decoder_layers: int = 4
    ffn_kernel_size: int = 3
    style_dim: int = 768
    """Size of each style vector (prompt and content), BERT's hidden size."""
    variance_channels: int = 384
    pitch_layers: int = 3
    energy_layers: int = 2
    duration_layers: int = 2
    variance_kernel_size: int = 3
    duration_kernel_size: int = 3
    variance_embed_kernel_size: int = 9
    pitch_stats: tuple[float, float] = (225.089, 53.78)
    """Mean and std (Hz) the pitch targets were normalised with in training."""
    energy_stats: tuple[float, float] = (30.610, 21.78)
    """Mean and std the energy targets were normalised with in training."""
    max_frames_per_token: int = 1000
    """Upper bound on one token's duration (guards against a diverged predictor)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AcousticConfig":
        data = dict(data)
        for key in ("pitch_stats", "energy_stats"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass
class Prosody:
    """Per-item prosody controls, tensors of shape ``[B]``; neutral values reproduce EmotiVoice."""

    speed: torch.Tensor
    pitch_semitones: torch.Tensor
    energy: torch.Tensor

    @classmethod
    def neutral(cls, batch: int, device: torch.device | str = "cpu") -> "Prosody":
        ones = torch.ones(batch, device=device)
        return cls(speed=ones, pitch_semitones=torch.zeros(batch, device=device), energy=ones.clone())


@dataclass
class AcousticOutput:
    """Result of :meth:`AcousticModel.generate` for a batch."""

    mel: torch.Tensor
    """``[B, n_mels, F]``; frames past ``mel_lengths[b]`` are zero."""
    mel_lengths: torch.Tensor
    """``[B]`` frame count of each item."""
    durations: torch.Tensor
    """``[B, T]`` integer frames per token (zero at padding)."""
    pitch: torch.Tensor = field(repr=False)
    """``[B, T]`` normalised pitch per token after the pitch control."""
    energy: torch.Tensor = field(repr=False)
    """``[B, T]`` normalised energy per token after the energy control."""


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``[B]`` lengths → ``[B, max_len]`` bool mask, True inside each length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _rescale_normalised(values: torch.Tensor, factor: torch.Tensor, stats: tuple[float, float]) -> torch.Tensor:
    """Multiplies a normalised feature by ``factor`` in its physical unit; identity where factor == 1."""
    mean, std = stats
    scaled = ((values * std + mean) * factor[:, None] - mean) / std
    return torch.where((factor == 1)[:, None], values, scaled.to(values.dtype))


class AcousticModel(nn.Module):
    """EmotiVoice's PromptTTS, inference only, batched with masks."""

    def __init__(self, config: AcousticConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.src_word_emb = nn.Embedding(c.n_vocab, c.hidden)
        self.spk_tokenizer = nn.Embedding(c.n_speakers, c.hidden)
        self.encoder = Encoder(c.hidden, c.heads, c.encoder_layers, c.ffn_kernel_size)
        self.embed_projection1 = nn.Linear(2 * c.hidden + 2 * c.style_dim, c.hidden)
        self.duration_predictor = VariancePredictor(
            c.hidden, c.duration_layers, c.variance_channels, c.duration_kernel_size
        )
        self.pitch_predictor = VariancePredictor(c.hidden, c.pitch_layers, c.variance_channels, c.variance_kernel_size)
        self.energy_predictor = VariancePredictor(
            c.hidden, c.energy_layers, c.variance_channels, c.variance_kernel_size
        )
        k = c.variance_embed_kernel_size
        self.pitch_embed = nn.Sequential(nn.Conv1d(1, c.hidden, k, padding=(k - 1) // 2))
        self.energy_embed = nn.Sequential(nn.Conv1d(1, c.hidden, k, padding=(k - 1) // 2))
        self.decoder = Encoder(c.hidden, c.heads, c.decoder_layers, c.ffn_kernel_size)
        self.to_mel = nn.Linear(c.hidden, c.n_mels)

    def encode(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        speakers: torch.Tensor,
        prompt_emb: torch.Tensor,
        content_emb: torch.Tensor,
        prosody: Prosody,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token side of the model: everything up to (not including) the length regulator.

        Returns:
            ``(hidden [B,T,C], durations [B,T] long, pitch [B,T], energy [B,T], token_mask [B,T])``.
        """
        b, t = ids.shape
        token_mask = lengths_to_mask(lengths, t)
        x = self.encoder(self.src_word_emb(ids), token_mask)
        cond = torch.cat([self.spk_tokenizer(speakers), prompt_emb.to(x.dtype), content_emb.to(x.dtype)], dim=-1)
        x = self.embed_projection1(torch.cat([x, cond[:, None, :].expand(b, t, -1)], dim=-1))

        pitch = self.pitch_predictor(x, token_mask)
        energy = self.energy_predictor(x, token_mask)
        log_d = self.duration_predictor(x, token_mask)

        frames = (torch.exp(log_d.float()) - 1.0) / prosody.speed[:, None].float()
        durations = torch.clamp(torch.round(frames), min=0, max=self.config.max_frames_per_token).long()
        durations = durations * token_mask
        empty = durations.sum(-1) == 0
        durations = torch.where(empty[:, None] & token_mask, torch.ones_like(durations), durations)

        fmask = token_mask.to(x.dtype)
        pitch = _rescale_normalised(pitch, 2.0 ** (prosody.pitch_semitones.float() / 12.0), self.config.pitch_stats)
        energy = _rescale_normalised(energy, prosody.energy.float(), self.config.energy_stats)
        pitch, energy = pitch * fmask, energy * fmask
        x = x + self.pitch_embed(pitch[:, None, :]).transpose(1, 2) + self.energy_embed(energy[:, None, :]).transpose(1, 2)
        return x, durations, pitch, energy, token_mask

    def decode(self, hidden: torch.Tensor, durations: torch.Tensor, token_mask: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Frame side: Gaussian upsampling, decoder and mel projection. Returns ``[B, n_mels, n_frames]``."""
        mel_lengths = durations.sum(-1)
        frame_mask = lengths_to_mask(mel_lengths, n_frames)
        frames = gaussian_upsample(hidden, durations, token_mask, n_frames)
        mel = self.to_mel(self.decoder(frames, frame_mask))
        return (mel * frame_mask.unsqueeze(-1).to(mel.dtype)).transpose(1, 2)

    @torch.inference_mode()
    def generate(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        speakers: torch.Tensor,
        prompt_emb: torch.Tensor,
        content_emb: torch.Tensor,
        prosody: Prosody | None = None,
    ) -> AcousticOutput:
        """Phoneme ids → mel for a padded batch.

        Args:
            ids: ``[B, T]`` token ids, padded with any id.
            lengths: ``[B]`` real token count per item (≥ 1).
            speakers: ``[B]`` speaker ids.
            prompt_emb: ``[B, style_dim]`` emotion-prompt embeddings.
            content_emb: ``[B, style_dim]`` content-text embeddings.
            prosody: per-item controls; neutral when omitted.
        """
        if prosody is None:
            prosody = Prosody.neutral(ids.size(0), ids.device)
        hidden, durations, pitch, energy, token_mask = self.encode(
            ids, lengths, speakers, prompt_emb, content_emb, prosody
        )
        mel_lengths = durations.sum(-1)
        mel = self.decode(hidden, durations, token_mask, int(mel_lengths.max().item()))
        return AcousticOutput(mel=mel, mel_lengths=mel_lengths, durations=durations, pitch=pitch, energy=energy)
