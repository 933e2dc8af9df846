"""Audio post-processing at the gateway: joining segments, resampling and wire encodings.

Audio arrives from the vocoder as 16-bit PCM and stays int16 here; only resampling and ``FLOAT32`` output
convert it to floats.
"""

from __future__ import annotations

import io
import math
import wave

import numpy as np
from scipy.signal import resample_poly

from emoserve.runtime.pcm import to_float, to_pcm16
from emoserve.v1 import tts_pb2

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
MAX_RESAMPLE_FACTOR = 1000
"""Largest up/down factor of the resampling ratio (44.1 kHz from 16 kHz is 441/160)."""
SEGMENT_PAUSE_S = 0.15
"""Silence inserted between the segments of a long text."""


def check_sample_rate(rate: int, model_rate: int) -> None:
    """Raises ValueError unless ``rate`` is 0 (model rate), or within the supported range and related to the
    model rate by a ratio of small integers (the polyphase filter grows with them: 47,999 Hz from 16 kHz would
    need a 48k-phase filter and stall the gateway)."""
    if rate == 0:
        return
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate_hz={rate} is out of range: use 0 or {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")
    g = math.gcd(rate, model_rate)
    if max(rate, model_rate) // g > MAX_RESAMPLE_FACTOR:
        raise ValueError(
            f"sample_rate_hz={rate} is not supported: its ratio to the model's {model_rate} Hz must reduce to "
            f"integers <= {MAX_RESAMPLE_FACTOR} (e.g. 8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)"
        )


def check_encoding(encoding: int) -> int:
    """Returns the effective encoding (UNSPECIFIED → LINEAR_PCM); raises ValueError for unknown values."""
    if encoding not in tts_pb2.AudioEncoding.values():
        raise ValueError(f"encoding={encoding} is not a known AudioEncoding")
    return tts_pb2.LINEAR_PCM if encoding == tts_pb2.AUDIO_ENCODING_UNSPECIFIED else encoding


def pause(sample_rate: int) -> np.ndarray:
    """The silence placed between segments."""
    return np.zeros(int(round(SEGMENT_PAUSE_S * sample_rate)), dtype=np.int16)


def resample(pcm: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited polyphase resampling (Kaiser-windowed FIR) of int16 audio; identity when the rates match."""
    if target_rate in (0, source_rate):
        return pcm
    g = math.gcd(source_rate, target_rate)
    return to_pcm16(resample_poly(to_float(pcm), target_rate // g, source_rate // g))


def encode_pcm(pcm: np.ndarray, encoding: int) -> bytes:
    """Raw sample bytes of int16 audio: int16 LE, or float32 LE in [-1, 1] for ``FLOAT32``."""
    if encoding == tts_pb2.FLOAT32:
        return to_float(pcm).astype("<f4", copy=False).tobytes()
    return pcm.astype("<i2", copy=False).tobytes()


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file of int16 audio."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(encode_pcm(pcm, tts_pb2.LINEAR_PCM))
    return buf.getvalue()


def encode_audio(pcm: np.ndarray, sample_rate: int, encoding: int) -> bytes:
    """Whole-utterance bytes of int16 audio in ``encoding`` (WAV includes the header)."""
    if encoding == tts_pb2.WAV:
        return wav_bytes(pcm, sample_rate)
    return encode_pcm(pcm, encoding)


def wav_stream_header(sample_rate: int) -> bytes:
    """A WAV header for a stream of unknown length (size fields set to the maximum, as streaming tools do)."""
    header = bytearray(wav_bytes(np.zeros(0, np.int16), sample_rate))
    header[4:8] = (0xFFFFFFFF).to_bytes(4, "little")
    header[40:44] = (0xFFFFFFFF - 36).to_bytes(4, "little")
    return bytes(header)
