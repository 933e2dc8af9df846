"""Services as real processes (``python -m emoserve serve KIND``) on loopback, for drain, overload and fault tests.

Each process gets its own YAML config (CPU, loopback port, replica name, grace period, batching; no metrics
endpoint) and log file. :class:`Processes` starts them and, on close, kills whatever still runs, so a failing
test leaves no server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.pipeline.conftest import HOST, SERVING, free_port

START_TIMEOUT_S = 90.0
"""Longest wait for a process to report SERVING (model load, warm-up) on a busy 2-core machine."""
LOG_TAIL_CHARS = 4000


class Service:
    """One ``emoserve serve`` process, restartable on the same port.

    Args:
        kind: "encoder", "acoustic", "vocoder" or "gateway".
        name: replica name (``StageTiming.replica``) and log file stem.
        args: extra command-line arguments (``--model``, or the gateway's stage addresses).
        config: YAML configuration written for the process.
        workdir: where the config and log files go.
    """

    def __init__(self, kind: str, name: str, args: Sequence[str], config: dict[str, Any], workdir: Path) -> None:
        self.kind, self.name = kind, name
        self.port = free_port()
        config_path = workdir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump({**config, "replica": name, "metrics": {"port": -1}}), encoding="utf-8")
        self.command = [sys.executable, "-m", "emoserve", "serve", kind, "--config", str(config_path),
                        "--host", HOST, "--port", str(self.port), *args]
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def start(self) -> None:
        """Starts the process (again, on the same port); returns at once."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOSERVE_", "OTEL_"))}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**env, "PYTHONUNBUFFERED": "1"})

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def health(self, timeout: float = 1.0) -> int | None:
        """The ``grpc.health.v1`` status of the whole server, or None if it does not answer."""
        try:
            with grpc.insecure_channel(self.address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return None
        return reply.status

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> float:
        """Polls health until SERVING; returns the ``time.monotonic()`` at which SERVING was seen.

        Raises:
            AssertionError: the process exited, or did not report SERVING in time (with its log).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.name} exited while starting{self.log()}")
            if self.health() == SERVING:
                return time.monotonic()
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not report SERVING within {timeout} s{self.log()}")

    def send(self, sig: signal.Signals) -> None:
        assert self.running(), f"{self.name} is not running{self.log()}"
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit; returns its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout} s{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL (SIGCONT first, in case it was stopped) and reap."""
        if self.running():
            assert self.process is not None
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(30)

    def log(self) -> str:
        """The tail of the process's output, for failure messages."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"\n--- {self.name} log (tail) ---\n{text[-LOG_TAIL_CHARS:]}"


class Processes:
    """Starts emoserve services as processes over one model; :meth:`close` kills what is left.

    Args:
        model: model directory the stages serve.
        workdir: where configs and logs go.
    """

    def __init__(self, model: Path, workdir: Path) -> None:
        self.model, self.workdir = model, workdir
        self.services: list[Service] = []

    def stage(self, kind: str, name: str | None = None, *, grace_s: float = 5.0, **config: Any) -> Service:
        """A stage process (not started); ``config`` sections such as ``batching={...}`` go into its YAML."""
        return self._add(Service(kind, name or kind, ["--model", str(self.model)],
                                 {"device": "cpu", "server": {"grace_period_s": grace_s}, **config}, self.workdir))

    def gateway(self, encoder: Service, acoustic: Service, vocoders: Sequence[Service], name: str = "gateway", *,
                grace_s: float = 5.0) -> Service:
        """A gateway process (not started) over the given stage processes."""
        args = [f"--encoder={encoder.address}", f"--acoustic={acoustic.address}",
                f"--vocoder={','.join(v.address for v in vocoders)}"]
        return self._add(Service("gateway", name, args, {"server": {"grace_period_s": grace_s}}, self.workdir))

    def _add(self, service: Service) -> Service:
        self.services.append(service)
        return service

    @staticmethod
    def start(*services: Service) -> None:
        """Starts the services together and waits until every one reports SERVING."""
        for service in services:
            service.start()
        for service in services:
            service.wait_serving()

    def close(self) -> None:
        for service in self.services:
            service.kill()
