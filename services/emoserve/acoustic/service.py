"""The acoustic stage: a thin gRPC shell over :class:`~emoserve.acoustic.engine.AcousticEngine`."""

from __future__ import annotations

import grpc

from emoserve.acoustic.engine import AcousticEngine, AcousticItem
from emoserve.model.modeldir import ModelDir
from emoserve.model.prosody import resolve_prosody
from emoserve.runtime.config import StageConfig
from emoserve.runtime.stage import StageService, answer, deadline_s, timing
from emoserve.runtime.tensors import TensorSpec, decode, encode
from emoserve.v1 import stages_pb2, stages_pb2_grpc, tts_pb2

MAX_PHONEMES = 4096


class AcousticService(StageService, stages_pb2_grpc.AcousticServicer):
    """Serves ``emoserve.v1.Acoustic``: phoneme ids + voice + style → mel."""

    stage = "acoustic"
    service = "Acoustic"
    add_to_server = staticmethod(stages_pb2_grpc.add_AcousticServicer_to_server)

    def __init__(self, model_dir: ModelDir, config: StageConfig) -> None:
        super().__init__(model_dir, config)
        style_dim = model_dir.manifest.acoustic.style_dim
        self.ids_spec = TensorSpec("phoneme_ids", ("int64", "int32"), rank=1, dims=((1, MAX_PHONEMES),))
        self.emb_specs = {
            name: TensorSpec(name, ("float32", "float16", "bfloat16"), rank=1, dims=(style_dim,))
            for name in ("prompt_embedding", "content_embedding")
        }

    def build_engine(self) -> AcousticEngine:
        return AcousticEngine(self.model_dir, self.device, self.precision, max_batch=self.config.batching.max_batch_size,
                              inductor=self.config.engine.torch_compile_acoustic)

    @staticmethod
    def length_of(item: AcousticItem) -> int:
        return len(item.ids)

    def info_fields(self) -> dict:
        m = self.model_dir.manifest
        voices = [tts_pb2.Voice(name=v, id=i) for i, v in enumerate(m.voices)]
        return {"n_mels": m.acoustic.n_mels, "voices": voices, "default_voice": m.default_voice}

    def _item(self, request: stages_pb2.AcousticRequest) -> AcousticItem:
        speed, pitch, energy = resolve_prosody(request.speed, request.pitch_semitones, request.energy)
        item = AcousticItem(
            ids=decode(request.phoneme_ids, self.ids_spec).astype("int64"),
            speaker=request.speaker,
            prompt=decode(request.prompt_embedding, self.emb_specs["prompt_embedding"]).astype("float32"),
            content=decode(request.content_embedding, self.emb_specs["content_embedding"]).astype("float32"),
            speed=speed,
            pitch_semitones=pitch,
            energy=energy,
        )
        assert self.engine is not None
        self.engine.check(item)
        return item

    async def Generate(
        self, request: stages_pb2.AcousticRequest, context: grpc.aio.ServicerContext
    ) -> stages_pb2.AcousticResponse:
        await self.ensure_loaded(context)
        item = await answer(context, lambda: self._item(request))
        timed = await answer(context, self.batcher.submit_timed(item, timeout_s=deadline_s(context)))
        return stages_pb2.AcousticResponse(
            mel=encode(timed.value.mel),
            durations=encode(timed.value.durations),
            timing=timing(self.stage, timed, self.replica),
        )

