"""Style encoder: emotion prompt / content text → style vector, with a bounded embedding cache.

A BERT-family model loaded with ``transformers`` from a local folder (config + vocab + weights; never a
download): the model directory's ``style/`` or a folder shipped by an installed package, whose weights may be
rounded on load to the dtype the model was trained with. EmotiVoice uses SimBERT's ``pooler_output``; the demo
voice uses a sentence encoder with masked mean pooling. Prompts (and often texts: IVR phrases, retries) repeat
across requests, so vectors are kept in an LRU cache.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from emoserve.model.graphs import GraphCache, bucket_up, geometric_buckets, power_of_two_buckets, to_host

if TYPE_CHECKING:
    from emoserve.model.modeldir import ModelDir

log = logging.getLogger(__name__)


def load_style_model(directory: str | Path, weights_dtype: torch.dtype | None = None) -> nn.Module:
    """The BERT-family model of a local Hugging Face folder, in eval mode.

    Args:
        directory: the folder (config and weights).
        weights_dtype: round every floating parameter and buffer to this dtype (they keep the dtype they were
            loaded in): the same values as a copy of the folder stored in ``weights_dtype``; None = as stored.
    """
    model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
    if weights_dtype is not None:
        with torch.no_grad():
            for tensor in chain(model.parameters(), model.buffers()):
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(weights_dtype))
    return model


class EmbeddingCache:
    """Thread-safe bounded LRU map from a text to its embedding."""

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


class StylePooling(nn.Module):
    """A BERT-family model and its pooling: token ids → one vector per text (what the ONNX export holds)."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        if pooling not in ("pooler", "mean"):
            raise ValueError(f"pooling must be 'pooler' or 'mean', got {pooling!r}")
        self.model, self.pooling = model, pooling

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.pooling == "pooler":
            return out.pooler_output
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)


class StyleBackend(Protocol):
    """Runs the pooled model on a tokenized batch in place of torch (e.g. ONNX Runtime on the CPU)."""

    name: str
    """Engine name reported by the stage (``StageInfo.engine``)."""

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        """Int64 ``[N, T]`` inputs → float32 ``[N, dim]`` vectors on the CPU."""
        ...


class StyleEncoder:
    """Embeds texts with a local BERT-family model.

    Args:
        directory: Hugging Face model folder.
        pooling: ``pooler`` or ``mean``.
        max_tokens: texts are truncated to this many tokens.
        device: torch device.
        cache_size: capacity of the embedding cache (prompts and texts; 0 disables it).
        dtype: compute dtype (fp16 halves the GPU time of a BERT-base; vectors are returned in float32).
        cuda_graphs: on CUDA, replay graphs captured per (batch, tokens) bucket (a BERT-base at batch 1 is
            launch bound); a model whose forward cannot be captured falls back to eager, with a warning.
        max_batch: largest batch served by a graph.
        backend: runs the pooled model instead of torch (then the torch model is not loaded; ``device``,
            ``dtype`` and ``cuda_graphs`` do not apply). Tokenization and the cache are the same either way.
        weights_dtype: round the weights to this dtype when loading (see :func:`load_style_model`).
    """

    def __init__(
        self,
        directory: str | Path,
        pooling: str = "pooler",
        max_tokens: int = 512,
        device: str | torch.device = "cpu",
        cache_size: int = 4096,
        dtype: torch.dtype = torch.float32,
        cuda_graphs: bool = True,
        max_batch: int = 8,
        backend: StyleBackend | None = None,
        weights_dtype: torch.dtype | None = None,
    ) -> None:
        if pooling not in ("pooler", "mean"):
            raise ValueError(f"pooling must be 'pooler' or 'mean', got {pooling!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.dim = int(AutoConfig.from_pretrained(str(directory), local_files_only=True).hidden_size)
        """Size of the vectors."""
        self.backend = backend
        self.pooling = pooling
        self.max_tokens = max_tokens
        self.device = torch.device(device if backend is None else "cpu")
        self.cache = EmbeddingCache(cache_size)
        self.model: nn.Module | None = None
        self.graphs: GraphCache | None = None
        if backend is None:
            self.model = load_style_model(directory, weights_dtype).to(device, dtype)
            self.pooled = StylePooling(self.model, pooling)
            if self.device.type == "cuda" and cuda_graphs:
                self.graphs = GraphCache(self._pooled)
        self.batch_buckets = power_of_two_buckets(max_batch)
        self.token_buckets = geometric_buckets(16, max_tokens, factor=1.5)

    @classmethod
    def for_model(
        cls,
        model_dir: ModelDir,
        device: str | torch.device = "cpu",
        cache_size: int = 4096,
        dtype: torch.dtype = torch.float32,
        backend: StyleBackend | None = None,
    ) -> StyleEncoder:
        """The style encoder of a model directory: its folder (or package), pooling, token limit and weight dtype.

        Raises:
            StylePackageError: the model's style package is missing or unusable.
        """
        style = model_dir.manifest.style
        return cls(model_dir.style_dir, style.pooling, style.max_tokens, device, cache_size, dtype,
                   backend=backend, weights_dtype=style.weights_dtype)

    @property
    def engine(self) -> str:
        """What runs the model: the backend's name, ``torch+cudagraphs`` or ``torch``."""
        if self.backend is not None:
            return self.backend.name
        return "torch+cudagraphs" if self.graphs is not None else "torch"

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        return (self.pooled(input_ids, attention_mask, token_type_ids),)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """Embeds a batch of texts; returns float32 ``[N, dim]`` on the CPU."""
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens)
        inputs = tuple(batch[k] for k in ("input_ids", "attention_mask", "token_type_ids"))
        if self.backend is not None:
            return self.backend(*inputs)
        n, length = inputs[0].shape
        if self.graphs is not None:
            rows, cols = bucket_up(n, self.batch_buckets), bucket_up(length, self.token_buckets)
            if rows is not None and cols is not None:
                padded = []
                for t in inputs:
                    grown = torch.zeros(rows, cols, dtype=t.dtype)
                    grown[:n, :length] = t
                    padded.append(grown)
                padded[1][n:, 0] = 1  # padding rows attend to one token (an all-masked row would be NaN)
                staged = tuple(t.pin_memory().to(self.device, non_blocking=True) for t in padded)
                try:
                    pooled = self.graphs.run(
                        (rows, cols), staged, lambda outs: outs[0][:n].to(torch.float32, copy=True)
                    )
                    return to_host(pooled)[0]
                except RuntimeError as exc:  # e.g. a host synchronisation inside the model's forward
                    log.warning("style encoder: CUDA graph capture failed (%s); running eagerly", exc)
                    self.graphs = None
        return to_host(self._pooled(*(t.to(self.device) for t in inputs))[0].float())[0]

    def warmup(self) -> None:
        """Captures every graph bucket (or runs once eagerly)."""
        if self.graphs is None:
            self.embed(["warm-up"])
            return
        for rows in self.batch_buckets:
            for cols in self.token_buckets:
                if self.graphs is not None:
                    self.embed(["a " * max(cols - 3, 1)] * rows)

    def embed_cached(self, texts: list[str]) -> torch.Tensor:
        """Like :meth:`embed`, but answers repeated texts from the cache (one model pass for the rest)."""
        found = {t: v for t in set(texts) if (v := self.cache.get(t)) is not None}
        todo = sorted(set(texts) - set(found))
        if todo:
            for text, vector in zip(todo, self.embed(todo)):
                self.cache.put(text, vector)
                found[text] = vector
        return torch.stack([found[t] for t in texts])
