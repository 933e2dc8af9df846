"""Property-based fuzzing (hypothesis) of the public API and of every stage API, on the real in-process
pipeline over loopback gRPC with the tiny dummy model.

Every call must end with an expected status — never ``INTERNAL``, ``UNKNOWN`` or a hang — and every server
must still answer health ``SERVING`` and a normal request after each test. Where the API contract decides
the answer (a well-formed stage request, an out-of-range control) the exact outcome is checked too.

Case counts: the default ``ci`` profile runs 2,200 cases (derandomised, about a minute on two cores);
``EMOSERVE_FUZZ_PROFILE=long`` runs five times as many (11,000), randomised, with hypothesis' example
database, for a longer search::

    EMOSERVE_FUZZ_PROFILE=long python -m pytest -q tests/pipeline/test_fuzz.py
"""

from __future__ import annotations

import io
import math
import os
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emoserve.client import Client
from emoserve.gateway.audio import MAX_RESAMPLE_FACTOR, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from emoserve.gateway.service import MAX_NAME_CHARS
from emoserve.model.prosody import PROSODY_RANGES
from emoserve.runtime.tensors import encode
from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2
from emoserve.vocoder.service import MAX_FRAMES
from tests.pipeline.conftest import SERVING, STAGE_KINDS, Pipeline, health_check

PROFILES = {"ci": 1, "long": 5}
"""Hypothesis settings profile (``EMOSERVE_FUZZ_PROFILE``) -> multiplier of every test's case count."""
PROFILE = os.environ.get("EMOSERVE_FUZZ_PROFILE", "ci")
if PROFILE not in PROFILES:
    raise ValueError(f"EMOSERVE_FUZZ_PROFILE={PROFILE!r}: choose one of {sorted(PROFILES)}")
SCALE = PROFILES[PROFILE]
_COMMON: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
settings.register_profile("emoserve-fuzz-ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("emoserve-fuzz-long", **_COMMON)

pytestmark = pytest.mark.timeout(300 * SCALE)

CALL_TIMEOUT_S = 30.0
"""Deadline of each fuzzed call: a call that takes longer is a hang, reported as DEADLINE_EXCEEDED (a failure)."""
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXPECTED = frozenset({OK, INVALID, NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""Every status a fuzzed call may end with; INTERNAL, UNKNOWN, DEADLINE_EXCEEDED... are bugs."""
NOTHING_SPEAKABLE = "nothing that can be spoken"


def fuzz(cases: int) -> Callable:
    """The profile's settings with ``cases`` (times the profile's multiplier) examples."""
    return settings(settings.get_profile(f"emoserve-fuzz-{PROFILE}"), max_examples=cases * SCALE)


def outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, Any]:
    """``(OK, result)`` or ``(code, error)``; a streaming call's result is the list of its messages."""
    try:
        result = call()
        return OK, list(result) if isinstance(result, Iterator) else result
    except grpc.RpcError as exc:
        return exc.code(), exc


def check_expected(code: grpc.StatusCode, result: Any, allowed: frozenset[grpc.StatusCode] = EXPECTED) -> None:
    """``code`` is allowed (statistics: ``pytest --hypothesis-show-statistics`` counts the outcomes)."""
    event(code.name)
    detail = "" if code == OK else result.details()
    assert code in allowed, f"{code.name}: {detail}"


@dataclass(frozen=True)
class Model:
    """What the fuzzers need to know about the served model (read through the public and stage APIs)."""

    voices: tuple[str, ...]
    sample_rate: int
    hop_length: int
    n_mels: int
    style_dim: int
    n_vocab: int


@pytest.fixture(scope="module")
def model(pipeline: Pipeline) -> Model:
    with Client(pipeline.target, timeout=10) as client:
        voices = client.voices()
    manifest = pipeline.services["acoustic"].model_dir.manifest
    return Model(tuple(v.name for v in voices.voices), voices.sample_rate_hz, manifest.audio.hop_length,
                 manifest.audio.n_mels, manifest.acoustic.style_dim, len(manifest.tokens))


@pytest.fixture
def still_healthy(pipeline: Pipeline) -> Iterator[Client]:
    """A client of the gateway; afterwards every server is SERVING and a normal request succeeds."""
    with Client(pipeline.target, timeout=CALL_TIMEOUT_S) as client:
        yield client
        for name in ("gateway", *STAGE_KINDS):
            assert health_check(pipeline.address(name)) == SERVING, name
        assert len(client.synthesize("Still serving. 你好。").audio) > 0


@pytest.fixture
def channels(pipeline: Pipeline) -> Iterator[dict[str, grpc.Channel]]:
    """One blocking channel per server: "gateway" and each stage kind."""
    opened = {name: grpc.insecure_channel(pipeline.address(name)) for name in ("gateway", *STAGE_KINDS)}
    try:
        yield opened
    finally:
        for channel in opened.values():
            channel.close()


# -- the public API ---------------------------------------------------------------------------------------

WORDS = ["hello", "world", "Dr.", "42", "3.14", "你好", "世界", "开心", "¥100", "e-mail", "OK", "naïve", "Ω", "😀",
         "\u200b", "\x00", "\x1b[31m", "\t", "\n", "\r\n", "...", "！", "，", "《》", "'", '"', "--", "\ufeff"]
UNICODE = st.characters(exclude_categories=["Cs"])
"""Any code point but surrogates (which protobuf strings cannot carry): control characters included."""

texts = st.one_of(
    st.text(UNICODE, max_size=24),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(UNICODE, max_size=4)), max_size=6).map("".join),
    st.sampled_from(["", " ", "\n\t ", "\x00", "a" * 10_001, "好" * 10_001]),
)
emotions = st.one_of(
    st.sampled_from(["", "Happy", "开心", "angry and loud", "悲伤", "x" * 501, "情" * 500]),
    st.text(UNICODE, max_size=16),
)


def floats_around(low: float, high: float) -> st.SearchStrategy[float]:
    """0 (the default), values in range, and any float32 at all (NaN, infinities, huge, tiny)."""
    return st.one_of(st.just(0.0), st.floats(low, high, width=32), st.floats(width=32))


def requests(voices: tuple[str, ...]) -> st.SearchStrategy[tts_pb2.SynthesizeRequest]:
    """Half acceptable requests (every field in range, the text short), half anything at all."""
    acceptable = st.builds(
        tts_pb2.SynthesizeRequest,
        text=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
        voice=st.one_of(st.just(""), st.sampled_from(voices)),
        emotion=st.one_of(st.just(""), st.text(UNICODE, max_size=16)),
        **{name: st.one_of(st.just(0.0), st.floats(low, high, width=32)) for name, (low, high) in PROSODY_RANGES.items()},
        sample_rate_hz=st.one_of(st.just(0), st.integers(MIN_SAMPLE_RATE // 1000, MAX_SAMPLE_RATE // 1000).map(
            lambda k: k * 1000), st.sampled_from([11025, 22050, 44100])),
        encoding=st.sampled_from(tts_pb2.AudioEncoding.values()),
        request_id=st.text(st.characters(categories=["L", "M", "N", "P", "S"], include_characters=" "), max_size=16),
    )
    rates = st.one_of(
        st.just(0), st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
        st.integers(MIN_SAMPLE_RATE - 3, MIN_SAMPLE_RATE + 3), st.integers(MAX_SAMPLE_RATE - 3, MAX_SAMPLE_RATE + 3),
        st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE), st.integers(-(2**31), 2**31 - 1),
    )
    anything = st.builds(
        tts_pb2.SynthesizeRequest,
        text=texts,
        voice=st.one_of(st.just(""), st.sampled_from(voices), st.text(UNICODE, max_size=12),
                        st.text(min_size=MAX_NAME_CHARS, max_size=MAX_NAME_CHARS + 2)),
        emotion=emotions,
        speed=floats_around(*PROSODY_RANGES["speed"]),
        pitch_semitones=floats_around(*PROSODY_RANGES["pitch_semitones"]),
        energy=floats_around(*PROSODY_RANGES["energy"]),
        sample_rate_hz=rates,
        encoding=st.one_of(st.sampled_from(tts_pb2.AudioEncoding.values()), st.integers(-(2**31), 2**31 - 1)),
        request_id=st.one_of(st.just(""), st.text(UNICODE, max_size=12),
                             st.text(min_size=MAX_NAME_CHARS - 1, max_size=MAX_NAME_CHARS + 1)),
    )
    return st.one_of(acceptable, anything)


def refusals(request: tts_pb2.SynthesizeRequest, voices: tuple[str, ...], model_rate: int) -> set[grpc.StatusCode]:
    """The statuses the API contract (README) gives this request, empty if it is acceptable."""
    codes = set()
    if (not request.text.strip() or len(request.text) > 10_000 or len(request.emotion) > 500
            or len(request.voice) > MAX_NAME_CHARS or len(request.request_id) > MAX_NAME_CHARS
            or not request.request_id.isprintable()):
        codes.add(INVALID)
    for name, (low, high) in PROSODY_RANGES.items():
        value = getattr(request, name)
        if not (value == 0 or low <= value <= high):
            codes.add(INVALID)
    rate = request.sample_rate_hz
    if rate and not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        codes.add(INVALID)
    elif rate and max(rate, model_rate) // math.gcd(rate, model_rate) > MAX_RESAMPLE_FACTOR:
        codes.add(INVALID)  # a resampling ratio of large integers (e.g. 47,999 Hz from 16 kHz)
    if request.encoding not in tts_pb2.AudioEncoding.values():
        codes.add(INVALID)
    if request.voice and request.voice not in voices:
        codes.add(NOT_FOUND)
    return codes


def check_answer(request: tts_pb2.SynthesizeRequest, model: Model, code: grpc.StatusCode, result: Any) -> None:
    """The status is the contract's; an accepted request's audio has the asked rate, encoding and id."""
    check_expected(code, result)
    expected = refusals(request, model.voices, model.sample_rate)
    if expected:
        assert code in expected, f"expected {sorted(c.name for c in expected)}, got {code.name}: {result}"
        return
    if code != OK:  # acceptable but possibly unspeakable text
        assert code == INVALID and NOTHING_SPEAKABLE in result.details(), result
        return
    messages = result if isinstance(result, list) else [result]
    rate = request.sample_rate_hz or model.sample_rate
    encoding = request.encoding or tts_pb2.LINEAR_PCM
    for message in messages:
        assert message.sample_rate_hz == rate and message.encoding == encoding
        if request.request_id:
            assert message.request_id == request.request_id
    audio = b"".join(m.audio for m in messages)
    if encoding == tts_pb2.WAV:
        assert audio[:4] == b"RIFF"
        if not isinstance(result, list):
            with wave.open(io.BytesIO(audio)) as w:
                assert w.getframerate() == rate and w.getnframes() > 0
    elif encoding == tts_pb2.FLOAT32:
        samples = np.frombuffer(audio, "<f4")
        assert samples.size > 0 and np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
    else:
        assert len(audio) > 0 and len(audio) % 2 == 0
    if isinstance(result, list):
        assert [m.index for m in messages] == list(range(len(messages)))
        assert [m.last for m in messages] == [False] * (len(messages) - 1) + [True]
    else:
        assert math.isclose(result.duration_s, len(_samples(audio, encoding)) / rate, rel_tol=1e-4)


def _samples(audio: bytes, encoding: int) -> np.ndarray:
    if encoding == tts_pb2.WAV:
        with wave.open(io.BytesIO(audio)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return np.frombuffer(audio, "<f4" if encoding == tts_pb2.FLOAT32 else "<i2")


def test_synthesize_answers_every_request_with_the_contract_status(still_healthy: Client, model: Model) -> None:
    ran = 0

    @fuzz(500)
    @given(request=requests(model.voices))
    def run(request: tts_pb2.SynthesizeRequest) -> None:
        nonlocal ran
        ran += 1
        code, result = outcome(lambda: still_healthy.stub.Synthesize(request, timeout=CALL_TIMEOUT_S))
        check_answer(request, model, code, result)

    run()
    assert ran >= 500 * SCALE


def test_synthesize_stream_answers_every_request_with_the_contract_status(
    still_healthy: Client, model: Model
) -> None:
    ran = 0

    @fuzz(250)
    @given(request=requests(model.voices))
    def run(request: tts_pb2.SynthesizeRequest) -> None:
        nonlocal ran
        ran += 1
        code, result = outcome(lambda: still_healthy.stub.SynthesizeStream(request, timeout=CALL_TIMEOUT_S))
        check_answer(request, model, code, result)

    run()
    assert ran >= 250 * SCALE


def test_list_voices_with_arbitrary_metadata(still_healthy: Client, model: Model) -> None:
    ran = 0
    keys = st.from_regex(r"[a-z0-9][a-z0-9_.\-]{0,15}", fullmatch=True).filter(
        lambda k: not k.startswith("grpc-") and not k.endswith("-bin") and k not in {"te", "content-type", "user-agent"}
    )
    values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)

    @fuzz(100)
    @given(metadata=st.lists(st.tuples(keys, values), max_size=6))
    def run(metadata: list[tuple[str, str]]) -> None:
        nonlocal ran
        ran += 1
        code, result = outcome(lambda: still_healthy.stub.ListVoices(
            tts_pb2.ListVoicesRequest(), timeout=CALL_TIMEOUT_S, metadata=metadata))
        check_expected(code, result, frozenset({OK}))
        assert tuple(v.name for v in result.voices) == model.voices and result.sample_rate_hz == model.sample_rate

    run()
    assert ran >= 100 * SCALE


PUBLIC_METHODS = {"Synthesize": False, "SynthesizeStream": True, "ListVoices": False}
"""Public method -> whether it streams its answer."""
STAGE_METHODS = {"Encoder": {"Encode": False}, "Acoustic": {"Generate": False},
                 "Vocoder": {"Vocode": False, "VocodeStream": True}}


def test_arbitrary_bytes_as_requests_to_every_method(still_healthy: Client, channels: dict[str, grpc.Channel]) -> None:
    """Garbage on the wire (bad UTF-8, corrupt fields) is INVALID_ARGUMENT, never UNKNOWN or INTERNAL."""
    ran = 0
    methods = [("gateway", f"/emoserve.v1.Synthesizer/{m}", s) for m, s in PUBLIC_METHODS.items()]
    methods += [(kind.lower(), f"/emoserve.v1.{kind}/{m}", s) for kind, ms in STAGE_METHODS.items() for m, s in ms.items()]

    @fuzz(300)
    @given(target=st.sampled_from(methods), data=st.one_of(st.binary(max_size=48), _prefixed_garbage()))
    def run(target: tuple[str, str, bool], data: bytes) -> None:
        nonlocal ran
        ran += 1
        server, method, streaming = target
        channel = channels[server]
        rpc = channel.unary_stream(method) if streaming else channel.unary_unary(method)
        code, result = outcome(lambda: rpc(data, timeout=CALL_TIMEOUT_S))
        check_expected(code, result)

    run()
    assert ran >= 300 * SCALE


def _prefixed_garbage() -> st.SearchStrategy[bytes]:
    """A valid field 1 (text / tensor) followed by random bytes: reaches deeper into the parser."""
    return st.builds(lambda body, tail: b"\x0a" + bytes([len(body)]) + body + tail,
                     st.binary(max_size=40), st.binary(max_size=16))


# -- the stage APIs ---------------------------------------------------------------------------------------

DTYPE_ENUMS = stages_pb2.Tensor.DType.values()
FLOAT_WIRE = ("float32", "float16", "bfloat16")


def garbage_tensors() -> st.SearchStrategy[stages_pb2.Tensor]:
    """Tensors that are usually wrong: any dtype enum, any shape (negative, huge, deep), bytes that rarely fit,
    and well-formed arrays of the wrong dtype or shape, with NaN and infinities."""
    raw = st.builds(
        stages_pb2.Tensor,
        dtype=st.one_of(st.sampled_from(DTYPE_ENUMS), st.integers(-(2**31), 2**31 - 1)),
        shape=st.lists(st.one_of(st.integers(-3, 100), st.integers(-(2**63), 2**63 - 1)), max_size=12),
        data=st.binary(max_size=256),
    )
    claims_more = st.builds(
        lambda dtype, shape: stages_pb2.Tensor(dtype=dtype, shape=shape, data=b"\0" * 16),
        st.sampled_from(DTYPE_ENUMS), st.lists(st.integers(0, 2**40), min_size=1, max_size=3),
    )
    arrays = st.builds(
        _encode_quietly,
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
                   elements=st.floats(width=32)),
        st.sampled_from(["float32", "float16", "bfloat16", "int32", "int64"]),
    )
    return st.one_of(raw, claims_more, arrays, st.just(stages_pb2.Tensor()))


def _encode_quietly(array: np.ndarray, dtype: str) -> stages_pb2.Tensor:
    """``encode`` without numpy's warning for NaN/inf cast to an integer dtype (garbage is the point)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return encode(array, dtype)


def float_tensor(shape: tuple[int, ...], low: float, high: float) -> st.SearchStrategy[stages_pb2.Tensor]:
    """A well-formed finite float tensor of ``shape`` in a float wire dtype."""
    return st.builds(
        lambda array, dtype: encode(array, dtype),
        hnp.arrays(np.float32, shape, elements=st.floats(low, high, width=32)),
        st.sampled_from(FLOAT_WIRE),
    )


def test_encoder_encode_with_arbitrary_text(channels: dict[str, grpc.Channel], still_healthy: Client,
                                            model: Model) -> None:
    ran = 0
    stub = stages_pb2_grpc.EncoderStub(channels["encoder"])

    @fuzz(250)
    @given(request=st.builds(stages_pb2.EncodeRequest, text=texts, emotion=emotions,
                             request_id=st.text(UNICODE, max_size=12)))
    def run(request: stages_pb2.EncodeRequest) -> None:
        nonlocal ran
        ran += 1
        code, result = outcome(lambda: stub.Encode(request, timeout=CALL_TIMEOUT_S))
        check_expected(code, result, frozenset({OK, INVALID}))
        if not request.text.strip() or len(request.text) > 10_000:
            assert code == INVALID, result
        if code != OK:
            return
        assert len(result.segments) >= 1
        for segment in result.segments:
            ids = np.frombuffer(segment.phoneme_ids.data, "<i8")
            assert list(segment.phoneme_ids.shape) == [ids.size] and ids.size > 0
            assert ids.min() >= 0 and ids.max() < model.n_vocab
            for embedding in (segment.prompt_embedding, segment.content_embedding):
                assert list(embedding.shape) == [model.style_dim]
                assert np.isfinite(np.frombuffer(embedding.data, "<f4")).all()

    run()
    assert ran >= 250 * SCALE


@st.composite
def acoustic_requests(draw: st.DrawFn, model: Model) -> tuple[stages_pb2.AcousticRequest, bool]:
    """``(request, well_formed)``: a valid request, or one with a field replaced by garbage."""
    length = draw(st.integers(1, 40))
    ids = draw(hnp.arrays(draw(st.sampled_from([np.int64, np.int32])), (length,),
                          elements=st.integers(0, model.n_vocab - 1)))
    fields: dict[str, Any] = {
        "phoneme_ids": encode(ids),
        "prompt_embedding": draw(float_tensor((model.style_dim,), -4, 4)),
        "content_embedding": draw(float_tensor((model.style_dim,), -4, 4)),
        "speaker": draw(st.integers(0, len(model.voices) - 1)),
        **{name: draw(st.one_of(st.just(0.0), st.floats(low, high, width=32)))
           for name, (low, high) in PROSODY_RANGES.items()},
        "request_id": draw(st.text(UNICODE, max_size=8)),
    }
    corrupt = draw(st.sets(st.sampled_from(["phoneme_ids", "prompt_embedding", "content_embedding", "speaker",
                                            "speed", "pitch_semitones", "energy", "ids_values"]), max_size=3))
    for name in corrupt:
        if name in ("phoneme_ids", "prompt_embedding", "content_embedding"):
            fields[name] = draw(garbage_tensors())
        elif name == "speaker":
            fields[name] = draw(st.integers(-(2**31), 2**31 - 1))
        elif name == "ids_values":
            fields["phoneme_ids"] = encode(draw(hnp.arrays(np.int64, (length,), elements=st.integers(-(2**63), 2**63 - 1))))
        else:
            fields[name] = draw(st.floats(width=32))
    return stages_pb2.AcousticRequest(**fields), not corrupt


def test_acoustic_generate_with_garbage_tensors(channels: dict[str, grpc.Channel], still_healthy: Client,
                                               model: Model) -> None:
    ran = 0
    stub = stages_pb2_grpc.AcousticStub(channels["acoustic"])

    @fuzz(400)
    @given(case=acoustic_requests(model))
    def run(case: tuple[stages_pb2.AcousticRequest, bool]) -> None:
        nonlocal ran
        ran += 1
        request, well_formed = case
        code, result = outcome(lambda: stub.Generate(request, timeout=CALL_TIMEOUT_S))
        check_expected(code, result, frozenset({OK}) if well_formed else frozenset({OK, INVALID}))
        if code == OK:
            frames = np.frombuffer(result.durations.data, "<i4")
            assert list(result.durations.shape) == list(request.phoneme_ids.shape) and (frames >= 0).all()
            assert list(result.mel.shape) == [model.n_mels, int(frames.sum())]

    run()
    assert ran >= 400 * SCALE


@st.composite
def vocoder_requests(draw: st.DrawFn, model: Model) -> tuple[stages_pb2.Tensor, int, int, bool]:
    """``(mel, first_chunk_frames, max_chunk_frames, well_formed)``."""
    frames = draw(st.integers(1, 48))
    if draw(st.booleans()):
        return draw(float_tensor((model.n_mels, frames), -12, 4)), 0, 0, True
    mel = draw(st.one_of(
        garbage_tensors(),
        float_tensor((model.n_mels, frames), -12, 4),
        st.builds(lambda n: stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[model.n_mels, n],
                                              data=bytes(2 * model.n_mels * min(n, 64))),
                  st.sampled_from([0, MAX_FRAMES + 1, 2**31, 2**62])),
        st.builds(lambda bad: encode(np.full((model.n_mels, frames), bad, np.float32), "float32"),
                  st.sampled_from([np.nan, np.inf, -np.inf])),
    ))
    chunking = st.one_of(st.just(0), st.integers(-3, 70), st.integers(-(2**31), 2**31 - 1))
    return mel, draw(chunking), draw(chunking), False


def test_vocoder_vocode_and_stream_with_garbage_mels(channels: dict[str, grpc.Channel], still_healthy: Client,
                                                    model: Model) -> None:
    ran = 0
    stub = stages_pb2_grpc.VocoderStub(channels["vocoder"])

    @fuzz(400)
    @given(case=vocoder_requests(model), streamed=st.booleans())
    def run(case: tuple[stages_pb2.Tensor, int, int, bool], streamed: bool) -> None:
        nonlocal ran
        ran += 1
        mel, first, most, well_formed = case
        if streamed:
            request = stages_pb2.VocodeStreamRequest(mel=mel, first_chunk_frames=first, max_chunk_frames=most)
            code, result = outcome(lambda: stub.VocodeStream(request, timeout=CALL_TIMEOUT_S))
        else:
            code, result = outcome(lambda: stub.Vocode(stages_pb2.VocodeRequest(mel=mel), timeout=CALL_TIMEOUT_S))
        check_expected(code, result, frozenset({OK}) if well_formed else frozenset({OK, INVALID}))
        if code == OK:
            pieces = [c.audio for c in result] if streamed else [result.audio]
            samples = sum(int(np.prod(p.shape)) for p in pieces)
            assert samples == mel.shape[1] * model.hop_length

    run()
    assert ran >= 400 * SCALE
