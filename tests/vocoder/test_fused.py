"""The fused HiFi-GAN generator computes what the reference computes (CPU).

The restructured math (channels-last, padded channels, fused mask/residual/resblock sum) is checked through
the ``torch`` backend in float64; the Triton kernels run under Triton's interpreter (``TRITON_INTERPRET=1``)
against the same ops. On a machine with a GPU the kernels are tested compiled in ``tests/gpu``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from emoserve.model.vocoder import HiFiGAN, VocoderConfig
from emoserve.vocoder.fused import (
    FusedHiFiGAN,
    PackedConv,
    TorchOps,
    padded_channels,
    triton_available,
)

TINY = VocoderConfig(upsample_initial_channel=32)
# Odd shapes: channels that need padding (n_mels 20 → 32, 48 → 64, 24 → 32, 12 → 16), other rates and kernels.
ODD = VocoderConfig(n_mels=20, upsample_rates=(4, 3), upsample_kernel_sizes=(8, 5), upsample_initial_channel=48,
                    resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 2), (1, 3)))


def _model(config: VocoderConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> HiFiGAN:
    """Weights scaled by fan-in and non-zero biases: the output follows the input, unsaturated."""
    torch.manual_seed(seed)
    model = HiFiGAN(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                fan_in = module.in_channels * module.kernel_size[0] / module.stride[0]
                module.weight.normal_(0.0, fan_in**-0.5)
                module.bias.normal_(0.0, 0.1)
    return model.to(dtype)


def _inputs(config: VocoderConfig, lengths: list[int], dtype: torch.dtype = torch.float64, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(len(lengths), config.n_mels, max(lengths), generator=gen, dtype=torch.float64)
    return mel.to(dtype), torch.tensor(lengths)


def test_padded_channels():
    assert [padded_channels(c) for c in (1, 16, 17, 48, 256)] == [16, 16, 32, 64, 256]
    assert [padded_channels(c, inner=False) for c in (1, 16, 20, 80)] == [16, 16, 32, 80]


@pytest.mark.parametrize("config", [TINY, ODD], ids=["tiny", "odd"])
@pytest.mark.parametrize("ragged", [False, True])
def test_torch_backend_equals_reference(config, ragged):
    model = _model(config)
    fused = FusedHiFiGAN.from_model(model, backend="torch")
    mel, lengths = _inputs(config, [9, 4, 7] if ragged else [9, 9, 9])
    with torch.no_grad():
        expected = model(mel, lengths if ragged else None)
        got = fused(mel, lengths if ragged else None)
    assert got.shape == expected.shape == (3, 9 * config.hop_length)
    assert expected.std() > 0.1  # a signal, not the biases alone
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    if ragged:
        for b, n in enumerate(lengths.tolist()):
            assert torch.all(got[b, n * config.hop_length :] == 0)


def test_from_model_keeps_dtype_and_packs_padded_channels():
    fused = FusedHiFiGAN.from_model(_model(ODD, dtype=torch.float16), backend="torch")
    assert {p.dtype for p in fused.parameters()} == {torch.float16}
    assert fused.conv_pre.weight.shape == (7, 32, 64)  # K, padded n_mels, padded channels
    assert [tuple(up.weight.shape) for up in fused.ups] == [(8, 64, 32), (5, 32, 16)]
    assert fused.ups[1].stride == 3 and fused.ups[1].padding == 1
    assert fused.resblocks[1][1][1][0].dilation == 3  # stage 1, resblock 1, pair 1, conv1
    assert fused.conv_post.weight.shape == (7, 16, 1)
    assert torch.all(fused.conv_post.weight[:, 12:] == 0)  # padded input channels carry zero weights


def test_rejects_bad_input_and_configs():
    model = _model(TINY)
    fused = FusedHiFiGAN.from_model(model, backend="torch")
    with pytest.raises(ValueError, match=r"mel must be \[B, 80, F\]"):
        fused(torch.zeros(1, 40, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend must be"):
        FusedHiFiGAN.from_model(model, backend="cuda")
    bad = HiFiGAN(VocoderConfig(upsample_initial_channel=32, upsample_kernel_sizes=(15, 16, 4, 4)))
    with pytest.raises(ValueError, match="exactly rate"):
        FusedHiFiGAN.from_model(bad)


def test_auto_backend_uses_torch_for_cpu_tensors():
    fused = FusedHiFiGAN.from_model(_model(TINY), backend="auto")
    assert isinstance(fused._ops(torch.zeros(1)), TorchOps)


# ---- Triton kernels under the interpreter ----
# Triton decides at import whether its functions are interpreted, and torch imports triton early, so the
# kernel tests (names containing "interpreted") run in a child pytest started with TRITON_INTERPRET=1.

INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"


def test_kernels_in_a_triton_interpreter_process():
    if not triton_available():
        pytest.skip("triton is not installed (pip install -e '.[test]' installs it on Linux)")
    if INTERPRETER:
        pytest.skip("this is the interpreter process")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the compiled kernels are tested in tests/gpu/test_fused_vocoder.py")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "interpreted", __file__],
        check=False, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[2], timeout=600,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "skipped" not in summary and f"{INTERPRETED_TESTS} passed" in summary, summary


@pytest.fixture(scope="module")
def kernels() -> ModuleType:
    """:mod:`emoserve.vocoder.kernels`, its kernels built for Triton's CPU interpreter."""
    if not INTERPRETER:
        pytest.skip("runs in the child process of test_kernels_in_a_triton_interpreter_process")
    from emoserve.vocoder import kernels as module

    return module


def _packed(k: int, c_in: int, c_out: int, seed: int, **geometry) -> PackedConv:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, c_in, c_out, generator=gen) / (k * c_in) ** 0.5
    return PackedConv(weight, torch.randn(c_out, generator=gen), **geometry)


def _act(batch: int, steps: int, channels: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, steps, channels, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("k", "dilation", "c_in", "c_out", "pre_slope", "extras", "out_scale"),
    [
        (7, 1, 80, 32, None, (), 1.0),  # conv_pre: 80 input channels in steps of 16, no activation
        (3, 5, 32, 32, 0.1, (), 1.0),  # conv1: dilated, leaky prologue
        (11, 1, 16, 16, 0.1, ("residual",), 1.0),  # conv2 in the chain
        (5, 3, 32, 32, 0.1, ("residual", "accumulate"), 1 / 3),  # last conv2: running sum, average
    ],
)
def test_interpreted_conv1d_kernel_matches_torch_ops(kernels, k, dilation, c_in, c_out, pre_slope, extras, out_scale):
    batch, steps = 2, 45  # 45 rows in blocks of 16: the last block is partial
    conv = _packed(k, c_in, c_out, seed=k, dilation=dilation, padding=dilation * (k - 1) // 2)
    x = _act(batch, steps, c_in, seed=0)
    lengths, len_scale = torch.tensor([3, 2]), 15  # item 1 ends at row 30
    named = {name: _act(batch, steps, c_out, seed=i + 1) for i, name in enumerate(extras)}
    expected = TorchOps.conv1d(x, conv, lengths, len_scale, pre_slope=pre_slope, out_scale=out_scale, **named)
    tile = kernels.Tile(16, min(c_out, 32), 16)
    out = named.get("accumulate", named.get("residual"))  # in place where the fused generator does so
    got = kernels.conv1d(x, conv.weight, conv.bias, lengths, len_scale, dilation=dilation, padding=conv.padding,
                         pre_slope=pre_slope, out_scale=out_scale, out=out, tile=tile, **named)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if not extras:
        assert torch.all(got[1, 30:] == 0)


@pytest.mark.parametrize(("k", "stride", "padding"), [(16, 8, 4), (4, 2, 1), (5, 3, 1), (3, 1, 1)])
def test_interpreted_upsample_kernel_matches_torch_ops(kernels, k, stride, padding):
    batch, steps, c_in, c_out = 2, 9, 32, 16
    conv = _packed(k, c_in, c_out, seed=stride, stride=stride, padding=padding)
    x = _act(batch, steps, c_in, seed=3)
    lengths = torch.tensor([9, 5])
    expected = TorchOps.upsample(x, conv, lengths, stride, slope=0.1)
    got = kernels.upsample(x, conv.weight, conv.bias, lengths, stride, stride=stride, padding=padding, slope=0.1,
                           tile=kernels.Tile(16, 16, 16))
    assert got.shape == (batch, steps * stride, c_out)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.all(got[1, 5 * stride :] == 0)


def test_interpreted_conv_post_kernel_matches_torch_ops(kernels):
    conv = _packed(7, 16, 1, seed=5, padding=3)
    x = _act(3, 70, 16, seed=4)
    lengths = torch.tensor([7, 3, 5])
    expected = TorchOps.conv_post(x, conv, lengths, 10, slope=0.01)
    got = kernels.conv_post(x, conv.weight[:, :, 0], conv.bias, lengths, 10, padding=3, slope=0.01, block_t=32)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.all(got[1, 30:] == 0) and torch.all(got[1, :30] != 0)


@pytest.mark.parametrize(
    ("k", "dilation", "channels", "accumulate", "programs_per_sm"),
    [
        (3, 5, 32, False, 1),  # one persistent program walks every tile, reusing its scratch
        (11, 1, 16, True, 64),  # wide halo (10 of 32 rows), running sum and average
        (7, 3, 16, True, 2),
    ],
)
def test_interpreted_resblock_pair_kernel_matches_two_convolutions(kernels, k, dilation, channels, accumulate,
                                                                   programs_per_sm):
    batch, steps = 2, 75  # several tiles per item, the last partial
    c1 = _packed(k, channels, channels, seed=k, dilation=dilation, padding=dilation * (k - 1) // 2)
    c2 = _packed(k, channels, channels, seed=k + 1, padding=(k - 1) // 2)
    x = _act(batch, steps, channels, seed=0)
    lengths, len_scale = torch.tensor([5, 3]), 15  # item 1 ends at row 45
    total = _act(batch, steps, channels, seed=2) if accumulate else None
    out_scale = 1 / 3 if accumulate else 1.0
    expected = TorchOps.pair(x, c1, c2, lengths, len_scale, slope=0.1, accumulate=total, out_scale=out_scale)
    got = kernels.resblock_pair(x, c1.weight, c1.bias, c2.weight, c2.bias, lengths, len_scale, dilation=dilation,
                                slope=0.1, accumulate=total, out_scale=out_scale, out=total,
                                tile=kernels.PairTile(block_t=32, programs_per_sm=programs_per_sm))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if not accumulate:
        torch.testing.assert_close(got[1, 45:], x[1, 45:])  # past the length only the residual remains


def test_interpreted_kernels_reject_bad_shapes(kernels):
    conv = _packed(3, 16, 16, seed=0, padding=1)
    lengths = torch.tensor([4])
    with pytest.raises(ValueError, match=r"contiguous \[B, T, 16\]"):
        kernels.conv1d(_act(1, 4, 32, 0), conv.weight, conv.bias, lengths, 1, padding=1)
    with pytest.raises(ValueError, match="keep the length"):
        kernels.conv1d(_act(1, 4, 16, 0), conv.weight, conv.bias, lengths, 1, padding=2)
    with pytest.raises(ValueError, match="does not divide"):
        kernels.conv1d(_act(1, 4, 16, 0), conv.weight, conv.bias, lengths, 1, padding=1, tile=kernels.Tile(16, 32, 16))
    with pytest.raises(ValueError, match="power of two"):
        kernels.Tile(24, 16, 16).check(16, 16)
    with pytest.raises(ValueError, match="T \\* stride"):
        kernels.upsample(_act(1, 4, 16, 0), conv.weight, conv.bias, lengths, 1, stride=2, padding=1, slope=0.1)
    x = _act(1, 4, 16, 0)
    with pytest.raises(ValueError, match="in place"):
        kernels.resblock_pair(x, conv.weight, conv.bias, conv.weight, conv.bias, lengths, 1, dilation=1, slope=0.1,
                              out=x)
    with pytest.raises(ValueError, match="no output rows"):
        kernels.PairTile(block_t=16).check(17)


def test_interpreted_default_launch_settings_fit_every_emotivoice_kernel(kernels):
    """Every convolution, upsampler and resblock step of EmotiVoice's generator gets valid settings."""
    channels = [512, 256, 128, 64, 32]
    shapes = [(80, 512), *zip(channels, channels[1:]), *((c, c) for c in channels[1:]), (32, 16)]
    for c_in, c_out in shapes:
        for itemsize, wide in ((2, True), (2, False), (4, True)):
            tile = kernels.default_tile(c_in, c_out, itemsize, wide)
            tile.check(c_in, c_out)
            assert (tile.num_warps == 8) == (max(c_in, c_out) >= 256)
            assert tile.block_n == min(c_out, 256 if itemsize == 2 and wide else 128)
            shared = tile.num_stages * (tile.block_t + tile.block_n) * tile.block_k * itemsize
            assert shared <= 192 * 1024, (c_in, c_out, itemsize, tile)
    for c in (32, 64):
        for k in (3, 7, 11):
            pair = kernels.default_pair_tile(c, k)
            pair.check(k)
            assert pair.num_stages == (3 if c * k >= 352 else 1)  # pipelined where the taps carry the work


def test_interpreted_triton_backend_equals_reference(kernels):
    """The whole tiny generator through the interpreted kernels (large blocks keep the interpreter quick)."""
    model = _model(TINY, dtype=torch.float32)
    tiles = {(80, 32): kernels.Tile(1024, 32, 16), (32, 16): kernels.Tile(1024, 16, 32),
             (16, 16): kernels.Tile(1024, 16, 16)}
    fused = FusedHiFiGAN.from_model(model, backend="triton", tiles=tiles)
    mel, lengths = _inputs(TINY, [4, 2], dtype=torch.float32)
    with torch.no_grad():
        expected = model(mel, lengths)
        got = fused(mel, lengths)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert torch.all(got[1, 2 * TINY.hop_length :] == 0)


# conv1d, upsample, conv_post, resblock pair, bad shapes, default launch settings, generator
INTERPRETED_TESTS = 4 + 4 + 1 + 3 + 1 + 1 + 1
