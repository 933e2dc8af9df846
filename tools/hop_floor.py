"""The floor of one stage hop: a bare ``grpc.aio`` unary echo between two processes on this machine.

    python tools/hop_floor.py [--sizes 100,56000,180000] [--gaps-ms 0,5,20] [--calls 800] --out hop_floor.json

An echo server (no interceptors, no batcher, no model) runs in a child process; one client calls it with each
payload size (100 B: a text request; 56 KB: a 5 s fp16 mel; 180 KB: 5.6 s of 16-bit audio), first back to back,
then after each idle gap (a pipeline stage sits idle while the other stages work; its next call pays for waking
up). Prints the median and p90 round trip per size and gap, and writes them as JSON. emoserve's unary path at one
client is four such hops (client → gateway → encoder, acoustic, vocoder), so four times the floor is the least
its latency can be above the three stages' compute.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

METHOD = "/emoserve.tools.Echo/Echo"
LIMIT = 64 * 1024 * 1024


async def _serve(port: int) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", LIMIT),
                                      ("grpc.max_send_message_length", LIMIT)])
    handler = grpc.method_handlers_generic_handler(
        "emoserve.tools.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def measure(port: int, sizes: list[int], gaps_ms: list[float], calls: int) -> list[dict]:
    """Round trips to the echo server on ``port``: one row per (size, gap) with p50/p90 in ms."""
    rows = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                         options=[("grpc.max_receive_message_length", LIMIT)]) as channel:
        call = channel.unary_unary(METHOD)
        await call(b"", wait_for_ready=True, timeout=30)
        for size in sizes:
            body = os.urandom(size)
            for _ in range(max(calls // 10, 10)):
                await call(body)
            for gap in gaps_ms:
                times = []
                for _ in range(calls):
                    if gap:
                        await asyncio.sleep(gap / 1e3)
                    started = time.perf_counter()
                    await call(body)
                    times.append((time.perf_counter() - started) * 1e3)
                deciles = statistics.quantiles(times, n=10)
                rows.append({"bytes": size, "gap_ms": gap, "p50_ms": statistics.median(times), "p90_ms": deciles[8]})
    return rows


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_ints, default=[100, 56_000, 180_000], help="payload bytes, comma-separated")
    parser.add_argument("--gaps-ms", type=_floats, default=[0, 5, 20], help="idle time before each call")
    parser.add_argument("--calls", type=int, default=800, help="calls per size and gap")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child process: echo on this port
    args = parser.parse_args(argv)
    if args.serve is not None:
        asyncio.run(_serve(args.serve))
        return 0
    from emoserve.launcher import free_port

    port = free_port("127.0.0.1")
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout is None or server.stdout.readline().strip() != "ready":
            raise RuntimeError("the echo server did not start")
        rows = asyncio.run(measure(port, args.sizes, args.gaps_ms, args.calls))
    finally:
        server.terminate()
        server.wait(10)
    print(f"{'bytes':>8} {'idle gap ms':>11} {'p50 ms':>7} {'p90 ms':>7}")
    for row in rows:
        print(f"{row['bytes']:>8} {row['gap_ms']:>11g} {row['p50_ms']:>7.3f} {row['p90_ms']:>7.3f}")
    if args.out:
        report = {"command": " ".join(["python tools/hop_floor.py", *(argv if argv is not None else sys.argv[1:])]),
                  "date": time.strftime("%Y-%m-%d"), "host": platform.node(), "grpcio": grpc.__version__,
                  "rows": rows}
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
