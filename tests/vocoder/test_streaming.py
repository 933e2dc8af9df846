"""Streaming vocoding: chunks vocoded with receptive-field context concatenate to the whole waveform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoserve.model.vocoder import VocoderConfig
from emoserve.vocoder.engine import VocodeJob, VocoderEngine
from emoserve.vocoder.streaming import chunk_plan, receptive_field_frames, window_frames


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference - estimate) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(np.sum(reference**2) / noise)


@pytest.mark.parametrize("n_frames", [1, 7, 8, 9, 50, 301])
def test_chunk_plan_covers_every_frame_once_with_a_small_first_chunk_then_equal_chunks(n_frames):
    plan = chunk_plan(n_frames, first_frames=8, max_frames=64, context=15)
    assert plan[0].start == 0 and plan[-1].end == n_frames
    assert all(a.end == b.start for a, b in zip(plan, plan[1:]))
    assert plan[0].end - plan[0].start <= 8 + 4
    assert all(c.end - c.start == 64 for c in plan[1:-1])
    assert all(c.end - c.start <= 64 + 32 for c in plan)
    assert all(0 <= c.lo <= c.start and c.end <= c.hi <= n_frames for c in plan)


def test_window_frames_are_the_vocoded_sizes_of_first_and_middle_chunks():
    plan = chunk_plan(400, first_frames=8, max_frames=64, context=15)
    first, full = window_frames(8, 64, 15)
    assert plan[0].hi - plan[0].lo == first
    assert {c.hi - c.lo for c in plan[2:-1]} == {full}  # the second starts within the first's context


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


def test_pcm16_engine_returns_exactly_the_wire_conversion_of_the_float_output(tiny_model):
    from emoserve.runtime.pcm import to_pcm16

    gen = torch.Generator().manual_seed(5)
    jobs = [VocodeJob(torch.randn(80, n, generator=gen) * 3, trim=t, keep=k) for n, t, k in [(40, 0, None), (57, 9, 30)]]
    floats = VocoderEngine(tiny_model).run(jobs)
    pcm = VocoderEngine(tiny_model, pcm16=True).run(jobs)
    assert [p.dtype for p in pcm] == [np.int16, np.int16]
    for f, p in zip(floats, pcm):
        assert np.array_equal(to_pcm16(f), p)
