"""Long text: a ~9,000-character mixed text through the gateway, and 20,000 characters through the encoder."""

from __future__ import annotations

import time

import numpy as np
import pytest

from emoserve.client import Client
from emoserve.encoder.engine import SOS_EOS, EncodeItem, EncoderEngine
from tests.pipeline.conftest import Pipeline

pytestmark = pytest.mark.timeout(90)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog while the orchestra tunes up for tonight's concert.",
    "今天天气很好，我们一起去公园散步，顺便买一杯咖啡。",
    "Emotional speech synthesis turns plain text into a voice that sounds happy, sad or surprised.",
    "这个模型可以用中文和英文说话，也可以表达不同的情感。",
    "On March 3rd, 2024, at 10:30 AM, roughly 1,250 people joined the meeting online.",
    "他在2023年花了3456元买了一台新电脑，速度快了百分之五十。",
]


def mixed_text(n_chars: int) -> str:
    """Mixed Chinese/English sentences, plus runs with no punctuation at all, of about ``n_chars`` characters."""
    parts, size, i = [], 0, 0
    while size < n_chars:
        if i % 10 == 9:  # no sentence or clause mark for a long stretch: the splitter must still cut it
            part = "没有标点的很长一段中文文字" * 20 if i % 20 == 9 else "words without any punctuation " * 12
        else:
            part = SENTENCES[i % len(SENTENCES)]
        parts.append(part)
        size += len(part) + 1
        i += 1
    return " ".join(parts)[:n_chars]


@pytest.fixture(scope="module")
def engine(pipeline: Pipeline) -> EncoderEngine:
    """The encoder stage's loaded engine, used directly (no gRPC)."""
    engine = pipeline.services["encoder"].engine
    assert engine is not None
    return engine


def test_long_mixed_text_synthesises_over_a_minute_of_audio(pipeline: Pipeline) -> None:
    text = mixed_text(9_000)
    assert 8_900 <= len(text) <= 9_000
    with Client(pipeline.target, timeout=80) as client:
        started = time.perf_counter()
        reply = client.synthesize(text, encoding="FLOAT32")
        elapsed = time.perf_counter() - started
    wave = np.frombuffer(reply.audio, dtype="<f4")
    assert reply.duration_s > 60.0, reply.duration_s
    assert len(wave) == round(reply.duration_s * reply.sample_rate_hz)
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
    # Every phoneme of every segment got its (pinned) duration.
    assert len(reply.durations) > 1000 and {d.frames for d in reply.durations} == {4}
    print(f"9k chars: {reply.duration_s:.1f} s of audio in {elapsed:.2f} s")


def test_encoder_engine_splits_20000_characters_within_the_model_limits(engine: EncoderEngine) -> None:
    text = mixed_text(20_000)
    started = time.perf_counter()
    [result] = engine.run([EncodeItem(text, "Happy")])
    elapsed = time.perf_counter() - started
    assert not isinstance(result, Exception), result
    segments = result.segments
    assert len(segments) > 50
    for seg in segments:
        assert 2 < len(seg.ids) <= engine.max_segment_phonemes == 400, (len(seg.ids), seg.text)
        assert len(seg.text) <= engine.max_segment_chars, seg.text
        assert seg.phonemes.split()[0] == seg.phonemes.split()[-1] == SOS_EOS
        assert len(seg.phonemes.split()) == len(seg.ids)
        assert seg.prompt.shape == seg.content.shape == (engine.style.dim,)
        assert np.isfinite(seg.content).all()
    # Splitting loses no non-space character, and keeps the order.
    assert "".join("".join(s.text.split()) for s in segments) == "".join(text.split())
    assert elapsed < 30, f"encoding 20,000 characters took {elapsed:.1f} s"
    print(f"20k chars: {len(segments)} segments in {elapsed:.2f} s")


@pytest.mark.timeout(300)
def test_twenty_thousand_characters_synthesise_without_error(pipeline: Pipeline) -> None:
    """The whole model stack (front end, style encoder, acoustic model, vocoder) on 20,000 characters."""
    from emoserve.acoustic.engine import AcousticItem
    from emoserve.vocoder.engine import VocodeJob

    encoding = pipeline.services["encoder"].engine.run([EncodeItem(mixed_text(20_000), "Happy")])[0]
    acoustic, vocoder = pipeline.services["acoustic"].engine, pipeline.services["vocoder"].engine
    samples = 0
    segments = encoding.segments
    for start in range(0, len(segments), 16):
        batch = segments[start : start + 16]
        items = [AcousticItem(s.ids, 0, s.prompt, s.content, speed=2.0) for s in batch]
        mels = acoustic.run(items)
        for seg, mel, wave in zip(batch, mels, vocoder.run([VocodeJob(m.mel) for m in mels])):
            assert len(wave) == len(seg.ids) * 2 * vocoder.hop_length  # 4 frames per phoneme at speed 2
            assert np.isfinite(wave).all()
            samples += len(wave)
    assert len(segments) > 100 and samples / 16000 > 600
