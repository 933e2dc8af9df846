"""Streaming synthesis: chunks concatenate to the unary audio, indices and the ``last`` flag."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from emoserve.client import Client
from emoserve.v1 import tts_pb2
from tests.pipeline.conftest import Pipeline
from tests.pipeline.test_synthesize import TEXT, encoded_tokens

pytestmark = pytest.mark.timeout(60)

LONG_TEXT = (
    "Streaming starts playback before the whole text is rendered. "
    "Each sentence becomes its own segment, synthesised while the previous one is being sent. "
    "The gateway inserts a short pause between segments, exactly as the unary call does. "
    "今天天气很好，我们一起去公园散步吧。 "
    "Finally, the last chunk carries the timings of every stage."
)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` in dB (inf when identical)."""
    assert reference.shape == test.shape, (reference.shape, test.shape)
    noise = np.sum((reference.astype(np.float64) - test) ** 2)
    signal = np.sum(reference.astype(np.float64) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def float_audio(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def check_chunk_sequence(chunks: list[tts_pb2.AudioChunk], rate: int, request_id: str | None = None) -> None:
    assert chunks, "the stream yielded nothing"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(c.sample_rate_hz == rate for c in chunks)
    assert len({c.request_id for c in chunks}) == 1 and chunks[0].request_id
    if request_id:
        assert chunks[0].request_id == request_id
    assert all(not c.timings for c in chunks[:-1])
    stages = [t.stage for t in chunks[-1].timings]
    assert stages[0] == "encoder" and {"acoustic", "vocoder"} <= set(stages)


def test_stream_concatenates_to_the_unary_audio(client: Client) -> None:
    unary = float_audio(client.synthesize(TEXT, encoding="FLOAT32").audio)
    chunks = list(client.stream(TEXT, encoding="FLOAT32", request_id="stream-1"))
    check_chunk_sequence(chunks, 16000, "stream-1")
    assert all(c.encoding == tts_pb2.FLOAT32 for c in chunks)
    streamed = float_audio(b"".join(c.audio for c in chunks))
    assert snr_db(unary, streamed) >= 40.0


def test_multi_segment_text_streams_several_chunks_equal_to_unary(client: Client, pipeline: Pipeline) -> None:
    assert len(LONG_TEXT) > 200
    segments = encoded_tokens(pipeline, LONG_TEXT)
    assert len(segments) >= 2, segments
    unary = client.synthesize(LONG_TEXT, encoding="FLOAT32")
    chunks = list(client.stream(LONG_TEXT, encoding="FLOAT32"))
    check_chunk_sequence(chunks, 16000)
    assert len(chunks) >= len(segments)
    streamed = float_audio(b"".join(c.audio for c in chunks))
    reference = float_audio(unary.audio)
    assert len(streamed) == len(reference) == round(unary.duration_s * 16000)
    assert snr_db(reference, streamed) >= 40.0


@pytest.mark.parametrize("rate", [22050, 8000])
def test_resampled_stream_equals_resampled_unary(client: Client, rate: int) -> None:
    unary = float_audio(client.synthesize(LONG_TEXT, encoding="FLOAT32", sample_rate_hz=rate).audio)
    chunks = list(client.stream(LONG_TEXT, encoding="FLOAT32", sample_rate_hz=rate))
    check_chunk_sequence(chunks, rate)
    assert snr_db(unary, float_audio(b"".join(c.audio for c in chunks))) >= 40.0


def test_linear_pcm_stream_matches_unary_length(client: Client) -> None:
    unary = client.synthesize(LONG_TEXT, encoding="LINEAR_PCM").audio
    chunks = list(client.stream(LONG_TEXT))
    assert all(c.encoding == tts_pb2.LINEAR_PCM for c in chunks)
    streamed = b"".join(c.audio for c in chunks)
    assert len(streamed) == len(unary)
    a = np.frombuffer(unary, "<i2").astype(np.float64)
    b = np.frombuffer(streamed, "<i2").astype(np.float64)
    assert snr_db(a, b) >= 40.0


def test_wav_stream_has_one_header_then_pcm(client: Client) -> None:
    pcm = client.synthesize(TEXT, encoding="LINEAR_PCM").audio
    chunks = list(client.stream(TEXT, encoding="WAV"))
    assert chunks[0].audio[:4] == b"RIFF" and chunks[0].audio[8:12] == b"WAVE"
    assert all(c.audio[:4] != b"RIFF" for c in chunks[1:])
    data = b"".join(c.audio for c in chunks)
    with wave.open(io.BytesIO(data)) as w:  # streaming header: open-ended data length
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        body = w.readframes(len(pcm))
    assert len(body) == len(pcm)
