from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    LINEAR_PCM: _ClassVar[AudioEncoding]
    FLOAT32: _ClassVar[AudioEncoding]
    WAV: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
LINEAR_PCM: AudioEncoding
FLOAT32: AudioEncoding
WAV: AudioEncoding

class SynthesizeRequest(_message.Message):
    __slots__ = ("text", "voice", "emotion", "speed", "pitch_semitones", "energy", "sample_rate_hz", "encoding", "request_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    EMOTION_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    PITCH_SEMITONES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    voice: str
    emotion: str
    speed: float
    pitch_semitones: float
    energy: float
    sample_rate_hz: int
    encoding: AudioEncoding
    request_id: str
    def __init__(self, text: _Optional[str] = ..., voice: _Optional[str] = ..., emotion: _Optional[str] = ..., speed: _Optional[float] = ..., pitch_semitones: _Optional[float] = ..., energy: _Optional[float] = ..., sample_rate_hz: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "queue_ms", "compute_ms", "batch_size", "replica")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    stage: str
    queue_ms: float
    compute_ms: float
    batch_size: int
    replica: str
    def __init__(self, stage: _Optional[str] = ..., queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., replica: _Optional[str] = ...) -> None: ...

class PhonemeDuration(_message.Message):
    __slots__ = ("symbol", "frames")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    frames: int
    def __init__(self, symbol: _Optional[str] = ..., frames: _Optional[int] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("audio", "sample_rate_hz", "duration_s", "request_id", "timings", "encoding", "durations", "dropped_symbols")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DURATIONS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SYMBOLS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sample_rate_hz: int
    duration_s: float
    request_id: str
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    encoding: AudioEncoding
    durations: _containers.RepeatedCompositeFieldContainer[PhonemeDuration]
    dropped_symbols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, audio: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., duration_s: _Optional[float] = ..., request_id: _Optional[str] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., durations: _Optional[_Iterable[_Union[PhonemeDuration, _Mapping]]] = ..., dropped_symbols: _Optional[_Iterable[str]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("audio", "sample_rate_hz", "index", "last", "request_id", "encoding", "timings")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    audio: bytes
    sample_rate_hz: int
    index: int
    last: bool
    request_id: str
    encoding: AudioEncoding
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    def __init__(self, audio: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., index: _Optional[int] = ..., last: _Optional[bool] = ..., request_id: _Optional[str] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Voice(_message.Message):
    __slots__ = ("name", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices", "default_voice", "model", "sample_rate_hz")
    VOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    default_voice: str
    model: str
    sample_rate_hz: int
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ..., default_voice: _Optional[str] = ..., model: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...
