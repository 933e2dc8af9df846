"""The gateway's malloc arena cap: fewer arenas once set, glibc's own variable wins, bad counts refused."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from emoserve.runtime.allocator import ARENA_MAX_ENV, limit_malloc_arenas

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")

THREADS = 12

PROBE = f"""
import ctypes, json, os, re, sys, threading
from emoserve.runtime.allocator import limit_malloc_arenas

applied = limit_malloc_arenas(int(sys.argv[1])) if sys.argv[1] != "none" else None
buffers = []
together = threading.Barrier({THREADS})
def allocate():  # a thread's first malloc binds it to an arena (a new one while under the cap)...
    buffers.append(bytearray(64 * 1024))
    together.wait()  # ...which it holds while alive
threads = [threading.Thread(target=allocate) for _ in range({THREADS})]
started = [t.start() for t in threads]
joined = [t.join() for t in threads]
libc = ctypes.CDLL(None)
libc.tmpfile.restype = ctypes.c_void_p
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fflush.argtypes = libc.fileno.argtypes = libc.fclose.argtypes = (ctypes.c_void_p,)
report = libc.tmpfile()
libc.malloc_info(0, report)
libc.fflush(report)
fd = libc.fileno(report)
os.lseek(fd, 0, os.SEEK_SET)
xml = b"".join(iter(lambda: os.read(fd, 1 << 16), b"")).decode()
libc.fclose(report)
print(json.dumps({{"applied": applied, "arenas": len(re.findall(r"<heap nr=", xml))}}))
"""


def probe(cap: str, **env: str) -> dict:
    """Arenas of a fresh process once ``THREADS`` live threads have allocated, after ``limit_malloc_arenas(cap)``
    ("none": not called)."""
    environ = {k: v for k, v in os.environ.items() if k != ARENA_MAX_ENV} | env
    out = subprocess.run([sys.executable, "-c", PROBE, cap], capture_output=True, text=True, env=environ,
                         timeout=60, check=True).stdout
    return json.loads(out)


def test_the_cap_bounds_the_arenas_of_new_threads() -> None:
    uncapped = probe("none")
    assert uncapped["arenas"] > 2  # each thread got its own arena: the cap below is what keeps them down
    assert probe("2") == {"applied": True, "arenas": 2}
    assert probe("1") == {"applied": True, "arenas": 1}


def test_malloc_arena_max_in_the_environment_wins() -> None:
    assert probe("2", **{ARENA_MAX_ENV: "4"}) == {"applied": False, "arenas": 4}


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="arena count must be >= 1, got 0"):
        limit_malloc_arenas(0)
