"""Style encoder: emotion prompt / content text → style vector, with a bounded prompt cache.

A BERT-family model loaded with ``transformers`` from a local folder (config + vocab + weights; never a
download). EmotiVoice uses SimBERT's ``pooler_output``; the demo voice uses a sentence encoder with masked
mean pooling. Prompts repeat across requests, so their vectors are kept in an LRU cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


class PromptCache:
    """Thread-safe bounded LRU map from prompt text to its embedding."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: torch.Tensor) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class StyleEncoder:
    """Embeds texts with a local BERT-family model.

    Args:
        directory: Hugging Face model folder.
        pooling: ``pooler`` or ``mean``.
        max_tokens: texts are truncated to this many tokens.
        device: torch device.
        cache_size: capacity of the prompt cache.
        dtype: compute dtype (fp16 halves the GPU time of a BERT-base; vectors are returned in float32).
    """

    def __init__(
        self,
        directory: str | Path,
        pooling: str = "pooler",
        max_tokens: int = 512,
        device: str | torch.device = "cpu",
        cache_size: int = 4096,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if pooling not in ("pooler", "mean"):
            raise ValueError(f"pooling must be 'pooler' or 'mean', got {pooling!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(directory), local_files_only=True).to(device, dtype).eval()
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.prompts = PromptCache(cache_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Embeds a batch of texts; returns float32 ``[N, dim]`` on the CPU."""
        batch = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens
        ).to(self.device)
        out = self.model(**batch)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
        return pooled.float().cpu()

    def embed_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Like :meth:`embed`, but answers repeated prompts from the cache."""
        found = {p: v for p in set(prompts) if (v := self.prompts.get(p)) is not None}
        todo = sorted(set(prompts) - set(found))
        if todo:
            for prompt, vector in zip(todo, self.embed(todo)):
                self.prompts.put(prompt, vector)
                found[prompt] = vector
        return torch.stack([found[p] for p in prompts])
