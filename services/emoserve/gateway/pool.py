"""Client side of one stage: its replicas, least-outstanding-requests balancing and retry.

The gateway holds one :class:`StagePool` per stage. Each call goes to the healthy replica with the fewest
requests in flight; a call refused with ``UNAVAILABLE`` before the replica started it (connection refused,
replica loading or draining) is retried on another replica.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2.0
"""How long a replica that refused a call is avoided while others are available."""


@dataclass(eq=False)
class Replica:
    """One address of a stage, with its channel and in-flight count."""

    address: str
    channel: grpc.aio.Channel
    stub: Any
    outstanding: int = 0
    avoid_until: float = field(default=0.0)

    def available(self, now: float) -> bool:
        return now >= self.avoid_until


class StagePool:
    """Replicas of one stage behind a single ``call``.

    Args:
        stage: stage name for errors and logs.
        addresses: ``host:port`` of each replica.
        stub_class: generated stub class (e.g. ``stages_pb2_grpc.AcousticStub``).
        max_message_bytes: gRPC message size limit of the channels.
    """

    def __init__(self, stage: str, addresses: Sequence[str], stub_class: type, max_message_bytes: int) -> None:
        if not addresses:
            raise ValueError(f"no address given for the {stage} stage")
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self.stage = stage
        self.replicas = []
        for address in addresses:
            channel = grpc.aio.insecure_channel(address, options=options)
            self.replicas.append(Replica(address, channel, stub_class(channel)))

    def pick(self, exclude: set[Replica]) -> Replica | None:
        """The replica with the fewest calls in flight, preferring ones not recently refused."""
        now = time.monotonic()
        candidates = [r for r in self.replicas if r not in exclude]
        if not candidates:
            return None
        preferred = [r for r in candidates if r.available(now)] or candidates
        return min(preferred, key=lambda r: r.outstanding)

    def _retry_elsewhere(self, replica: Replica, exc: grpc.aio.AioRpcError, tried: set[Replica]) -> bool:
        """Marks a replica that refused a call (UNAVAILABLE); True if another replica is left to try."""
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        replica.avoid_until = time.monotonic() + RETRY_AFTER_S
        tried.add(replica)
        if len(tried) == len(self.replicas):
            return False
        log.warning("%s replica %s unavailable (%s); retrying elsewhere", self.stage, replica.address, exc.details())
        return True

    async def call(self, method: str, request: Any, timeout: float | None) -> Any:
        """Calls ``method`` on a replica, retrying not-started calls on the others.

        Raises:
            grpc.aio.AioRpcError: the stage's error, or UNAVAILABLE when every replica refused.
        """
        tried: set[Replica] = set()
        while True:
            replica = self.pick(tried)
            assert replica is not None
            replica.outstanding += 1
            try:
                return await getattr(replica.stub, method)(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if not self._retry_elsewhere(replica, exc, tried):
                    raise
            finally:
                replica.outstanding -= 1

    async def stream(self, method: str, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        """Server-streaming ``method`` on a replica; retried elsewhere only if refused before any message.

        Raises:
            grpc.aio.AioRpcError: as :meth:`call`.
        """
        tried: set[Replica] = set()
        while True:
            replica = self.pick(tried)
            assert replica is not None
            replica.outstanding += 1
            started = False
            try:
                async for message in getattr(replica.stub, method)(request, timeout=timeout):
                    started = True
                    yield message
                return
            except grpc.aio.AioRpcError as exc:
                if started or not self._retry_elsewhere(replica, exc, tried):
                    raise
            finally:
                replica.outstanding -= 1

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.channel.close()
