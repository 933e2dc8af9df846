"""The one asyncio dynamic batcher (Triton ``dynamic_batching`` semantics).

Requests are queued by :meth:`DynamicBatcher.submit`; a scheduler task forms
batches and runs ``execute(items) -> results`` in a worker thread:

* a batch is dispatched when ``max_batch_size`` items are queued, when a
  preferred batch size can be formed, or when the oldest queued item has waited
  ``max_queue_delay_us``;
* lower priority numbers are served first; within a priority, oldest first;
  free places are filled from lower priorities unless ``mix_priorities`` is off;
* with length bucketing, when more items are queued than fit, the batch is the
  oldest item plus the queued items closest to it in length (less padding);
  the oldest item is always included, so nothing starves within its priority;
* a full queue rejects at once (:class:`QueueFullError`); an item queued past
  its timeout is rejected (:class:`QueueTimeoutError`) or, with
  ``timeout_action="delay"``, demoted behind every other item;
* a cancelled ``submit`` (client gone) removes its item from the queue;
* ``execute`` returns one result per item; an exception *returned* for an item
  fails that item only, an exception *raised* by ``execute`` fails the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generic, Literal, Protocol, Sequence, TypeVar

from emoserve.runtime.config import BatchingConfig
from emoserve.runtime.errors import BatcherClosedError, QueueFullError, QueueTimeoutError

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

RejectReason = Literal["queue_full", "timeout", "closed", "cancelled"]


class BatchObserver(Protocol):
    """Receives batching telemetry; implemented by the telemetry layer.

    Called on the event loop; implementations must be fast and must not raise
    (exceptions are logged and ignored).
    """

    def on_batch(self, batcher: str, batch_size: int, queue_s: Sequence[float], compute_s: float, failed: bool) -> None:
        """One batch finished: its size, each item's queue wait and the compute time."""

    def on_reject(self, batcher: str, reason: RejectReason) -> None:
        """One item left the queue without being executed."""

    def on_item(self, batcher: str, enqueued: float, timed: Timed) -> None:
        """One item's result reached its caller; runs in the caller's context (its trace span is current).

        ``enqueued`` is the ``time.perf_counter()`` at which the item was queued; it waited ``timed.queue_s``,
        then its batch ran for ``timed.compute_s``.
        """


@dataclass(frozen=True)
class BatcherStats:
    """Snapshot of a batcher's counters (Triton-style: avg batch = inference / exec).

    Attributes:
        inference_count: Items executed (successfully or not).
        exec_count: Batches executed.
        pending: Items queued now (not yet executing).
        in_flight: Batches executing now.
        queue_full_count: Items rejected because the queue was full.
        timeout_count: Items rejected by their queue timeout.
        cancelled_count: Items removed from the queue because their caller went away.
    """

    inference_count: int = 0
    exec_count: int = 0
    pending: int = 0
    in_flight: int = 0
    queue_full_count: int = 0
    timeout_count: int = 0
    cancelled_count: int = 0

    @property
    def avg_batch_size(self) -> float:
        """Mean executed batch size (0.0 before the first batch)."""
        return self.inference_count / self.exec_count if self.exec_count else 0.0


@dataclass(frozen=True)
class Timed(Generic[R]):
    """A result with the timing of the batch that produced it (for ``StageTiming``).

    Attributes:
        value: The item's result.
        queue_s: Time the item waited in the queue.
        compute_s: Execution time of its batch.
        batch_size: Size of its batch.
    """

    value: R
    queue_s: float
    compute_s: float
    batch_size: int

    @property
    def queue_ms(self) -> float:
        """Queue wait in milliseconds."""
        return self.queue_s * 1e3

    @property
    def compute_ms(self) -> float:
        """Batch compute time in milliseconds."""
        return self.compute_s * 1e3


@dataclass(eq=False)
class _Entry(Generic[T]):
    item: T
    future: asyncio.Future
    priority: int
    length: int
    enqueued: float
    timer: asyncio.TimerHandle | None = None
    demoted: bool = False


class DynamicBatcher(Generic[T, R]):
    """Dynamic batcher around a batch function.

    Args:
        execute: Batch function ``list[T] -> list[R | BaseException]`` (same
            length and order); runs in a worker thread.
        config: Batching settings.
        length_of: Length of an item (e.g. phoneme count) for length bucketing;
            None disables bucketing.
        name: Batcher name for stats, logs and errors.
        executor: Executor running ``execute``; default: a dedicated pool of
            ``config.instances`` threads, shut down by :meth:`close`. At most
            ``config.instances`` batches execute at once (Triton's instance
            count); while all are busy, the queue keeps filling, so batches
            grow under load.
        observer: Telemetry sink; the public attribute ``observer`` may be set later, before serving.
    """

    def __init__(
        self,
        execute: Callable[[list[T]], Sequence[R | BaseException]],
        config: BatchingConfig,
        *,
        length_of: Callable[[T], int] | None = None,
        name: str,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._execute = execute
        self._length_of = length_of
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(config.instances, thread_name_prefix=f"batcher-{name}")
        self.observer = observer
        self._slots = asyncio.Semaphore(config.instances)
        self._queue: list[_Entry[T]] = []
        self._wakeup = asyncio.Event()
        self._scheduler: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closed = False
        self._counts = dict.fromkeys(
            ("inference_count", "exec_count", "queue_full_count", "timeout_count", "cancelled_count"), 0
        )

    def stats(self) -> BatcherStats:
        """Returns a snapshot of the counters."""
        return BatcherStats(pending=len(self._queue), in_flight=len(self._running), **self._counts)

    async def submit(self, item: T, *, priority: int = 0, timeout_s: float | None = None) -> R:
        """Queues ``item`` and returns its result once its batch has run.

        Args:
            item: The request.
            priority: In ``[0, priority_levels)``; lower is served first.
            timeout_s: Longest time to wait *in the queue* (execution is not
                bounded), e.g. the gRPC ``context.time_remaining()``; None uses
                ``default_timeout_us`` (0 = no timeout); <= 0 fails at once.

        Returns:
            The item's result.

        Raises:
            QueueFullError: The queue holds ``max_queue_size`` items.
            QueueTimeoutError: Queued past the timeout (``timeout_action="reject"``),
                or the timeout was already spent.
            BatcherClosedError: The batcher is closing.
            ValueError: Priority outside ``[0, priority_levels)``.
            Exception: Whatever ``execute`` returned for or raised on this item.
        """
        return (await self.submit_timed(item, priority=priority, timeout_s=timeout_s)).value

    async def submit_timed(self, item: T, *, priority: int = 0, timeout_s: float | None = None) -> Timed[R]:
        """Like :meth:`submit`, also returning queue/compute time and batch size."""
        if not 0 <= priority < self.config.priority_levels:
            raise ValueError(f"priority must be in [0, {self.config.priority_levels}), got {priority!r}")
        if timeout_s is None and self.config.default_timeout_us:
            timeout_s = self.config.default_timeout_us / 1e6
        if self._closed:
            self._reject("closed")
            raise BatcherClosedError(f"batcher {self.name!r} is closed")
        if len(self._queue) >= self.config.max_queue_size:
            self._reject("queue_full")
            raise QueueFullError(f"batcher {self.name!r} queue is full ({self.config.max_queue_size} requests)")
        if timeout_s is not None and timeout_s <= 0:
            self._reject("timeout")
            raise QueueTimeoutError(f"request reached batcher {self.name!r} with no time left ({timeout_s!r} s)")
        loop = asyncio.get_running_loop()
        if self._scheduler is None:
            self._scheduler = loop.create_task(self._schedule(), name=f"batcher-{self.name}")
        length = self._length_of(item) if self._length_of is not None else 0
        entry = _Entry(item, loop.create_future(), priority, length, time.perf_counter())
        if timeout_s is not None:
            entry.timer = loop.call_later(timeout_s, self._on_timeout, entry, timeout_s)
        self._queue.append(entry)
        self._wakeup.set()
        try:
            timed = await entry.future
        except asyncio.CancelledError:
            if self._remove(entry):
                self._reject("cancelled")
            raise
        if self.observer is not None:
            try:
                self.observer.on_item(self.name, entry.enqueued, timed)
            except Exception:  # noqa: BLE001 - telemetry must never break serving
                log.exception("batch observer failed")
        return timed

    async def close(self) -> None:
        """Stops accepting items, runs everything already queued, then releases the executor."""
        self._closed = True
        self._wakeup.set()
        if self._scheduler is not None:
            await self._scheduler
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    # -- queue bookkeeping -------------------------------------------------

    def _reject(self, reason: RejectReason) -> None:
        counter = f"{reason}_count"
        if counter in self._counts:
            self._counts[counter] += 1
        if self.observer is not None:
            try:
                self.observer.on_reject(self.name, reason)
            except Exception:  # noqa: BLE001 - telemetry must never break serving
                log.exception("batch observer failed")

    def _remove(self, entry: _Entry[T]) -> bool:
        """Drops a queued entry; False if it already left the queue."""
        try:
            self._queue.remove(entry)
        except ValueError:
            return False
        if entry.timer is not None:
            entry.timer.cancel()
        self._wakeup.set()
        return True

    def _on_timeout(self, entry: _Entry[T], timeout_s: float) -> None:
        if entry.future.done() or entry not in self._queue:
            return
        if self.config.timeout_action == "delay":
            entry.demoted = True
            return
        self._remove(entry)
        self._reject("timeout")
        entry.future.set_exception(
            QueueTimeoutError(f"request waited more than {timeout_s * 1e3:.1f} ms in batcher {self.name!r} queue")
        )

    # -- scheduling ----------------------------------------------------------

    async def _schedule(self) -> None:
        """Forms batches while items are queued; returns once closed and empty."""
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            if batch is None:
                self._slots.release()
                return
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[_Entry[T]] | None:
        cfg = self.config
        delay_s = cfg.max_queue_delay_us / 1e6
        while True:
            self._wakeup.clear()
            count = len(self._queue)
            if count == 0:
                if self._closed:
                    return None
                await self._wakeup.wait()
                continue
            waited = time.perf_counter() - self._queue[0].enqueued
            if self._closed or count >= cfg.max_batch_size or waited >= delay_s:
                return self._take(min(count, cfg.max_batch_size))
            preferred = [size for size in cfg.preferred_batch_sizes if size <= count]
            if preferred:
                return self._take(preferred[-1])
            try:
                await asyncio.wait_for(self._wakeup.wait(), delay_s - waited)
            except asyncio.TimeoutError:
                pass

    def _take(self, size: int) -> list[_Entry[T]]:
        """Removes and returns the next batch of ``size`` entries."""
        levels: dict[int, list[_Entry[T]]] = {}
        for entry in self._queue:  # queue order = arrival order
            levels.setdefault(self.config.priority_levels if entry.demoted else entry.priority, []).append(entry)
        ordered = [levels[p] for p in sorted(levels)]
        if not self.config.mix_priorities:
            ordered = ordered[:1]
        head = ordered[0][0]
        bucketing = self.config.length_bucketing and self._length_of is not None
        batch: list[_Entry[T]] = []
        for level in ordered:
            room = size - len(batch)
            if room <= 0:
                break
            if bucketing and len(level) > room:
                # Stable sort: ties in length distance go to the older entry; the head has distance 0.
                rest = sorted(level, key=lambda e: abs(e.length - head.length))
                level = [head] + [e for e in rest if e is not head] if head in level else rest
            batch.extend(level[:room])
        taken = set(map(id, batch))
        self._queue = [e for e in self._queue if id(e) not in taken]
        for entry in batch:
            if entry.timer is not None:
                entry.timer.cancel()
        return batch

    async def _run(self, batch: list[_Entry[T]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        queue_s = [started - e.enqueued for e in batch]
        items = [e.item for e in batch]
        failed = False
        try:
            results = await loop.run_in_executor(self._executor, self._execute, items)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batcher {self.name!r}: execute returned {len(results)} results for {len(batch)} items"
                )
        except Exception as exc:  # noqa: BLE001 - a raised error fails the whole batch
            failed = True
            results = [exc] * len(batch)
        finally:
            self._slots.release()
        compute_s = time.perf_counter() - started
        self._counts["inference_count"] += len(batch)
        self._counts["exec_count"] += 1
        for entry, waited, result in zip(batch, queue_s, results):
            if entry.future.done():  # caller cancelled while executing
                continue
            if isinstance(result, BaseException):
                entry.future.set_exception(result)
            else:
                entry.future.set_result(Timed(result, waited, compute_s, len(batch)))
        if self.observer is not None:
            try:
                self.observer.on_batch(self.name, len(batch), queue_s, compute_s, failed)
            except Exception:  # noqa: BLE001 - telemetry must never break serving
                log.exception("batch observer failed")
