from emoserve.v1 import tts_pb2 as _tts_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DTYPE_UNSPECIFIED: _ClassVar[Tensor.DType]
        FLOAT32: _ClassVar[Tensor.DType]
        FLOAT16: _ClassVar[Tensor.DType]
        BFLOAT16: _ClassVar[Tensor.DType]
        INT64: _ClassVar[Tensor.DType]
        INT32: _ClassVar[Tensor.DType]
        INT16: _ClassVar[Tensor.DType]
    DTYPE_UNSPECIFIED: Tensor.DType
    FLOAT32: Tensor.DType
    FLOAT16: Tensor.DType
    BFLOAT16: Tensor.DType
    INT64: Tensor.DType
    INT32: Tensor.DType
    INT16: Tensor.DType
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: Tensor.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[Tensor.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StageInfo(_message.Message):
    __slots__ = ("stage", "model", "sample_rate_hz", "hop_length", "n_mels", "voices", "default_voice", "device", "precision", "engine")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    HOP_LENGTH_FIELD_NUMBER: _ClassVar[int]
    N_MELS_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    model: str
    sample_rate_hz: int
    hop_length: int
    n_mels: int
    voices: _containers.RepeatedCompositeFieldContainer[_tts_pb2.Voice]
    default_voice: str
    device: str
    precision: str
    engine: str
    def __init__(self, stage: _Optional[str] = ..., model: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., hop_length: _Optional[int] = ..., n_mels: _Optional[int] = ..., voices: _Optional[_Iterable[_Union[_tts_pb2.Voice, _Mapping]]] = ..., default_voice: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., engine: _Optional[str] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("text", "emotion", "request_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    emotion: str
    request_id: str
    def __init__(self, text: _Optional[str] = ..., emotion: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class EncodedSegment(_message.Message):
    __slots__ = ("text", "phonemes", "phoneme_ids", "prompt_embedding", "content_embedding")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    PHONEMES_FIELD_NUMBER: _ClassVar[int]
    PHONEME_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CONTENT_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    text: str
    phonemes: str
    phoneme_ids: Tensor
    prompt_embedding: Tensor
    content_embedding: Tensor
    def __init__(self, text: _Optional[str] = ..., phonemes: _Optional[str] = ..., phoneme_ids: _Optional[_Union[Tensor, _Mapping]] = ..., prompt_embedding: _Optional[_Union[Tensor, _Mapping]] = ..., content_embedding: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("segments", "dropped_symbols", "timing")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[EncodedSegment]
    dropped_symbols: _containers.RepeatedScalarFieldContainer[str]
    timing: _tts_pb2.StageTiming
    def __init__(self, segments: _Optional[_Iterable[_Union[EncodedSegment, _Mapping]]] = ..., dropped_symbols: _Optional[_Iterable[str]] = ..., timing: _Optional[_Union[_tts_pb2.StageTiming, _Mapping]] = ...) -> None: ...

class AcousticRequest(_message.Message):
    __slots__ = ("phoneme_ids", "prompt_embedding", "content_embedding", "speaker", "speed", "pitch_semitones", "energy", "request_id")
    PHONEME_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CONTENT_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PITCH_SEMITONES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    phoneme_ids: Tensor
    prompt_embedding: Tensor
    content_embedding: Tensor
    speaker: int
    speed: float
    pitch_semitones: float
    energy: float
    request_id: str
    def __init__(self, phoneme_ids: _Optional[_Union[Tensor, _Mapping]] = ..., prompt_embedding: _Optional[_Union[Tensor, _Mapping]] = ..., content_embedding: _Optional[_Union[Tensor, _Mapping]] = ..., speaker: _Optional[int] = ..., speed: _Optional[float] = ..., pitch_semitones: _Optional[float] = ..., energy: _Optional[float] = ..., request_id: _Optional[str] = ...) -> None: ...

class AcousticResponse(_message.Message):
    __slots__ = ("mel", "durations", "timing")
    MEL_FIELD_NUMBER: _ClassVar[int]
    DURATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    mel: Tensor
    durations: Tensor
    timing: _tts_pb2.StageTiming
    def __init__(self, mel: _Optional[_Union[Tensor, _Mapping]] = ..., durations: _Optional[_Union[Tensor, _Mapping]] = ..., timing: _Optional[_Union[_tts_pb2.StageTiming, _Mapping]] = ...) -> None: ...

class VocodeRequest(_message.Message):
    __slots__ = ("mel", "request_id")
    MEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    mel: Tensor
    request_id: str
    def __init__(self, mel: _Optional[_Union[Tensor, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class VocodeResponse(_message.Message):
    __slots__ = ("audio", "timing")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    audio: Tensor
    timing: _tts_pb2.StageTiming
    def __init__(self, audio: _Optional[_Union[Tensor, _Mapping]] = ..., timing: _Optional[_Union[_tts_pb2.StageTiming, _Mapping]] = ...) -> None: ...

class VocodeStreamRequest(_message.Message):
    __slots__ = ("mel", "request_id", "first_chunk_frames", "max_chunk_frames")
    MEL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    mel: Tensor
    request_id: str
    first_chunk_frames: int
    max_chunk_frames: int
    def __init__(self, mel: _Optional[_Union[Tensor, _Mapping]] = ..., request_id: _Optional[str] = ..., first_chunk_frames: _Optional[int] = ..., max_chunk_frames: _Optional[int] = ...) -> None: ...

class VocodeChunk(_message.Message):
    __slots__ = ("audio", "index", "last", "timing")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    audio: Tensor
    index: int
    last: bool
    timing: _tts_pb2.StageTiming
    def __init__(self, audio: _Optional[_Union[Tensor, _Mapping]] = ..., index: _Optional[int] = ..., last: _Optional[bool] = ..., timing: _Optional[_Union[_tts_pb2.StageTiming, _Mapping]] = ...) -> None: ...
