"""TLS, mutual TLS and bearer tokens on a real loopback StageServer (toy servicers, no model), the
security config, and an audit of the sources for unsafe deserialisation."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from emoserve.runtime import security
from emoserve.runtime.config import (
    AuthConfig,
    ClientTlsConfig,
    ServerConfig,
    TlsConfig,
    load_config,
)
from emoserve.runtime.errors import ConfigError
from emoserve.runtime.security import (
    BearerTokenInterceptor,
    aio_channel,
    bearer_metadata,
)
from emoserve.runtime.server import StageServer
from emoserve.v1 import stages_pb2, stages_pb2_grpc
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.timeout(30)

SERVICES = Path(__file__).resolve().parents[2] / "services"
TOKENS = ("first-token-0123456789", "second-token-abcdefghij")
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Toy(stages_pb2_grpc.EncoderServicer, stages_pb2_grpc.VocoderServicer):
    """Encode echoes the text; VocodeStream yields three chunks; counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def Encode(self, request: stages_pb2.EncodeRequest, context: Any) -> stages_pb2.EncodeResponse:
        self.calls += 1
        return stages_pb2.EncodeResponse(segments=[stages_pb2.EncodedSegment(text=request.text)])

    async def VocodeStream(self, request: stages_pb2.VocodeStreamRequest, context: Any) -> AsyncIterator:
        self.calls += 1
        for i in range(3):
            yield stages_pb2.VocodeChunk(index=i, last=i == 2)


class WritingToy(Toy):
    """VocodeStream as a coroutine that sends with ``context.write`` instead of an async generator."""

    async def VocodeStream(self, request: stages_pb2.VocodeStreamRequest, context: Any) -> None:  # type: ignore[override]
        self.calls += 1
        for i in range(3):
            await context.write(stages_pb2.VocodeChunk(index=i, last=i == 2))


def toy_server(toy: Toy, tls: TlsConfig | None = None, tokens: tuple[str, ...] = ()) -> StageServer:
    server = StageServer(ServerConfig(host="127.0.0.1", port=0, tls=tls or TlsConfig()), name="toy")
    for name, add in (("Encoder", stages_pb2_grpc.add_EncoderServicer_to_server),
                      ("Vocoder", stages_pb2_grpc.add_VocoderServicer_to_server)):
        server.add_service(stages_pb2.DESCRIPTOR.services_by_name[name], toy, add)
    if tokens:
        server.add_interceptor(BearerTokenInterceptor(tokens))
    return server


@contextlib.asynccontextmanager
async def serving(server: StageServer) -> AsyncIterator[int]:
    port = await server.start()
    await server.mark_ready()
    try:
        yield port
    finally:
        await server.stop(0)


async def encode(channel: grpc.aio.Channel, text: str = "hi", **kwargs: Any) -> str:
    reply = await stages_pb2_grpc.EncoderStub(channel).Encode(stages_pb2.EncodeRequest(text=text), timeout=5, **kwargs)
    return reply.segments[0].text


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# -- TLS and mTLS -------------------------------------------------------------------------------------------


def test_tls_round_trip_and_plaintext_or_untrusting_clients_are_refused(pki: Pki) -> None:
    async def body() -> None:
        tls = TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key))
        async with serving(toy_server(Toy(), tls)) as port:
            target = f"127.0.0.1:{port}"
            async with aio_channel(target, ClientTlsConfig(ca_file=str(pki.ca))) as channel:
                assert await encode(channel, "over tls") == "over tls"
            async with grpc.aio.insecure_channel(target) as channel:
                assert (await refused(encode(channel))).code() == grpc.StatusCode.UNAVAILABLE
            async with aio_channel(target, ClientTlsConfig(ca_file=str(pki.rogue_ca))) as channel:
                assert (await refused(encode(channel))).code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(body())


def test_server_name_override_is_checked_against_the_certificate(pki: Pki) -> None:
    async def body() -> None:
        tls = TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key))
        async with serving(toy_server(Toy(), tls)) as port:
            target = f"127.0.0.1:{port}"
            good = ClientTlsConfig(ca_file=str(pki.ca), server_name="emoserve-stage")
            async with aio_channel(target, good) as channel:
                assert await encode(channel) == "hi"
            wrong = ClientTlsConfig(ca_file=str(pki.ca), server_name="somebody-else")
            async with aio_channel(target, wrong) as channel:
                assert (await refused(encode(channel))).code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(body())


def test_mtls_requires_a_client_certificate_signed_by_the_client_ca(pki: Pki) -> None:
    async def body() -> None:
        toy = Toy()
        tls = TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca))
        async with serving(toy_server(toy, tls)) as port:
            target = f"127.0.0.1:{port}"
            clients = {
                "no client certificate": ClientTlsConfig(ca_file=str(pki.ca)),
                "certificate of another CA": ClientTlsConfig(
                    ca_file=str(pki.ca), cert_file=str(pki.rogue_client_cert), key_file=str(pki.rogue_client_key)
                ),
            }
            for what, client in clients.items():
                async with aio_channel(target, client) as channel:
                    err = await refused(encode(channel))
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, what
                    # Refused in the handshake: health is not reachable either.
                    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                    assert (await refused(health)).code() == grpc.StatusCode.UNAVAILABLE, what
            assert toy.calls == 0
            good = ClientTlsConfig(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
            async with aio_channel(target, good) as channel:
                assert await encode(channel, "mutual") == "mutual"
            assert toy.calls == 1

    asyncio.run(body())


def test_blocking_channel_speaks_tls_too(pki: Pki) -> None:
    async def body() -> None:
        tls = TlsConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key))
        async with serving(toy_server(Toy(), tls)) as port:

            def call() -> str:
                with security.channel(f"localhost:{port}", ClientTlsConfig(ca_file=str(pki.ca))) as channel:
                    request = stages_pb2.EncodeRequest(text="blocking")
                    return stages_pb2_grpc.EncoderStub(channel).Encode(request, timeout=5).segments[0].text

            assert await asyncio.to_thread(call) == "blocking"

    asyncio.run(body())


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"cert_file": "missing.crt", "key_file": "server.key"}, "cannot read server.tls cert_file"),
        ({"cert_file": "server.crt", "key_file": "client.key"}, "matching private key"),
        ({"cert_file": "server.crt", "key_file": "server.key", "client_ca_file": "garbage.pem"}, "no PEM certificate"),
    ],
)
def test_bad_server_tls_files_fail_at_start_naming_the_file(pki: Pki, files: dict[str, str], message: str) -> None:
    (pki.ca.parent / "garbage.pem").write_text("not a certificate\n")
    tls = TlsConfig(**{key: str(pki.ca.parent / name) for key, name in files.items()})

    async def body() -> None:
        server = toy_server(Toy(), tls)
        with pytest.raises(ConfigError, match=message) as info:
            await server.start()
        assert str(pki.ca.parent) in str(info.value)

    asyncio.run(body())


def test_client_tls_with_unreadable_ca_fails_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read client TLS CA file .*nowhere.pem"):
        aio_channel("127.0.0.1:1", ClientTlsConfig(ca_file=str(tmp_path / "nowhere.pem")))


# -- bearer tokens ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "missing credentials"),
        ((("authorization", "Bearer not-a-valid-token"),), "invalid bearer token"),
        ((("authorization", f"Bearer {TOKENS[0]}x"),), "invalid bearer token"),
        ((("authorization", f"Bearer {TOKENS[0][:-1]}"),), "invalid bearer token"),
        ((("authorization", f"Basic {TOKENS[0]}"),), "malformed"),
        ((("authorization", "Bearer"),), "malformed"),
        ((("authorization", TOKENS[0]),), "malformed"),
        ((("authorization", f"Bearer {TOKENS[0]}"), ("authorization", "Bearer x")), "more than one"),
        ((("x-api-key", TOKENS[0]),), "missing credentials"),
    ],
)
def test_calls_without_a_valid_bearer_token_are_unauthenticated(metadata: tuple, reason: str) -> None:
    async def body() -> None:
        toy = Toy()
        async with (
            serving(toy_server(toy, tokens=TOKENS)) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            err = await refused(encode(channel, metadata=metadata))
            assert err.code() == UNAUTHENTICATED and reason in err.details(), err
            stream = stages_pb2_grpc.VocoderStub(channel).VocodeStream(
                stages_pb2.VocodeStreamRequest(), timeout=5, metadata=metadata
            )
            err = await refused(_drain(stream))
            assert err.code() == UNAUTHENTICATED and reason in err.details(), err
        assert toy.calls == 0  # refused before the servicer

    asyncio.run(body())


async def _drain(stream: Any) -> list:
    return [message async for message in stream]


@pytest.mark.parametrize("value", [f"Bearer {TOKENS[0]}", f"bearer {TOKENS[1]}", f"BEARER   {TOKENS[1]}  "])
def test_any_configured_token_is_accepted_on_unary_and_streaming_calls(value: str) -> None:
    async def body() -> None:
        toy = Toy()
        async with (
            serving(toy_server(toy, tokens=TOKENS)) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            metadata = (("authorization", value),)
            assert await encode(channel, "welcome", metadata=metadata) == "welcome"
            stream = stages_pb2_grpc.VocoderStub(channel).VocodeStream(
                stages_pb2.VocodeStreamRequest(), timeout=5, metadata=metadata
            )
            assert [c.index for c in await _drain(stream)] == [0, 1, 2]
        assert toy.calls == 2

    asyncio.run(body())


def test_health_reflection_and_unknown_methods_need_no_token() -> None:
    async def body() -> None:
        async with (
            serving(toy_server(Toy(), tokens=TOKENS)) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            requests = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests, timeout=5)
            names = {s.name async for reply in replies for s in reply.list_services_response.service}
            assert "emoserve.v1.Encoder" in names
            unknown = channel.unary_unary("/emoserve.v1.Encoder/Nope")(b"", timeout=5)
            assert (await refused(unknown)).code() == grpc.StatusCode.UNIMPLEMENTED

    asyncio.run(body())


def test_token_check_compares_against_every_token_without_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    interceptor = BearerTokenInterceptor([*TOKENS, "third-token"])
    for presented in (TOKENS[0], TOKENS[1], "wrong"):
        calls.clear()
        interceptor.refusal([bearer_metadata(presented)])
        assert len(calls) == 3, presented


def test_interceptor_needs_a_token() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        BearerTokenInterceptor([])


# -- malformed requests -----------------------------------------------------------------------------------

MALFORMED = [b"\x0a\x02\xff\xfe", b"\xff\xff\xff", b"\x0a\x05ab", b"\x08"]
"""Bytes that do not parse: bad UTF-8 in a string field, corrupt wire format, truncated fields."""


@pytest.mark.parametrize("toy_class", [Toy, WritingToy])
def test_unparsable_requests_are_invalid_argument_and_parsable_ones_still_served(toy_class: type[Toy]) -> None:
    async def body() -> None:
        toy = toy_class()
        async with serving(toy_server(toy)) as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            encode_raw = channel.unary_unary("/emoserve.v1.Encoder/Encode")
            stream_raw = channel.unary_stream("/emoserve.v1.Vocoder/VocodeStream")
            for raw in MALFORMED:
                for call in (encode_raw(raw, timeout=5), _drain(stream_raw(raw, timeout=5))):
                    err = await refused(call)
                    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed request" in err.details()
            assert toy.calls == 0
            good = stages_pb2.EncodeRequest(text="parsed").SerializeToString()
            assert stages_pb2.EncodeResponse.FromString(await encode_raw(good, timeout=5)).segments[0].text == "parsed"
            chunks = await _drain(stream_raw(stages_pb2.VocodeStreamRequest().SerializeToString(), timeout=5))
            assert [stages_pb2.VocodeChunk.FromString(c).index for c in chunks] == [0, 1, 2]

    asyncio.run(body())


def test_unauthenticated_malformed_requests_are_refused_unparsed() -> None:
    async def body() -> None:
        async with (
            serving(toy_server(Toy(), tokens=TOKENS)) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            err = await refused(channel.unary_unary("/emoserve.v1.Encoder/Encode")(MALFORMED[0], timeout=5))
            assert err.code() == UNAUTHENTICATED

    asyncio.run(body())


# -- token files and variables ------------------------------------------------------------------------------


def test_token_file_ignores_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# operators\n\n  alpha-token  \n#beta-token\nbeta\t\n\n")
    assert security.load_tokens(AuthConfig(token_file=str(path), token_env=""), environ={}) == ["alpha-token", "beta"]


def test_tokens_come_from_the_file_and_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("from-file\n")
    auth = AuthConfig(token_file=str(path), token_env="GATEWAY_TOKENS")
    env = {"GATEWAY_TOKENS": "one, two\nthree", "EMOSERVE_TOKENS": "ignored"}
    assert security.load_tokens(auth, environ=env) == ["from-file", "one", "two", "three"]
    assert security.load_tokens(AuthConfig(), environ={"EMOSERVE_TOKENS": "env-token"}) == ["env-token"]
    assert security.load_tokens(AuthConfig(), environ={}) == []  # authentication off


@pytest.mark.parametrize(
    ("content", "message"),
    [("# only a comment\n\n", "holds no token"), ("good\nhas space\n", r"tokens:2: .*without spaces"),
     ("good\ntöken\n", r"tokens:2: .*printable ASCII")],
)
def test_malformed_token_files_are_refused_naming_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        security.load_tokens(AuthConfig(token_file=str(path)), environ={})
    assert "has space" not in str(info.value) and "töken" not in str(info.value)  # never echoes a token


def test_unreadable_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read auth.token_file"):
        security.load_tokens(AuthConfig(token_file=str(tmp_path / "absent")), environ={})


def test_client_token_from_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("# mine\nclient-token\n")
    assert security.client_token(str(path), environ={"EMOSERVE_TOKEN": "env"}) == "client-token"
    assert security.client_token("", environ={"EMOSERVE_TOKEN": " env-token\n"}) == "env-token"
    assert security.client_token("", environ={}) is None


# -- config ------------------------------------------------------------------------------------------------


def test_tls_and_auth_config_from_yaml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "server:\n  tls:\n    cert_file: /tls/tls.crt\n    key_file: /tls/tls.key\n"
        "stage_tls:\n  ca_file: /tls/ca.crt\n  server_name: emoserve-stage\n"
        "auth:\n  token_file: /secrets/tokens\n"
    )
    env = {"EMOSERVE_SERVER__TLS__CLIENT_CA_FILE": "/tls/ca.crt", "EMOSERVE_TOKENS": "t", "EMOSERVE_TOKEN": "t",
           "EMOSERVE_STAGE_TLS__CERT_FILE": "/tls/client.crt", "EMOSERVE_STAGE_TLS__KEY_FILE": "/tls/client.key"}
    cfg = load_config(path, environ=env)
    assert cfg.server.tls == TlsConfig("/tls/tls.crt", "/tls/tls.key", "/tls/ca.crt")
    assert cfg.stage_tls == ClientTlsConfig("/tls/ca.crt", "/tls/client.crt", "/tls/client.key", "emoserve-stage")
    assert cfg.auth == AuthConfig(token_file="/secrets/tokens")
    assert load_config(environ={}).server.tls.enabled is False and not load_config(environ={}).stage_tls.enabled


def test_readme_security_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (SERVICES.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("## Security\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "security.yaml"
    path.write_text(example, encoding="utf-8")
    cfg = load_config(path, environ={})
    assert cfg.server.tls.enabled and cfg.server.tls.client_ca_file and cfg.stage_tls.enabled
    assert cfg.stage_tls.cert_file and cfg.auth.token_file and cfg.auth.token_env == "EMOSERVE_TOKENS"


@pytest.mark.parametrize("name", ["EMOSERVE_SERVER__TLS", "EMOSERVE_SERVER__TLS__CERT", "EMOSERVE_SERVER__PORT__X"])
def test_unknown_nested_environment_variables_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown environment variable '{name}'"):
        load_config(environ={name: "x"})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TlsConfig(cert_file="a.crt"), "TlsConfig.key_file must be set exactly when cert_file is set"),
        (lambda: TlsConfig(key_file="a.key"), "TlsConfig.key_file must be set exactly when cert_file is set"),
        (lambda: TlsConfig(client_ca_file="ca.crt"), "TlsConfig.client_ca_file must be empty unless cert_file"),
        (lambda: ClientTlsConfig(cert_file="c.crt", key_file="c.key"), "cert_file must be empty unless ca_file"),
        (lambda: ClientTlsConfig(ca_file="ca", cert_file="c.crt"), "key_file must be set exactly when cert_file"),
        (lambda: ClientTlsConfig(server_name="x"), "server_name must be empty unless ca_file"),
        (lambda: AuthConfig(token_env="EMOSERVE_DEVICE"), "AuthConfig.token_env must be 'EMOSERVE_TOKENS' or"),
    ],
)
def test_inconsistent_security_config_is_rejected(build: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()


# -- audit ------------------------------------------------------------------------------------------------

UNSAFE = {
    "pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib|shelve)\b|\bpickle\.loads?\b", re.MULTILINE),
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"),
    "np.load with allow_pickle=True": re.compile(r"\bnp\.load\([^)]*allow_pickle\s*=\s*True"),
    "yaml.load (not safe_load)": re.compile(r"\byaml\.(load|unsafe_load|full_load)\("),
    "eval/exec": re.compile(r"(?<![\w.])(eval|exec)\("),
}


def python_sources() -> Iterator[Path]:
    return (p for p in SERVICES.rglob("*.py") if "/v1/" not in p.as_posix())


@pytest.mark.parametrize("what", sorted(UNSAFE))
def test_services_never_deserialise_unsafely(what: str) -> None:
    offenders = [
        f"{path.relative_to(SERVICES)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path in python_sources()
        for text in [path.read_text(encoding="utf-8")]
        for m in UNSAFE[what].finditer(text)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("what", "line", "flagged"),
    [
        ("pickle", "import pickle", True),
        ("pickle", "data = pickle.loads(blob)", True),
        ("torch.load without weights_only=True", "torch.load(path, map_location='cpu')", True),
        ("torch.load without weights_only=True", "torch.load(path, weights_only=False)", True),
        ("torch.load without weights_only=True", "torch.load(path, map_location='cpu', weights_only=True)", False),
        ("np.load with allow_pickle=True", "np.load(f, allow_pickle=True)", True),
        ("np.load with allow_pickle=True", "np.load(f)", False),
        ("yaml.load (not safe_load)", "yaml.load(text)", True),
        ("yaml.load (not safe_load)", "yaml.safe_load(text)", False),
        ("eval/exec", "eval(text)", True),
        ("eval/exec", "model.eval()", False),
    ],
)
def test_the_audit_patterns_catch_what_they_look_for(what: str, line: str, flagged: bool) -> None:
    assert bool(UNSAFE[what].search(line)) is flagged
