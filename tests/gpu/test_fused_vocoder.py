"""The fused Triton HiFi-GAN generator against the reference on a GPU (skipped on CPU machines).

Full-size generator (EmotiVoice's shapes) with random weights; SNR in dB against the fp32 reference.
"""

from __future__ import annotations

import pytest
import torch

from emoserve.model.graphs import CapturedGraph
from emoserve.model.vocoder import HiFiGAN, VocoderConfig
from emoserve.vocoder.fused import (
    FusedHiFiGAN,
    PackedConv,
    TorchOps,
    TritonOps,
    triton_available,
)

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not triton_available(), reason="needs triton"),
]


def _snr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    ref, est = reference.double(), estimate.double()
    return 10 * torch.log10((ref**2).sum() / ((ref - est) ** 2).sum()).item()


@pytest.fixture(scope="module")
def reference() -> HiFiGAN:
    torch.manual_seed(0)
    return HiFiGAN(VocoderConfig()).cuda().eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cuda").manual_seed(1)
    return torch.randn(3, 80, 40, device="cuda", generator=gen), torch.tensor([40, 17, 33], device="cuda")


def _copy(model: HiFiGAN, dtype: torch.dtype) -> HiFiGAN:
    out = HiFiGAN(model.config).cuda()
    out.load_state_dict(model.state_dict())
    return out.to(dtype).eval()


@pytest.mark.parametrize(("dtype", "min_snr"), [(torch.float32, 40.0), (torch.float16, 30.0), (torch.bfloat16, 20.0)])
def test_fused_matches_reference(reference, batch, dtype, min_snr):
    mel, lengths = batch
    source = _copy(reference, dtype)
    fused = FusedHiFiGAN.from_model(source)
    with torch.inference_mode():
        expected = reference(mel, lengths)
        same_precision = source(mel.to(dtype), lengths).float()
        got = fused(mel.to(dtype), lengths)
    assert got.dtype == dtype and got.shape == expected.shape
    assert torch.isfinite(got).all()
    snr = _snr(expected, got.float())
    assert snr >= min_snr
    if dtype != torch.float32:  # no worse than the reference generator in the same precision
        reference_snr = _snr(expected, same_precision)
        assert snr >= reference_snr - 3.0, (snr, reference_snr)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(got[b, n * 256 :] == 0)


def test_padded_items_equal_items_alone(reference, batch):
    mel, lengths = batch
    fused = FusedHiFiGAN.from_model(_copy(reference, torch.float16))
    with torch.inference_mode():
        together = fused(mel.half(), lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = fused(mel[b : b + 1, :, :n].half())
            assert _snr(alone[0].float(), together[b, : n * 256].float()) >= 50


def test_cuda_graph_replay_equals_eager(reference, batch):
    mel, lengths = batch
    fused = FusedHiFiGAN.from_model(_copy(reference, torch.float16))
    with torch.inference_mode():
        eager = fused(mel.half(), lengths)
    graph = CapturedGraph(lambda m, n: (fused(m, n),), (mel.half(), lengths))
    graph(mel.half() * 0.5, lengths)  # replays on other data first: the graph reads its inputs
    out = graph(mel.half(), lengths)[0]
    torch.testing.assert_close(out, eager, rtol=0, atol=0)


@pytest.mark.parametrize(("k", "dilation", "channels", "steps"), [(3, 5, 32, 1000), (11, 1, 128, 333), (7, 3, 256, 77)])
def test_conv_kernel_writes_every_row_and_matches_torch(k, dilation, channels, steps):
    gen = torch.Generator(device="cuda").manual_seed(k)
    weight = torch.randn(k, channels, channels, device="cuda", generator=gen) / (k * channels) ** 0.5
    conv = PackedConv(weight.half(), torch.randn(channels, device="cuda", generator=gen).half(),
                      dilation=dilation, padding=dilation * (k - 1) // 2)
    x = torch.randn(2, steps, channels, device="cuda", generator=gen).half()
    residual = torch.randn_like(x)
    lengths = torch.tensor([steps, steps // 2], device="cuda")
    out = torch.full_like(x, float("nan"))  # poisoned: every element must be written
    got = TritonOps().conv1d(x, conv, lengths, 1, pre_slope=0.1, residual=residual, out=out)
    expected = TorchOps.conv1d(x.float(), PackedConv(conv.weight.float(), conv.bias.float(), dilation=dilation,
                                                     padding=conv.padding), lengths, 1, pre_slope=0.1,
                               residual=residual.float())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)
