"""``emoserve bench`` against the whole pipeline in-process (tiny dummy model, CPU), and its statistics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emoserve.tools.bench import (
    DATA,
    BenchOptions,
    RequestResult,
    format_table,
    read_sentences,
    run_bench,
    stage_summary,
    summarize,
)
from emoserve.v1 import tts_pb2
from tests.pipeline.conftest import (
    HOST,
    STAGE_KINDS,
    LoopThread,
    start_gateway_for,
    start_stages,
    stop_servers,
)

SENTENCES = ("Hello world.", "The quick brown fox jumps over the lazy dog.", "你好，世界！")


@pytest.fixture(scope="module")
def target(tiny_model_path: Path) -> Iterator[str]:
    """``host:port`` of a gateway over encoder, acoustic and vocoder stages on a background loop."""
    loop = LoopThread()

    async def start() -> list:
        _, stages = await start_stages(tiny_model_path)
        gateway, _ = await start_gateway_for(*(f"{HOST}:{stages[k].port}" for k in STAGE_KINDS))
        return [gateway, *(stages[k] for k in STAGE_KINDS)]

    servers = loop.run(start(), timeout=120)
    try:
        yield f"{HOST}:{servers[0].port}"
    finally:
        loop.run(stop_servers(servers), timeout=60)
        loop.close()


def test_summarize_orders_percentiles_and_scales() -> None:
    stats = summarize([float(v) for v in range(1, 101)], scale=1e3)
    assert stats["count"] == 100
    assert stats["avg"] == pytest.approx(50_500.0)
    assert stats["p50"] == pytest.approx(50_500.0)
    assert stats["p90"] == pytest.approx(90_100.0)
    assert stats["p99"] == pytest.approx(99_010.0)
    assert stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"]
    assert summarize([0.25]) == {"count": 1, "avg": 0.25, "p50": 0.25, "p90": 0.25, "p95": 0.25, "p99": 0.25}


def test_summarize_empty_is_null() -> None:
    assert summarize([]) == {"count": 0, "avg": None, "p50": None, "p90": None, "p95": None, "p99": None}


def test_stage_summary_sums_entries_per_request() -> None:
    def timing(stage: str, queue: float, compute: float, batch: int) -> tts_pb2.StageTiming:
        return tts_pb2.StageTiming(stage=stage, queue_ms=queue, compute_ms=compute, batch_size=batch)

    results = [
        RequestResult(0.1, 0.2, 1.0, timings=[timing("acoustic", 1, 10, 2), timing("vocoder", 1, 5, 4),
                                              timing("vocoder", 3, 5, 2)]),
        RequestResult(0.1, 0.2, 1.0, timings=[timing("acoustic", 3, 20, 4), timing("vocoder", 0, 10, 3)]),
    ]
    stages = stage_summary(results)
    assert stages["acoustic"] == {"queue_ms": 2.0, "compute_ms": 15.0, "batch_size": 3.0, "entries_per_request": 1.0}
    assert stages["vocoder"] == {"queue_ms": 2.0, "compute_ms": 10.0, "batch_size": 3.0, "entries_per_request": 1.5}


def test_shipped_sentence_files() -> None:
    for name in ("sentences_en.txt", "sentences_zh.txt"):
        assert 15 <= len(read_sentences(DATA / name)) <= 30


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_bench_reports_sane_numbers(target: str, stream: bool, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    options = BenchOptions(target=target, concurrency=(1, 2), sentences=SENTENCES, stream=stream, iterations=3,
                           warmup=1, emotion="Happy", timeout_s=30.0, progress=False)
    out = tmp_path / "bench.json"
    run_bench(options, out=out, command=["emoserve", "bench", "--target", target])

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["command"] == f"emoserve bench --target {target}"
    assert report["target"] == target and report["date"] and report["host"]["cpu_count"]
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert level["errors"] == {}
        assert level["requests"] == 3 * level["concurrency"]
        assert level["throughput_rps"] > 0 and level["rtfx"] > 0 and level["audio_s"] > 0
        for key in ("ttfa_ms", "e2e_ms") + (("inter_chunk_ms",) if stream else ()):
            stats = level[key]
            assert 0 < stats["p50"] <= stats["p90"] <= stats["p95"] <= stats["p99"], key
        assert level["ttfa_ms"]["p50"] <= level["e2e_ms"]["p99"]
        assert (level["inter_chunk_ms"] is None) != stream
        assert set(level["stages"]) >= {"encoder", "acoustic", "vocoder"}
        for stage in level["stages"].values():
            assert stage["compute_ms"] > 0 and stage["queue_ms"] >= 0 and stage["batch_size"] >= 1
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["C", "req/s", "RTFX"]
    assert table == format_table(report["levels"]) + "\n"
