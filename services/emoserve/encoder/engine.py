"""The encoder stage's pure model function: text + emotion prompt → phoneme ids and style vectors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emoserve.frontend import Frontend, read_lexicon
from emoserve.model.modeldir import DTYPES, ModelDir
from emoserve.model.style import StyleBackend, StyleEncoder

SOS_EOS = "<sos/eos>"


@dataclass
class EncodeItem:
    """One request to the encoder."""

    text: str
    emotion: str = ""


@dataclass
class EncodedSegment:
    """A piece of the text that the acoustic model synthesises in one pass."""

    text: str
    phonemes: str
    ids: np.ndarray
    """``[T]`` int64 token ids."""
    prompt: np.ndarray
    """``[style_dim]`` float32 emotion-prompt embedding."""
    content: np.ndarray
    """``[style_dim]`` float32 embedding of the segment's text."""


@dataclass
class Encoding:
    """The encoder's answer to one request."""

    segments: list[EncodedSegment]
    dropped: list[str] = field(default_factory=list)
    """Symbols of the input that could not be spoken and were left out."""


class EncoderEngine:
    """Front end + style encoder of a model directory.

    Args:
        model_dir: the loaded model directory.
        device: torch device of the style encoder.
        cache_size: capacity of the embedding cache of prompts and segment texts (0 disables it).
        max_segment_phonemes: longer text is split into segments of at most this many phonemes.
        max_segment_chars: ... and at most this many characters.
        precision: compute precision of the style encoder.
        style_backend: runs the style encoder instead of torch (the ``onnxruntime`` engine; see
            :mod:`emoserve.engines.style_onnx`).
    """

    def __init__(
        self,
        model_dir: ModelDir,
        device: str = "cpu",
        cache_size: int = 4096,
        max_segment_phonemes: int = 400,
        max_segment_chars: int = 200,
        precision: str = "fp32",
        style_backend: StyleBackend | None = None,
    ) -> None:
        lexicon_path = model_dir.lexicon_path
        self.frontend = Frontend(
            lexicon=read_lexicon(lexicon_path) if lexicon_path else None, tokens=list(model_dir.manifest.tokens)
        )
        self.style = StyleEncoder.for_model(model_dir, device, cache_size, DTYPES[precision], backend=style_backend)
        self.engine = self.style.engine
        self.max_segment_phonemes = max_segment_phonemes
        self.max_segment_chars = max_segment_chars

    def _segments(self, text: str) -> tuple[list[tuple[str, str, list[int]]], list[str]]:
        out, dropped = [], self.frontend.unspeakable(text)
        for seg in self.frontend.segments(text, self.max_segment_phonemes, self.max_segment_chars):
            phonemes = self.frontend.phonemes(seg)
            ids, unknown = self.frontend.to_ids(phonemes)
            dropped.extend(unknown)
            if any(p != SOS_EOS for p in phonemes.split()):
                out.append((seg, phonemes, ids))
        return out, dropped

    def run(self, items: list[EncodeItem]) -> list[Encoding | ValueError]:
        """Encodes a batch: one BERT pass for all segment texts, cached prompts.

        Returns:
            One :class:`Encoding` per item, or a ``ValueError`` for an item with nothing speakable.
        """
        split = [self._segments(it.text) for it in items]
        texts = [seg[0] for segs, _ in split for seg in segs]
        vectors = self.style.embed_cached(texts + [it.emotion for it in items]).numpy()
        contents, prompts = vectors[: len(texts)], vectors[len(texts) :]
        results: list[Encoding | ValueError] = []
        row = 0
        for i, (segs, dropped) in enumerate(split):
            if not segs:
                results.append(ValueError("text has nothing that can be spoken"))
                continue
            encoded = []
            for seg_text, phonemes, ids in segs:
                encoded.append(
                    EncodedSegment(seg_text, phonemes, np.asarray(ids, np.int64), prompts[i], contents[row])
                )
                row += 1
            results.append(Encoding(encoded, list(dict.fromkeys(dropped))))
        return results

    def warmup(self) -> None:
        """Loads lazy front-end resources (dictionaries, segmenter) and warms the style encoder."""
        self.style.warmup()
        self.run([EncodeItem("Hello. 你好。", "")])
