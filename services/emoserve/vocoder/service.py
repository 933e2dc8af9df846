"""The vocoder stage: a thin gRPC shell over :class:`~emoserve.vocoder.engine.VocoderEngine`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np

from emoserve.model.modeldir import ModelDir
from emoserve.runtime.config import StageConfig
from emoserve.runtime.pcm import to_pcm16
from emoserve.runtime.stage import StageService, answer, deadline_s, timing
from emoserve.runtime.tensors import TensorSpec, decode_torch, encode
from emoserve.v1 import stages_pb2, stages_pb2_grpc
from emoserve.vocoder.engine import VocodeJob, VocoderEngine
from emoserve.vocoder.streaming import chunk_plan, receptive_field_frames, window_frames

MAX_FRAMES = 20000
"""Longest mel accepted in one call (320 s at 62.5 frames/s)."""


class VocoderService(StageService, stages_pb2_grpc.VocoderServicer):
    """Serves ``emoserve.v1.Vocoder``: mel → waveform."""

    stage = "vocoder"
    service = "Vocoder"
    add_to_server = staticmethod(stages_pb2_grpc.add_VocoderServicer_to_server)

    def __init__(self, model_dir: ModelDir, config: StageConfig) -> None:
        super().__init__(model_dir, config)
        n_mels = model_dir.manifest.vocoder.n_mels
        self.mel_spec = TensorSpec("mel", ("float16", "float32", "bfloat16"), rank=2, dims=(n_mels, (1, MAX_FRAMES)))
        self.context_frames = receptive_field_frames(model_dir.manifest.vocoder)

    def build_engine(self) -> VocoderEngine:
        cfg = self.config.streaming
        return VocoderEngine(
            self.model_dir, self.device, self.precision, self.config.batching.max_batch_size,
            exact_frames=window_frames(cfg.first_chunk_frames, cfg.max_chunk_frames, self.context_frames),
            pcm16=True,
        )

    def execute(self, jobs: list[VocodeJob]) -> list[np.ndarray | Exception]:
        """Vocodes a batch into 16-bit PCM, the wire format (engines that return float samples are converted in
        the worker thread)."""
        return [w if isinstance(w, Exception) else to_pcm16(w) for w in self.engine.run(jobs)]

    @staticmethod
    def length_of(job: VocodeJob) -> int:
        return job.frames

    def info_fields(self) -> dict:
        return {"n_mels": self.model_dir.manifest.vocoder.n_mels}

    async def Vocode(self, request: stages_pb2.VocodeRequest, context: grpc.aio.ServicerContext) -> stages_pb2.VocodeResponse:
        await self.ensure_loaded(context)
        mel = await answer(context, lambda: decode_torch(request.mel, self.mel_spec))
        timed = await answer(context, self.batcher.submit_timed(VocodeJob(mel), timeout_s=deadline_s(context)))
        return stages_pb2.VocodeResponse(audio=encode(timed.value), timing=timing(self.stage, timed, self.replica))

    async def VocodeStream(
        self, request: stages_pb2.VocodeStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[stages_pb2.VocodeChunk]:
        await self.ensure_loaded(context)
        mel = await answer(context, lambda: decode_torch(request.mel, self.mel_spec))
        cfg = self.config.streaming
        plan = await answer(context, lambda: chunk_plan(
            mel.shape[1],
            request.first_chunk_frames or cfg.first_chunk_frames,
            request.max_chunk_frames or cfg.max_chunk_frames,
            self.context_frames,
        ))
        later = min(1, self.config.batching.priority_levels - 1)
        timeout = deadline_s(context)

        def submit(c) -> asyncio.Future:
            job = VocodeJob(mel[:, c.lo : c.hi], trim=c.trim, keep=c.end - c.start)
            return asyncio.ensure_future(
                self.batcher.submit_timed(job, priority=0 if c.index == 0 else later, timeout_s=timeout)
            )

        # The first chunk is queued alone, at the first priority (small and early: first audio); the rest are
        # queued once it is done, so they batch with each other and other streams' chunks, never ahead of a
        # first chunk.
        tasks = [submit(plan[0])]
        try:
            for chunk in plan:
                timed = await answer(context, tasks[chunk.index])
                if chunk.index == 0:
                    tasks.extend(submit(c) for c in plan[1:])
                yield stages_pb2.VocodeChunk(
                    audio=encode(timed.value), index=chunk.index, last=chunk.index == len(plan) - 1,
                    timing=timing(self.stage, timed, self.replica),
                )
        finally:
            for task in tasks:
                task.cancel()

