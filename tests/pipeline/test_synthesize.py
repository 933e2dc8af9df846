"""Unary synthesis through the gateway: exact lengths (pinned durations), metadata, encodings, sample rates."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from emoserve.client import Client
from emoserve.runtime.tensors import TensorSpec, decode
from emoserve.v1 import stages_pb2, tts_pb2
from tests.conftest import FRAMES_PER_PHONEME
from tests.pipeline.conftest import Pipeline, stage_stub

pytestmark = pytest.mark.timeout(60)

TEXT = "Hello from emoserve."
RATE, HOP = 16000, 256
IDS_SPEC = TensorSpec("phoneme_ids", ("int64",), rank=1)


def encoded_tokens(pipeline: Pipeline, text: str) -> list[int]:
    """Token ids per segment, asked from the encoder stage directly (independent of the gateway)."""
    with stage_stub(pipeline.address("encoder"), "encoder") as stub:
        reply = stub.Encode(stages_pb2.EncodeRequest(text=text), timeout=30)
    return [len(decode(s.phoneme_ids, IDS_SPEC)) for s in reply.segments]


@pytest.fixture(scope="module")
def n_tokens(pipeline: Pipeline) -> int:
    """Tokens (incl. both <sos/eos>) of TEXT, which is one segment."""
    counts = encoded_tokens(pipeline, TEXT)
    assert len(counts) == 1, counts
    return counts[0]


def pcm16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32767.0


def test_unary_audio_length_is_tokens_times_frames_times_hop(client: Client, n_tokens: int) -> None:
    reply = client.synthesize(TEXT, encoding="LINEAR_PCM", request_id="req-123")
    samples = n_tokens * FRAMES_PER_PHONEME * HOP
    assert reply.sample_rate_hz == RATE
    assert reply.encoding == tts_pb2.LINEAR_PCM
    assert len(reply.audio) == 2 * samples
    assert reply.duration_s == pytest.approx(samples / RATE, rel=1e-6)
    assert reply.request_id == "req-123"
    assert [t.stage for t in reply.timings] == ["encoder", "acoustic", "vocoder"]
    assert all(t.batch_size >= 1 and t.compute_ms >= 0 and t.queue_ms >= 0 for t in reply.timings)
    assert len(reply.durations) == n_tokens
    assert [d.frames for d in reply.durations] == [FRAMES_PER_PHONEME] * n_tokens
    assert reply.durations[0].symbol == reply.durations[-1].symbol == "<sos/eos>"
    assert reply.durations[1].symbol == "HH"  # brackets of English phonemes are stripped
    assert list(reply.dropped_symbols) == []


def test_unary_generates_a_request_id_when_empty(client: Client) -> None:
    first, second = client.synthesize(TEXT), client.synthesize(TEXT)
    assert first.request_id and second.request_id
    assert first.request_id != second.request_id


def test_unspecified_encoding_is_linear_pcm(client: Client, n_tokens: int) -> None:
    reply = client.synthesize(TEXT, encoding="AUDIO_ENCODING_UNSPECIFIED")
    assert reply.encoding == tts_pb2.LINEAR_PCM
    assert len(reply.audio) == 2 * n_tokens * FRAMES_PER_PHONEME * HOP


def test_float32_encoding_is_finite_and_within_unit_range(client: Client, n_tokens: int) -> None:
    reply = client.synthesize(TEXT, encoding="FLOAT32")
    samples = n_tokens * FRAMES_PER_PHONEME * HOP
    assert reply.encoding == tts_pb2.FLOAT32
    assert len(reply.audio) == 4 * samples
    wav = np.frombuffer(reply.audio, dtype="<f4")
    assert np.isfinite(wav).all()
    assert np.abs(wav).max() <= 1.0
    assert np.abs(wav).max() > 0  # not silence


def test_wav_encoding_parses_with_the_right_rate_and_frames(client: Client, n_tokens: int) -> None:
    reply = client.synthesize(TEXT, encoding="WAV")
    assert reply.encoding == tts_pb2.WAV
    with wave.open(io.BytesIO(reply.audio)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        assert w.getnframes() == n_tokens * FRAMES_PER_PHONEME * HOP
        frames = w.readframes(w.getnframes())
    pcm = client.synthesize(TEXT, encoding="LINEAR_PCM").audio
    assert frames == pcm  # the same samples, only wrapped


def test_encodings_carry_the_same_samples(client: Client) -> None:
    pcm = pcm16(client.synthesize(TEXT, encoding="LINEAR_PCM").audio)
    flt = np.frombuffer(client.synthesize(TEXT, encoding="FLOAT32").audio, dtype="<f4")
    assert np.abs(pcm - flt).max() <= 1.0 / 32767 + 1e-6


@pytest.mark.parametrize("rate", [22050, 8000])
def test_resampled_output_length_scales_with_the_rate(client: Client, n_tokens: int, rate: int) -> None:
    reply = client.synthesize(TEXT, sample_rate_hz=rate, encoding="FLOAT32")
    native = n_tokens * FRAMES_PER_PHONEME * HOP
    n = len(reply.audio) // 4
    assert reply.sample_rate_hz == rate
    assert abs(n - native * rate / RATE) <= 2
    assert reply.duration_s == pytest.approx(n / rate, rel=1e-6)
    wav = np.frombuffer(reply.audio, dtype="<f4")
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    with wave.open(io.BytesIO(client.synthesize(TEXT, sample_rate_hz=rate, encoding="WAV").audio)) as w:
        assert w.getframerate() == rate
        assert w.getnframes() == n


def test_list_voices_describes_the_model(client: Client) -> None:
    reply = client.voices()
    assert reply.model == "dummy-tiny"
    assert reply.sample_rate_hz == RATE
    assert reply.default_voice == reply.voices[0].name
    assert [v.id for v in reply.voices] == list(range(len(reply.voices)))


def test_every_voice_is_accepted(client: Client, n_tokens: int) -> None:
    voices = client.voices().voices
    for voice in (voices[0].name, voices[-1].name):
        reply = client.synthesize(TEXT, voice=voice)
        assert len(reply.audio) == 2 * n_tokens * FRAMES_PER_PHONEME * HOP
