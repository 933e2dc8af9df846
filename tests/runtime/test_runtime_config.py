"""Typed config: validation messages, YAML loading, env overrides, device/precision resolution."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from emoserve.runtime import BatchingConfig, ConfigError, ServerConfig, StageConfig, load_config
from emoserve.runtime.config import resolve_device, resolve_precision


def test_defaults_are_valid_and_frozen() -> None:
    cfg = StageConfig()
    assert cfg.batching == BatchingConfig() and cfg.server.max_message_bytes == 64 * 1024 * 1024
    assert cfg.replica  # defaults to the host name
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.device = "cpu"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: BatchingConfig(max_batch_size=0), "BatchingConfig.max_batch_size must be >= 1, got 0"),
        (lambda: BatchingConfig(max_queue_delay_us=-5), "BatchingConfig.max_queue_delay_us must be >= 0, got -5"),
        (lambda: BatchingConfig(timeout_action="drop"), "BatchingConfig.timeout_action must be one of ['reject', 'delay'], got 'drop'"),
        (lambda: BatchingConfig(preferred_batch_sizes=(4, 16)), "BatchingConfig.preferred_batch_sizes must be within [1, max_batch_size=8], got (4, 16)"),
        (lambda: BatchingConfig(preferred_batch_sizes=(2, 2)), "BatchingConfig.preferred_batch_sizes must be free of duplicates, got (2, 2)"),
        (lambda: BatchingConfig(max_batch_size=True), "BatchingConfig.max_batch_size must be an integer, got True"),
        (lambda: BatchingConfig(priority_levels=0), "BatchingConfig.priority_levels must be >= 1, got 0"),
        (lambda: ServerConfig(port=70000), "ServerConfig.port must be within [0, 65535], got 70000"),
        (lambda: ServerConfig(grace_period_s="10"), "ServerConfig.grace_period_s must be a number, got '10'"),
        (lambda: StageConfig(device="tpu"), "StageConfig.device must be one of ['auto', 'cpu', 'cuda'], got 'tpu'"),
        (lambda: StageConfig(precision="int8"), "StageConfig.precision must be one of ['auto', 'fp32', 'fp16', 'bf16'], got 'int8'"),
        (lambda: StageConfig(max_text_chars=0), "StageConfig.max_text_chars must be >= 1, got 0"),
    ],
)
def test_invalid_values_are_rejected_with_field_and_actual_value(build, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value) == message


def test_yaml_file_is_loaded_into_nested_typed_config(tmp_path: Path) -> None:
    path = tmp_path / "encoder.yaml"
    path.write_text(
        "device: cpu\n"
        "batching:\n  max_batch_size: 16\n  preferred_batch_sizes: [8, 4]\n"
        "server:\n  port: 50052\n  grace_period_s: 5\n"
    )
    cfg = load_config(path, environ={})
    assert cfg.device == "cpu"
    assert cfg.batching.max_batch_size == 16 and cfg.batching.preferred_batch_sizes == (4, 8)
    assert cfg.server.port == 50052 and cfg.server.grace_period_s == 5.0
    assert cfg.batching.max_queue_delay_us == BatchingConfig().max_queue_delay_us


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("devise: cpu\n", "unknown config key(s) 'devise'"),
        ("batching:\n  max_batch: 4\n", "unknown config key(s) 'batching.max_batch'"),
        ("server:\n  port: 1\n  plaintext: true\n", "unknown config key(s) 'server.plaintext'"),
    ],
)
def test_unknown_yaml_keys_are_rejected_by_name(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert message in str(info.value)
    assert "allowed:" in str(info.value)


def test_non_mapping_yaml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping, got list"):
        load_config(path, environ={})


def test_precedence_is_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("max_text_chars: 100\nbatching:\n  max_batch_size: 2\n  max_queue_size: 10\n")
    env = {
        "EMOSERVE_CONFIG": str(path),
        "EMOSERVE_BATCHING__MAX_BATCH_SIZE": "4",
        "EMOSERVE_SERVER__PORT": "0",
        "EMOSERVE_REPLICA": "007",  # str fields are taken verbatim
        "OTHER": "ignored",
    }
    cfg = load_config(environ=env, batching={"max_queue_size": 20})
    assert cfg.max_text_chars == 100
    assert cfg.batching.max_batch_size == 4 and cfg.batching.max_queue_size == 20
    assert cfg.server.port == 0 and cfg.replica == "007"


@pytest.mark.parametrize("name", ["EMOSERVE_DEVISE", "EMOSERVE_BATCHING__MAX", "EMOSERVE_BATCHING"])
def test_unknown_environment_variables_are_rejected_by_name(name: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown environment variable '{name}'"):
        load_config(environ={name: "1"})


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(environ={}, max_text=3)


def test_auto_resolves_to_cpu_and_fp32_without_cuda_and_fp16_on_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda:0") == "fp16"
    assert resolve_precision("fp16", "cpu") == "fp16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_without_cuda_is_an_error() -> None:
    with pytest.raises(ConfigError, match="device 'cuda' requested"):
        resolve_device("cuda")
