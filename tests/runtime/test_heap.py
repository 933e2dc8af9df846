"""Freezing the start-up heap: what is alive leaves the collector's scans, new garbage is still collected."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
import torch  # noqa: F401 - a stage's start-up heap
from emoserve.runtime.heap import freeze_startup_heap, release_startup_heap

frozen = freeze_startup_heap()
assert frozen == gc.get_freeze_count() > 100_000, frozen
cycle = []
cycle.append(cycle)
del cycle
assert gc.collect() >= 1  # garbage made after the freeze is collected as before
release_startup_heap()
assert gc.get_freeze_count() == 0  # collected again, and finalised at exit
print("ok")
"""


def test_freezing_moves_the_startup_heap_out_of_collections_until_released_and_new_garbage_is_still_collected():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
