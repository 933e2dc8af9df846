"""The README's configuration example and test command stay true."""

from __future__ import annotations

from pathlib import Path

from emoserve.runtime.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_configuration_example_is_a_valid_config(tmp_path):
    example = README.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config.yaml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path, environ={})
    assert config.batching.priority_levels == 2 and config.streaming.first_chunk_frames == 8


def test_ci_runs_the_readme_test_command():
    command = 'pip install torch==2.13.0 -e ".[test]" && python -m pytest -q'
    assert command in README
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert 'pip install --quiet torch==2.13.0 -e ".[test]"' in ci and "python -m pytest -q" in ci


def test_shipped_gpu_config_is_valid():
    assert load_config(ROOT / "tools" / "data" / "gpu.yaml", environ={}).batching.max_batch_size == 16
