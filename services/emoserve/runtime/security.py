"""Transport security and authentication of every emoserve process (one place).

* TLS: :func:`server_credentials` for a server's :class:`~emoserve.runtime.config.TlsConfig` (mutual TLS
  when a client CA is configured: a client without a certificate signed by it is refused during the
  handshake), :func:`aio_channel` / :func:`channel` for clients (the gateway reaching the stages, the
  public client reaching the gateway).
* Bearer tokens: :class:`BearerTokenInterceptor` admits a call only with ``authorization: Bearer <token>``
  metadata naming one of the configured tokens (compared in constant time) and answers ``UNAUTHENTICATED``
  otherwise. Health checking and reflection stay open, so orchestrator probes need no token.

Certificates and tokens are read once, when a server starts or a channel is created.

:class:`MalformedRequestInterceptor`, installed on every server, answers a request whose bytes do not parse
with ``INVALID_ARGUMENT`` (gRPC itself would answer ``UNKNOWN``).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import os
import re
import ssl
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from emoserve.runtime.config import (
    ENV_CLIENT_TOKEN,
    AuthConfig,
    ClientTlsConfig,
    TlsConfig,
)
from emoserve.runtime.errors import ConfigError

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
"""Metadata key carrying ``Bearer <token>``."""
OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
"""Services answered without a token: health (Kubernetes probes, load balancers) and reflection."""
_TOKEN = re.compile(r"[\x21-\x7e]+")
"""A token: printable ASCII without spaces (what a gRPC metadata value can carry after "Bearer ")."""

ChannelOptions = Sequence[tuple[str, Any]]


# -- TLS ----------------------------------------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None


def _load_pem(owner: str, cert_file: str, key_file: str, ca_file: str) -> tuple[bytes | None, ...]:
    """Reads the PEM files that are set: ``(cert, key, ca)``, None for those that are not.

    Fails early, naming the file, when one is unreadable, the key does not match the certificate, or the CA
    file holds no certificate (gRPC itself would only fail at the first handshake).
    """
    cert = _read(cert_file, f"{owner} cert_file") if cert_file else None
    key = _read(key_file, f"{owner} key_file") if key_file else None
    ca = _read(ca_file, f"{owner} CA file") if ca_file else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{owner} cert_file {cert_file!r} / key_file {key_file!r}: not a PEM certificate chain and its "
                f"matching private key ({exc.reason or exc})"
            ) from None
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"{owner} CA file {ca_file!r} holds no PEM certificate ({exc.reason or exc})") from None
    return cert, key, ca


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Credentials of a TLS server; with ``client_ca_file`` every client must present a certificate it signed.

    Raises:
        ConfigError: TLS is not configured, or a file is unreadable or not matching PEM.
    """
    if not tls.enabled:
        raise ConfigError("server.tls.cert_file is not set")
    cert, key, client_ca = _load_pem("server.tls", tls.cert_file, tls.key_file, tls.client_ca_file)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(tls: ClientTlsConfig) -> grpc.ChannelCredentials:
    """Credentials of a TLS client trusting ``ca_file``, presenting ``cert_file`` when set (mTLS).

    Raises:
        ConfigError: TLS is not configured, or a file is unreadable or not matching PEM.
    """
    if not tls.enabled:
        raise ConfigError("client TLS needs ca_file")
    cert, key, ca = _load_pem("client TLS", tls.cert_file, tls.key_file, tls.ca_file)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def _options(tls: ClientTlsConfig | None, options: ChannelOptions) -> list[tuple[str, Any]]:
    extra = [("grpc.ssl_target_name_override", tls.server_name)] if tls is not None and tls.server_name else []
    return [*options, *extra]


def aio_channel(target: str, tls: ClientTlsConfig | None = None, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: TLS when ``tls`` is enabled, plaintext otherwise."""
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(target, options=list(options))
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=_options(tls, options))


def channel(target: str, tls: ClientTlsConfig | None = None, options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to ``target``: TLS when ``tls`` is enabled, plaintext otherwise."""
    if tls is None or not tls.enabled:
        return grpc.insecure_channel(target, options=list(options))
    return grpc.secure_channel(target, channel_credentials(tls), options=_options(tls, options))


# -- bearer tokens ------------------------------------------------------------------------------------------


def parse_tokens(text: str, source: str, *, line_based: bool = True) -> list[str]:
    """Tokens of a token file (one per line; blank lines and ``#`` comments ignored) or of a variable.

    Args:
        text: The file's or variable's content.
        source: Where it comes from, for error messages (never the token itself).
        line_based: True for a file; False for a variable, whose tokens are separated by commas or whitespace.

    Raises:
        ConfigError: A token holds characters a gRPC metadata value cannot carry, or spaces.
    """
    if line_based:
        entries = [(f"{source}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1)]
        entries = [(where, token) for where, token in entries if token and not token.startswith("#")]
    else:
        entries = [(source, token) for token in re.split(r"[,\s]+", text) if token]
    for where, token in entries:
        if not _TOKEN.fullmatch(token):
            raise ConfigError(f"{where}: a token must be printable ASCII without spaces")
    return [token for _, token in entries]


def load_tokens(auth: AuthConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """The accepted tokens: those of ``auth.token_file`` and of the variable ``auth.token_env``.

    Returns:
        The tokens; empty means authentication is off.

    Raises:
        ConfigError: The token file is unreadable, malformed or holds no token.
    """
    env = os.environ if environ is None else environ
    tokens: list[str] = []
    if auth.token_file:
        text = _read(auth.token_file, "auth.token_file").decode("utf-8", errors="replace")
        tokens = parse_tokens(text, auth.token_file)
        if not tokens:
            raise ConfigError(f"auth.token_file {auth.token_file!r} holds no token")
    if auth.token_env and env.get(auth.token_env):
        tokens += parse_tokens(env[auth.token_env], auth.token_env, line_based=False)
    return tokens


def client_token(token_file: str = "", environ: Mapping[str, str] | None = None) -> str | None:
    """The token a client sends: the first one of ``token_file``, else ``$EMOSERVE_TOKEN``, else None.

    Raises:
        ConfigError: The token file is unreadable, malformed or holds no token.
    """
    if token_file:
        tokens = parse_tokens(_read(token_file, "token file").decode("utf-8", errors="replace"), token_file)
        if not tokens:
            raise ConfigError(f"token file {token_file!r} holds no token")
        return tokens[0]
    env = os.environ if environ is None else environ
    tokens = parse_tokens(env.get(ENV_CLIENT_TOKEN, ""), ENV_CLIENT_TOKEN, line_based=False)
    return tokens[0] if tokens else None


def bearer_metadata(token: str) -> tuple[str, str]:
    """The call metadata entry that authenticates with ``token``."""
    return (AUTHORIZATION, f"Bearer {token}")


def _digest(token: str) -> bytes:
    # Equal-length digests: compare_digest then reveals neither the tokens' contents nor their lengths.
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).digest()


def _service_of(method: str) -> str:
    """``"/pkg.Service/Method"`` -> ``"pkg.Service"``."""
    return method.lstrip("/").split("/", 1)[0]


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a valid ``authorization: Bearer <token>`` with ``UNAUTHENTICATED``.

    The presented token is compared with every accepted token (``hmac.compare_digest`` of SHA-256
    digests, no early exit), so the answer's timing does not depend on which token, or how much of one,
    matched. A refused call's request is never deserialised.

    Args:
        tokens: The accepted tokens (at least one).
        open_services: Fully qualified services answered without a token.
    """

    def __init__(self, tokens: Iterable[str], open_services: Iterable[str] = OPEN_SERVICES) -> None:
        self._digests = tuple(_digest(t) for t in tokens)
        if not self._digests:
            raise ValueError("BearerTokenInterceptor needs at least one token")
        self.open_services = frozenset(open_services)

    def refusal(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """Why a call with ``metadata`` is refused, or None when it carries an accepted token."""
        values = [value for key, value in metadata or () if key == AUTHORIZATION]
        if not values:
            return "missing credentials: send metadata 'authorization: Bearer <token>'"
        if len(values) > 1:
            return "more than one 'authorization' metadata entry"
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "malformed 'authorization' metadata: expected 'Bearer <token>'"
        presented = _digest(token)
        accepted = False
        for digest in self._digests:
            accepted |= hmac.compare_digest(digest, presented)
        return None if accepted else "invalid bearer token"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) in self.open_services:
            return handler
        reason = self.refusal(handler_call_details.invocation_metadata)
        if reason is None:
            return handler
        method = handler_call_details.method

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            log.info("refused %s from %s: %s", method, context.peer(), reason)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

        factory = _HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)]
        return factory(refuse, request_deserializer=None, response_serializer=handler.response_serializer)


class _Malformed:
    """What a guarded deserialiser returns for bytes that do not parse."""

    def __init__(self, error: DecodeError) -> None:
        self.message = f"malformed request: {error}"


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Answers a unary request that does not parse as its message type with ``INVALID_ARGUMENT``.

    Without it gRPC answers ``UNKNOWN`` and quotes the parser's exception. Install it innermost (after
    authentication, so refused calls are never parsed). Calls with streamed requests are passed unchanged.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer

        def guarded(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError as exc:
                return _Malformed(exc)

        if not handler.response_streaming:
            unary = handler.unary_unary

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_behavior, request_deserializer=guarded, response_serializer=handler.response_serializer
            )
        streaming = handler.unary_stream
        if inspect.isasyncgenfunction(streaming):

            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                async for response in streaming(request, context):
                    yield response

        else:  # a coroutine that sends its responses with context.write()

            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> None:
                if isinstance(request, _Malformed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                await streaming(request, context)

        return grpc.unary_stream_rpc_method_handler(
            stream_behavior, request_deserializer=guarded, response_serializer=handler.response_serializer
        )
