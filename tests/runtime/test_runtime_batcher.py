"""DynamicBatcher behaviour with real asyncio concurrency and a real worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

import pytest

from emoserve.runtime import (
    BatcherClosedError,
    BatchingConfig,
    DynamicBatcher,
    QueueFullError,
    QueueTimeoutError,
)

pytestmark = pytest.mark.timeout(10)

BLOCK = -1  # item that holds the worker until Recorder.release()
LONG_DELAY_US = 10_000_000  # 10 s: a test finishing fast proves dispatch did not wait for it


class Recorder:
    """Batch function recording each batch; item BLOCK parks the worker until released."""

    def __init__(self, fn: Callable[[Any], Any] = lambda x: x * 10) -> None:
        self.batches: list[list[Any]] = []
        self.started: list[float] = []
        self.threads: set[str] = set()
        self.fn = fn
        self.blocking = threading.Event()
        self.gate = threading.Event()

    def __call__(self, items: list[Any]) -> list[Any]:
        self.started.append(time.perf_counter())
        self.threads.add(threading.current_thread().name)
        if BLOCK in items:
            self.blocking.set()
            assert self.gate.wait(5), "gate never released"
        else:
            self.batches.append(list(items))
        return [self.fn(x) for x in items]

    def release(self) -> None:
        self.gate.set()

    @property
    def executed(self) -> list[Any]:
        return [x for batch in self.batches for x in batch]


def make(rec: Recorder, length_of: Callable[[Any], int] | None = None, **cfg: Any) -> DynamicBatcher:
    return DynamicBatcher(rec, BatchingConfig(**cfg), length_of=length_of, name="test")


async def occupy(batcher: DynamicBatcher, rec: Recorder) -> asyncio.Task:
    """Keeps the single instance busy so that later submits accumulate in the queue."""
    task = asyncio.create_task(batcher.submit(BLOCK))
    while not rec.blocking.is_set():
        await asyncio.sleep(0.001)
    return task


async def wait_pending(batcher: DynamicBatcher, count: int) -> None:
    while batcher.stats().pending != count:
        await asyncio.sleep(0.001)


def test_lone_request_is_dispatched_after_max_queue_delay_not_before() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_queue_delay_us=80_000)
        t0 = time.perf_counter()
        timed = await batcher.submit_timed(3)
        assert timed.value == 30 and timed.batch_size == 1
        assert rec.started[0] - t0 >= 0.075
        assert timed.queue_s >= 0.075
        assert time.perf_counter() - t0 < 2.0
        await batcher.close()

    asyncio.run(body())


def test_full_batch_is_dispatched_immediately() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_batch_size=4, max_queue_delay_us=LONG_DELAY_US)
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(4))), 3)
        assert results == [0, 10, 20, 30]
        assert rec.batches == [[0, 1, 2, 3]]
        await batcher.close()

    asyncio.run(body())


def test_preferred_batch_size_is_dispatched_without_waiting_for_delay() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_batch_size=8, preferred_batch_sizes=(2,), max_queue_delay_us=LONG_DELAY_US)
        results = await asyncio.wait_for(asyncio.gather(batcher.submit(1), batcher.submit(2)), 3)
        assert results == [10, 20]
        assert rec.batches == [[1, 2]]
        await batcher.close()

    asyncio.run(body())


def test_batches_never_exceed_max_batch_size_and_stats_count_them() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_batch_size=3, max_queue_delay_us=1000)
        blocker = await occupy(batcher, rec)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(10)]
        await wait_pending(batcher, 10)
        rec.release()
        assert await asyncio.gather(*tasks) == [i * 10 for i in range(10)]
        await blocker
        assert [len(b) for b in rec.batches] == [3, 3, 3, 1]
        stats = batcher.stats()
        assert (stats.inference_count, stats.exec_count, stats.pending) == (11, 5, 0)
        assert stats.avg_batch_size == pytest.approx(11 / 5)
        await batcher.close()

    asyncio.run(body())


def test_full_queue_rejects_new_request_immediately() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_queue_size=2)
        blocker = await occupy(batcher, rec)
        queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
        await wait_pending(batcher, 2)
        t0 = time.perf_counter()
        with pytest.raises(QueueFullError, match="queue is full"):
            await batcher.submit(3)
        assert time.perf_counter() - t0 < 0.5
        assert batcher.stats().queue_full_count == 1
        rec.release()
        assert await asyncio.gather(*queued) == [10, 20]
        await blocker
        await batcher.close()

    asyncio.run(body())


def test_request_queued_past_its_timeout_is_rejected_and_never_executed() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec)
        blocker = await occupy(batcher, rec)
        with pytest.raises(QueueTimeoutError):
            await batcher.submit(5, timeout_s=0.05)
        stats = batcher.stats()
        assert (stats.timeout_count, stats.pending) == (1, 0)
        rec.release()
        await blocker
        assert await batcher.submit(6) == 60
        assert 5 not in rec.executed
        await batcher.close()

    asyncio.run(body())


def test_request_arriving_with_no_time_left_is_rejected_at_once() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec)
        with pytest.raises(QueueTimeoutError, match="no time left"):
            await batcher.submit(1, timeout_s=0.0)
        assert batcher.stats().timeout_count == 1 and rec.started == []
        await batcher.close()

    asyncio.run(body())


def test_default_timeout_from_config_applies_when_submit_gives_none() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, default_timeout_us=30_000)
        blocker = await occupy(batcher, rec)
        with pytest.raises(QueueTimeoutError):
            await batcher.submit(5)
        rec.release()
        await blocker
        await batcher.close()

    asyncio.run(body())


def test_delay_timeout_action_serves_expired_request_after_the_others() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_batch_size=1, timeout_action="delay")
        blocker = await occupy(batcher, rec)
        tasks = [asyncio.create_task(batcher.submit(1, timeout_s=0.02))]
        tasks += [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0.1)
        rec.release()
        assert await asyncio.gather(*tasks) == [10, 20, 30]
        await blocker
        assert rec.executed == [2, 3, 1]
        await batcher.close()

    asyncio.run(body())


def test_lower_priority_number_is_served_first() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_batch_size=1, priority_levels=3)
        blocker = await occupy(batcher, rec)
        tasks = [asyncio.create_task(batcher.submit(item, priority=prio)) for item, prio in ((1, 2), (2, 1), (3, 0), (4, 1))]
        await wait_pending(batcher, 4)
        rec.release()
        await asyncio.gather(*tasks, blocker)
        assert rec.executed == [3, 2, 4, 1]
        with pytest.raises(ValueError, match=r"priority must be in \[0, 3\), got 3"):
            await batcher.submit(9, priority=3)
        await batcher.close()

    asyncio.run(body())


@pytest.mark.parametrize("mix", [True, False])
def test_mix_priorities_decides_whether_lower_priorities_fill_a_batch(mix: bool) -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_batch_size=4, priority_levels=2, mix_priorities=mix)
        blocker = await occupy(batcher, rec)
        tasks = [asyncio.create_task(batcher.submit(item, priority=prio)) for item, prio in ((1, 1), (2, 0), (3, 1))]
        await wait_pending(batcher, 3)
        rec.release()
        await asyncio.gather(*tasks, blocker)
        assert rec.batches == ([[2, 1, 3]] if mix else [[2], [1, 3]])
        await batcher.close()

    asyncio.run(body())


def test_length_bucketing_groups_similar_lengths() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, length_of=abs, max_batch_size=3)
        blocker = await occupy(batcher, rec)
        lengths = [10, 100, 11, 101, 12, 102]
        tasks = [asyncio.create_task(batcher.submit(n)) for n in lengths]
        await wait_pending(batcher, len(lengths))
        rec.release()
        await asyncio.gather(*tasks, blocker)
        assert [sorted(b) for b in rec.batches] == [[10, 11, 12], [100, 101, 102]]
        await batcher.close()

    asyncio.run(body())


def test_length_bucketing_always_includes_the_oldest_request() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, length_of=abs, max_batch_size=2)
        blocker = await occupy(batcher, rec)
        lengths = [500, 10, 11, 12, 13]  # the oldest is an outlier
        tasks = [asyncio.create_task(batcher.submit(n)) for n in lengths]
        await wait_pending(batcher, len(lengths))
        rec.release()
        await asyncio.gather(*tasks, blocker)
        # The outlier goes first (with its nearest neighbour), then the next-oldest with its nearest one.
        assert [sorted(b) for b in rec.batches] == [[13, 500], [10, 11], [12]]
        await batcher.close()

    asyncio.run(body())


def test_without_bucketing_batches_follow_arrival_order() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, length_of=abs, max_batch_size=3, length_bucketing=False)
        blocker = await occupy(batcher, rec)
        tasks = [asyncio.create_task(batcher.submit(n)) for n in [10, 100, 11, 101, 12, 102]]
        await wait_pending(batcher, 6)
        rec.release()
        await asyncio.gather(*tasks, blocker)
        assert rec.batches == [[10, 100, 11], [101, 12, 102]]
        await batcher.close()

    asyncio.run(body())


def test_cancelled_submit_removes_item_so_no_work_is_done_for_it() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec)
        blocker = await occupy(batcher, rec)
        doomed = asyncio.create_task(batcher.submit(7))
        kept = asyncio.create_task(batcher.submit(8))
        await wait_pending(batcher, 2)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        stats = batcher.stats()
        assert (stats.pending, stats.cancelled_count) == (1, 1)
        rec.release()
        assert await kept == 80
        await blocker
        assert rec.executed == [8]
        await batcher.close()

    asyncio.run(body())


def test_returned_exception_fails_only_its_item() -> None:
    def fn(x: int) -> Any:
        return ValueError(f"bad item {x}") if x % 2 else x

    async def body() -> None:
        rec = Recorder(fn)
        batcher = make(rec, max_batch_size=4, max_queue_delay_us=LONG_DELAY_US)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        assert rec.batches == [[0, 1, 2, 3]]
        assert results[0] == 0 and results[2] == 2
        assert isinstance(results[1], ValueError) and str(results[1]) == "bad item 1"
        assert isinstance(results[3], ValueError)
        await batcher.close()

    asyncio.run(body())


def test_raised_exception_fails_whole_batch_but_not_the_batcher() -> None:
    def execute(items: list[int]) -> list[int]:
        if 0 in items:
            raise RuntimeError("boom")
        return items

    async def body() -> None:
        batcher = DynamicBatcher(execute, BatchingConfig(max_batch_size=2, max_queue_delay_us=LONG_DELAY_US), name="t")
        results = await asyncio.gather(batcher.submit(0), batcher.submit(1), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
        assert await asyncio.gather(batcher.submit(2), batcher.submit(3)) == [2, 3]
        await batcher.close()

    asyncio.run(body())


def test_wrong_number_of_results_fails_the_batch() -> None:
    async def body() -> None:
        batcher = DynamicBatcher(lambda items: items[:1], BatchingConfig(max_batch_size=2, max_queue_delay_us=LONG_DELAY_US), name="t")
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "returned 1 results for 2 items" in str(r) for r in results)
        await batcher.close()

    asyncio.run(body())


def test_execute_runs_in_a_worker_thread_keeping_the_loop_responsive() -> None:
    def slow(items: list[int]) -> list[int]:
        time.sleep(0.3)
        return items

    async def body() -> None:
        batcher = DynamicBatcher(slow, BatchingConfig(max_queue_delay_us=0), name="t")
        work = asyncio.create_task(batcher.submit(1))
        ticks = 0
        while not work.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 10  # the loop kept running while execute slept
        await batcher.close()

    asyncio.run(body())


@pytest.mark.parametrize("instances", [1, 2])
def test_instances_bound_the_batches_executing_at_once(instances: int) -> None:
    """With ``instances`` worker threads, that many batches run together; one more waits for a free one."""
    inside, peak, lock = 0, 0, threading.Lock()
    both_in = threading.Event()

    def execute(items: list[int]) -> list[int]:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
            if inside == 2:
                both_in.set()
        both_in.wait(0.3)  # holds the batch until a second one runs beside it (or 0.3 s passed)
        with lock:
            inside -= 1
        return items

    async def body() -> None:
        batcher = DynamicBatcher(execute, BatchingConfig(max_batch_size=1, max_queue_delay_us=0, instances=instances),
                                 name="t")
        assert await asyncio.gather(*(batcher.submit(i) for i in range(3))) == [0, 1, 2]
        assert peak == instances
        await batcher.close()

    asyncio.run(body())


def test_close_drains_queued_work_and_rejects_new_requests() -> None:
    async def body() -> None:
        rec = Recorder()
        batcher = make(rec, max_queue_delay_us=LONG_DELAY_US)
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await wait_pending(batcher, 3)
        await asyncio.wait_for(batcher.close(), 3)  # does not wait out the 10 s delay
        assert [t.result() for t in tasks] == [0, 10, 20]
        with pytest.raises(BatcherClosedError):
            await batcher.submit(4)

    asyncio.run(body())
