"""Load test of a running emoserve gateway, modelled on NVIDIA's ``riva_tts_perf_client --online``.

    emoserve bench --target localhost:50051 --concurrency 1,4,16,64 [--stream] --out bench.json

Method
------
For each concurrency level C the benchmark runs C independent client loops (asyncio tasks sharing a few
gRPC channels, ``--channels``; by default one channel per 16 loops so that HTTP/2 stream flow control on
a single connection does not become the bottleneck). Every loop is *closed*: it sends one sentence,
waits for the complete answer (every chunk with ``--stream``), then sends the next sentence of the file
(loop i starts at sentence i, so the loops do not move in lockstep). Each loop first sends ``--warmup``
requests that are not recorded; when every loop has finished its warm-up, all loops start measuring at
the same moment and run for ``--duration`` seconds (a request in flight at the end still completes and
counts) or for ``--iterations`` requests each.

Per request it records:

* time to first audio (TTFA): arrival of the first chunk carrying audio with ``--stream``, the whole
  answer with unary ``Synthesize`` (where TTFA equals end-to-end latency);
* inter-chunk latency (``--stream``): time between consecutive audio chunks;
* end-to-end latency: from sending the request until the last byte of the answer;
* seconds of audio produced, and the server's per-stage timings (``StageTiming``: queue and compute ms
  and batch size, summed per stage per request since a stage may run several times for one request).

Per level it reports mean, p50, p90, p95 and p99 of each latency, throughput (completed requests per
wall second of the measuring window), aggregate RTFX (audio seconds produced / wall seconds), mean
queue and compute ms and mean batch size of each stage, GPU memory in use (``nvidia-smi``; null if
unavailable), errors by gRPC status code (errors never stop the run) and the client's own CPU use
(process CPU seconds / wall seconds: near 1.0 means the single-threaded client may be the bottleneck).

With ``--reference EMOTIVOICE_DIR --model MODEL_DIR`` the same run also times EmotiVoice's own inference
path (see :mod:`emoserve.tools.bench_reference`) on the same weights and sentences, one request at a
time as EmotiVoice's server does, and prints emoserve's latency at the lowest concurrency and RTFX at
the highest next to it.

Soak test
---------
``--soak --streams N --minutes T [--watch-pid PID,...]`` runs one level of N streaming loops for T minutes
(same loops, warm-up and statistics as above) and watches for slow failures: errors by gRPC status, the
resident memory (``VmRSS``) of each watched process (e.g. the services: ``--watch-pid "$(pgrep -d, -f
'emoserve serve')"``) and each GPU's memory in use (``nvidia-smi``; omitted without it), sampled after the
warm-up requests, every ``--sample-every`` seconds and at the end.

Memory is judged after a warm-up of ``--memory-warmup`` seconds (60, counted in the soak's minutes): a service
under a new load first grows to a plateau (connection and stream buffers, caches, the allocator's working set)
and that is not a leak. Per series the report gives the start, the baseline (median of the first three samples
from the end of the warm-up on), the end (median of the last three), the peak, the **drift** (end vs baseline,
in %) and the **trend**: the least-squares slope over the samples after the warm-up, in MiB per minute and as
its rise across that window in % of the baseline, so that a slow leak cannot hide behind a noisy last sample and
a warm-up plateau is not taken for one. The soak passes (exit status 0) only with zero errors, no watched
process gone, and neither drift nor trend above ``--max-drift`` (5 %).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from emoserve.client import MAX_MESSAGE_BYTES, build_request
from emoserve.v1 import tts_pb2, tts_pb2_grpc

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_SENTENCES = DATA / "sentences_en.txt"
PERCENTILES = (50, 90, 95, 99)
LOOPS_PER_CHANNEL = 16
MAX_CHANNELS = 8
ERROR_BACKOFF_S = 0.01
"""Pause after a failed request so that a refusing server does not turn a loop into a busy spin."""
PCM_BYTES_PER_SAMPLE = 2
CLIENT_CPU_WARNING = 0.8


@dataclass(frozen=True)
class BenchOptions:
    """What to send and how hard (see the module docstring)."""

    target: str
    concurrency: tuple[int, ...]
    sentences: tuple[str, ...]
    stream: bool = False
    duration_s: float = 20.0
    iterations: int | None = None
    """Measured requests per loop; overrides ``duration_s`` when set."""
    warmup: int = 2
    emotion: str = ""
    voice: str = ""
    timeout_s: float = 120.0
    channels: int = 0
    """gRPC channels per level; 0: one per LOOPS_PER_CHANNEL loops, at most MAX_CHANNELS."""
    progress: bool = True


@dataclass
class RequestResult:
    """One successful request, times in seconds."""

    ttfa_s: float
    e2e_s: float
    audio_s: float
    inter_chunk_s: list[float] = field(default_factory=list)
    timings: list[tts_pb2.StageTiming] = field(default_factory=list)


@dataclass
class LevelRecorder:
    """What the client loops of one concurrency level collect."""

    results: list[RequestResult] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)


# -- statistics ------------------------------------------------------------------------------------------


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float | int | None]:
    """Count, mean and percentiles (linear interpolation) of ``values`` times ``scale``; None when empty."""
    if not values:
        return {"count": 0, "avg": None, **{f"p{p}": None for p in PERCENTILES}}
    data = np.asarray(values, dtype=np.float64) * scale
    quantiles = np.percentile(data, PERCENTILES)
    return {"count": len(data), "avg": float(data.mean()), **{f"p{p}": float(q) for p, q in zip(PERCENTILES, quantiles)}}


def stage_summary(results: Sequence[RequestResult]) -> dict[str, dict[str, float]]:
    """Per stage: mean queue and compute ms per request (a request's entries summed) and mean batch size."""
    per_request: dict[str, list[tuple[float, float]]] = defaultdict(list)
    batches: dict[str, list[int]] = defaultdict(list)
    for result in results:
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for timing in result.timings:
            totals[timing.stage][0] += timing.queue_ms
            totals[timing.stage][1] += timing.compute_ms
            batches[timing.stage].append(timing.batch_size)
        for stage, (queue_ms, compute_ms) in totals.items():
            per_request[stage].append((queue_ms, compute_ms))
    return {
        stage: {
            "queue_ms": float(np.mean([q for q, _ in pairs])),
            "compute_ms": float(np.mean([c for _, c in pairs])),
            "batch_size": float(np.mean(batches[stage])),
            "entries_per_request": len(batches[stage]) / len(pairs),
        }
        for stage, pairs in per_request.items()
    }


def level_report(concurrency: int, channels: int, recorder: LevelRecorder, wall_s: float, cpu_s: float,
                 stream: bool) -> dict[str, Any]:
    """All numbers of one concurrency level (latencies in ms)."""
    results = recorder.results
    audio_s = sum(r.audio_s for r in results)
    return {
        "concurrency": concurrency,
        "channels": channels,
        "requests": len(results),
        "errors": dict(recorder.errors),
        "wall_s": wall_s,
        "throughput_rps": len(results) / wall_s if wall_s > 0 else 0.0,
        "audio_s": audio_s,
        "rtfx": audio_s / wall_s if wall_s > 0 else 0.0,
        "ttfa_ms": summarize([r.ttfa_s for r in results], 1e3),
        "e2e_ms": summarize([r.e2e_s for r in results], 1e3),
        "inter_chunk_ms": summarize([d for r in results for d in r.inter_chunk_s], 1e3) if stream else None,
        "audio_per_request_s": summarize([r.audio_s for r in results]),
        "stages": stage_summary(results),
        "gpu_memory_used_mib": gpu_memory_used_mib(),
        "client_cpu_utilization": cpu_s / wall_s if wall_s > 0 else 0.0,
    }


# -- one request -------------------------------------------------------------------------------------------


async def unary_request(stub: tts_pb2_grpc.SynthesizerStub, request: tts_pb2.SynthesizeRequest,
                        timeout_s: float) -> RequestResult:
    """``Synthesize``: the first audio arrives with the whole answer."""
    start = time.perf_counter()
    reply = await stub.Synthesize(request, timeout=timeout_s)
    elapsed = time.perf_counter() - start
    return RequestResult(elapsed, elapsed, reply.duration_s, timings=list(reply.timings))


async def stream_request(stub: tts_pb2_grpc.SynthesizerStub, request: tts_pb2.SynthesizeRequest,
                         timeout_s: float) -> RequestResult:
    """``SynthesizeStream``: first-audio and inter-chunk times of the chunks that carry audio."""
    start = time.perf_counter()
    arrivals: list[float] = []
    samples = 0.0
    timings: list[tts_pb2.StageTiming] = []
    async for chunk in stub.SynthesizeStream(request, timeout=timeout_s):
        if chunk.audio:
            arrivals.append(time.perf_counter())
            samples += len(chunk.audio) / PCM_BYTES_PER_SAMPLE / chunk.sample_rate_hz
        timings.extend(chunk.timings)
    end = time.perf_counter()
    first = arrivals[0] if arrivals else end
    return RequestResult(first - start, end - start, samples, list(np.diff(arrivals)), timings)


# -- client loops -------------------------------------------------------------------------------------------


def auto_channels(concurrency: int, requested: int = 0) -> int:
    """Channels for ``concurrency`` loops: ``requested`` if set, else one per LOOPS_PER_CHANNEL loops."""
    if requested > 0:
        return min(requested, concurrency)
    return min(MAX_CHANNELS, math.ceil(concurrency / LOOPS_PER_CHANNEL))


def open_channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """``count`` channels with their own TCP connections (a local subchannel pool stops sharing)."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.use_local_subchannel_pool", 1)]
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]


async def warm_loop(index: int, stub: tts_pb2_grpc.SynthesizerStub,
                    requests: Sequence[tts_pb2.SynthesizeRequest], options: BenchOptions) -> None:
    """The unrecorded first ``options.warmup`` requests of loop ``index``."""
    send = stream_request if options.stream else unary_request
    for k in range(options.warmup):
        await _attempt(send, stub, requests[(index + k) % len(requests)], options.timeout_s, None)


def keep_going(options: BenchOptions, sent: int, deadline: float) -> bool:
    """Whether a loop that has sent ``sent`` measured requests sends another."""
    if options.iterations is not None:
        return sent < options.iterations
    return time.perf_counter() < deadline


async def measure_loop(index: int, stub: tts_pb2_grpc.SynthesizerStub, requests: Sequence[tts_pb2.SynthesizeRequest],
                       options: BenchOptions, deadline: float, recorder: LevelRecorder,
                       on_done: Callable[[bool], None]) -> None:
    """One closed loop: sentence after sentence until ``deadline`` or ``options.iterations`` requests."""
    send = stream_request if options.stream else unary_request
    position = index + options.warmup
    sent = 0
    while keep_going(options, sent, deadline):
        ok = await _attempt(send, stub, requests[position % len(requests)], options.timeout_s, recorder)
        on_done(ok)
        position += 1
        sent += 1


async def _attempt(send: Callable, stub: tts_pb2_grpc.SynthesizerStub, request: tts_pb2.SynthesizeRequest,
                   timeout_s: float, recorder: LevelRecorder | None) -> bool:
    """Sends one request; records it (unless warming up) and returns whether it succeeded."""
    try:
        result = await send(stub, request, timeout_s)
    except grpc.aio.AioRpcError as exc:
        error = exc.code().name
    except Exception as exc:  # noqa: BLE001 - a broken answer is counted, never fatal
        error = f"CLIENT_{type(exc).__name__}"
    else:
        if recorder is not None:
            recorder.results.append(result)
        return True
    if recorder is not None:
        recorder.errors[error] += 1
    await asyncio.sleep(ERROR_BACKOFF_S)
    return False


def progress_bar(options: BenchOptions, concurrency: int) -> tqdm:
    """A stderr bar counting measured requests of one level."""
    total = concurrency * options.iterations if options.iterations is not None else None
    span = f"{options.iterations} req/loop" if options.iterations is not None else f"{options.duration_s:g} s"
    return tqdm(total=total, desc=f"C={concurrency} ({span})", unit="req", file=sys.stderr,
                disable=not options.progress, leave=False, dynamic_ncols=True)


async def run_level(options: BenchOptions, concurrency: int, monitor: MemoryMonitor | None = None) -> dict[str, Any]:
    """Runs ``concurrency`` loops against the target and returns the level's report.

    ``monitor`` (soak) starts sampling once every loop has warmed up and takes its last sample at the end.
    """
    requests = [build_request(s, voice=options.voice, emotion=options.emotion, encoding="LINEAR_PCM")
                for s in options.sentences]
    channels = open_channels(options.target, auto_channels(concurrency, options.channels))
    stubs = [tts_pb2_grpc.SynthesizerStub(c) for c in channels]
    recorder = LevelRecorder()
    bar = progress_bar(options, concurrency)

    def on_done(ok: bool) -> None:
        bar.update()
        if not ok:
            bar.set_postfix(errors=sum(recorder.errors.values()), refresh=False)

    try:
        await asyncio.gather(*(warm_loop(i, stubs[i % len(stubs)], requests, options) for i in range(concurrency)))
        if monitor is not None:
            await monitor.start()
        wall, cpu = time.perf_counter(), time.process_time()
        deadline = wall + options.duration_s
        await asyncio.gather(*(measure_loop(i, stubs[i % len(stubs)], requests, options, deadline, recorder, on_done)
                               for i in range(concurrency)))
        wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        bar.close()
        if monitor is not None:
            await monitor.stop()
        await asyncio.gather(*(c.close() for c in channels))
    return level_report(concurrency, len(channels), recorder, wall_s, cpu_s, options.stream)


async def run_levels(options: BenchOptions) -> list[dict[str, Any]]:
    """Every concurrency level in order."""
    return [await run_level(options, c) for c in options.concurrency]


# -- environment ------------------------------------------------------------------------------------------


def gpu_memory_used_mib() -> list[int] | None:
    """Memory in use on each GPU of this host (MiB) from ``nvidia-smi``; None without it."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return [int(float(line)) for line in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def rss_mib(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MiB (``VmRSS`` in ``/proc/PID/status``); None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no such process (or no /proc)
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None  # a zombie: exited, not yet reaped


def process_command(pid: int) -> str:
    """The command line of process ``pid`` ("" if unknown)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class MemoryMonitor:
    """Samples the RSS of some processes and the memory in use on each GPU, from :meth:`start` to :meth:`stop`.

    Args:
        pids: processes to watch.
        every_s: seconds between samples (besides the first and the last).
    """

    def __init__(self, pids: Sequence[int], every_s: float) -> None:
        self.pids = tuple(pids)
        self.every_s = every_s
        self.samples: list[dict[str, Any]] = []
        self._started = 0.0
        self._task: asyncio.Task | None = None

    def _snapshot(self) -> dict[str, Any]:
        return {
            "t_s": round(time.perf_counter() - self._started, 3),
            "rss_mib": {str(pid): rss_mib(pid) for pid in self.pids},
            "gpu_memory_used_mib": gpu_memory_used_mib(),
        }

    async def sample(self) -> None:
        """Takes one sample (in a worker thread: ``nvidia-smi`` must not stall the client loops)."""
        self.samples.append(await asyncio.to_thread(self._snapshot))

    async def start(self) -> None:
        """Takes the first sample and samples every ``every_s`` until :meth:`stop`."""
        self._started = time.perf_counter()
        await self.sample()

        async def every() -> None:
            while True:
                await asyncio.sleep(self.every_s)
                await self.sample()

        self._task = asyncio.get_running_loop().create_task(every())

    async def stop(self) -> None:
        """Stops sampling and takes the last sample (nothing if never started)."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self.sample()


def host_info() -> dict[str, Any]:
    """Where the client ran."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "grpc": grpc.__version__,
    }


# -- output ---------------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _batches(level: dict[str, Any]) -> str:
    stages = level["stages"]
    return " ".join(f"{name[:3]}={stats['batch_size']:.1f}" for name, stats in stages.items()) or "-"


def format_table(levels: Sequence[dict[str, Any]]) -> str:
    """One row per concurrency level: throughput, RTFX, latency percentiles (ms), batch sizes, errors."""
    header = ("C", "req/s", "RTFX", "TTFA p50", "TTFA p99", "e2e p50", "e2e p99", "chunk p50", "chunk p99",
              "errors", "avg batch")
    rows = [header]
    for level in levels:
        chunk = level["inter_chunk_ms"] or {}
        rows.append((
            str(level["concurrency"]), f"{level['throughput_rps']:.2f}", f"{level['rtfx']:.1f}",
            _ms(level["ttfa_ms"]["p50"]), _ms(level["ttfa_ms"]["p99"]),
            _ms(level["e2e_ms"]["p50"]), _ms(level["e2e_ms"]["p99"]),
            _ms(chunk.get("p50")), _ms(chunk.get("p99")),
            str(sum(level["errors"].values())), _batches(level),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i < len(header) - 1 else cell for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def compare(levels: Sequence[dict[str, Any]], reference: dict[str, Any]) -> dict[str, Any]:
    """emoserve's p50 latency at the lowest concurrency and RTFX at the highest, against the reference."""
    low = min(levels, key=lambda lv: lv["concurrency"])
    high = max(levels, key=lambda lv: lv["concurrency"])
    emo_p50, ref_p50 = low["e2e_ms"]["p50"], reference["e2e_ms"]["p50"]
    return {
        "latency_concurrency": low["concurrency"],
        "emoserve_e2e_p50_ms": emo_p50,
        "emoserve_ttfa_p50_ms": low["ttfa_ms"]["p50"],
        "reference_e2e_p50_ms": ref_p50,
        "latency_speedup": ref_p50 / emo_p50 if emo_p50 and ref_p50 else None,
        "throughput_concurrency": high["concurrency"],
        "emoserve_rtfx": high["rtfx"],
        "reference_rtfx": reference["rtfx"],
        "rtfx_ratio": high["rtfx"] / reference["rtfx"] if reference["rtfx"] else None,
    }


def format_comparison(comparison: dict[str, Any]) -> str:
    """The side-by-side emoserve vs EmotiVoice lines."""
    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    return "\n".join([
        f"{'':28}{'emoserve':>12}{'EmotiVoice':>12}{'ratio':>9}",
        (f"{'e2e p50 ms (C=' + str(comparison['latency_concurrency']) + ')':28}"
         f"{_ms(comparison['emoserve_e2e_p50_ms']):>12}{_ms(comparison['reference_e2e_p50_ms']):>12}"
         f"{ratio(comparison['latency_speedup']):>9}  (EmotiVoice / emoserve)"),
        (f"{'RTFX (C=' + str(comparison['throughput_concurrency']) + ')':28}"
         f"{comparison['emoserve_rtfx']:>12.1f}{comparison['reference_rtfx']:>12.1f}"
         f"{ratio(comparison['rtfx_ratio']):>9}  (emoserve / EmotiVoice)"),
    ])


def write_plot(report: dict[str, Any], path: str | os.PathLike) -> None:
    """PNG: latency vs concurrency (TTFA p50/p99, e2e p50) and RTFX vs concurrency, log-x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["levels"]
    cs = [lv["concurrency"] for lv in levels]
    fig, (lat, rtfx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, pct, style in (("ttfa_ms", "p50", "o-"), ("ttfa_ms", "p99", "o--"), ("e2e_ms", "p50", "s-")):
        label = f"{'TTFA' if key == 'ttfa_ms' else 'end-to-end'} {pct}"
        lat.plot(cs, [lv[key][pct] for lv in levels], style, label=label)
    lat.set(xscale="log", xlabel="concurrency", ylabel="latency (ms)", title="Latency")
    lat.legend()
    rtfx.plot(cs, [lv["rtfx"] for lv in levels], "o-", label="emoserve")
    if report.get("comparison"):
        rtfx.axhline(report["comparison"]["reference_rtfx"], color="grey", linestyle=":", label="EmotiVoice (batch 1)")
        rtfx.legend()
    rtfx.set(xscale="log", xlabel="concurrency", ylabel="audio s / wall s", title="Throughput (RTFX)")
    for axis in (lat, rtfx):
        axis.set_xticks(cs, [str(c) for c in cs])
        axis.grid(True, which="both", alpha=0.3)
    mode = "stream" if report["config"]["stream"] else "unary"
    fig.suptitle(f"emoserve bench, {mode}, {report['target']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- orchestration ------------------------------------------------------------------------------------------


def read_sentences(path: str | os.PathLike) -> tuple[str, ...]:
    """Non-empty lines of a UTF-8 file, ``#`` lines skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    sentences = tuple(s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#"))
    if not sentences:
        raise ValueError(f"{path} holds no sentences")
    return sentences


def run_bench(options: BenchOptions, out: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
              reference: Callable[[BenchOptions], dict[str, Any]] | None = None,
              command: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs every level (then the reference, if given), prints the table and writes JSON / PNG.

    Args:
        options: target, levels and load.
        out: JSON file to write.
        plot: PNG file to write (needs matplotlib).
        reference: measures the EmotiVoice reference over the same options (see bench_reference).
        command: the command line to record (default ``sys.argv``).
    """
    head = _report_head(options, command)
    levels = asyncio.run(run_levels(options))
    report: dict[str, Any] = {**head, "levels": levels, "reference": None, "comparison": None}
    print(format_table(levels))
    _warn_client_bound(levels)
    if reference is not None:
        report["reference"], report["comparison"] = _run_reference(reference, options, levels)
    if out is not None:
        _write_json(report, out)
    if plot is not None:
        write_plot(report, plot)
    return report


def _report_head(options: BenchOptions, command: Sequence[str] | None) -> dict[str, Any]:
    """What every report starts with: the command, the start time, the target, the client host, the options."""
    return {
        "command": shlex.join(command if command is not None else sys.argv),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "target": options.target,
        "host": host_info(),
        "config": {k: v for k, v in vars(options).items() if k not in ("sentences", "progress")}
        | {"sentences": len(options.sentences)},
    }


def _write_json(report: dict[str, Any], path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# -- soak ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakOptions:
    """``--soak``: ``streams`` streaming loops for ``minutes``, watching errors and memory (module docstring)."""

    streams: int = 64
    minutes: float = 10.0
    watch_pids: tuple[int, ...] = ()
    """Processes whose resident memory (RSS) is watched."""
    sample_every_s: float = 10.0
    memory_warmup_s: float = 60.0
    """Seconds of load before the memory baseline: growth while caches, pools and the allocator's working set
    fill up under the new load is a plateau, not drift. Part of the soak's ``minutes`` (errors count throughout)."""
    max_drift_pct: float = 5.0
    """Largest growth after the warm-up, in % of the baseline, of any watched RSS or GPU memory: both from the
    baseline to the end and along the fitted trend."""


SMOOTHING_SAMPLES = 3
"""Samples whose median is the baseline (the first ones from the end of the warm-up on) and the end value (the
last ones), so that one noisy sample can neither pass nor fail a soak."""


def drift_pct(start: float | None, end: float | None) -> float | None:
    """Growth from ``start`` to ``end`` in % of ``start``; None when either is missing or ``start`` is 0."""
    if start is None or end is None or start <= 0:
        return None
    return (end - start) / start * 100


def memory_trend(times_s: Sequence[float], values: Sequence[float], warmup_s: float) -> dict[str, Any]:
    """How one memory series (MiB, sampled at ``times_s``) moved after the warm-up.

    Returns:
        ``start_mib`` (first sample), ``baseline_mib`` and ``end_mib`` (medians of the first and the last
        :data:`SMOOTHING_SAMPLES` samples from ``warmup_s`` on), ``peak_mib`` (all samples), ``drift_pct`` (end
        vs baseline), ``slope_mib_per_min`` (least-squares line through the samples from ``warmup_s`` on; None
        with fewer than 3), ``trend_pct`` (that line's rise across the measured window in % of the baseline)
        and ``window_s`` (first to last sample from ``warmup_s`` on).
    """
    times, data = np.asarray(times_s, dtype=np.float64), np.asarray(values, dtype=np.float64)
    measured = times >= warmup_s
    if not measured.any():  # the soak ended before the warm-up did: judge the last sample alone
        measured[-1] = True
    t, v = times[measured], data[measured]
    baseline = float(np.median(v[:SMOOTHING_SAMPLES]))
    end = float(np.median(v[-SMOOTHING_SAMPLES:]))
    window_s = float(t[-1] - t[0])
    slope = trend = None
    if len(v) >= 3 and window_s > 0:
        slope = float(np.polyfit(t / 60, v, 1)[0])
        trend = drift_pct(baseline, baseline + slope * window_s / 60)
    return {"start_mib": float(data[0]), "baseline_mib": baseline, "end_mib": end, "peak_mib": float(data.max()),
            "drift_pct": drift_pct(baseline, end), "slope_mib_per_min": slope, "trend_pct": trend,
            "window_s": window_s}


def memory_summary(samples: Sequence[dict[str, Any]], commands: dict[int, str], warmup_s: float = 0.0) -> dict[str, Any]:
    """Baseline, end, peak, drift and trend (:func:`memory_trend`) of each watched process's RSS and each GPU's
    memory in use.

    Args:
        samples: :class:`MemoryMonitor` samples, oldest first (at least one).
        commands: command line of each watched process.
        warmup_s: seconds from the first sample before the baseline (:attr:`SoakOptions.memory_warmup_s`).
    """
    times = [s["t_s"] for s in samples]
    processes = {}
    for pid, command in commands.items():
        values = [s["rss_mib"][str(pid)] for s in samples]
        exited = values[-1] is None
        alive = [(t, v) for t, v in zip(times, values) if v is not None]
        stats = memory_trend(*zip(*alive), warmup_s) if alive and not exited else {
            "start_mib": values[0], "baseline_mib": None, "end_mib": None,
            "peak_mib": max((v for _, v in alive), default=None), "drift_pct": None, "slope_mib_per_min": None,
            "trend_pct": None, "window_s": None,
        }
        processes[str(pid)] = {"command": command, **stats, "exited": exited}
    gpus = None
    readings = [(t, s["gpu_memory_used_mib"]) for t, s in zip(times, samples) if s["gpu_memory_used_mib"] is not None]
    if readings and len({len(r) for _, r in readings}) == 1:  # nvidia-smi answered, about the same GPUs
        gpu_times = [t for t, _ in readings]
        gpus = [{"index": i, **memory_trend(gpu_times, [r[i] for _, r in readings], warmup_s)}
                for i in range(len(readings[0][1]))]
    return {"warmup_s": warmup_s, "processes": processes, "gpus": gpus, "samples": list(samples)}


def _growth_failures(what: str, series: dict[str, Any], limit: float) -> list[str]:
    """Drift and trend above ``limit`` % of one memory series, as failure messages."""
    failures = []
    if series["drift_pct"] is not None and series["drift_pct"] > limit:
        failures.append(f"{what} grew {series['drift_pct']:.1f} % after the warm-up (limit {limit:g} %)")
    if series["trend_pct"] is not None and series["trend_pct"] > limit:
        failures.append(f"{what} trends up {series['trend_pct']:.1f} % over {series['window_s'] / 60:.1f} min "
                        f"({series['slope_mib_per_min']:+.2f} MiB/min; limit {limit:g} %)")
    return failures


def soak_failures(level: dict[str, Any], memory: dict[str, Any], max_drift_pct: float) -> list[str]:
    """Why a soak failed (empty: it passed): errors, no completed request, a watched process gone, memory drift
    or upward trend after the warm-up."""
    failures = []
    if level["errors"]:
        failures.append(f"{sum(level['errors'].values())} failed requests ({_codes(level['errors'])})")
    if not level["requests"]:
        failures.append("no request completed")
    for pid, process in memory["processes"].items():
        if process["exited"]:
            failures.append(f"process {pid} ({process['command'] or '?'}) is gone")
        else:
            failures.extend(_growth_failures(f"process {pid} RSS", process, max_drift_pct))
    for gpu in memory["gpus"] or []:
        failures.extend(_growth_failures(f"GPU {gpu['index']} memory", gpu, max_drift_pct))
    return failures


def _codes(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(errors.items())) or "none"


def process_label(command: str, width: int = 32) -> str:
    """A short name for a watched process: its command line without the interpreter, directories and ``--``
    options (``python3 -m emoserve serve vocoder --host …`` and ``/venv/bin/emoserve serve vocoder …`` both give
    ``emoserve serve vocoder``), cut to ``width`` characters; "?" if unknown."""
    words = command.split()
    while words and (Path(words[0]).name.startswith("python") or words[0] == "-m"):
        words.pop(0)
    if words:
        words[0] = Path(words[0]).name
    options = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    return " ".join(words[:max(options, 1)])[:width] or "?"


def _mib(value: float | None) -> str:
    return "gone" if value is None else f"{value:.1f}"


def _drift(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def _growth(series: dict[str, Any]) -> str:
    """``start -> baseline -> end MiB (peak P), drift D, trend S MiB/min = T over W min`` of one memory series."""
    trend = "-" if series["slope_mib_per_min"] is None else (
        f"{series['slope_mib_per_min']:+.2f} MiB/min = {_drift(series['trend_pct'])} over {series['window_s'] / 60:.1f} min"
    )
    return (f"{_mib(series['start_mib'])} -> {_mib(series['baseline_mib'])} -> {_mib(series['end_mib'])} MiB "
            f"(peak {_mib(series['peak_mib'])}), drift {_drift(series['drift_pct'])}, trend {trend}")


def format_soak(report: dict[str, Any]) -> str:
    """The soak's summary: load and errors, latencies, memory drift, verdict."""
    level, memory, soak = report["level"], report["memory"], report["soak"]
    lines = [
        (f"soak: {soak['streams']} streams for {soak['minutes']:g} min against {report['target']}: "
         f"{level['requests']} requests ({level['throughput_rps']:.2f}/s, RTFX {level['rtfx']:.1f}), "
         f"errors: {_codes(level['errors'])}"),
        (f"first audio p50 / p99: {_ms(level['ttfa_ms']['p50'])} / {_ms(level['ttfa_ms']['p99'])} ms, "
         f"end to end p50 / p99: {_ms(level['e2e_ms']['p50'])} / {_ms(level['e2e_ms']['p99'])} ms"),
        (f"memory after a {memory['warmup_s']:g} s warm-up: start -> baseline -> end (medians of {SMOOTHING_SAMPLES} "
         "samples), drift = end vs baseline, trend = fitted slope"),
    ]
    for pid, p in memory["processes"].items():
        lines.append(f"RSS of {pid} ({process_label(p['command'])}): {_growth(p)}")
    if memory["gpus"] is None:
        lines.append("GPU memory: not measured (no nvidia-smi)")
    for gpu in memory["gpus"] or []:
        lines.append(f"GPU {gpu['index']} memory used: {_growth(gpu)}")
    lines.append("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))
    return "\n".join(lines)


def run_soak(options: BenchOptions, soak: SoakOptions, out: str | os.PathLike | None = None,
             command: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the soak (one streaming level of ``soak.streams`` loops for ``soak.minutes``), prints its summary
    and writes the JSON report.

    Args:
        options: target, sentences, warm-up, timeouts (its levels, duration and mode are replaced).
        soak: streams, duration, watched processes, limits.
        out: JSON file to write.
        command: the command line to record (default ``sys.argv``).

    Returns:
        The report; ``report["passed"]`` tells whether the soak passed.
    """
    options = dataclasses.replace(options, concurrency=(soak.streams,), stream=True,
                                  duration_s=soak.minutes * 60, iterations=None)
    head = _report_head(options, command)
    commands = {pid: process_command(pid) for pid in soak.watch_pids}
    monitor = MemoryMonitor(soak.watch_pids, soak.sample_every_s)
    level = asyncio.run(run_level(options, soak.streams, monitor))
    memory = memory_summary(monitor.samples, commands, soak.memory_warmup_s)
    failures = soak_failures(level, memory, soak.max_drift_pct)
    report = {**head, "soak": dataclasses.asdict(soak), "level": level, "memory": memory,
              "passed": not failures, "failures": failures}
    print(format_soak(report))
    if out is not None:
        _write_json(report, out)
    return report


def _run_reference(reference: Callable[[BenchOptions], dict[str, Any]], options: BenchOptions,
                   levels: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The reference's figures and the comparison; a failing reference is reported, not fatal."""
    try:
        figures = reference(options)
    except Exception as exc:  # noqa: BLE001 - keep emoserve's results whatever the EmotiVoice checkout does
        print(f"reference failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}, None
    if not figures["requests"]:
        print(f"reference: every request failed: {figures['errors']}", file=sys.stderr)
        return figures, None
    comparison = compare(levels, figures)
    print()
    print(format_comparison(comparison))
    return figures, comparison


def _warn_client_bound(levels: Sequence[dict[str, Any]]) -> None:
    for level in levels:
        if level["client_cpu_utilization"] > CLIENT_CPU_WARNING:
            print(f"warning: C={level['concurrency']}: client used {level['client_cpu_utilization']:.0%} of a CPU; "
                  "it may limit throughput (try --channels or several bench processes)", file=sys.stderr)


def concurrency_list(value: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> (1, 4, 16); every level must be a positive integer."""
    levels = tuple(int(v) for v in value.split(",") if v.strip())
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,4,16, got {value!r}")
    return levels


def pid_list(value: str) -> list[int]:
    """``"12,34"`` -> [12, 34]; every PID must be a positive integer."""
    try:
        pids = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        pids = []
    if not pids or min(pids) < 1:
        raise argparse.ArgumentTypeError(f"expected process ids like 1234 or 1234,5678, got {value!r}")
    return pids


def positive_float(value: str) -> float:
    """A number > 0."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options (shared by ``emoserve bench`` and ``python -m emoserve.tools.bench``)."""
    parser.add_argument("--target", default="localhost:50051", help="gateway HOST:PORT")
    parser.add_argument("--concurrency", type=concurrency_list, default=(1, 4, 16, 64),
                        help="comma-separated numbers of concurrent client loops (default 1,4,16,64)")
    parser.add_argument("--stream", action="store_true", help="use SynthesizeStream (default: unary Synthesize)")
    span = parser.add_mutually_exclusive_group()
    span.add_argument("--duration", type=float, default=20.0, help="measured seconds per level (default 20)")
    span.add_argument("--iterations", type=int, help="measured requests per loop instead of --duration")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded requests per loop first (default 2)")
    parser.add_argument("--sentences", default=str(DEFAULT_SENTENCES),
                        help=f"text file, one sentence a line (default {DEFAULT_SENTENCES.name}; "
                             f"{DATA.name}/sentences_zh.txt ships too)")
    parser.add_argument("--emotion", default="", help='emotion prompt of every request, e.g. "Happy"')
    parser.add_argument("--voice", default="", help="voice of every request (default: the model's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each request in seconds")
    parser.add_argument("--channels", type=int, default=0,
                        help=f"gRPC channels per level (default: one per {LOOPS_PER_CHANNEL} loops, "
                             f"at most {MAX_CHANNELS})")
    parser.add_argument("--out", help="JSON report to write")
    parser.add_argument("--plot", help="PNG to write: latency and RTFX vs concurrency (needs matplotlib)")
    parser.add_argument("--reference", metavar="EMOTIVOICE_DIR",
                        help="also time EmotiVoice's own inference path from this checkout (needs --model)")
    parser.add_argument("--model", help="emoserve model directory the target serves (for --reference)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    soak = parser.add_argument_group("soak test (see Soak test above)")
    soak.add_argument("--soak", action="store_true",
                      help="run --streams streaming loops for --minutes and check errors and memory drift "
                           "(instead of --concurrency levels)")
    soak.add_argument("--streams", type=int, default=SoakOptions.streams,
                      help=f"concurrent streams of the soak (default {SoakOptions.streams})")
    soak.add_argument("--minutes", type=positive_float, default=SoakOptions.minutes,
                      help=f"length of the soak in minutes (default {SoakOptions.minutes:g})")
    soak.add_argument("--watch-pid", type=pid_list, action="extend", default=[], metavar="PID[,PID...]",
                      help="process whose resident memory the soak watches (repeat or separate by commas)")
    soak.add_argument("--sample-every", type=positive_float, default=SoakOptions.sample_every_s, metavar="SECONDS",
                      help=f"seconds between memory samples (default {SoakOptions.sample_every_s:g})")
    soak.add_argument("--memory-warmup", type=float, default=SoakOptions.memory_warmup_s, metavar="SECONDS",
                      help="seconds of load before the memory baseline, part of --minutes "
                           f"(default {SoakOptions.memory_warmup_s:g})")
    soak.add_argument("--max-drift", type=float, default=SoakOptions.max_drift_pct, metavar="PERCENT",
                      help="largest memory growth after the warm-up (to the end, and along the fitted trend) for "
                           f"the soak to pass, in %% of the baseline (default {SoakOptions.max_drift_pct:g})")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from parsed ``add_arguments`` options."""
    return BenchOptions(
        target=args.target, concurrency=args.concurrency, sentences=read_sentences(args.sentences),
        stream=args.stream, duration_s=args.duration, iterations=args.iterations, warmup=args.warmup,
        emotion=args.emotion, voice=args.voice, timeout_s=args.timeout, channels=args.channels,
        progress=not args.no_progress,
    )


def soak_from_args(args: argparse.Namespace) -> SoakOptions:
    """SoakOptions from parsed ``add_arguments`` options.

    Raises:
        ValueError: an option that does not apply to a soak, too few streams, or a watched process that does
            not exist.
    """
    unused = [flag for flag, given in (("--iterations", args.iterations is not None), ("--plot", args.plot),
                                       ("--reference", args.reference)) if given]
    if unused:
        raise ValueError(f"{', '.join(unused)} does not apply to --soak")
    if args.streams < 1:
        raise ValueError(f"--streams must be >= 1, got {args.streams}")
    if not 0 <= args.memory_warmup < args.minutes * 60:
        raise ValueError(f"--memory-warmup must be >= 0 and shorter than the soak ({args.minutes * 60:g} s), "
                         f"got {args.memory_warmup:g} (a short trial run: --memory-warmup 0)")
    gone = [pid for pid in args.watch_pid if rss_mib(pid) is None]
    if gone:
        raise ValueError(f"no running process with id {', '.join(map(str, gone))} (or no /proc to read its memory)")
    return SoakOptions(streams=args.streams, minutes=args.minutes, watch_pids=tuple(dict.fromkeys(args.watch_pid)),
                       sample_every_s=args.sample_every, memory_warmup_s=args.memory_warmup,
                       max_drift_pct=args.max_drift)


def run_from_args(args: argparse.Namespace) -> int:
    """Entry point behind ``emoserve bench``; returns the exit status (a failed soak: 1)."""
    if args.soak:
        try:
            soak, options = soak_from_args(args), options_from_args(args)
        except (OSError, ValueError) as exc:
            print(f"emoserve bench: error: {exc}", file=sys.stderr)
            return 2
        return 0 if run_soak(options, soak, args.out)["passed"] else 1
    if args.reference and not args.model:
        print("emoserve bench: error: --reference needs --model MODEL_DIR", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("emoserve bench: error: --plot needs matplotlib (pip install 'emoserve[bench]')", file=sys.stderr)
            return 2
    reference = None
    if args.reference:
        from emoserve.tools.bench_reference import reference_runner

        reference = reference_runner(args.reference, args.model)
    try:
        options = options_from_args(args)
    except (OSError, ValueError) as exc:
        print(f"emoserve bench: error: {exc}", file=sys.stderr)
        return 2
    run_bench(options, args.out, args.plot, reference)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
