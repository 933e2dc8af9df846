"""Typed, validated configuration of every emoserve process (one place).

Precedence, lowest first: dataclass defaults < YAML file < ``EMOSERVE_*``
environment variables < keyword overrides passed to :func:`load_config`.

Environment variables are read in this module only:

* ``EMOSERVE_CONFIG``: YAML file used when :func:`load_config` gets no path.
* ``EMOSERVE_<FIELD>`` for a top-level field (``EMOSERVE_DEVICE=cuda``) and
  ``EMOSERVE_<SECTION>__<FIELD>`` for a nested one
  (``EMOSERVE_BATCHING__MAX_BATCH_SIZE=16``, ``EMOSERVE_SERVER__PORT=50052``,
  ``EMOSERVE_SERVER__TLS__CERT_FILE=/tls/tls.crt``).
  Values are parsed as YAML scalars/lists (``16``, ``true``, ``[4, 8]``).
* ``EMOSERVE_TOKENS`` (the default ``auth.token_env``) holds bearer tokens, and
  ``EMOSERVE_TOKEN`` the client's token: both are read by
  :mod:`emoserve.runtime.security`, never as config keys.

Unknown keys, in the file or in ``EMOSERVE_*`` variables, are rejected by name.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from emoserve.runtime.errors import ConfigError

ENV_PREFIX = "EMOSERVE_"
ENV_CONFIG_PATH = "EMOSERVE_CONFIG"
ENV_TOKENS = "EMOSERVE_TOKENS"
"""Default variable holding the gateway's accepted bearer tokens (see :class:`AuthConfig`)."""
ENV_CLIENT_TOKEN = "EMOSERVE_TOKEN"
"""Variable holding the token the ``emoserve`` client commands send."""
_NOT_CONFIG_KEYS = frozenset({ENV_CONFIG_PATH, ENV_TOKENS, ENV_CLIENT_TOKEN})

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]


class _Validated:
    """Mixin: checks every field against its type hint, coercing YAML-friendly forms.

    Accepted coercions: int -> float, list -> tuple, mapping -> nested config.
    bool is never accepted for int/float fields.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = _coerce(type(self).__name__, f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Per-class bound checks; raise :class:`ConfigError`."""

    def _require(self, ok: bool, name: str, expectation: str) -> None:
        if not ok:
            value = getattr(self, name)
            raise ConfigError(f"{type(self).__name__}.{name} must be {expectation}, got {value!r}")


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    where = f"{owner}.{name}"
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(owner, f"{name}[{i}]", item_type, v) for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return _build(hint, value, f"{name}.")
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if hint in (bool, str) and not isinstance(value, hint):
        raise ConfigError(f"{where} must be a {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Constructs config ``cls`` from a mapping, rejecting unknown keys by name."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        listed = ", ".join(repr(f"{prefix}{key}") for key in unknown)
        raise ConfigError(f"unknown config key(s) {listed}; allowed: {names}")
    return cls(**values)


@dataclass(frozen=True)
class BatchingConfig(_Validated):
    """Dynamic batching of one stage (Triton ``dynamic_batching`` semantics)."""

    max_batch_size: int = 8
    """Largest number of requests executed together."""
    max_queue_delay_us: int = 2000
    """Longest time the oldest queued request waits for a batch to fill, in µs (0 = never wait)."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes dispatched as soon as they can be formed, without waiting for the delay."""
    max_queue_size: int = 256
    """Queued (not yet executing) requests beyond which new ones fail with RESOURCE_EXHAUSTED."""
    default_timeout_us: int = 0
    """Queue timeout of requests that bring none, in µs (0 = no timeout)."""
    timeout_action: Literal["reject", "delay"] = "reject"
    """On queue timeout: "reject" fails the request (DEADLINE_EXCEEDED); "delay" serves it after all others."""
    priority_levels: int = 2
    """Number of priorities; a request's priority is in [0, priority_levels), lower served first. The vocoder
    serves the first chunk of each stream at priority 0 and later chunks at 1."""
    length_bucketing: bool = True
    """Build batches from requests of similar length (less padding) when more are queued than fit."""
    mix_priorities: bool = True
    """Fill a batch's free places with requests of lower priorities (Triton's behaviour). False keeps every batch
    to one priority level: a batch of first chunks stays small and fast instead of carrying later chunks."""
    instances: int = 1
    """Batches executed at once, each in its own worker thread (Triton's ``instance_group`` count). On a GPU,
    2 can overlap one batch's host work with the other's kernels; measure it (README, Performance)."""

    def _check(self) -> None:
        self._require(self.max_batch_size >= 1, "max_batch_size", ">= 1")
        self._require(self.instances >= 1, "instances", ">= 1")
        self._require(self.max_queue_delay_us >= 0, "max_queue_delay_us", ">= 0")
        self._require(
            all(1 <= s <= self.max_batch_size for s in self.preferred_batch_sizes),
            "preferred_batch_sizes",
            f"within [1, max_batch_size={self.max_batch_size}]",
        )
        self._require(
            len(set(self.preferred_batch_sizes)) == len(self.preferred_batch_sizes),
            "preferred_batch_sizes",
            "free of duplicates",
        )
        self._require(self.max_queue_size >= 1, "max_queue_size", ">= 1")
        self._require(self.default_timeout_us >= 0, "default_timeout_us", ">= 0")
        self._require(self.priority_levels >= 1, "priority_levels", ">= 1")
        object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(self.preferred_batch_sizes)))


@dataclass(frozen=True)
class TlsConfig(_Validated):
    """TLS of a gRPC server: off while ``cert_file`` is empty; mTLS when ``client_ca_file`` is set."""

    cert_file: str = ""
    """PEM certificate chain of the server."""
    key_file: str = ""
    """PEM private key of ``cert_file``."""
    client_ca_file: str = ""
    """PEM CA bundle; when set, every client must present a certificate signed by it (mutual TLS)."""

    @property
    def enabled(self) -> bool:
        """True when the server listens with TLS."""
        return bool(self.cert_file)

    def _check(self) -> None:
        self._require(bool(self.key_file) == bool(self.cert_file), "key_file", "set exactly when cert_file is set")
        self._require(not self.client_ca_file or self.enabled, "client_ca_file", "empty unless cert_file is set")


@dataclass(frozen=True)
class ClientTlsConfig(_Validated):
    """TLS of the gateway's connections to the stages: off while ``ca_file`` is empty."""

    ca_file: str = ""
    """PEM CA bundle that signed the stages' server certificates."""
    cert_file: str = ""
    """PEM client certificate chain presented to the stages (needed when they require mTLS)."""
    key_file: str = ""
    """PEM private key of ``cert_file``."""
    server_name: str = ""
    """Name checked against the stages' certificates instead of the host in their address ("" = that host)."""

    @property
    def enabled(self) -> bool:
        """True when the gateway connects to the stages with TLS."""
        return bool(self.ca_file)

    def _check(self) -> None:
        self._require(bool(self.key_file) == bool(self.cert_file), "key_file", "set exactly when cert_file is set")
        for name in ("cert_file", "server_name"):
            self._require(not getattr(self, name) or self.enabled, name, "empty unless ca_file is set")


@dataclass(frozen=True)
class AuthConfig(_Validated):
    """Bearer-token authentication of the public API (gateway only; health and reflection stay open).

    Authentication is on when ``token_file`` is set or the variable named by ``token_env`` is non-empty.
    """

    token_file: str = ""
    """File of accepted tokens: one per line; blank lines and lines starting with "#" are ignored."""
    token_env: str = ENV_TOKENS
    """Environment variable holding accepted tokens, separated by commas or whitespace ("" = none)."""

    def _check(self) -> None:
        self._require(
            self.token_env in _NOT_CONFIG_KEYS or not self.token_env.startswith(ENV_PREFIX),
            "token_env",
            f"{ENV_TOKENS!r} or a name not starting with {ENV_PREFIX!r} (those are config keys)",
        )


@dataclass(frozen=True)
class ServerConfig(_Validated):
    """gRPC server of one process."""

    host: str = "0.0.0.0"
    """Interface to listen on ("0.0.0.0" all IPv4, "[::]" all IPv6, "127.0.0.1" loopback)."""
    port: int = 50051
    """TCP port; 0 picks a free port (see ``StageServer.port``)."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message sent or received, in bytes."""
    grace_period_s: float = 10.0
    """On shutdown, time in-flight RPCs get to finish before they are cancelled."""
    gil_switch_interval_us: int = 500
    """Python's thread switch interval (``sys.setswitchinterval``) for the process, in µs. The event loop, gRPC's
    poller and the batcher's worker thread share the GIL; CPython's 5 ms default lets a busy thread hold it long
    enough to delay replies (measured on an H100: 1-stream time to first audio 17.0 → 12.9 ms at 500 µs)."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """TLS / mutual TLS of the server (plaintext by default)."""
    gc_freeze: bool = True
    """Once serving, freeze the objects alive (``gc.freeze``, :mod:`emoserve.runtime.heap`) so that a full garbage
    collection under load does not walk torch, gRPC and the model (a 140 ms stall of the event loop)."""

    def _check(self) -> None:
        self._require(bool(self.host), "host", "non-empty")
        self._require(0 <= self.port <= 65535, "port", "within [0, 65535]")
        self._require(self.max_message_bytes >= 1024, "max_message_bytes", ">= 1024")
        self._require(self.grace_period_s >= 0, "grace_period_s", ">= 0")
        self._require(self.gil_switch_interval_us >= 1, "gil_switch_interval_us", ">= 1")


@dataclass(frozen=True)
class MetricsConfig(_Validated):
    """Prometheus endpoint (``http://HOST:PORT/metrics``) of one process; names in README "Observability"."""

    host: str = ""
    """Interface the metrics endpoint listens on ("" = the gRPC server's host)."""
    port: int = 9464
    """TCP port; 0 picks a free port, -1 disables metrics."""

    def _check(self) -> None:
        self._require(-1 <= self.port <= 65535, "port", "within [0, 65535], or -1 (disabled)")


@dataclass(frozen=True)
class StreamingConfig(_Validated):
    """Chunking of streamed audio (vocoder stage)."""

    first_chunk_frames: int = 8
    """Mel frames in a stream's first chunk (8 frames = 128 ms at 16 kHz, hop 256): smaller = earlier audio."""
    max_chunk_frames: int = 128
    """Mel frames in each chunk after the first (the last may be shorter): equal chunks batch across streams
    without padding, and few of them keep the per-chunk overhead low."""

    def _check(self) -> None:
        self._require(self.first_chunk_frames >= 1, "first_chunk_frames", ">= 1")
        self._require(
            self.max_chunk_frames >= self.first_chunk_frames,
            "max_chunk_frames",
            f">= first_chunk_frames={self.first_chunk_frames}",
        )


EngineName = Literal["torch", "onnxruntime", "tensorrt"]
OrtProvider = Literal["cuda", "tensorrt", "cpu"]


@dataclass(frozen=True)
class EngineConfig(_Validated):
    """Which engine runs each stage's model, in order of preference, and the engines' options.

    A stage starts the first listed engine that is available, loads and warms up, and logs why (README
    "Engines"); the encoder's ``onnxruntime`` engine runs its style encoder on the CPU.
    """

    encoder: tuple[EngineName, ...] = ("torch",)
    """Encoder stage engines (torch, or onnxruntime: the style encoder on the CPU), most preferred first."""
    acoustic: tuple[EngineName, ...] = ("torch",)
    """Acoustic stage engines, most preferred first."""
    vocoder: tuple[EngineName, ...] = ("torch",)
    """Vocoder stage engines, most preferred first."""
    onnx_dir: str = ""
    """Folder of ONNX exports (``emoserve export-onnx``); "" = MODEL_DIR/onnx."""
    cache_dir: str = "~/.cache/emoserve"
    """Where missing ONNX exports are written on first use and TensorRT plans are cached."""
    export_missing: bool = True
    """Export a stage's ONNX graphs into cache_dir when onnx_dir lacks them (else the engine is skipped)."""
    onnxruntime_providers: tuple[OrtProvider, ...] = ("cuda", "tensorrt", "cpu")
    """ONNX Runtime execution providers in order of preference (those the installed build lacks are skipped)."""
    onnxruntime_threads: int = 0
    """ONNX Runtime intra-op threads (0 = one per physical core)."""
    onnxruntime_int8_style: bool = False
    """The encoder's onnxruntime engine runs the style encoder with int8 weights (dynamic quantization:
    smaller and faster on the CPU; vectors within cosine 0.98 of fp32)."""
    torch_compile_acoustic: bool = False
    """The acoustic stage's torch engine compiles its model with TorchInductor (``torch.compile``, dynamic
    shapes) before capturing its CUDA graphs: fused kernels, 17–22 % less time per batch on an H100, ≈ 1 min
    more warm-up (compiled kernels are cached on disk by PyTorch). CUDA only; ignored on the CPU."""
    tensorrt_min_frames: int = 16
    """TensorRT profiles: fewest mel frames (shorter inputs are padded: the models are masked)."""
    tensorrt_opt_frames: int = 256
    """TensorRT profiles: mel frames the kernels are tuned for."""
    tensorrt_max_frames: int = 2048
    """TensorRT profiles: most mel frames (longer vocoder inputs are split with context; longer acoustic
    outputs fail alone)."""
    tensorrt_opt_tokens: int = 64
    """TensorRT acoustic profiles: phonemes the kernels are tuned for."""
    tensorrt_max_tokens: int = 512
    """TensorRT acoustic profiles: most phonemes per segment."""

    def _check(self) -> None:
        for name in ("encoder", "acoustic", "vocoder", "onnxruntime_providers"):
            values = getattr(self, name)
            self._require(bool(values) and len(set(values)) == len(values), name, "a non-empty list without repeats")
        self._require(self.onnxruntime_threads >= 0, "onnxruntime_threads", ">= 0")
        self._require(
            1 <= self.tensorrt_min_frames <= self.tensorrt_opt_frames <= self.tensorrt_max_frames,
            "tensorrt_opt_frames",
            f"within [tensorrt_min_frames={self.tensorrt_min_frames}, tensorrt_max_frames={self.tensorrt_max_frames}]"
            " and tensorrt_min_frames >= 1",
        )
        self._require(
            1 <= self.tensorrt_opt_tokens <= self.tensorrt_max_tokens,
            "tensorrt_opt_tokens",
            f"within [1, tensorrt_max_tokens={self.tensorrt_max_tokens}]",
        )


MIN_CLIENT_PING_INTERVAL_MS = 1000
"""Servers accept client keepalive pings this often at most (faster ones are answered with GOAWAY)."""


@dataclass(frozen=True)
class PoolConfig(_Validated):
    """Gateway: how each stage's replica pool checks its replicas and detects failures."""

    keepalive_time_s: float = 5.0
    """Interval of keepalive pings on each connection (at least twice the stages' minimum ping interval)."""
    keepalive_timeout_s: float = 5.0
    """A ping unanswered this long closes the connection: its calls end with UNAVAILABLE."""
    max_reconnect_backoff_s: float = 1.0
    """Longest wait between two attempts to reconnect to a replica."""
    health_interval_s: float = 0.25
    """Time between two health checks of a replica that is not SERVING."""
    health_timeout_s: float = 2.0
    """Deadline of one health check."""
    refused_avoid_s: float = 2.0
    """After refusing a call, a replica is chosen only when no other serving replica is left, for this long."""

    def _check(self) -> None:
        least = 2 * MIN_CLIENT_PING_INTERVAL_MS / 1000
        self._require(self.keepalive_time_s >= least, "keepalive_time_s",
                      f">= {least:g} (twice the servers' minimum ping interval)")
        for name in ("keepalive_timeout_s", "max_reconnect_backoff_s", "health_interval_s", "health_timeout_s"):
            self._require(getattr(self, name) > 0, name, "> 0")
        self._require(self.refused_avoid_s >= 0, "refused_avoid_s", ">= 0")


@dataclass(frozen=True)
class StageConfig(_Validated):
    """Configuration of one pipeline stage process (or the gateway)."""

    device: Device = "auto"
    """Where the model runs: "auto" = cuda if available else cpu."""
    precision: Precision = "auto"
    """Compute precision: "auto" = fp16 on cuda, fp32 on cpu."""
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    """Dynamic batching of the stage's model calls."""
    server: ServerConfig = field(default_factory=ServerConfig)
    """gRPC server settings."""
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    """Chunking of streamed audio."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Prometheus metrics endpoint."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Engine of the acoustic and vocoder stages (torch, ONNX Runtime, TensorRT) with fallback."""
    max_text_chars: int = 10000
    """Longest accepted input text, in characters (INVALID_ARGUMENT beyond)."""
    max_emotion_chars: int = 500
    """Gateway: longest accepted emotion prompt, in characters (INVALID_ARGUMENT beyond)."""
    stage_tls: ClientTlsConfig = field(default_factory=ClientTlsConfig)
    """Gateway: TLS (with a client certificate: mTLS) of its connections to the stages."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """Gateway: health checking, keepalive and retry of its connections to each stage's replicas."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    """Gateway: bearer-token authentication of the public API."""
    replica: str = ""
    """Replica name reported in ``StageTiming.replica`` ("" = host name)."""
    warmup: bool = True
    """Run warm-up inferences before reporting SERVING."""
    embedding_cache_size: int = 4096
    """Encoder: style embeddings (emotion prompts and segment texts) kept in an LRU cache; 0 disables it."""

    def _check(self) -> None:
        self._require(self.max_text_chars >= 1, "max_text_chars", ">= 1")
        self._require(self.max_emotion_chars >= 0, "max_emotion_chars", ">= 0")
        self._require(self.embedding_cache_size >= 0, "embedding_cache_size", ">= 0")
        if not self.replica:
            object.__setattr__(self, "replica", socket.gethostname())


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collects ``EMOSERVE_*`` variables into a nested mapping of StageConfig keys (any section depth)."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_CONFIG_KEYS:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        owner: Any = StageConfig
        target = out
        for depth, name in enumerate(path):
            hint = typing.get_type_hints(owner).get(name)
            leaf = depth == len(path) - 1
            if hint is None or dataclasses.is_dataclass(hint) == leaf:
                raise ConfigError(f"unknown environment variable {key!r}")
            if not leaf:
                owner, target = hint, target.setdefault(name, {})
        try:
            target[path[-1]] = raw if hint is str else yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {key}={raw!r} is not valid YAML: {exc}") from None
    return out


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> StageConfig:
    """Builds a validated :class:`StageConfig`.

    Args:
        path: YAML file; ``None`` uses ``$EMOSERVE_CONFIG`` if set, else defaults only.
        environ: Environment to read ``EMOSERVE_*`` from (default ``os.environ``).
        **overrides: Top-level StageConfig fields; a mapping value for ``batching``
            or ``server`` is merged into that section (``batching={"max_batch_size": 4}``).

    Returns:
        The frozen configuration.

    Raises:
        ConfigError: Unreadable file, unknown key or invalid value (the message
            names the key and the offending value).
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(ENV_CONFIG_PATH):
        path = env[ENV_CONFIG_PATH]
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        values = dict(loaded or {})
    values = _merge(values, _env_overrides(env))
    values = _merge(values, overrides)
    return _build(StageConfig, values)


def resolve_device(device: Device = "auto") -> str:
    """Resolves a configured device to a concrete torch device string.

    Args:
        device: "auto", "cpu" or "cuda".

    Returns:
        "cuda" or "cpu".

    Raises:
        ConfigError: "cuda" requested but CUDA is not available.
    """
    import torch  # deferred: the gateway never needs torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but torch.cuda.is_available() is False")
    return device


def resolve_precision(precision: Precision, device: str) -> str:
    """Resolves a configured precision for a resolved device.

    Args:
        precision: "auto", "fp32", "fp16" or "bf16".
        device: A resolved device ("cpu", "cuda" or "cuda:N").

    Returns:
        "fp32", "fp16" or "bf16"; "auto" gives fp16 on cuda and fp32 on cpu.

    Raises:
        ConfigError: bf16 requested on a GPU without bf16 support.
    """
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if on_cuda else "fp32"
    if precision == "bf16" and on_cuda:
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision 'bf16' is not supported on device {device!r}")
    return precision
