"""Streaming vocoding: chunks vocoded with receptive-field context concatenate to the whole waveform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoserve.model.vocoder import VocoderConfig
from emoserve.vocoder.engine import VocodeJob, VocoderEngine
from emoserve.vocoder.streaming import chunk_plan, receptive_field_frames


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference - estimate) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(np.sum(reference**2) / noise)


@pytest.mark.parametrize("n_frames", [1, 7, 8, 9, 50, 301])
def test_chunk_plan_covers_every_frame_once_with_growing_chunks(n_frames):
    plan = chunk_plan(n_frames, first_frames=8, max_frames=64, context=15)
    assert plan[0].start == 0 and plan[-1].end == n_frames
    assert all(a.end == b.start for a, b in zip(plan, plan[1:]))
    assert plan[0].end - plan[0].start <= 8 + 4
    assert all(c.end - c.start <= 64 + 32 for c in plan)
    assert all(0 <= c.lo <= c.start and c.end <= c.hi <= n_frames for c in plan)


def test_chunk_plan_rejects_nonsense():
    with pytest.raises(ValueError, match="first_frames"):
        chunk_plan(10, first_frames=0, max_frames=8, context=1)


def test_receptive_field_of_emotivoice_vocoder_is_a_few_frames():
    assert 10 <= receptive_field_frames(VocoderConfig()) <= 20


def test_streamed_chunks_concatenate_to_the_unchunked_waveform(tiny_model):
    engine = VocoderEngine(tiny_model)
    gen = torch.Generator().manual_seed(3)
    mel = torch.randn(engine.n_mels, 157, generator=gen)
    whole = engine.run([VocodeJob(mel)])[0]
    plan = chunk_plan(mel.shape[1], 8, 64, receptive_field_frames(tiny_model.manifest.vocoder))
    jobs = [VocodeJob(mel[:, c.lo : c.hi], trim=c.trim, keep=c.end - c.start) for c in plan]
    streamed = np.concatenate(engine.run(jobs))  # all chunks in one batch, as concurrent streams are
    assert streamed.shape == whole.shape
    assert snr_db(whole, streamed) >= 40
    assert np.abs(whole - streamed).max() <= 1e-5
