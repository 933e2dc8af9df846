"""HiFi-GAN: exact batching with per-item lengths, output range and length."""

from __future__ import annotations

import torch


def test_batched_waveforms_equal_each_item_alone_and_are_trimmed(tiny_model):
    vocoder = tiny_model.load_vocoder()
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([7, 30, 19])
    mel = torch.randn(3, vocoder.config.n_mels, 30, generator=gen)
    for b, n in enumerate(lengths.tolist()):
        mel[b, :, n:] = 0
    batched = vocoder.vocode(mel, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = vocoder.vocode(mel[b : b + 1, :, :n], lengths[b : b + 1])[0]
        assert batched[b].shape == (n * vocoder.hop_length,)
        assert (alone - batched[b]).abs().max().item() <= 1e-5


def test_waveform_is_bounded(tiny_model):
    vocoder = tiny_model.load_vocoder()
    wav = vocoder(torch.randn(1, vocoder.config.n_mels, 12) * 5)
    assert wav.shape == (1, 12 * 256)
    assert wav.abs().max().item() <= 1.0
