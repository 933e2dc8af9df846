"""The chart's model-download init container script, run for real against a loopback HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.conftest import CHART

SCRIPT = CHART / "files" / "fetch_model.py"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[assignment]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _archive(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> str:
    """Writes a tar archive of ``members``; returns its SHA-256."""
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch(url: str, model_dir: Path, sha256: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "MODEL_URL": url, "MODEL_DIR": str(model_dir), "MODEL_SHA256": sha256}
    return subprocess.run([sys.executable, str(SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=60)


MODEL = {"model.json": b'{"name": "demo"}', "acoustic.safetensors": b"\x00" * 4096, "style/config.json": b"{}"}


def test_downloads_verifies_and_unpacks_a_model_in_a_top_level_folder(served, tmp_path):
    www, base = served
    digest = _archive(www / "model.tar.gz", {f"emotivoice/{k}": v for k, v in MODEL.items()})
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    done = _fetch(f"{base}/model.tar.gz", model_dir, digest.upper())
    assert done.returncode == 0, done.stderr
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()) == sorted(MODEL)
    assert (model_dir / "acoustic.safetensors").read_bytes() == MODEL["acoustic.safetensors"]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".fetch-")]


def test_flat_uncompressed_archive(served, tmp_path):
    www, base = served
    _archive(www / "model.tar", MODEL, mode="w")
    done = _fetch(f"{base}/model.tar", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "style" / "config.json").read_bytes() == b"{}"


def test_checksum_mismatch_fails_and_leaves_nothing(served, tmp_path):
    www, base = served
    _archive(www / "model.tgz", MODEL)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    done = _fetch(f"{base}/model.tgz", model_dir, "0" * 64)
    assert done.returncode == 1 and "SHA-256 mismatch" in done.stderr
    assert list(model_dir.iterdir()) == []


def test_members_escaping_the_model_directory_are_refused(served, tmp_path):
    www, base = served
    _archive(www / "evil.tar.gz", {**MODEL, "../../escaped.txt": b"x"})
    model_dir = tmp_path / "a" / "model"
    model_dir.mkdir(parents=True)
    done = _fetch(f"{base}/evil.tar.gz", model_dir)
    assert done.returncode == 1 and "cannot unpack" in done.stderr
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (model_dir / "model.json").exists()


def test_an_archive_without_model_json_is_refused(served, tmp_path):
    www, base = served
    _archive(www / "other.tar.gz", {"readme.txt": b"not a model"})
    done = _fetch(f"{base}/other.tar.gz", tmp_path)
    assert done.returncode == 1 and "no model.json" in done.stderr


def test_an_existing_model_is_kept_without_downloading(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    done = _fetch("http://127.0.0.1:9/unreachable.tar.gz", tmp_path)
    assert done.returncode == 0 and "nothing to do" in done.stdout


@pytest.mark.parametrize("url", ["", "ftp://host/model.tar", "file:///etc/passwd"])
def test_only_http_urls_are_accepted(tmp_path, url):
    done = _fetch(url, tmp_path)
    assert done.returncode == 2 and "need MODEL_URL" in done.stderr
