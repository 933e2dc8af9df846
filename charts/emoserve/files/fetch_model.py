"""Init container of the emoserve chart: downloads a model directory archive into the model volume.

Environment: MODEL_URL (http(s) URL of a .tar, .tar.gz, .tgz, .tar.bz2 or .tar.xz archive), MODEL_DIR (the
emptyDir to fill), MODEL_SHA256 (optional hex digest of the archive). The archive holds the model directory
(model.json at its top, or inside a single top-level folder). Members that would land outside MODEL_DIR,
links and device files are refused (tarfile's "data" filter). Exits non-zero with a message on any error.
"""

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

CHUNK = 1 << 20


def download(url: str, target: str) -> str:
    """Streams ``url`` into the file ``target``; returns the archive's SHA-256 hex digest."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def main() -> int:
    url = os.environ.get("MODEL_URL", "")
    model_dir = os.environ.get("MODEL_DIR", "")
    expected = os.environ.get("MODEL_SHA256", "").strip().lower()
    if urllib.parse.urlparse(url).scheme not in ("http", "https") or not model_dir:
        print(f"fetch_model: need MODEL_URL (http/https) and MODEL_DIR, got {url!r}, {model_dir!r}", file=sys.stderr)
        return 2
    if os.path.exists(os.path.join(model_dir, "model.json")):
        print(f"fetch_model: {model_dir} already holds a model; nothing to do")
        return 0
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".fetch-") as work:
        archive = os.path.join(work, "model.tar")
        print(f"fetch_model: downloading {url}", flush=True)
        actual = download(url, archive)
        if expected and actual != expected:
            print(f"fetch_model: SHA-256 mismatch: expected {expected}, got {actual}", file=sys.stderr)
            return 1
        unpacked = os.path.join(work, "unpacked")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            print(f"fetch_model: cannot unpack {url}: {exc}", file=sys.stderr)
            return 1
        root = unpacked
        entries = os.listdir(root)
        if "model.json" not in entries and len(entries) == 1 and os.path.isdir(os.path.join(root, entries[0])):
            root = os.path.join(root, entries[0])
        if not os.path.isfile(os.path.join(root, "model.json")):
            print("fetch_model: the archive holds no model.json (at its top or in its only folder)", file=sys.stderr)
            return 1
        for entry in os.listdir(root):
            shutil.move(os.path.join(root, entry), os.path.join(model_dir, entry))
    print(f"fetch_model: model ready in {model_dir}: {sorted(os.listdir(model_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
