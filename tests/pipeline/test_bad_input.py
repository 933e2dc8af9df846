"""Bad input gets a precise status, never a crash or a hang, and the service keeps serving afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from emoserve.acoustic.service import MAX_PHONEMES
from emoserve.client import Client
from emoserve.runtime.tensors import encode
from emoserve.v1 import stages_pb2, tts_pb2
from emoserve.vocoder.service import MAX_FRAMES
from tests.pipeline.conftest import SERVING, Pipeline, health_check, stage_stub

pytestmark = pytest.mark.timeout(60)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
GOOD_TEXT = "hello"


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        result = call()
        if isinstance(result, Iterator):  # a stream: errors arrive while iterating
            list(result)
    return err.value


@pytest.fixture
def gateway(pipeline: Pipeline) -> Iterator[Client]:
    """A client; after the test, the gateway must still answer a good request."""
    with Client(pipeline.target, timeout=30) as client:
        yield client
        assert len(client.synthesize(GOOD_TEXT).audio) > 0
        assert health_check(pipeline.target) == SERVING


def request(text: str = GOOD_TEXT, **fields) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(text=text, **fields)


def check(gateway: Client, req: tts_pb2.SynthesizeRequest, code: grpc.StatusCode, *words: str) -> None:
    """Both RPCs answer ``code`` with a message containing ``words``."""
    for call in (lambda: gateway.stub.Synthesize(req, timeout=30), lambda: gateway.stub.SynthesizeStream(req, timeout=30)):
        err = rpc_error(call)
        assert err.code() == code, err
        for word in words:
            assert word in err.details(), err.details()


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_invalid_argument(gateway: Client, text: str) -> None:
    check(gateway, request(text), INVALID, "text")


def test_text_over_the_limit_is_invalid_argument(gateway: Client) -> None:
    check(gateway, request("a" * 10_001), INVALID, "text", "10001", "10000")


@pytest.mark.parametrize(
    "fields,name",
    [
        ({"speed": 3.0}, "speed"),
        ({"speed": -1.0}, "speed"),
        ({"speed": float("nan")}, "speed"),
        ({"speed": float("inf")}, "speed"),
        ({"pitch_semitones": 13.0}, "pitch_semitones"),
        ({"pitch_semitones": float("nan")}, "pitch_semitones"),
        ({"energy": 0.1}, "energy"),
        ({"energy": float("nan")}, "energy"),
    ],
)
def test_out_of_range_prosody_is_invalid_argument_naming_the_field(gateway: Client, fields: dict, name: str) -> None:
    check(gateway, request(**fields), INVALID, name)


@pytest.mark.parametrize("rate", [100, 7999, 48001, -16000, 47999, 44101])
def test_unsupported_sample_rate_is_invalid_argument(gateway: Client, rate: int) -> None:
    check(gateway, request(sample_rate_hz=rate), INVALID, "sample_rate_hz")


def test_unknown_voice_is_not_found(gateway: Client) -> None:
    check(gateway, request(voice="nobody-speaks-like-this"), grpc.StatusCode.NOT_FOUND, "nobody-speaks-like-this")


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"emotion": "x" * 501}, ("emotion", "501", "500")),
        ({"voice": "v" * 129}, ("voice", "129", "128")),
        ({"request_id": "r" * 129}, ("request_id", "128")),
        ({"request_id": "line\nbreak"}, ("request_id", "printable")),
        ({"request_id": "\x1b[31mred"}, ("request_id", "printable")),
    ],
)
def test_over_long_or_unprintable_fields_are_invalid_argument(gateway: Client, fields: dict, words: tuple) -> None:
    check(gateway, request(**fields), INVALID, *words)


def test_fields_at_their_limits_are_accepted(gateway: Client) -> None:
    reply = gateway.synthesize(GOOD_TEXT, emotion="情" * 500, request_id="r" * 128)
    assert reply.request_id == "r" * 128 and len(reply.audio) > 0


def test_unknown_encoding_is_invalid_argument(gateway: Client) -> None:
    check(gateway, request(encoding=99), INVALID, "encoding")


def test_text_with_nothing_speakable_is_invalid_argument(gateway: Client) -> None:
    check(gateway, request("😀🎉🚀"), INVALID, "text")


# -- the stage boundary: malformed tensors sent straight to the stages --------------------------------------


@pytest.fixture(scope="module")
def segment(pipeline: Pipeline) -> stages_pb2.EncodedSegment:
    with stage_stub(pipeline.address("encoder"), "encoder") as stub:
        return stub.Encode(stages_pb2.EncodeRequest(text=GOOD_TEXT), timeout=30).segments[0]


@pytest.fixture(scope="module")
def dims(pipeline: Pipeline) -> dict[str, int]:
    with stage_stub(pipeline.address("acoustic"), "acoustic") as stub:
        info = stub.Info(stages_pb2.InfoRequest(), timeout=10)
    m = pipeline.services["acoustic"].model_dir.manifest
    return {"n_mels": info.n_mels, "style_dim": m.acoustic.style_dim, "n_vocab": len(m.tokens),
            "n_speakers": len(info.voices)}


def good_acoustic(segment: stages_pb2.EncodedSegment, **fields) -> stages_pb2.AcousticRequest:
    req = stages_pb2.AcousticRequest(
        phoneme_ids=segment.phoneme_ids,
        prompt_embedding=segment.prompt_embedding,
        content_embedding=segment.content_embedding,
    )
    for name, value in fields.items():
        if isinstance(value, stages_pb2.Tensor):
            getattr(req, name).CopyFrom(value)
        else:
            setattr(req, name, value)
    return req


def acoustic_cases(segment: stages_pb2.EncodedSegment, dims: dict[str, int]) -> dict[str, tuple[dict, str]]:
    ids = np.frombuffer(segment.phoneme_ids.data, "<i8")
    style = dims["style_dim"]
    truncated = stages_pb2.Tensor(dtype=stages_pb2.Tensor.INT64, shape=[len(ids)], data=ids.tobytes()[:-3])
    nan_embedding = np.zeros(style, np.float32)
    nan_embedding[3] = np.nan
    return {
        "ids of float dtype": ({"phoneme_ids": encode(ids.astype(np.float32))}, "dtype"),
        "ids of rank 2": ({"phoneme_ids": encode(ids.reshape(1, -1))}, "rank"),
        "ids bytes do not match shape": ({"phoneme_ids": truncated}, "bytes"),
        "unset ids": ({"phoneme_ids": stages_pb2.Tensor()}, "phoneme_ids"),
        "empty ids": ({"phoneme_ids": encode(np.zeros(0, np.int64))}, "phoneme_ids"),
        "too many phonemes": ({"phoneme_ids": encode(np.ones(MAX_PHONEMES + 1, np.int64))}, "phoneme_ids"),
        "id beyond the vocabulary": ({"phoneme_ids": encode(np.array([1, dims["n_vocab"], 1], np.int64))}, "phoneme_ids"),
        "negative id": ({"phoneme_ids": encode(np.array([1, -5, 1], np.int64))}, "phoneme_ids"),
        "wrong embedding size": ({"prompt_embedding": encode(np.zeros(style + 1, np.float32))}, "prompt_embedding"),
        "embedding of rank 2": ({"content_embedding": encode(np.zeros((1, style), np.float32))}, "content_embedding"),
        "NaN in embedding": ({"content_embedding": encode(nan_embedding)}, "content_embedding"),
        "speaker out of range": ({"speaker": dims["n_speakers"]}, "speaker"),
        "negative speaker": ({"speaker": -1}, "speaker"),
        "speed out of range": ({"speed": 5.0}, "speed"),
        "NaN speed": ({"speed": float("nan")}, "speed"),
    }


ACOUSTIC_CASES = [
    "ids of float dtype", "ids of rank 2", "ids bytes do not match shape", "unset ids", "empty ids",
    "too many phonemes", "id beyond the vocabulary", "negative id", "wrong embedding size", "embedding of rank 2",
    "NaN in embedding", "speaker out of range", "negative speaker", "speed out of range", "NaN speed",
]


@pytest.mark.parametrize("case", ACOUSTIC_CASES)
def test_acoustic_stage_rejects_malformed_requests(
    pipeline: Pipeline, segment: stages_pb2.EncodedSegment, dims: dict[str, int], case: str
) -> None:
    fields, word = acoustic_cases(segment, dims)[case]
    inference_before = pipeline.services["acoustic"].batcher.stats().inference_count
    with stage_stub(pipeline.address("acoustic"), "acoustic") as stub:
        err = rpc_error(lambda: stub.Generate(good_acoustic(segment, **fields), timeout=10))
        assert err.code() == INVALID, err
        assert word in err.details(), err.details()
        # Rejected before the batcher: nothing was queued or run.
        assert pipeline.services["acoustic"].batcher.stats().inference_count == inference_before
        # Still healthy and serving.
        assert health_check(pipeline.address("acoustic")) == SERVING
        assert stub.Generate(good_acoustic(segment), timeout=10).mel.shape[1] > 0


def mel_cases(n_mels: int) -> dict[str, tuple[stages_pb2.Tensor, str]]:
    good = np.zeros((n_mels, 10), np.float16)
    nan = good.copy()
    nan[5, 5] = np.nan
    inf = good.astype(np.float32)
    inf[0, 0] = np.inf
    too_long = stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[n_mels, MAX_FRAMES + 1],
                                 data=bytes(2 * n_mels * (MAX_FRAMES + 1)))
    return {
        "int dtype": (encode(good.astype(np.int32)), "dtype"),
        "rank 1": (encode(good.reshape(-1)), "rank"),
        "rank 3": (encode(good[None]), "rank"),
        "bytes do not match shape": (
            stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[n_mels, 10], data=good.tobytes()[:-2]), "bytes"),
        "shape claims more than sent": (
            stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[n_mels, 10_000], data=good.tobytes()), "bytes"),
        "NaN": (encode(nan), "non-finite"),
        "Inf": (encode(inf), "non-finite"),
        "too many frames": (too_long, "dim 1"),
        "zero frames": (encode(np.zeros((n_mels, 0), np.float16)), "dim 1"),
        "wrong number of mel bins": (encode(np.zeros((n_mels + 1, 10), np.float16)), "dim 0"),
        "negative dimension": (stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[n_mels, -10]), "mel"),
        "unset": (stages_pb2.Tensor(), "dtype"),
    }


MEL_CASES = [
    "int dtype", "rank 1", "rank 3", "bytes do not match shape", "shape claims more than sent", "NaN", "Inf",
    "too many frames", "zero frames", "wrong number of mel bins", "negative dimension", "unset",
]


@pytest.mark.parametrize("method", ["Vocode", "VocodeStream"])
@pytest.mark.parametrize("case", MEL_CASES)
def test_vocoder_stage_rejects_malformed_mels(pipeline: Pipeline, dims: dict[str, int], case: str, method: str) -> None:
    mel, word = mel_cases(dims["n_mels"])[case]
    batcher = pipeline.services["vocoder"].batcher
    inference_before = batcher.stats().inference_count
    request_type = stages_pb2.VocodeRequest if method == "Vocode" else stages_pb2.VocodeStreamRequest
    with stage_stub(pipeline.address("vocoder"), "vocoder") as stub:
        err = rpc_error(lambda: getattr(stub, method)(request_type(mel=mel), timeout=10))
        assert err.code() == INVALID, err
        assert word in err.details(), err.details()
        assert batcher.stats().inference_count == inference_before
        assert health_check(pipeline.address("vocoder")) == SERVING
        good = stub.Vocode(stages_pb2.VocodeRequest(mel=encode(np.zeros((dims["n_mels"], 4), np.float16))), timeout=10)
        assert good.audio.shape == [4 * 256]


def test_vocoder_stream_rejects_invalid_chunk_sizes(pipeline: Pipeline, dims: dict[str, int]) -> None:
    mel = encode(np.zeros((dims["n_mels"], 40), np.float16))
    with stage_stub(pipeline.address("vocoder"), "vocoder") as stub:
        req = stages_pb2.VocodeStreamRequest(mel=mel, first_chunk_frames=16, max_chunk_frames=8)
        err = rpc_error(lambda: stub.VocodeStream(req, timeout=10))
        assert err.code() == INVALID, err
        req = stages_pb2.VocodeStreamRequest(mel=mel, first_chunk_frames=-1)
        err = rpc_error(lambda: stub.VocodeStream(req, timeout=10))
        assert err.code() == INVALID, err
        assert health_check(pipeline.address("vocoder")) == SERVING


@pytest.mark.parametrize("text", ["", " ", "a" * 10_001])
def test_encoder_stage_rejects_bad_text(pipeline: Pipeline, text: str) -> None:
    with stage_stub(pipeline.address("encoder"), "encoder") as stub:
        err = rpc_error(lambda: stub.Encode(stages_pb2.EncodeRequest(text=text), timeout=10))
        assert err.code() == INVALID, err
        assert "text" in err.details()
        assert len(stub.Encode(stages_pb2.EncodeRequest(text=GOOD_TEXT), timeout=10).segments) == 1
