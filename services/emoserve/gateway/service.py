"""The public ``emoserve.v1.Synthesizer`` API: validates requests and drives the three stages.

One request: ``Encoder.Encode`` (text → segments), then for every segment ``Acoustic.Generate`` → ``Vocoder.Vocode``.
All segments of a request are in flight together, so the stages batch them; a stream yields each segment's
audio as soon as it (and every segment before it) is ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from emoserve.gateway import audio
from emoserve.gateway.pool import StagePool
from emoserve.model.prosody import resolve_prosody
from emoserve.runtime.config import ClientTlsConfig, PoolConfig, StageConfig
from emoserve.runtime.telemetry import GatewayMetrics
from emoserve.runtime.tensors import TensorSpec, decode
from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2, tts_pb2_grpc

log = logging.getLogger(__name__)

WAVE_SPEC = TensorSpec("audio", ("int16",), rank=1)
DURATION_SPEC = TensorSpec("durations", ("int32",), rank=1)
MAX_NAME_CHARS = 128
"""Longest accepted ``voice`` and ``request_id``, in characters."""
LOOKAHEAD_SEGMENTS = 4
"""Segments of one stream synthesised ahead of the one being sent."""


class RequestError(Exception):
    """A request the gateway refuses, with the status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Plan:
    """A validated request."""

    request_id: str
    text: str
    emotion: str
    speaker: int
    speed: float
    pitch_semitones: float
    energy: float
    sample_rate: int
    encoding: int
    deadline: float | None
    """``time.monotonic()`` by which the caller wants the answer (None: no deadline)."""

    def timeout(self) -> float | None:
        """Seconds left for a stage call (propagates the caller's deadline)."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 1e-3)


@dataclass
class Rendered:
    """Audio of one segment at the output rate, with its phoneme durations and stage timings."""

    audio: np.ndarray
    durations: list[tts_pb2.PhonemeDuration]
    timings: list[tts_pb2.StageTiming]


class SynthesizerService(tts_pb2_grpc.SynthesizerServicer):
    """The gateway servicer.

    Args:
        encoder, acoustic, vocoder: the stage pools.
        config: gateway configuration (text limit).
        metrics: time to first audio, end-to-end latency and audio produced (default: not recorded).
    """

    def __init__(
        self, encoder: StagePool, acoustic: StagePool, vocoder: StagePool, config: StageConfig,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.encoder, self.acoustic, self.vocoder = encoder, acoustic, vocoder
        self.config = config
        self.metrics = metrics or GatewayMetrics.disabled()
        self.info: stages_pb2.StageInfo | None = None
        self.voice_ids: dict[str, int] = {}

    async def load(self, timeout_s: float = 600.0) -> None:
        """Waits until every stage answers ``Info`` and checks that they serve the same model."""
        deadline = time.monotonic() + timeout_s
        infos = {}
        for name, pool in (("encoder", self.encoder), ("acoustic", self.acoustic), ("vocoder", self.vocoder)):
            while True:
                try:
                    infos[name] = await pool.call("Info", stages_pb2.InfoRequest(), timeout=5.0)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        acoustic, vocoder = infos["acoustic"], infos["vocoder"]
        if (acoustic.sample_rate_hz, acoustic.n_mels) != (vocoder.sample_rate_hz, vocoder.n_mels) or len(
            {i.model for i in infos.values()}
        ) != 1:
            raise RuntimeError(f"stages serve different models: {[(i.stage, i.model) for i in infos.values()]}")
        self.info = acoustic
        self.voice_ids = {v.name: v.id for v in acoustic.voices}

    # -- validation -------------------------------------------------------------

    def _check_started(self) -> None:
        """Raises UNAVAILABLE (retryable) until :meth:`load` has heard from every stage: the port is bound before
        health reports SERVING, and a client that does not wait for SERVING may call in between."""
        if self.info is None:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the gateway is starting: waiting for its stages")

    def plan(self, request: tts_pb2.SynthesizeRequest, time_remaining: float | None) -> Plan:
        """Validates a request.

        Raises:
            RequestError: INVALID_ARGUMENT naming the field, NOT_FOUND for an unknown voice, or UNAVAILABLE
                while the gateway is starting.
        """
        self._check_started()
        assert self.info is not None
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if not request.text.strip():
            raise RequestError(invalid, "text is empty")
        if len(request.text) > self.config.max_text_chars:
            raise RequestError(
                invalid, f"text has {len(request.text)} characters; the limit is {self.config.max_text_chars}"
            )
        if len(request.emotion) > self.config.max_emotion_chars:
            raise RequestError(
                invalid,
                f"emotion has {len(request.emotion)} characters; the limit is {self.config.max_emotion_chars}",
            )
        if len(request.voice) > MAX_NAME_CHARS:
            raise RequestError(invalid, f"voice has {len(request.voice)} characters; the limit is {MAX_NAME_CHARS}")
        if len(request.request_id) > MAX_NAME_CHARS or not request.request_id.isprintable():
            raise RequestError(invalid, f"request_id must be at most {MAX_NAME_CHARS} printable characters")
        voice = request.voice or self.info.default_voice
        if voice not in self.voice_ids:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"voice {voice!r} not found; see ListVoices")
        try:
            speed, pitch, energy = resolve_prosody(request.speed, request.pitch_semitones, request.energy)
            audio.check_sample_rate(request.sample_rate_hz, self.info.sample_rate_hz)
            encoding = audio.check_encoding(request.encoding)
        except ValueError as exc:
            raise RequestError(invalid, str(exc)) from None
        return Plan(
            request_id=request.request_id or uuid.uuid4().hex,
            text=request.text,
            emotion=request.emotion,
            speaker=self.voice_ids[voice],
            speed=speed,
            pitch_semitones=pitch,
            energy=energy,
            sample_rate=request.sample_rate_hz or self.info.sample_rate_hz,
            encoding=encoding,
            deadline=None if time_remaining is None else time.monotonic() + time_remaining,
        )

    # -- pipeline ------------------------------------------------------------------

    async def _encode(self, plan: Plan) -> stages_pb2.EncodeResponse:
        request = stages_pb2.EncodeRequest(text=plan.text, emotion=plan.emotion, request_id=plan.request_id)
        return await self.encoder.call("Encode", request, plan.timeout())

    async def _generate(self, plan: Plan, segment: stages_pb2.EncodedSegment) -> stages_pb2.AcousticResponse:
        request = stages_pb2.AcousticRequest(
            phoneme_ids=segment.phoneme_ids,
            prompt_embedding=segment.prompt_embedding,
            content_embedding=segment.content_embedding,
            speaker=plan.speaker,
            speed=plan.speed,
            pitch_semitones=plan.pitch_semitones,
            energy=plan.energy,
            request_id=plan.request_id,
        )
        return await self.acoustic.call("Generate", request, plan.timeout())

    def _resample(self, plan: Plan, samples: stages_pb2.Tensor) -> np.ndarray:
        assert self.info is not None
        return audio.resample(decode(samples, WAVE_SPEC), self.info.sample_rate_hz, plan.sample_rate)

    async def _render(self, plan: Plan, segment: stages_pb2.EncodedSegment) -> Rendered:
        """One segment, whole: mel, then waveform."""
        generated = await self._generate(plan, segment)
        vocoded = await self.vocoder.call(
            "Vocode", stages_pb2.VocodeRequest(mel=generated.mel, request_id=plan.request_id), plan.timeout()
        )
        return Rendered(self._resample(plan, vocoded.audio), _durations(segment, generated),
                        [generated.timing, vocoded.timing])

    async def _stream_segment(
        self, plan: Plan, generated: stages_pb2.AcousticResponse, timings: list[tts_pb2.StageTiming]
    ) -> AsyncIterator[tuple[np.ndarray, bool]]:
        """``(waveform piece, is the segment's last)`` as the vocoder streams them.

        At the model's rate each vocoder chunk is passed on at once; a resampled stream waits for the
        segment's last chunk and resamples the segment whole (exactly as unary calls do).
        """
        assert self.info is not None
        resampled = plan.sample_rate != self.info.sample_rate_hz
        request = stages_pb2.VocodeStreamRequest(mel=generated.mel, request_id=plan.request_id)
        pieces = []
        async for chunk in self.vocoder.stream("VocodeStream", request, plan.timeout()):
            timings.append(chunk.timing)
            if resampled:
                pieces.append(chunk.audio)
            else:
                yield decode(chunk.audio, WAVE_SPEC), chunk.last
        if resampled:
            whole = np.concatenate([decode(p, WAVE_SPEC) for p in pieces])
            yield audio.resample(whole, self.info.sample_rate_hz, plan.sample_rate), True

    # -- RPCs -------------------------------------------------------------------------

    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.SynthesizeResponse:
        started = time.perf_counter()
        async with _status(context):
            plan = self.plan(request, context.time_remaining())
            encoded = await self._encode(plan)
            rendered = await asyncio.gather(*(self._render(plan, s) for s in encoded.segments))
        pieces: list[np.ndarray] = []
        for i, r in enumerate(rendered):
            pieces.extend([audio.pause(plan.sample_rate), r.audio] if i else [r.audio])
        wave = np.concatenate(pieces)
        timings = [encoded.timing, *(t for r in rendered for t in r.timings)]
        log.info(
            "request_id=%s unary segments=%d audio_s=%.2f total_ms=%.1f %s",
            plan.request_id, len(rendered), len(wave) / plan.sample_rate, (time.perf_counter() - started) * 1e3,
            _timing_summary(timings),
        )
        response = tts_pb2.SynthesizeResponse(
            audio=audio.encode_audio(wave, plan.sample_rate, plan.encoding),
            sample_rate_hz=plan.sample_rate,
            duration_s=len(wave) / plan.sample_rate,
            request_id=plan.request_id,
            timings=timings,
            encoding=plan.encoding,
            durations=[d for r in rendered for d in r.durations],
            dropped_symbols=encoded.dropped_symbols,
        )
        elapsed = time.perf_counter() - started
        self.metrics.first_audio("Synthesize", elapsed)
        self.metrics.finished("Synthesize", elapsed)
        self.metrics.audio(len(wave) / plan.sample_rate)
        return response

    async def SynthesizeStream(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.AudioChunk]:
        started = time.perf_counter()
        async with _status(context):
            plan = self.plan(request, context.time_remaining())
            encoded = await self._encode(plan)
        segments = list(encoded.segments)
        pending: list[asyncio.Task[stages_pb2.AcousticResponse]] = []
        timings = [encoded.timing]
        index = 0
        try:
            for i in range(len(segments)):
                while len(pending) < LOOKAHEAD_SEGMENTS and i + len(pending) < len(segments):
                    pending.append(asyncio.ensure_future(self._generate(plan, segments[i + len(pending)])))
                async with _status(context):
                    generated = await pending.pop(0)
                    timings.append(generated.timing)
                    first = True
                    async for wave, segment_done in self._stream_segment(plan, generated, timings):
                        if first and i:
                            wave = np.concatenate([audio.pause(plan.sample_rate), wave])
                        first = False
                        data = audio.encode_pcm(wave, plan.encoding)
                        if index == 0 and plan.encoding == tts_pb2.WAV:
                            data = audio.wav_stream_header(plan.sample_rate) + data
                        last = segment_done and i == len(segments) - 1
                        if index == 0:
                            self.metrics.first_audio("SynthesizeStream", time.perf_counter() - started)
                        yield tts_pb2.AudioChunk(
                            audio=data, sample_rate_hz=plan.sample_rate, index=index, last=last,
                            request_id=plan.request_id, encoding=plan.encoding, timings=timings if last else [],
                        )
                        self.metrics.audio(len(wave) / plan.sample_rate)
                        index += 1
        finally:
            for task in pending:
                task.cancel()
        self.metrics.finished("SynthesizeStream", time.perf_counter() - started)
        log.info("request_id=%s stream segments=%d chunks=%d total_ms=%.1f %s",
                 plan.request_id, len(segments), index, (time.perf_counter() - started) * 1e3,
                 _timing_summary(timings))

    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        async with _status(context):
            self._check_started()
        assert self.info is not None
        return tts_pb2.ListVoicesResponse(
            voices=self.info.voices,
            default_voice=self.info.default_voice,
            model=self.info.model,
            sample_rate_hz=self.info.sample_rate_hz,
        )


def _timing_summary(timings: list[tts_pb2.StageTiming]) -> str:
    """``stage=queue_ms/compute_ms/max_batch`` per stage, summed over a request's calls, for the request log."""
    totals: dict[str, list[float]] = {}
    for t in timings:
        acc = totals.setdefault(t.stage, [0.0, 0.0, 0])
        acc[0] += t.queue_ms
        acc[1] += t.compute_ms
        acc[2] = max(acc[2], t.batch_size)
    return " ".join(f"{stage}={q:.1f}/{c:.1f}ms/b{b}" for stage, (q, c, b) in totals.items())


def _durations(segment: stages_pb2.EncodedSegment, generated: stages_pb2.AcousticResponse) -> list:
    frames = decode(generated.durations, DURATION_SPEC)
    return [tts_pb2.PhonemeDuration(symbol=symbol.strip("[]"), frames=int(n))
            for symbol, n in zip(segment.phonemes.split(), frames)]


class _status:
    """Turns request errors and stage errors into this RPC's status (stage statuses pass through)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, RequestError):
            await self.context.abort(exc.code, str(exc))
        if isinstance(exc, grpc.aio.AioRpcError):
            await self.context.abort(exc.code(), exc.details() or exc.code().name)
        return False


def stage_pools(
    encoder: list[str], acoustic: list[str], vocoder: list[str], max_message_bytes: int,
    tls: ClientTlsConfig | None = None, pool: PoolConfig | None = None,
) -> tuple[StagePool, StagePool, StagePool]:
    """One :class:`StagePool` per stage from lists of ``host:port`` (``tls``: how to reach them; ``pool``:
    health checking, keepalive and retry)."""
    return (
        StagePool("encoder", encoder, stages_pb2_grpc.EncoderStub, max_message_bytes, tls, pool),
        StagePool("acoustic", acoustic, stages_pb2_grpc.AcousticStub, max_message_bytes, tls, pool),
        StagePool("vocoder", vocoder, stages_pb2_grpc.VocoderStub, max_message_bytes, tls, pool),
    )
