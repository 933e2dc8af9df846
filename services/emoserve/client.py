"""Python clients of the public ``emoserve.v1.Synthesizer`` API (blocking and asyncio).

Example::

    from emoserve.client import Client

    with Client("localhost:50051") as tts:
        reply = tts.synthesize("Hello from emoserve.", emotion="Happy", encoding="WAV")
        open("hello.wav", "wb").write(reply.audio)

    # A gateway with TLS and bearer tokens:
    tls = ClientTlsConfig(ca_file="ca.pem")
    with Client("tts.example.com:443", tls=tls, token=open("token").read().strip()) as tts: ...
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator, Iterable, Iterator

from emoserve.runtime.config import ClientTlsConfig
from emoserve.runtime.security import aio_channel, bearer_metadata, channel
from emoserve.v1 import tts_pb2, tts_pb2_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]


def build_request(
    text: str,
    *,
    voice: str = "",
    emotion: str = "",
    speed: float = 0.0,
    pitch_semitones: float = 0.0,
    energy: float = 0.0,
    sample_rate_hz: int = 0,
    encoding: str = "LINEAR_PCM",
    request_id: str = "",
) -> tts_pb2.SynthesizeRequest:
    """A ``SynthesizeRequest``; ``encoding`` is an ``AudioEncoding`` name (``LINEAR_PCM``, ``FLOAT32``, ``WAV``)."""
    return tts_pb2.SynthesizeRequest(
        text=text,
        voice=voice,
        emotion=emotion,
        speed=speed,
        pitch_semitones=pitch_semitones,
        energy=energy,
        sample_rate_hz=sample_rate_hz,
        encoding=tts_pb2.AudioEncoding.Value(encoding),
        request_id=request_id,
    )


def pcm_to_wav(chunks: Iterable[bytes], sample_rate: int) -> bytes:
    """Wraps int16 PCM chunks (``LINEAR_PCM``) in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        for chunk in chunks:
            w.writeframes(chunk)
    return buf.getvalue()


def _metadata(metadata: list[tuple[str, str]] | None, token: str | None) -> list[tuple[str, str]]:
    return [*(metadata or []), *([bearer_metadata(token)] if token else [])]


class Client:
    """Blocking client.

    Args:
        target: ``host:port`` of the gateway.
        timeout: default deadline of each call in seconds (None: no deadline).
        metadata: extra call metadata.
        tls: TLS of the connection (``ca_file``; ``cert_file``/``key_file`` for mTLS); None: plaintext.
        token: bearer token sent as ``authorization: Bearer <token>`` on every call.
    """

    def __init__(self, target: str = "localhost:50051", timeout: float | None = 60.0,
                 metadata: list[tuple[str, str]] | None = None, *, tls: ClientTlsConfig | None = None,
                 token: str | None = None) -> None:
        self.channel = channel(target, tls, _OPTIONS)
        self.stub = tts_pb2_grpc.SynthesizerStub(self.channel)
        self.timeout = timeout
        self.metadata = _metadata(metadata, token)

    def synthesize(self, text: str, **kwargs) -> tts_pb2.SynthesizeResponse:
        """Whole utterance in one response; keyword arguments as in :func:`build_request`."""
        return self.stub.Synthesize(build_request(text, **kwargs), timeout=self.timeout, metadata=self.metadata)

    def stream(self, text: str, **kwargs) -> Iterator[tts_pb2.AudioChunk]:
        """Audio chunks as soon as they exist; keyword arguments as in :func:`build_request`."""
        yield from self.stub.SynthesizeStream(build_request(text, **kwargs), timeout=self.timeout, metadata=self.metadata)

    def voices(self) -> tts_pb2.ListVoicesResponse:
        """Voices of the loaded model."""
        return self.stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=self.timeout, metadata=self.metadata)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient:
    """asyncio client; same arguments and methods as :class:`Client`, awaitable."""

    def __init__(self, target: str = "localhost:50051", timeout: float | None = 60.0,
                 metadata: list[tuple[str, str]] | None = None, *, tls: ClientTlsConfig | None = None,
                 token: str | None = None) -> None:
        self.channel = aio_channel(target, tls, _OPTIONS)
        self.stub = tts_pb2_grpc.SynthesizerStub(self.channel)
        self.timeout = timeout
        self.metadata = _metadata(metadata, token)

    async def synthesize(self, text: str, **kwargs) -> tts_pb2.SynthesizeResponse:
        return await self.stub.Synthesize(build_request(text, **kwargs), timeout=self.timeout, metadata=self.metadata)

    async def stream(self, text: str, **kwargs) -> AsyncIterator[tts_pb2.AudioChunk]:
        call = self.stub.SynthesizeStream(build_request(text, **kwargs), timeout=self.timeout, metadata=self.metadata)
        async for chunk in call:
            yield chunk

    async def voices(self) -> tts_pb2.ListVoicesResponse:
        return await self.stub.ListVoices(tts_pb2.ListVoicesRequest(), timeout=self.timeout, metadata=self.metadata)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
