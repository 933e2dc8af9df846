"""Exceptions of the emoserve runtime and their gRPC status codes (one place).

Stages raise (or return, per batch item) these exceptions; servicers turn them
into gRPC errors with :func:`grpc_status_for`.
"""

from __future__ import annotations

import asyncio

import grpc


class EmoserveError(Exception):
    """Base class of all emoserve runtime errors."""


class ConfigError(EmoserveError, ValueError):
    """A configuration value or key is invalid."""


class TensorValidationError(EmoserveError, ValueError):
    """A received tensor does not match its :class:`~emoserve.runtime.tensors.TensorSpec`."""


class NotFoundError(EmoserveError, LookupError):
    """A named entity (voice, model, ...) does not exist."""


class QueueFullError(EmoserveError):
    """A batcher queue is at ``max_queue_size``; the request was rejected at once."""


class QueueTimeoutError(EmoserveError, TimeoutError):
    """A request waited in a batcher queue longer than its timeout."""


class BatcherClosedError(EmoserveError):
    """The batcher is shutting down and accepts no new requests."""


_STATUS_BY_TYPE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QueueTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BatcherClosedError, grpc.StatusCode.UNAVAILABLE),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),  # includes TensorValidationError, ConfigError
    (asyncio.TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (asyncio.CancelledError, grpc.StatusCode.CANCELLED),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
)


def grpc_status_for(exc: BaseException) -> grpc.StatusCode:
    """Maps an exception to the gRPC status code a servicer should abort with.

    Args:
        exc: The exception raised (or returned for one batch item).

    Returns:
        The matching status; ``INTERNAL`` for anything unexpected.
    """
    for exc_type, code in _STATUS_BY_TYPE:
        if isinstance(exc, exc_type):
            return code
    return grpc.StatusCode.INTERNAL
