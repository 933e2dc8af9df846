"""Shared runtime of every emoserve process: config, tensor codec, dynamic batching,
health and server bootstrap ("one mechanism, one place")."""

from emoserve.runtime.batcher import BatcherStats, BatchObserver, DynamicBatcher, Timed
from emoserve.runtime.config import (
    BatchingConfig,
    ServerConfig,
    StageConfig,
    load_config,
    resolve_device,
    resolve_precision,
)
from emoserve.runtime.errors import (
    BatcherClosedError,
    ConfigError,
    EmoserveError,
    NotFoundError,
    QueueFullError,
    QueueTimeoutError,
    TensorValidationError,
    grpc_status_for,
)
from emoserve.runtime.server import StageServer
from emoserve.runtime.tensors import TensorSpec, decode, decode_torch, encode

__all__ = [
    "BatchObserver",
    "BatcherClosedError",
    "BatcherStats",
    "BatchingConfig",
    "ConfigError",
    "DynamicBatcher",
    "EmoserveError",
    "NotFoundError",
    "QueueFullError",
    "QueueTimeoutError",
    "ServerConfig",
    "StageConfig",
    "StageServer",
    "TensorSpec",
    "TensorValidationError",
    "Timed",
    "decode",
    "decode_torch",
    "encode",
    "grpc_status_for",
    "load_config",
    "resolve_device",
    "resolve_precision",
]
