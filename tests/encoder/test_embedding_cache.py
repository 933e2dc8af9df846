"""The encoder answers repeated prompts and segment texts from its embedding cache."""

from __future__ import annotations

import numpy as np

from emoserve.encoder.engine import EncodeItem, EncoderEngine
from emoserve.model.style import EmbeddingCache


def test_repeated_text_and_prompt_are_served_from_the_cache_with_identical_vectors(tiny_model) -> None:
    engine = EncoderEngine(tiny_model, cache_size=16)
    first = engine.run([EncodeItem("The train leaves at seven.", "Happy")])[0]
    misses = engine.style.cache.misses
    second = engine.run([EncodeItem("The train leaves at seven.", "Happy")])[0]
    assert engine.style.cache.misses == misses  # nothing new went through the model
    assert engine.style.cache.hits >= 2
    np.testing.assert_array_equal(first.segments[0].content, second.segments[0].content)
    np.testing.assert_array_equal(first.segments[0].prompt, second.segments[0].prompt)


def test_cached_and_uncached_vectors_agree(tiny_model) -> None:
    cached = EncoderEngine(tiny_model, cache_size=16)
    uncached = EncoderEngine(tiny_model, cache_size=0)
    items = [EncodeItem("Good morning. 早上好。", "开心"), EncodeItem("Good morning.", "Sad")]
    for engine in (cached, cached, uncached):
        got = engine.run(items)
        want = uncached.run(items)
        for a, b in zip(got, want):
            for sa, sb in zip(a.segments, b.segments):
                np.testing.assert_allclose(sa.content, sb.content, atol=1e-6)
                np.testing.assert_allclose(sa.prompt, sb.prompt, atol=1e-6)
    assert len(uncached.style.cache) == 0


def test_cache_evicts_the_least_recently_used_entry() -> None:
    import torch

    cache = EmbeddingCache(2)
    cache.put("a", torch.zeros(1))
    cache.put("b", torch.ones(1))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", torch.ones(1))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
