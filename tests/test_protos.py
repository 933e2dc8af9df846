"""The proto contract: generated stubs are fresh and the fixed public names exist."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2, tts_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent

# message -> {field: number}; renaming or renumbering any of these breaks clients.
FIXED_FIELDS = {
    tts_pb2.SynthesizeRequest: {
        "text": 1, "voice": 2, "emotion": 3, "speed": 4, "pitch_semitones": 5, "energy": 6,
        "sample_rate_hz": 7, "encoding": 8, "request_id": 9,
    },
    tts_pb2.SynthesizeResponse: {
        "audio": 1, "sample_rate_hz": 2, "duration_s": 3, "request_id": 4, "timings": 5, "encoding": 6,
        "durations": 7, "dropped_symbols": 8,
    },
    tts_pb2.AudioChunk: {
        "audio": 1, "sample_rate_hz": 2, "index": 3, "last": 4, "request_id": 5, "encoding": 6, "timings": 7,
    },
    tts_pb2.StageTiming: {"stage": 1, "queue_ms": 2, "compute_ms": 3, "batch_size": 4, "replica": 5},
    tts_pb2.ListVoicesRequest: {},
    tts_pb2.ListVoicesResponse: {"voices": 1, "default_voice": 2, "model": 3, "sample_rate_hz": 4},
    tts_pb2.Voice: {"name": 1, "id": 2},
    tts_pb2.PhonemeDuration: {"symbol": 1, "frames": 2},
    stages_pb2.Tensor: {"dtype": 1, "shape": 2, "data": 3},
    stages_pb2.InfoRequest: {},
    stages_pb2.StageInfo: {
        "stage": 1, "model": 2, "sample_rate_hz": 3, "hop_length": 4, "n_mels": 5, "voices": 6,
        "default_voice": 7, "device": 8, "precision": 9, "engine": 10,
    },
    stages_pb2.EncodeRequest: {"text": 1, "emotion": 2, "request_id": 3},
    stages_pb2.EncodeResponse: {"segments": 1, "dropped_symbols": 2, "timing": 3},
    stages_pb2.EncodedSegment: {
        "text": 1, "phonemes": 2, "phoneme_ids": 3, "prompt_embedding": 4, "content_embedding": 5,
    },
    stages_pb2.AcousticRequest: {
        "phoneme_ids": 1, "prompt_embedding": 2, "content_embedding": 3, "speaker": 4, "speed": 5,
        "pitch_semitones": 6, "energy": 7, "request_id": 8,
    },
    stages_pb2.AcousticResponse: {"mel": 1, "durations": 2, "timing": 3},
    stages_pb2.VocodeRequest: {"mel": 1, "request_id": 2},
    stages_pb2.VocodeResponse: {"audio": 1, "timing": 2},
    stages_pb2.VocodeStreamRequest: {"mel": 1, "request_id": 2, "first_chunk_frames": 3, "max_chunk_frames": 4},
    stages_pb2.VocodeChunk: {"audio": 1, "index": 2, "last": 3, "timing": 4},
}

FIXED_METHODS = {
    (tts_pb2, "Synthesizer"): {"Synthesize": (False, False), "SynthesizeStream": (False, True), "ListVoices": (False, False)},
    (stages_pb2, "Encoder"): {"Encode": (False, False), "Info": (False, False)},
    (stages_pb2, "Acoustic"): {"Generate": (False, False), "Info": (False, False)},
    (stages_pb2, "Vocoder"): {"Vocode": (False, False), "VocodeStream": (False, True), "Info": (False, False)},
}


def test_generated_stubs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_protos.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_check_reports_edited_missing_and_orphaned_stubs(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    gen_protos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_protos)
    copy = tmp_path / "emoserve" / "v1"
    shutil.copytree(ROOT / "services" / "emoserve" / "v1", copy)
    (copy / "tts_pb2.py").write_text("# edited\n")
    (copy / "stages_pb2_grpc.py").unlink()
    (copy / "old_pb2.py").write_text("")
    assert sorted(gen_protos.stale_files(tmp_path)) == [
        "emoserve/v1/old_pb2.py (orphan)", "emoserve/v1/stages_pb2_grpc.py", "emoserve/v1/tts_pb2.py",
    ]


@pytest.mark.parametrize("message", list(FIXED_FIELDS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_message_has_exactly_the_fixed_fields(message: type) -> None:
    descriptor = message.DESCRIPTOR
    assert descriptor.full_name.startswith("emoserve.v1.")
    assert {f.name: f.number for f in descriptor.fields} == FIXED_FIELDS[message]


@pytest.mark.parametrize(("module_and_service", "methods"), list(FIXED_METHODS.items()), ids=lambda v: str(v))
def test_service_has_the_fixed_methods(module_and_service: tuple, methods: dict) -> None:
    module, name = module_and_service
    service = module.DESCRIPTOR.services_by_name[name]
    assert service.full_name == f"emoserve.v1.{name}"
    actual = {
        m.name: (m.client_streaming, m.server_streaming) for m in service.methods
    }
    assert actual == methods


def test_enums_have_the_fixed_values() -> None:
    assert dict(tts_pb2.AudioEncoding.items()) == {
        "AUDIO_ENCODING_UNSPECIFIED": 0, "LINEAR_PCM": 1, "FLOAT32": 2, "WAV": 3,
    }
    assert dict(stages_pb2.Tensor.DType.items()) == {
        "DTYPE_UNSPECIFIED": 0, "FLOAT32": 1, "FLOAT16": 2, "BFLOAT16": 3, "INT64": 4, "INT32": 5, "INT16": 6,
    }
    assert stages_pb2.Tensor.DType.DESCRIPTOR.full_name == "emoserve.v1.Tensor.DType"


def test_grpc_stub_and_servicer_classes_exist() -> None:
    for module, name in ((tts_pb2_grpc, "Synthesizer"), (stages_pb2_grpc, "Encoder"),
                         (stages_pb2_grpc, "Acoustic"), (stages_pb2_grpc, "Vocoder")):
        assert hasattr(module, f"{name}Stub")
        assert hasattr(module, f"{name}Servicer")
        assert hasattr(module, f"add_{name}Servicer_to_server")
