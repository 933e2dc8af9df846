"""Client side of one stage: its replicas, their health, least-outstanding-requests balancing and retry.

The gateway holds one :class:`StagePool` per stage.

* **Health.** Every replica is checked actively over ``grpc.health.v1``: a ``Watch`` stream while it is
  SERVING (so a replica that starts draining or fails leaves the rotation at once; the stream ends at the
  first other status, so it never holds a draining server open), a ``Check`` every ``health_interval_s``
  while it is not. A replica that is loading, draining, unhealthy or unreachable takes no calls and comes
  back as soon as it reports SERVING again.
* **Balancing.** Each call goes to the serving replica with the fewest calls in flight (among equals, the
  least recently used). Replicas not heard from yet are used only while no replica is known to serve.
* **Retry.** A call the replica refused or dropped (``UNAVAILABLE``: connection refused or lost, replica
  draining; ``RESOURCE_EXHAUSTED``: its queue is full; ``CANCELLED`` by the replica: it arrived as the replica
  stopped, or was still running when its grace period ended) is retried on another replica within the same
  deadline. Stage calls are pure functions, so a retry is always safe; a stream is retried only if it failed
  before its first message.
* **Failure detection.** Keepalive pings on every channel detect a silently dead peer (host gone, process
  stopped): its calls, streams included, end with ``UNAVAILABLE`` instead of hanging. A closed connection
  (process killed) fails them at once. Reconnection backs off by at most ``max_reconnect_backoff_s``, so a
  restarted replica is back in rotation about that long after it reports SERVING.
* **Membership.** :meth:`StagePool.update_addresses` changes the replica set at run time (service
  discovery): new replicas are health-checked and join when SERVING; removed ones take no new calls and
  their channels close once their calls in flight have finished. A pool may have no replica at all: calls
  then fail at once with ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emoserve.runtime.config import ClientTlsConfig, PoolConfig
from emoserve.runtime.security import aio_channel
from emoserve.runtime.telemetry import propagate_trace_context

log = logging.getLogger(__name__)

RETRIED_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
"""Statuses of a call the replica refused or dropped: the call is retried on another replica. (A call that the
gateway itself cancels ends with ``asyncio.CancelledError``, never with one of these.)"""
_SERVING = health_pb2.HealthCheckResponse.SERVING
_STATUS_NAME = health_pb2.HealthCheckResponse.ServingStatus.Name
_HEALTH_REQUEST = health_pb2.HealthCheckRequest(service="")
"""Health of the whole server ("" is NOT_SERVING while the model loads and from the start of a drain)."""


def channel_options(config: PoolConfig, max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel arguments of a pool: message limits, keepalive and reconnection backoff."""
    backoff_ms = round(config.max_reconnect_backoff_s * 1000)
    timeout_ms = round(config.keepalive_timeout_s * 1000)
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", round(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        ("grpc.http2.ping_timeout_ms", timeout_ms),  # recent gRPC cores time keepalive pings out by this one
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keepalive pings also while no data flows
        ("grpc.initial_reconnect_backoff_ms", min(100, backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


class ReplicaState(enum.Enum):
    """What the pool knows of a replica's health."""

    UNKNOWN = "unknown"
    """Not heard from yet: used only while no replica is SERVING."""
    SERVING = "serving"
    """In rotation."""
    NOT_SERVING = "not serving"
    """Answers health checks but is loading, draining or unhealthy."""
    UNREACHABLE = "unreachable"
    """Its health check failed: no connection, or the connection broke."""


@dataclass(eq=False)
class Replica:
    """One address of a stage: its channel, health and calls in flight."""

    address: str
    channel: grpc.aio.Channel
    stub: Any
    state: ReplicaState = ReplicaState.UNKNOWN
    detail: str = ""
    """Why the replica is out of rotation (health status or connection error)."""
    outstanding: int = 0
    avoid_until: float = 0.0
    """``time.monotonic()`` until which the replica is avoided after refusing a call."""
    last_pick: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no call is in flight."""
    watcher: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.idle.set()


class StagePool:
    """Replicas of one stage behind a single :meth:`call` / :meth:`stream`; create it on the event loop.

    Args:
        stage: stage name for errors and logs.
        addresses: ``host:port`` of each replica (may be empty; see :meth:`update_addresses`).
        stub_class: generated stub class (e.g. ``stages_pb2_grpc.AcousticStub``).
        max_message_bytes: gRPC message size limit of the channels.
        tls: TLS (mTLS with a client certificate) of the channels; None or disabled: plaintext.
        options: health checking, keepalive and retry settings.
    """

    def __init__(
        self, stage: str, addresses: Sequence[str], stub_class: type, max_message_bytes: int,
        tls: ClientTlsConfig | None = None, options: PoolConfig | None = None,
    ) -> None:
        self.stage = stage
        self.options = options or PoolConfig()
        self._stub_class = stub_class
        self._tls = tls
        self._channel_options = channel_options(self.options, max_message_bytes)
        self._replicas: dict[str, Replica] = {}
        self._retiring: dict[Replica, asyncio.Task] = {}
        self._picks = itertools.count(1)
        self._closed = False
        self.update_addresses(addresses)

    @property
    def replicas(self) -> tuple[Replica, ...]:
        """The current replicas, in rotation or not (removed ones excluded), in the order they were added."""
        return tuple(self._replicas.values())

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        """The channel to one replica."""
        return aio_channel(address, self._tls, self._channel_options)

    # -- membership ------------------------------------------------------------------------------------------

    def update_addresses(self, addresses: Sequence[str]) -> None:
        """Makes ``addresses`` (``host:port``) the replicas of the stage; call on the event loop.

        New addresses are connected and health-checked (they take calls once SERVING); replicas whose address
        is gone leave the rotation at once and their channels close after their calls in flight finish.
        Ignored once the pool is closed.

        Raises:
            ValueError: an address is empty.
        """
        wanted = list(dict.fromkeys(a.strip() for a in addresses))
        if not all(wanted):
            raise ValueError(f"empty address in {list(addresses)!r} for the {self.stage} stage")
        if self._closed:
            log.debug("%s pool is closed; ignoring addresses %s", self.stage, wanted)
            return
        added = [a for a in wanted if a not in self._replicas]
        removed = [a for a in self._replicas if a not in wanted]
        for address in added:
            self._add(address)
        for address in removed:
            self._retire(self._replicas.pop(address))
        if added or removed:
            log.info("%s replicas: %s (added %s, removed %s)", self.stage, wanted, added, removed)

    def _add(self, address: str) -> None:
        channel = self._open_channel(address)
        replica = Replica(address, channel, self._stub_class(propagate_trace_context(channel)))
        replica.watcher = asyncio.get_running_loop().create_task(
            self._watch(replica), name=f"health of {self.stage} {address}"
        )
        self._replicas[address] = replica

    def _retire(self, replica: Replica) -> None:
        """Stops checking a removed replica; its channel closes once its calls in flight are done."""
        if replica.watcher is not None:
            replica.watcher.cancel()

        async def close_when_idle() -> None:
            await replica.idle.wait()
            await replica.channel.close()

        task = asyncio.get_running_loop().create_task(close_when_idle(), name=f"retire {self.stage} {replica.address}")
        self._retiring[replica] = task
        task.add_done_callback(lambda _: self._retiring.pop(replica, None))

    # -- health ------------------------------------------------------------------------------------------------

    async def _watch(self, replica: Replica) -> None:
        """Keeps ``replica.state`` current until cancelled."""
        stub = health_pb2_grpc.HealthStub(replica.channel)
        while True:
            try:
                reply = await stub.Check(_HEALTH_REQUEST, timeout=self.options.health_timeout_s)
                status = reply.status
                if status == _SERVING:
                    self._set_state(replica, ReplicaState.SERVING)
                    status = await _serving_until_change(stub)
                self._set_state(replica, ReplicaState.NOT_SERVING, _STATUS_NAME(status))
            except grpc.aio.AioRpcError as exc:
                self._set_state(replica, ReplicaState.UNREACHABLE, f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(self.options.health_interval_s)

    def _set_state(self, replica: Replica, state: ReplicaState, detail: str = "") -> None:
        previous, replica.state, replica.detail = replica.state, state, detail
        if state is previous:
            return
        if state is ReplicaState.SERVING:
            log.info("%s replica %s is serving%s", self.stage, replica.address,
                     "" if previous is ReplicaState.UNKNOWN else " again: back in rotation")
        elif previous is ReplicaState.UNKNOWN:
            log.info("%s replica %s is %s (%s)", self.stage, replica.address, state.value, detail)
        else:
            log.warning("%s replica %s out of rotation: %s (%s)", self.stage, replica.address, state.value, detail)

    # -- calls ---------------------------------------------------------------------------------------------------

    def pick(self, exclude: Collection[Replica] = ()) -> Replica | None:
        """The replica for the next call, or None if none is usable.

        Usable: SERVING (or, while none is, not heard from yet) and not in ``exclude``. Preferred, in order:
        SERVING, not recently refusing calls, fewest calls in flight, least recently picked.
        """
        now = time.monotonic()
        usable = [r for r in self._replicas.values()
                  if r not in exclude and r.state in (ReplicaState.SERVING, ReplicaState.UNKNOWN)]
        if not usable:
            return None
        best = min(usable, key=lambda r: (r.state is not ReplicaState.SERVING, r.avoid_until > now, r.outstanding,
                                          r.last_pick))
        best.last_pick = next(self._picks)
        return best

    def _next(self, refused: set[Replica], last_error: grpc.aio.AioRpcError | None) -> Replica:
        """The replica for the next attempt; raises the last refusal, or UNAVAILABLE, when none is left."""
        replica = self.pick(refused)
        if replica is not None:
            return replica
        if last_error is not None:
            raise last_error
        raise self._no_ready_replica()

    def _no_ready_replica(self) -> grpc.aio.AioRpcError:
        states = Counter(r.state.value for r in self._replicas.values())
        known = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none known"
        return grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
            details=f"no ready replica of stage {self.stage} (replicas: {known})",
        )

    def _refused(self, replica: Replica, exc: grpc.aio.AioRpcError) -> bool:
        """True (and the replica avoided for a while) if ``exc`` means the replica refused or dropped the call."""
        if exc.code() not in RETRIED_CODES:
            return False
        replica.avoid_until = time.monotonic() + self.options.refused_avoid_s
        level = logging.DEBUG if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else logging.WARNING
        log.log(level, "%s replica %s refused a call (%s: %s)", self.stage, replica.address, exc.code().name,
                exc.details())
        return True

    @contextmanager
    def _lease(self, replica: Replica) -> Iterator[None]:
        """Counts a call in flight on ``replica``."""
        replica.outstanding += 1
        replica.idle.clear()
        try:
            yield
        finally:
            replica.outstanding -= 1
            if replica.outstanding == 0:
                replica.idle.set()

    async def call(self, method: str, request: Any, timeout: float | None) -> Any:
        """Calls unary ``method`` on a replica, retrying refused calls on the others within ``timeout``.

        Raises:
            grpc.aio.AioRpcError: the stage's error; the last refusal when every usable replica refused;
                UNAVAILABLE when no replica is usable.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        refused: set[Replica] = set()
        last_error: grpc.aio.AioRpcError | None = None
        while True:
            replica = self._next(refused, last_error)
            with self._lease(replica):
                try:
                    return await getattr(replica.stub, method)(request, timeout=_remaining(deadline))
                except grpc.aio.AioRpcError as exc:
                    if not self._refused(replica, exc):
                        raise
                    refused.add(replica)
                    last_error = exc

    async def stream(self, method: str, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        """Server-streaming ``method`` on a replica; retried elsewhere only if refused before any message.

        Raises:
            grpc.aio.AioRpcError: as :meth:`call`; UNAVAILABLE as well when the replica fails mid-stream.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        refused: set[Replica] = set()
        last_error: grpc.aio.AioRpcError | None = None
        while True:
            replica = self._next(refused, last_error)
            with self._lease(replica):
                call = getattr(replica.stub, method)(request, timeout=_remaining(deadline))
                started = False
                try:
                    async for message in call:
                        started = True
                        yield message
                    return
                except grpc.aio.AioRpcError as exc:
                    if started or not self._refused(replica, exc):
                        raise
                    refused.add(replica)
                    last_error = exc
                finally:
                    call.cancel()  # no-op once finished; ends the RPC at once when the consumer stops early

    async def close(self) -> None:
        """Stops health checking and closes every channel; calls still in flight are cancelled."""
        self._closed = True
        replicas = [*self._replicas.values(), *self._retiring]
        tasks = [*(r.watcher for r in replicas if r.watcher is not None), *self._retiring.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._replicas.clear()
        await asyncio.gather(*(r.channel.close() for r in replicas))


async def _serving_until_change(stub: health_pb2_grpc.HealthStub) -> int:
    """Watches a SERVING server's health; returns the first other status (UNKNOWN if the stream ends)."""
    call = stub.Watch(_HEALTH_REQUEST)
    try:
        async for reply in call:
            if reply.status != _SERVING:
                return reply.status
        return health_pb2.HealthCheckResponse.UNKNOWN
    finally:
        call.cancel()


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a ``time.monotonic()`` value); at least 1 ms so gRPC reports it."""
    return None if deadline is None else max(deadline - time.monotonic(), 1e-3)
