"""tools/hop_floor.py: a bare gRPC echo between two processes, timed per payload size and idle gap."""

from __future__ import annotations

import json
from pathlib import Path

from emoserve.tools.hop_floor import main


def test_hop_floor_reports_every_size_and_gap(tmp_path: Path, capsys) -> None:
    out = tmp_path / "floor.json"
    assert main(["--sizes", "100,20000", "--gaps-ms", "0,2", "--calls", "20", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["bytes"], r["gap_ms"]) for r in rows] == [(100, 0), (100, 2), (20000, 0), (20000, 2)]
    assert all(0 < r["p50_ms"] <= r["p90_ms"] < 1000 for r in rows)
    assert report["command"].startswith("python tools/hop_floor.py --sizes 100,20000")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["bytes", "idle", "gap", "ms", "p50", "ms", "p90", "ms"]
    assert len(printed) == 1 + len(rows)
