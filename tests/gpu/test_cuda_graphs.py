"""CUDA-graph engines compute what the eager engines compute (GPU only; skipped on CPU machines)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoserve.acoustic.engine import AcousticEngine, AcousticItem
from emoserve.vocoder.engine import VocodeJob, VocoderEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _items(model, lengths, seed=0):
    rng = np.random.default_rng(seed)
    dim = model.manifest.acoustic.style_dim
    return [
        AcousticItem(ids=rng.integers(2, model.manifest.acoustic.n_vocab, n).astype(np.int64), speaker=int(i),
                     prompt=rng.standard_normal(dim).astype(np.float32),
                     content=rng.standard_normal(dim).astype(np.float32), speed=1.0 + 0.1 * i)
        for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize("inductor", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_acoustic_engine_matches_eager(tiny_model, precision, inductor):
    eager = AcousticEngine(tiny_model, "cuda", precision, cuda_graphs=False)
    graphs = AcousticEngine(tiny_model, "cuda", precision, max_batch=4, cuda_graphs=True, inductor=inductor)
    assert graphs.engine == ("torch+inductor+cudagraphs" if inductor else "torch+cudagraphs")
    items = _items(tiny_model, [5, 37, 12])
    for a, b in zip(eager.run(items), graphs.run(items)):
        assert a.mel.shape == b.mel.shape
        assert np.array_equal(a.durations, b.durations)
        # Mels travel as fp16: one fp16 step near |x| = 2 is 2e-3.
        assert (a.mel.float() - b.mel.float()).abs().max().item() <= (2e-3 if precision == "fp32" else 2e-2)


@pytest.mark.parametrize("pcm16", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_vocoder_engine_matches_eager(tiny_model, precision, pcm16):
    eager = VocoderEngine(tiny_model, "cuda", precision, cuda_graphs=False, pcm16=pcm16)
    graphs = VocoderEngine(tiny_model, "cuda", precision, max_batch=4, cuda_graphs=True, pcm16=pcm16)
    gen = torch.Generator().manual_seed(0)
    jobs = [VocodeJob(torch.randn(80, n, generator=gen).to(eager.dtype), trim=t, keep=k)
            for n, t, k in [(23, 0, None), (61, 15, 8), (100, 15, 70)]]
    scale = 32767.0 if pcm16 else 1.0
    for a, b in zip(eager.run(jobs), graphs.run(jobs)):
        assert a.shape == b.shape and a.dtype == b.dtype == (np.int16 if pcm16 else np.float32)
        # PCM rounds: one step more.
        tolerance = (1e-4 if precision == "fp32" else 1e-2) + (1 / scale if pcm16 else 0.0)
        assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() / scale <= tolerance


def test_graph_style_encoder_matches_eager(tiny_model):
    from emoserve.model.style import StyleEncoder

    texts = ["开心", "Hello there, how are you today?", "今天天气真不错，我们一起去公园散步吧。" * 3]
    eager = StyleEncoder(tiny_model.style_dir, device="cuda", cuda_graphs=False).embed(texts)
    graphs = StyleEncoder(tiny_model.style_dir, device="cuda", cuda_graphs=True)
    out = graphs.embed(texts)
    assert graphs.graphs is not None, "capture fell back to eager"
    assert (eager - out).abs().max().item() <= 1e-4


def test_graph_engines_give_concurrent_threads_their_own_results(tiny_model):
    """Two worker threads (``batching.instances: 2``) replaying the same graphs never see each other's data."""
    from concurrent.futures import ThreadPoolExecutor

    vocoder = VocoderEngine(tiny_model, "cuda", "fp16", max_batch=2, cuda_graphs=True)
    acoustic = AcousticEngine(tiny_model, "cuda", "fp16", max_batch=2, cuda_graphs=True)
    gen = torch.Generator().manual_seed(1)
    mels = [torch.randn(80, 40, generator=gen).half() for _ in range(6)]
    items = [_items(tiny_model, [20 + i], seed=i) for i in range(6)]
    expected_wav = [vocoder.run([VocodeJob(m)])[0] for m in mels]
    expected_mel = [acoustic.run(it)[0].mel for it in items]

    def work(i: int) -> bool:
        k = i % 6
        same_wav = np.array_equal(vocoder.run([VocodeJob(mels[k])])[0], expected_wav[k])
        return same_wav and torch.equal(acoustic.run(items[k])[0].mel, expected_mel[k])

    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(work, range(60)))
