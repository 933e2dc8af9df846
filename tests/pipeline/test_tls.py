"""The whole pipeline over TLS: stages require mTLS, the gateway reaches them with its client certificate,
and public clients reach the gateway over TLS (plaintext, untrusting, and certificate-less or wrongly
certified clients are refused)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emoserve.cli import main
from emoserve.client import Client
from emoserve.runtime.config import ClientTlsConfig, StageConfig
from emoserve.runtime.security import channel
from emoserve.runtime.server import StageServer
from emoserve.runtime.stage import start_stage
from emoserve.serve import StageAddresses, build_stage, start_gateway
from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2
from tests.pipeline.conftest import (
    HOST,
    STAGE_KINDS,
    LoopThread,
    stage_config,
    stop_servers,
)
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.timeout(120)


def tls_config(tls: dict[str, str], **overrides: Any) -> StageConfig:
    """A CPU config on loopback whose server uses ``tls``."""
    return stage_config(server={"tls": tls}, **overrides)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_pipeline(loop_thread: LoopThread, tiny_model_path: Path, pki: Pki) -> Iterator[dict[str, StageServer]]:
    """Stages requiring mTLS (client CA = the test CA), a TLS gateway reaching them with its client certificate."""
    server_files = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    stage_tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}

    async def start() -> dict[str, StageServer]:
        servers: dict[str, StageServer] = {}
        try:
            for kind in STAGE_KINDS:
                config = tls_config({**server_files, "client_ca_file": str(pki.ca)})
                servers[kind] = await start_stage(build_stage(kind, str(tiny_model_path), config))
            addresses = StageAddresses(*([f"{HOST}:{servers[k].port}"] for k in STAGE_KINDS))
            servers["gateway"], _ = await start_gateway(tls_config(server_files, stage_tls=stage_tls), addresses)
        except BaseException:
            await stop_servers(list(servers.values()))
            raise
        return servers

    servers = loop_thread.run(start(), timeout=120)
    try:
        yield servers
    finally:
        loop_thread.run(stop_servers([servers["gateway"], *(servers[k] for k in STAGE_KINDS)]), timeout=60)


def address(servers: dict[str, StageServer], name: str) -> str:
    return f"{HOST}:{servers[name].port}"


def test_synthesize_and_stream_over_tls_through_mtls_stages(tls_pipeline: dict[str, StageServer], pki: Pki) -> None:
    with Client(address(tls_pipeline, "gateway"), timeout=60, tls=ClientTlsConfig(ca_file=str(pki.ca))) as client:
        reply = client.synthesize("Hello over TLS.", encoding="WAV", request_id="tls-1")
        assert reply.request_id == "tls-1" and reply.audio[:4] == b"RIFF" and reply.duration_s > 0
        assert {t.stage for t in reply.timings} == set(STAGE_KINDS)
        chunks = list(client.stream("Hello over TLS. Twice."))
        assert chunks[-1].last and sum(len(c.audio) for c in chunks) > 0
        assert len(client.voices().voices) > 0


def test_plaintext_and_untrusting_clients_cannot_reach_the_tls_gateway(
    tls_pipeline: dict[str, StageServer], pki: Pki
) -> None:
    target = address(tls_pipeline, "gateway")
    for tls in (None, ClientTlsConfig(ca_file=str(pki.rogue_ca))):
        with Client(target, timeout=10, tls=tls) as client, pytest.raises(grpc.RpcError) as info:
            client.synthesize("hello")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, tls


@pytest.mark.parametrize("kind", STAGE_KINDS)
def test_stages_refuse_clients_without_a_certificate_of_the_client_ca(
    tls_pipeline: dict[str, StageServer], pki: Pki, kind: str
) -> None:
    target = address(tls_pipeline, kind)
    stub_class = {"encoder": stages_pb2_grpc.EncoderStub, "acoustic": stages_pb2_grpc.AcousticStub,
                  "vocoder": stages_pb2_grpc.VocoderStub}[kind]
    refused = {
        "plaintext": None,
        "no client certificate": ClientTlsConfig(ca_file=str(pki.ca)),
        "certificate of an unrelated CA": ClientTlsConfig(
            ca_file=str(pki.ca), cert_file=str(pki.rogue_client_cert), key_file=str(pki.rogue_client_key)
        ),
    }
    for what, tls in refused.items():
        with channel(target, tls) as ch, pytest.raises(grpc.RpcError) as info:
            stub_class(ch).Info(stages_pb2.InfoRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, what
    good = ClientTlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    with channel(target, good) as ch:
        assert stub_class(ch).Info(stages_pb2.InfoRequest(), timeout=10).stage == kind
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_gateway_with_a_wrong_client_certificate_never_reaches_the_stages(
    tls_pipeline: dict[str, StageServer], loop_thread: LoopThread, pki: Pki
) -> None:
    """A gateway whose certificate the stages do not trust stays NOT_SERVING: its stages refuse it."""
    stage_tls = {"ca_file": str(pki.ca), "cert_file": str(pki.rogue_client_cert), "key_file": str(pki.rogue_client_key)}
    addresses = StageAddresses(*([address(tls_pipeline, k)] for k in STAGE_KINDS))

    async def attempt() -> None:
        await asyncio.wait_for(start_gateway(tls_config({}, stage_tls=stage_tls), addresses), timeout=3)

    with pytest.raises(TimeoutError):
        loop_thread.run(attempt(), timeout=30)


def test_synth_command_with_tls_options(tls_pipeline: dict[str, StageServer], pki: Pki, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tls.wav"
    argv = ["synth", "Hello.", "--target", address(tls_pipeline, "gateway"), "-o", str(out)]
    assert main([*argv, "--tls-ca", str(pki.ca)]) == 0
    assert out.read_bytes()[:4] == b"RIFF"
    assert main(argv) == 1  # plaintext against a TLS gateway
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_mtls_gateway_requires_client_certificates_from_public_clients(
    loop_thread: LoopThread, tls_pipeline: dict[str, StageServer], pki: Pki
) -> None:
    """``server.tls.client_ca_file`` on the gateway: the public API itself is mutual TLS."""
    files = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "client_ca_file": str(pki.ca)}
    stage_tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    addresses = StageAddresses(*([address(tls_pipeline, k)] for k in STAGE_KINDS))
    gateway, _ = loop_thread.run(start_gateway(tls_config(files, stage_tls=stage_tls), addresses))
    try:
        target = f"{HOST}:{gateway.port}"
        with Client(target, timeout=10, tls=ClientTlsConfig(ca_file=str(pki.ca))) as client:
            with pytest.raises(grpc.RpcError) as info:
                client.voices()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        mutual = ClientTlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
        with Client(target, timeout=60, tls=mutual) as client:
            reply = client.synthesize("Mutual.", encoding="FLOAT32")
            assert reply.encoding == tts_pb2.FLOAT32 and len(reply.audio) > 0
    finally:
        loop_thread.run(stop_servers([gateway]))
