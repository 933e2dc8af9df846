"""Acoustic model: exact batching, prosody controls, pinned durations."""

from __future__ import annotations

import pytest
import torch

from emoserve.model.acoustic import Prosody
from emoserve.model.dummy import pin_durations
from emoserve.model.prosody import resolve_prosody
from tests.conftest import FRAMES_PER_PHONEME


def _batch(model, lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    dim = model.config.style_dim
    return (
        torch.randint(2, model.config.n_vocab, (b, t), generator=gen),
        torch.tensor(lengths),
        torch.randint(0, model.config.n_speakers, (b,), generator=gen),
        torch.randn(b, dim, generator=gen),
        torch.randn(b, dim, generator=gen),
    )


def _free_durations(model):
    """Give the duration predictor input-dependent output so batching is really exercised."""
    with torch.no_grad():
        model.duration_predictor.linear.weight.normal_(0, 0.3)
        model.duration_predictor.linear.bias.fill_(1.8)


def test_batched_mel_equals_each_item_alone(tiny_model):
    model = tiny_model.load_acoustic()
    _free_durations(model)
    ids, lengths, spk, prompt, content = _batch(model, [3, 29, 12, 29, 7])
    prosody = Prosody(
        speed=torch.tensor([1.0, 1.3, 0.7, 1.0, 2.0]),
        pitch_semitones=torch.tensor([0.0, 3.0, -5.0, 0.0, 12.0]),
        energy=torch.tensor([1.0, 0.5, 1.5, 1.0, 2.0]),
    )
    batched = model.generate(ids, lengths, spk, prompt, content, prosody)
    assert len(set(batched.mel_lengths.tolist())) > 2, "durations should differ between items"
    for b, n in enumerate(lengths.tolist()):
        one = Prosody(prosody.speed[b : b + 1], prosody.pitch_semitones[b : b + 1], prosody.energy[b : b + 1])
        alone = model.generate(ids[b : b + 1, :n], lengths[b : b + 1], spk[b : b + 1], prompt[b : b + 1], content[b : b + 1], one)
        frames = int(alone.mel_lengths[0])
        assert frames == int(batched.mel_lengths[b])
        assert torch.equal(alone.durations[0], batched.durations[b, :n])
        diff = (alone.mel[0] - batched.mel[b, :, :frames]).abs().max().item()
        assert diff <= 1e-4, f"item {b}: max abs diff {diff}"
        assert batched.mel[b, :, frames:].abs().max().item() == 0.0 if frames < batched.mel.shape[-1] else True


def test_pinned_durations_give_exact_frame_counts(tiny_model):
    model = tiny_model.load_acoustic()
    ids, lengths, spk, prompt, content = _batch(model, [5, 11])
    out = model.generate(ids, lengths, spk, prompt, content)
    assert out.mel_lengths.tolist() == [5 * FRAMES_PER_PHONEME, 11 * FRAMES_PER_PHONEME]
    assert out.mel.shape == (2, model.config.n_mels, 11 * FRAMES_PER_PHONEME)


@pytest.mark.parametrize("speed,expected", [(2.0, 4), (0.5, 16), (1.0, 8)])
def test_speed_scales_durations(tiny_model, speed, expected):
    model = tiny_model.load_acoustic()
    pin_durations(model, 8)
    ids, lengths, spk, prompt, content = _batch(model, [6])
    prosody = Prosody(torch.tensor([speed]), torch.zeros(1), torch.ones(1))
    out = model.generate(ids, lengths, spk, prompt, content, prosody)
    assert out.durations[0].tolist() == [expected] * 6


def test_pitch_and_energy_controls_move_predictions_the_right_way(tiny_model):
    model = tiny_model.load_acoustic()
    ids, lengths, spk, prompt, content = _batch(model, [9, 9, 9])
    ids, spk, prompt, content = ids[:1].repeat(3, 1), spk[:1].repeat(3), prompt[:1].repeat(3, 1), content[:1].repeat(3, 1)
    prosody = Prosody(torch.ones(3), torch.tensor([0.0, 12.0, -12.0]), torch.tensor([1.0, 2.0, 0.5]))
    out = model.generate(ids, lengths, spk, prompt, content, prosody)
    mean, std = model.config.pitch_stats
    hz = out.pitch * std + mean
    assert torch.allclose(hz[1], hz[0] * 2, rtol=1e-4), "+12 semitones doubles F0"
    assert torch.allclose(hz[2], hz[0] / 2, rtol=1e-4), "-12 semitones halves F0"
    e_mean, e_std = model.config.energy_stats
    energy = out.energy * e_std + e_mean
    assert torch.allclose(energy[1], energy[0] * 2, rtol=1e-4)
    assert torch.allclose(energy[2], energy[0] * 0.5, rtol=1e-4)
    assert not torch.equal(out.mel[0], out.mel[1])


def test_resolve_prosody_maps_zero_to_default_and_rejects_out_of_range():
    assert resolve_prosody(0, 0, 0) == (1.0, 0.0, 1.0)
    assert resolve_prosody(1.5, -3, 0.8) == (1.5, -3.0, 0.8)
    for kwargs, field in [({"speed": 3.0}, "speed"), ({"pitch_semitones": 13}, "pitch_semitones"),
                          ({"energy": 0.1}, "energy"), ({"speed": float("nan")}, "speed")]:
        with pytest.raises(ValueError, match=field):
            resolve_prosody(**kwargs)


def test_all_zero_durations_fall_back_to_one_frame_per_token(tiny_model):
    model = tiny_model.load_acoustic()
    pin_durations(model, 0)
    ids, lengths, spk, prompt, content = _batch(model, [4, 7])
    out = model.generate(ids, lengths, spk, prompt, content)
    assert out.mel_lengths.tolist() == [4, 7]
