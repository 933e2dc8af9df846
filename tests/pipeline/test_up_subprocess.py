"""``emoserve up`` as real processes: start, synth, voices, SIGTERM, clean exit with no child left behind."""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FRAMES_PER_PHONEME
from tests.pipeline.conftest import HOST, Pipeline, free_port
from tests.pipeline.test_synthesize import TEXT, encoded_tokens

pytestmark = pytest.mark.timeout(240)

START_TIMEOUT_S = 120.0
SERVICE_LINE = re.compile(r"(?P<name>[\w+]+) grpc=(?P<grpc>\S+) metrics=(?P<metrics>http://127\.0\.0\.1:\d+/metrics)")
STOP_TIMEOUT_S = 30.0


class Up:
    """A running ``python -m emoserve up`` with its stdout lines collected by a reader thread."""

    def __init__(self, model: Path, port: int, tmp: Path, *extra: str) -> None:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("EMOSERVE_")}
        self.stderr_path = tmp / "up.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "emoserve", "up", "--model", str(model), "--port", str(port), "--device", "cpu",
             *extra],
            stdout=subprocess.PIPE, stderr=self._stderr, env=env, text=True, cwd=tmp,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line within {timeout} s; output so far: {self.output()}") from None
            if line is None:
                raise AssertionError(f"emoserve up exited ({self.process.wait()}) before {prefix!r}: {self.output()}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def drain(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                return
            self.lines.append(line)

    def output(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace")[-4000:]
        return "\nSTDOUT:\n" + "\n".join(self.lines) + "\nSTDERR (tail):\n" + stderr

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stderr.close()


def children_of(pid: int) -> list[int]:
    """Direct child PIDs of ``pid`` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def alive_serve_process(pid: int) -> bool:
    """True while ``pid`` is still an ``emoserve serve`` process (a reused PID does not count)."""
    return "emoserve serve" in cmdline(pid)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "emoserve", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={k: v for k, v in os.environ.items() if not k.startswith("EMOSERVE_")})
    assert done.returncode == 0, f"emoserve {args[0]} failed ({done.returncode}): {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def up(tiny_model_path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Up, str]]:
    """``emoserve up`` on the tiny model (extra arguments: ``@pytest.mark.parametrize("up", [...], indirect=True)``)."""
    port = free_port()
    process = Up(tiny_model_path, port, tmp_path, *getattr(request, "param", ()))
    try:
        yield process, f"{HOST}:{port}"
    finally:
        try:
            pids = children_of(process.process.pid) if process.process.poll() is None else []
        except FileNotFoundError:  # exited meanwhile
            pids = []
        process.close()
        for pid in pids:  # never leave servers behind, even when the test failed
            if alive_serve_process(pid):
                os.kill(pid, signal.SIGKILL)


def test_emoserve_up_serves_then_stops_cleanly_on_sigterm(
    up: tuple[Up, str], pipeline: Pipeline, tmp_path: Path
) -> None:
    process, target = up
    gateway_line = process.wait_for_line("gateway grpc=", START_TIMEOUT_S)
    assert gateway_line.startswith(f"gateway grpc={target} metrics=")
    process.wait_for_line("emoserve is up", 10)
    services = [m for m in map(SERVICE_LINE.fullmatch, process.lines) if m]
    assert sorted(m["name"] for m in services) == ["acoustic", "encoder", "gateway", "vocoder"], process.lines
    for m in services:  # each printed endpoint is that service's own
        with urllib.request.urlopen(m["metrics"], timeout=5) as reply:
            assert f'service_name="emoserve-{m["name"]}"' in reply.read().decode(), m["metrics"]
    children = children_of(process.process.pid)
    assert len(children) == 4 and all(alive_serve_process(pid) for pid in children), [cmdline(p) for p in children]

    samples = encoded_tokens(pipeline, TEXT)[0] * FRAMES_PER_PHONEME * 256
    out = run_cli("synth", TEXT, "--target", target, "-o", str(tmp_path / "out.wav"), cwd=tmp_path)
    assert "wrote" in out.stdout
    with wave.open(str(tmp_path / "out.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.getnframes() == samples
    run_cli("synth", TEXT, "--stream", "--target", target, "-o", str(tmp_path / "stream.wav"), cwd=tmp_path)
    with wave.open(io.BytesIO((tmp_path / "stream.wav").read_bytes())) as w:
        assert (w.getframerate(), w.getnframes()) == (16000, samples)

    voices = run_cli("voices", "--target", target, cwd=tmp_path).stdout.splitlines()
    assert voices[0].startswith("model dummy-tiny, 16000 Hz")
    assert len(voices) > 2

    process.process.send_signal(signal.SIGTERM)
    try:
        code = process.process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"emoserve up did not exit within {STOP_TIMEOUT_S} s of SIGTERM{process.output()}")
    process.drain()
    assert code == 0, process.output()
    assert "emoserve: stopped" in process.lines
    left = [pid for pid in children if alive_serve_process(pid)]
    assert not left, f"emoserve serve processes left behind: {[cmdline(p) for p in left]}"
    stderr = process.stderr_path.read_text(errors="replace")
    assert "Traceback" not in stderr, stderr[-4000:]
    assert "leaked" not in stderr, stderr[-4000:]  # the start-up heap is released before exit (runtime/heap.py)


@pytest.mark.parametrize("up", [("--colocate",)], indirect=True)
def test_emoserve_up_colocate_serves_acoustic_and_vocoder_from_one_process(
    up: tuple[Up, str], pipeline: Pipeline, tmp_path: Path
) -> None:
    process, target = up
    process.wait_for_line("emoserve is up", START_TIMEOUT_S)
    services = [m for m in map(SERVICE_LINE.fullmatch, process.lines) if m]
    assert sorted(m["name"] for m in services) == ["acoustic+vocoder", "encoder", "gateway"], process.lines
    colocated = next(m for m in services if m["name"] == "acoustic+vocoder")
    with urllib.request.urlopen(colocated["metrics"], timeout=5) as reply:
        metrics = reply.read().decode()
    assert 'emoserve_pending_requests{stage="acoustic"}' in metrics and 'stage="vocoder"' in metrics
    assert len(children_of(process.process.pid)) == 3

    samples = encoded_tokens(pipeline, TEXT)[0] * FRAMES_PER_PHONEME * 256
    for i in range(2):
        out = run_cli("synth", TEXT, "--target", target, "-o", str(tmp_path / f"out{i}.wav"), cwd=tmp_path)
        assert "wrote" in out.stdout
        with wave.open(str(tmp_path / f"out{i}.wav")) as w:
            assert w.getnframes() == samples
