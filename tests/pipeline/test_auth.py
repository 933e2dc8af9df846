"""Bearer tokens on the gateway: the public API needs one, health and reflection do not, the stages are
unaffected, and the command-line client sends one from ``--token-file`` or ``$EMOSERVE_TOKEN``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from emoserve.cli import main
from emoserve.client import Client
from emoserve.runtime.server import StageServer
from emoserve.v1 import stages_pb2, tts_pb2
from tests.pipeline.conftest import (
    HOST,
    SERVING,
    STAGE_KINDS,
    Pipeline,
    health_check,
    stage_stub,
    start_gateway_for,
)

pytestmark = pytest.mark.timeout(60)

TOKENS = ("ops-7c1f0a9d2b", "batch-3e8d5f6a4c")
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# gateway tokens\n{TOKENS[0]}\n\n{TOKENS[1]}\n")
    return path


@pytest.fixture(scope="module")
def gateway(pipeline: Pipeline, token_file: Path) -> Iterator[str]:
    """A second gateway over the shared stages that requires a token from ``token_file``; yields its address."""
    server, _ = pipeline.run(
        start_gateway_for(*(pipeline.address(k) for k in STAGE_KINDS), auth={"token_file": str(token_file)})
    )
    try:
        yield f"{HOST}:{server.port}"
    finally:
        pipeline.run(server.stop(0.5))


def calls(client: Client) -> dict:
    return {
        "Synthesize": lambda: client.synthesize("hello"),
        "SynthesizeStream": lambda: list(client.stream("hello")),
        "ListVoices": client.voices,
    }


@pytest.mark.parametrize("method", ["Synthesize", "SynthesizeStream", "ListVoices"])
@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKENS[0] + "x"])
def test_public_api_without_a_valid_token_is_unauthenticated(gateway: str, method: str, token: str | None) -> None:
    with Client(gateway, timeout=10, token=token) as client, pytest.raises(grpc.RpcError) as info:
        calls(client)[method]()
    assert info.value.code() == UNAUTHENTICATED, info.value


@pytest.mark.parametrize("token", TOKENS)
def test_every_listed_token_is_accepted(gateway: str, token: str) -> None:
    with Client(gateway, timeout=60, token=token) as client:
        reply = client.synthesize("Hello with a token.", request_id="auth-1")
        assert reply.request_id == "auth-1" and len(reply.audio) > 0
        chunks = list(client.stream("Hello with a token."))
        assert chunks[-1].last
        assert len(client.voices().voices) > 0


def test_health_and_reflection_need_no_token(gateway: str) -> None:
    assert health_check(gateway) == SERVING
    assert health_check(gateway, "emoserve.v1.Synthesizer") == SERVING
    with grpc.insecure_channel(gateway) as channel:
        assert "emoserve.v1.Synthesizer" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_stages_and_the_open_gateway_are_unaffected(pipeline: Pipeline, gateway: str) -> None:
    with stage_stub(pipeline.address("encoder"), "encoder") as stub:
        assert len(stub.Encode(stages_pb2.EncodeRequest(text="hello"), timeout=10).segments) == 1
    with Client(pipeline.target, timeout=60) as client:
        assert client.synthesize("hello", encoding="WAV").encoding == tts_pb2.WAV


def test_synth_command_sends_the_token(gateway: str, token_file: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.wav"
    argv = ["synth", "Hello.", "--target", gateway, "-o", str(out)]
    monkeypatch.delenv("EMOSERVE_TOKEN", raising=False)
    assert main(argv) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main([*argv, "--token-file", str(token_file)]) == 0
    assert out.read_bytes()[:4] == b"RIFF"
    monkeypatch.setenv("EMOSERVE_TOKEN", TOKENS[1])
    assert main(["voices", "--target", gateway]) == 0
    assert main([*argv, "--token-file", str(tmp_path / "absent")]) == 2
    assert "cannot read token file" in capsys.readouterr().err


def test_gateway_reads_tokens_from_its_environment_variable(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOSERVE_TOKENS", "env-token-1,env-token-2")
    server: StageServer
    server, _ = pipeline.run(start_gateway_for(*(pipeline.address(k) for k in STAGE_KINDS)))
    try:
        target = f"{HOST}:{server.port}"
        with Client(target, timeout=10) as client, pytest.raises(grpc.RpcError) as info:
            client.voices()
        assert info.value.code() == UNAUTHENTICATED
        with Client(target, timeout=10, token="env-token-2") as client:
            assert len(client.voices().voices) > 0
    finally:
        pipeline.run(server.stop(0.5))
