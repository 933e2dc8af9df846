"""Checkpoint reading: weight-norm folding in both forms, safe loading, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrizations

from emoserve.model.checkpoint import (
    CheckpointError,
    fill_module,
    fold_weight_norm,
    load_torch_checkpoint,
    split_joint_generator,
)
from emoserve.model.vocoder import HiFiGAN, VocoderConfig

CONFIG = VocoderConfig(upsample_initial_channel=16)


def _weight_normed_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A HiFi-GAN state dict as torch's parametrized weight_norm saves it."""
    torch.manual_seed(seed)
    model = HiFiGAN(CONFIG)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            parametrizations.weight_norm(module)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _legacy_form(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rename = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}
    out = {}
    for k, v in state.items():
        for old, new in rename.items():
            k = k.replace(old, new)
        out[k] = v
    return out


def test_both_weight_norm_forms_fold_to_the_same_plain_weights():
    state = _weight_normed_state()
    new, old = fold_weight_norm(state), fold_weight_norm(_legacy_form(state))
    assert new.keys() == old.keys()
    assert all(torch.equal(new[k], old[k]) for k in new)
    model = HiFiGAN(CONFIG)
    fill_module(model, new, "vocoder")


def test_folded_weights_compute_what_the_weight_normed_model_computes():
    torch.manual_seed(1)
    reference = HiFiGAN(CONFIG)
    for module in reference.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            parametrizations.weight_norm(module)
    model = HiFiGAN(CONFIG)
    fill_module(model, fold_weight_norm(reference.state_dict()), "vocoder")
    mel = torch.randn(1, 80, 10)
    with torch.no_grad():
        assert torch.allclose(reference(mel), model(mel), atol=1e-6)


def test_fill_module_names_missing_unexpected_and_misshaped_tensors():
    state = fold_weight_norm(_weight_normed_state())
    state.pop("conv_pre.weight")
    state["bogus.weight"] = torch.zeros(1)
    state["conv_post.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        fill_module(HiFiGAN(CONFIG), state, "vocoder")
    message = str(info.value)
    assert "conv_pre.weight" in message and "bogus.weight" in message and "conv_post.bias" in message


def test_split_rejects_tensors_of_unknown_parts():
    with pytest.raises(CheckpointError, match="strange.weight"):
        split_joint_generator({"am.x": torch.zeros(1), "strange.weight": torch.zeros(1)})


def test_corrupted_checkpoint_is_rejected_with_a_clear_message(tmp_path):
    path = tmp_path / "g_00000001"
    torch.save({"generator": {"am.x": torch.zeros(3)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_torch_checkpoint(path, "generator")


def test_checkpoint_holding_code_is_refused(tmp_path):
    path = tmp_path / "evil"
    torch.save({"generator": {"am.x": torch.zeros(1)}, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_torch_checkpoint(path, "generator")


def test_checkpoint_without_expected_key_names_what_it_found(tmp_path):
    path = tmp_path / "ckpt"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="no 'generator' entry.*model"):
        load_torch_checkpoint(path, "generator")


class _Payload:
    """An arbitrary object: unpickling it would execute code paths of this module."""
