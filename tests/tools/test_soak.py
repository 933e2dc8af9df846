"""``emoserve bench --soak`` against the in-process pipeline (tiny model, CPU), and its memory bookkeeping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emoserve.tools import bench
from emoserve.tools.bench import drift_pct, memory_summary, soak_failures
from tests.pipeline.conftest import HOST, free_port
from tests.tools.test_bench import SENTENCES, target  # noqa: F401 - the running pipeline fixture

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sentences(tmp_path: Path) -> str:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES), encoding="utf-8")
    return str(path)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A process that idles for a minute (its memory does not change)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def soak(address: str, sentences: str, *extra: str) -> int:
    return bench.main(["--target", address, "--soak", "--sentences", sentences, "--warmup", "1", "--no-progress",
                       *extra])


def test_soak_streams_for_the_given_time_and_reports_memory(
    target: str,  # noqa: F811 - the fixture imported above
    sentences: str, sleeper: subprocess.Popen, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "soak.json"
    code = soak(target, sentences, "--streams", "2", "--minutes", "0.05", "--sample-every", "1",
                "--watch-pid", str(os.getpid()), "--watch-pid", str(sleeper.pid), "--max-drift", "100",
                "--out", str(out))
    printed = capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    assert code == 0, printed
    assert report["passed"] and report["failures"] == []
    assert printed.strip().endswith("PASSED")

    level = report["level"]
    assert (level["concurrency"], report["config"]["stream"], report["config"]["duration_s"]) == (2, True, 3.0)
    assert level["wall_s"] >= 3.0
    assert level["requests"] > 0 and level["errors"] == {}
    assert level["inter_chunk_ms"] is not None  # streamed

    memory = report["memory"]
    assert len(memory["samples"]) >= 3  # after warm-up, every second, at the end
    assert [s["t_s"] for s in memory["samples"]] == sorted(s["t_s"] for s in memory["samples"])
    assert set(memory["processes"]) == {str(os.getpid()), str(sleeper.pid)}
    for process in memory["processes"].values():
        assert not process["exited"] and process["start_mib"] > 0 and process["end_mib"] > 0
        assert process["drift_pct"] == pytest.approx(drift_pct(process["start_mib"], process["end_mib"]))
        assert process["peak_mib"] >= max(process["start_mib"], process["end_mib"])
    idle = memory["processes"][str(sleeper.pid)]
    assert "time.sleep(60)" in idle["command"]
    assert abs(idle["drift_pct"]) < 1.0
    assert (memory["gpus"] is None) == (bench.gpu_memory_used_mib() is None)


def test_soak_fails_when_a_watched_process_goes_away(target: str, sentences: str, tmp_path: Path) -> None:  # noqa: F811
    short = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        out = tmp_path / "soak.json"
        code = soak(target, sentences, "--streams", "1", "--minutes", "0.05", "--watch-pid", str(short.pid),
                    "--out", str(out))
    finally:
        short.kill()
        short.wait()
    report = json.loads(out.read_text(encoding="utf-8"))
    assert code == 1
    assert not report["passed"]
    assert report["memory"]["processes"][str(short.pid)]["exited"]
    assert any(f"process {short.pid}" in failure and "gone" in failure for failure in report["failures"])


def test_soak_counts_errors_by_status(sentences: str, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    code = soak(f"{HOST}:{free_port()}", sentences, "--streams", "2", "--minutes", "0.01", "--out", str(out))
    report = json.loads(out.read_text(encoding="utf-8"))
    assert code == 1
    assert set(report["level"]["errors"]) == {"UNAVAILABLE"} and report["level"]["requests"] == 0
    assert report["failures"][0].startswith(f"{report['level']['errors']['UNAVAILABLE']} failed requests (UNAVAILABLE")


@pytest.mark.parametrize("extra", [
    ["--iterations", "3"],
    ["--streams", "0"],
    ["--watch-pid", "4194305"],  # beyond Linux's largest process id
])
def test_soak_refuses_options_that_do_not_apply(
    extra: list[str], sentences: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert soak(f"{HOST}:1", sentences, "--minutes", "0.01", *extra) == 2
    assert "emoserve bench: error:" in capsys.readouterr().err


def test_memory_summary_and_verdict() -> None:
    samples = [
        {"t_s": 0.0, "rss_mib": {"1": 100.0, "2": 50.0}, "gpu_memory_used_mib": [1000, 0]},
        {"t_s": 10.0, "rss_mib": {"1": 112.0, "2": 52.0}, "gpu_memory_used_mib": [1040, 10]},
        {"t_s": 20.0, "rss_mib": {"1": 104.0, "2": None}, "gpu_memory_used_mib": [1100, 10]},
    ]
    memory = memory_summary(samples, {1: "emoserve serve vocoder", 2: "emoserve serve encoder"})
    assert memory["processes"]["1"] == {"command": "emoserve serve vocoder", "start_mib": 100.0, "end_mib": 104.0,
                                        "peak_mib": 112.0, "drift_pct": pytest.approx(4.0), "exited": False}
    assert memory["processes"]["2"]["exited"] and memory["processes"]["2"]["drift_pct"] is None
    assert memory["gpus"] == [{"index": 0, "start_mib": 1000, "end_mib": 1100, "drift_pct": pytest.approx(10.0)},
                              {"index": 1, "start_mib": 0, "end_mib": 10, "drift_pct": None}]

    level = {"errors": {"DEADLINE_EXCEEDED": 2, "UNAVAILABLE": 1}, "requests": 10}
    assert soak_failures(level, memory, max_drift_pct=5.0) == [
        "3 failed requests (DEADLINE_EXCEEDED 2, UNAVAILABLE 1)",
        "process 2 (emoserve serve encoder) is gone",
        "GPU 0 memory grew 10.0 % (limit 5 %)",
    ]
    clean = memory_summary(samples[:2], {1: "x"})
    assert soak_failures({"errors": {}, "requests": 1}, clean, max_drift_pct=12.0) == []
    assert soak_failures({"errors": {}, "requests": 1}, clean, max_drift_pct=11.9) == [
        "process 1 RSS grew 12.0 % (limit 11.9 %)",
    ]
