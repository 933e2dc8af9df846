"""The encoder stage: a thin gRPC shell over :class:`~emoserve.encoder.engine.EncoderEngine`."""

from __future__ import annotations

import grpc

from emoserve.encoder.engine import EncodeItem, EncoderEngine
from emoserve.runtime.stage import StageService, answer, deadline_s, timing
from emoserve.runtime.tensors import encode
from emoserve.v1 import stages_pb2, stages_pb2_grpc


class EncoderService(StageService, stages_pb2_grpc.EncoderServicer):
    """Serves ``emoserve.v1.Encoder``: text + emotion → segments of phoneme ids and style vectors."""

    stage = "encoder"
    service = "Encoder"
    add_to_server = staticmethod(stages_pb2_grpc.add_EncoderServicer_to_server)

    def build_engine(self) -> EncoderEngine:
        return EncoderEngine(
            self.model_dir, self.device, cache_size=self.config.embedding_cache_size, precision=self.precision
        )

    @staticmethod
    def length_of(item: EncodeItem) -> int:
        return len(item.text)

    async def Encode(self, request: stages_pb2.EncodeRequest, context: grpc.aio.ServicerContext) -> stages_pb2.EncodeResponse:
        await self.ensure_loaded(context)
        if not request.text.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is empty")
        if len(request.text) > self.config.max_text_chars:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"text has {len(request.text)} characters; the limit is {self.config.max_text_chars}",
            )
        item = EncodeItem(request.text, request.emotion)
        timed = await answer(context, self.batcher.submit_timed(item, timeout_s=deadline_s(context)))
        result = timed.value
        return stages_pb2.EncodeResponse(
            segments=[
                stages_pb2.EncodedSegment(
                    text=seg.text,
                    phonemes=seg.phonemes,
                    phoneme_ids=encode(seg.ids),
                    prompt_embedding=encode(seg.prompt),
                    content_embedding=encode(seg.content),
                )
                for seg in result.segments
            ],
            dropped_symbols=result.dropped,
            timing=timing(self.stage, timed, self.replica),
        )
