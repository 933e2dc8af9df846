#!/usr/bin/env python
"""Generates the Python gRPC stubs of ``proto/`` into ``services/emoserve/v1/``.

Usage:
    python tools/gen_protos.py          # (re)generate the stubs in place
    python tools/gen_protos.py --check  # exit 1 listing stale stubs; write nothing

Generation uses the protoc bundled with grpcio-tools (``-Iproto``) and writes
``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` so that
``emoserve.v1.tts_pb2`` etc. import from the installed package.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE = Path("emoserve") / "v1"
OUT_ROOT = ROOT / "services"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _is_generated(path: Path) -> bool:
    return path.name.endswith(GENERATED_SUFFIXES)


def generate(out_root: Path) -> list[Path]:
    """Runs protoc on every ``.proto`` under ``proto/emoserve/v1``.

    Args:
        out_root: Directory receiving ``emoserve/v1/*_pb2*.py[i]``.

    Returns:
        The generated files, relative to ``out_root``.

    Raises:
        RuntimeError: protoc failed (its diagnostics are on stderr).
    """
    from grpc_tools import protoc  # deferred: only needed when generating

    protos = sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    (out_root / PROTO_PACKAGE).mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return sorted(
        p.relative_to(out_root) for p in (out_root / PROTO_PACKAGE).iterdir() if _is_generated(p)
    )


def stale_files(out_root: Path = OUT_ROOT) -> list[str]:
    """Regenerates into a temporary directory and compares with ``out_root``.

    Returns:
        Paths (relative to ``out_root``) that are missing, differ from a fresh
        generation, or are generated files without a ``.proto`` any more.
    """
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            str(rel)
            for rel in fresh
            if not (out_root / rel).is_file()
            or not filecmp.cmp(Path(tmp) / rel, out_root / rel, shallow=False)
        ]
    target = out_root / PROTO_PACKAGE
    existing = sorted(p.relative_to(out_root) for p in target.glob("*") if _is_generated(p))
    stale += [f"{rel} (orphan)" for rel in existing if rel not in fresh]
    return stale


def write(out_root: Path = OUT_ROOT) -> list[Path]:
    """Regenerates the stubs in place, removing orphaned generated files.

    Returns:
        The generated files, relative to ``out_root``.
    """
    target = out_root / PROTO_PACKAGE
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target.mkdir(parents=True, exist_ok=True)
        for old in target.iterdir():
            if _is_generated(old) and old.relative_to(out_root) not in fresh:
                old.unlink()
        for rel in fresh:
            shutil.copyfile(Path(tmp) / rel, out_root / rel)
    init = target / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf/gRPC stubs of the emoserve.v1 API (tools/gen_protos.py)."""\n')
    return fresh


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if generated stubs are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated protobuf files (run `python tools/gen_protos.py`):", file=sys.stderr)
            for path in stale:
                print(f"  {path}", file=sys.stderr)
            return 1
        print("generated protobuf files are up to date")
        return 0
    for rel in write():
        print(f"wrote {OUT_ROOT.relative_to(ROOT) / rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
