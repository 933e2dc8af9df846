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
from emoserve.tools.bench import SMOOTHING_SAMPLES, drift_pct, memory_summary, memory_trend, soak_failures
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
    """``bench --soak`` with one warm-up request per loop and no memory warm-up (``extra`` may set one)."""
    return bench.main(["--target", address, "--soak", "--sentences", sentences, "--warmup", "1", "--no-progress",
                       "--memory-warmup", "0", *extra])


def test_soak_streams_for_the_given_time_and_reports_memory(
    target: str,  # noqa: F811 - the fixture imported above
    sentences: str, sleeper: subprocess.Popen, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "soak.json"
    code = soak(target, sentences, "--streams", "2", "--minutes", "0.05", "--sample-every", "1",
                "--memory-warmup", "1", "--watch-pid", str(os.getpid()), "--watch-pid", str(sleeper.pid),
                "--max-drift", "100", "--out", str(out))
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
    assert memory["warmup_s"] == 1.0
    samples = memory["samples"]
    assert len(samples) >= 4  # after the warm-up requests, every second, at the end
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert set(memory["processes"]) == {str(os.getpid()), str(sleeper.pid)}
    for pid, process in memory["processes"].items():
        rss = [s["rss_mib"][pid] for s in samples]
        measured = [v for s, v in zip(samples, rss) if s["t_s"] >= 1.0]
        assert not process["exited"] and process["start_mib"] == rss[0]
        assert process["baseline_mib"] == pytest.approx(sorted(measured[:3])[len(measured[:3]) // 2])
        assert process["drift_pct"] == pytest.approx(drift_pct(process["baseline_mib"], process["end_mib"]))
        assert process["peak_mib"] == max(rss)
        assert process["slope_mib_per_min"] is not None and process["window_s"] > 1.0
    idle = memory["processes"][str(sleeper.pid)]
    assert "time.sleep(60)" in idle["command"]
    assert abs(idle["drift_pct"]) < 1.0 and abs(idle["trend_pct"]) < 1.0
    assert "memory after a 1 s warm-up" in printed
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
    ["--memory-warmup", "0.6"],  # as long as the soak (0.01 min)
    ["--memory-warmup", "-1"],
])
def test_soak_refuses_options_that_do_not_apply(
    extra: list[str], sentences: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert soak(f"{HOST}:1", sentences, "--minutes", "0.01", *extra) == 2
    assert "emoserve bench: error:" in capsys.readouterr().err


def minutes(*values: float, every_s: float = 60.0) -> tuple[list[float], list[float]]:
    """Sample times (one every ``every_s``) and the values."""
    return [i * every_s for i in range(len(values))], list(values)


def test_a_warm_up_plateau_is_not_drift() -> None:
    """The H100 gateway's shape: +10 % in the first half minute under load, then flat within a few MiB."""
    times, rss = minutes(150.8, 163.5, 166.0, 162.5, 165.0, 158.1, 165.9, 164.2, 166.1, 163.8, 165.3, every_s=15)
    assert drift_pct(rss[0], rss[-1]) > 9  # first sample to last: what a naive soak would report
    judged = memory_trend(times, rss, warmup_s=30)
    assert (judged["start_mib"], judged["peak_mib"], judged["window_s"]) == (150.8, 166.1, 120.0)
    assert judged["baseline_mib"] == 165.0  # median of 166.0, 162.5, 165.0
    assert judged["end_mib"] == 165.3  # median of 166.1, 163.8, 165.3
    assert abs(judged["drift_pct"]) < 0.5 and abs(judged["trend_pct"]) < 1


def test_a_leak_shows_in_the_trend_even_when_the_last_samples_dip() -> None:
    steady = memory_trend(*minutes(*[100.0 + m for m in range(11)]), warmup_s=0)  # +1 MiB per minute
    assert steady["slope_mib_per_min"] == pytest.approx(1.0) and steady["window_s"] == 600.0
    assert steady["trend_pct"] == pytest.approx(10 / steady["baseline_mib"] * 100)
    rss = [100.0 + m for m in range(8)] + [105.0, 106.0, 105.5]  # the same leak, with a burst of frees at the end
    dipped = memory_trend(*minutes(*rss), warmup_s=0)
    assert dipped["drift_pct"] < 5  # end vs baseline alone would pass
    assert dipped["trend_pct"] > 5
    assert soak_failures({"errors": {}, "requests": 1}, {"processes": {"9": {"exited": False, **dipped}},
                                                          "gpus": None}, max_drift_pct=5.0) == [
        "process 9 RSS trends up 6.0 % over 10.0 min (+0.60 MiB/min; limit 5 %)"]


def test_one_noisy_sample_neither_passes_nor_fails() -> None:
    flat = [100.0] * 8
    spike = memory_trend(*minutes(*flat[:-1], 112.0), warmup_s=0)  # the last sample alone is +12 %
    assert spike["end_mib"] == 100.0 and spike["drift_pct"] == 0.0
    dip = memory_trend(*minutes(88.0, *flat), warmup_s=0)  # a low first sample
    assert dip["baseline_mib"] == 100.0 and dip["drift_pct"] == 0.0
    assert SMOOTHING_SAMPLES == 3


@pytest.mark.parametrize(("command", "label"), [
    ("/usr/bin/python3 -m emoserve serve vocoder --host 127.0.0.1 --port 1", "emoserve serve vocoder"),
    ("/venv/bin/python3 /venv/bin/emoserve serve gateway --port 1", "emoserve serve gateway"),
    ("python -c import time; time.sleep(60)", "-c import time; time.sleep(60)"),
    ("/opt/a-very-long-server-name serve --x", "a-very-long-server-name serve"),
    ("python3 -c import time; time.sleep(60) # a long tail", "-c import time; time.sleep(60) #"),  # 32 characters
    ("", "?"),
])
def test_process_label(command: str, label: str) -> None:
    assert bench.process_label(command) == label


def test_too_few_samples_for_a_trend() -> None:
    short = memory_trend([0.0, 5.0, 10.0], [100.0, 104.0, 106.0], warmup_s=8)  # one sample after the warm-up
    assert short["baseline_mib"] == short["end_mib"] == 106.0
    assert short["slope_mib_per_min"] is None and short["trend_pct"] is None and short["window_s"] == 0.0
    ended_early = memory_trend([0.0, 5.0], [100.0, 104.0], warmup_s=60)  # judged on the last sample
    assert ended_early["baseline_mib"] == ended_early["end_mib"] == 104.0


def test_memory_summary_and_verdict() -> None:
    samples = [
        {"t_s": 0.0, "rss_mib": {"1": 90.0, "2": 50.0, "3": 70.0}, "gpu_memory_used_mib": [900, 0]},
        {"t_s": 10.0, "rss_mib": {"1": 100.0, "2": 52.0, "3": 70.0}, "gpu_memory_used_mib": [1000, 10]},
        {"t_s": 20.0, "rss_mib": {"1": 101.0, "2": 52.0, "3": 71.0}, "gpu_memory_used_mib": None},  # no nvidia-smi
        {"t_s": 30.0, "rss_mib": {"1": 104.0, "2": None, "3": 72.0}, "gpu_memory_used_mib": [1100, 10]},
        {"t_s": 40.0, "rss_mib": {"1": 110.0, "2": None, "3": 73.0}, "gpu_memory_used_mib": [1140, 10]},
    ]
    memory = memory_summary(samples, {1: "emoserve serve vocoder", 2: "emoserve serve encoder", 3: "gateway"},
                            warmup_s=10)
    assert memory["warmup_s"] == 10
    vocoder = memory["processes"]["1"]
    assert vocoder["command"] == "emoserve serve vocoder" and not vocoder["exited"]
    assert (vocoder["start_mib"], vocoder["baseline_mib"], vocoder["end_mib"], vocoder["peak_mib"]) == (
        90.0, 101.0, 104.0, 110.0)
    assert vocoder["drift_pct"] == pytest.approx(drift_pct(101.0, 104.0))
    assert vocoder["slope_mib_per_min"] == pytest.approx(19.8)  # least squares of 100, 101, 104, 110 per minute
    assert vocoder["trend_pct"] == pytest.approx(19.8 * 0.5 / 101.0 * 100)  # 30 s measured
    encoder = memory["processes"]["2"]
    assert encoder["exited"] and encoder["drift_pct"] is None and encoder["trend_pct"] is None
    assert encoder["peak_mib"] == 52.0
    gpus = memory["gpus"]
    assert [g["index"] for g in gpus] == [0, 1]
    assert (gpus[0]["start_mib"], gpus[0]["baseline_mib"], gpus[0]["end_mib"]) == (900, 1100, 1100)
    assert gpus[1]["drift_pct"] == 0.0

    level = {"errors": {"DEADLINE_EXCEEDED": 2, "UNAVAILABLE": 1}, "requests": 10}
    failures = soak_failures(level, memory, max_drift_pct=5.0)
    assert failures[:2] == ["3 failed requests (DEADLINE_EXCEEDED 2, UNAVAILABLE 1)",
                            "process 1 RSS trends up 9.8 % over 0.5 min (+19.80 MiB/min; limit 5 %)"]
    assert failures[2] == "process 2 (emoserve serve encoder) is gone"
    assert failures[3].startswith("GPU 0 memory trends up") and len(failures) == 4  # +0 % end vs baseline

    gateway = memory["processes"]["3"]  # 71 -> 72 MiB, +6 MiB/min for 30 s: within 5 %
    assert 0 < gateway["drift_pct"] < 5 and 0 < gateway["trend_pct"] < 5

    leaky = memory_summary([{"t_s": 60.0 * i, "rss_mib": {"7": 100.0 + 3 * i}, "gpu_memory_used_mib": None}
                            for i in range(6)], {7: "y"}, warmup_s=0)
    assert leaky["gpus"] is None
    assert soak_failures({"errors": {}, "requests": 1}, leaky, max_drift_pct=5.0) == [
        "process 7 RSS grew 8.7 % after the warm-up (limit 5 %)",  # 103 -> 112 (medians of 3)
        "process 7 RSS trends up 14.6 % over 5.0 min (+3.00 MiB/min; limit 5 %)",
    ]
    assert soak_failures({"errors": {}, "requests": 1}, leaky, max_drift_pct=15.0) == []
