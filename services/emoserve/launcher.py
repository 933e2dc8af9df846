"""``emoserve up``: the whole pipeline on one machine.

Starts the stages on free loopback ports, waits until each reports SERVING, then starts the gateway on the
requested port; every service's Prometheus endpoint gets a free port too. Each stage has its own process;
``--colocate`` serves the acoustic model and the vocoder from one (``acoustic+vocoder``, one CUDA context: no
time slicing of the GPU between them, but one GIL), which lowers latency at low load and costs throughput at
high load (README, Performance). Prints one line per process, ``NAME grpc=HOST:PORT
metrics=http://HOST:PORT/metrics``. Ctrl-C / SIGTERM drains the gateway first, then the stages. Without a model
directory it serves the demo voice shipped in the package (:data:`emoserve.models.DEMO_MODEL`).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emoserve.models import DEMO_MODEL

STAGE_ORDER = ("encoder", "acoustic", "vocoder")
GPU_SHARED = ("acoustic", "vocoder")
"""The stages ``--colocate`` serves from one process."""
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 30.0


@dataclass
class Child:
    """A running service process."""

    name: str
    address: str
    process: subprocess.Popen
    metrics: str
    """URL of the service's Prometheus endpoint."""


def default_model_dir() -> Path:
    """The model ``emoserve up`` serves when none is given: the demo voice shipped in the package.

    Raises:
        FileNotFoundError: the installation lacks it (a package built without its data files).
    """
    if not (DEMO_MODEL / "model.json").is_file():
        raise FileNotFoundError(f"the built-in demo voice is missing from this installation ({DEMO_MODEL}); "
                                "reinstall emoserve or pass --model DIR")
    return DEMO_MODEL


def free_port(host: str) -> int:
    """A currently free TCP port on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_serving(child: Child, timeout_s: float = START_TIMEOUT_S) -> None:
    """Polls ``grpc.health.v1`` until SERVING; raises if the process exits or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(child.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode} while starting")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{child.name} did not report SERVING within {timeout_s:.0f} s")


def _spawn(name: str, args: list[str], host: str, port: int) -> Child:
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
    metrics_port = free_port(reachable)
    command = [sys.executable, "-m", "emoserve", "serve", name, "--host", host, "--port", str(port),
               "--metrics-port", str(metrics_port), *args]
    return Child(name, f"{reachable}:{port}", subprocess.Popen(command), f"http://{reachable}:{metrics_port}/metrics")


def stop_all(children: list[Child]) -> None:
    """SIGTERM in reverse start order (gateway first), then waits; kills what outlives the timeout."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def stage_processes(colocate: bool = False) -> list[str]:
    """What each stage process serves: one stage each, or with ``colocate`` the acoustic model and the vocoder
    together (``acoustic+vocoder``)."""
    if not colocate:
        return list(STAGE_ORDER)
    return [s for s in STAGE_ORDER if s not in GPU_SHARED] + ["+".join(GPU_SHARED)]


def up(model: str | None, device: str, precision: str, host: str, port: int, config: str | None = None,
       colocate: bool = False) -> int:
    """Runs the pipeline until interrupted (``colocate``: see :func:`stage_processes`). Returns the exit code."""
    try:
        model_dir = str(model or default_model_dir())
    except FileNotFoundError as exc:
        print(f"emoserve up: error: {exc}", file=sys.stderr, flush=True)
        return 1
    common = ["--device", device, "--precision", precision] + (["--config", config] if config else [])
    children: list[Child] = []

    def on_signal(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for name in stage_processes(colocate):
            children.append(_spawn(name, ["--model", model_dir, *common], "127.0.0.1", free_port("127.0.0.1")))
        for child in children:
            wait_serving(child)
        stages = [f"--{stage}={c.address}" for c in children for stage in c.name.split("+")]
        gateway = _spawn("gateway", [*stages, *(["--config", config] if config else [])], host, port)
        children.append(gateway)
        wait_serving(gateway)
        for child in children:
            print(f"{child.name} grpc={child.address} metrics={child.metrics}", flush=True)
        print(f"emoserve is up (model {model_dir}); try: emoserve synth \"Hello from emoserve.\" "
              f"--target {gateway.address} -o hello.wav", flush=True)
        while all(c.process.poll() is None for c in children):
            time.sleep(0.5)
        failed = [c.name for c in children if c.process.poll() is not None]
        print(f"emoserve: {', '.join(failed)} exited; stopping", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"emoserve up: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all(children)
        print("emoserve: stopped", flush=True)
