"""``emoserve init-dummy``: a complete model directory with deterministic random weights.

Like vLLM's dummy load format: the compute of the real model (``--size full``) or a tiny model for fast
tests (``--size tiny``), no downloads. The duration predictor is pinned so that every phoneme lasts exactly
``frames_per_phoneme`` frames, which makes audio lengths predictable:
``samples = n_phonemes * frames_per_phoneme * hop``.
"""

from __future__ import annotations

import math
import os
import string
import tempfile
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from transformers import BertConfig, BertModel, BertTokenizer

from emoserve.model.acoustic import AcousticConfig, AcousticModel
from emoserve.model.modeldir import ModelManifest, StyleConfig, write_model_dir
from emoserve.model.vocoder import HiFiGAN, VocoderConfig

Size = Literal["full", "tiny"]

_BERT = {
    "full": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
}
_CJK_FULL, _CJK_TINY = 20000, 3000


def packaged_labels(name: str) -> list[str]:
    """EmotiVoice's label files shipped with emoserve: ``tokenlist`` or ``voices``."""
    text = resources.files("emoserve.model").joinpath(f"data/{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def model_configs(size: Size, n_vocab: int, n_speakers: int) -> tuple[AcousticConfig, VocoderConfig]:
    """EmotiVoice's shapes for ``full``; a narrow, shallow model for ``tiny``."""
    if size == "full":
        return AcousticConfig(n_vocab=n_vocab, n_speakers=n_speakers), VocoderConfig()
    acoustic = AcousticConfig(
        n_vocab=n_vocab,
        n_speakers=n_speakers,
        hidden=32,
        heads=2,
        encoder_layers=1,
        decoder_layers=1,
        style_dim=_BERT["tiny"]["hidden_size"],
        variance_channels=32,
    )
    return acoustic, VocoderConfig(upsample_initial_channel=32)


def _vocab(n_cjk: int) -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ascii_tokens = list(string.ascii_lowercase + string.digits + string.punctuation)
    cjk = [chr(0x4E00 + i) for i in range(n_cjk)]
    return special + ascii_tokens + ["##" + t for t in ascii_tokens] + list("，。！？；：、“”‘’（）《》") + cjk


def write_dummy_bert(out: Path, size: Size, seed: int) -> None:
    """A randomly initialised BERT (``full``: BERT-base shapes) with a generated vocabulary."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = _vocab(_CJK_FULL if size == "full" else _CJK_TINY)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(str(out))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=512, **_BERT[size])
    BertModel(config).save_pretrained(str(out), safe_serialization=True)


def pin_durations(model: AcousticModel, frames_per_phoneme: int) -> None:
    """Makes the duration predictor output log(1 + N) for every token, i.e. N frames."""
    with torch.no_grad():
        model.duration_predictor.linear.weight.zero_()
        model.duration_predictor.linear.bias.fill_(math.log(frames_per_phoneme + 1))


def _init_vocoder(model: HiFiGAN) -> None:
    # HiFi-GAN's training init (normal, std 0.01) keeps the untrained output small and finite.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                module.weight.normal_(0.0, 0.01)


def init_dummy(
    out: str | os.PathLike, size: Size = "tiny", frames_per_phoneme: int = 8, seed: int = 0
) -> Path:
    """Writes a dummy model directory at ``out`` and returns its path."""
    if frames_per_phoneme < 1:
        raise ValueError(f"frames_per_phoneme must be >= 1, got {frames_per_phoneme}")
    tokens, voices = packaged_labels("tokenlist"), packaged_labels("voices")
    acoustic_cfg, vocoder_cfg = model_configs(size, len(tokens), len(voices))
    torch.manual_seed(seed)
    acoustic = AcousticModel(acoustic_cfg)
    pin_durations(acoustic, frames_per_phoneme)
    vocoder = HiFiGAN(vocoder_cfg)
    _init_vocoder(vocoder)
    manifest = ModelManifest(
        name=f"dummy-{size}",
        acoustic=acoustic_cfg,
        vocoder=vocoder_cfg,
        tokens=tuple(tokens),
        voices=tuple(voices),
        default_voice=voices[0],
        style=StyleConfig(pooling="pooler"),
        description=f"Random weights for tests and benchmarks; every phoneme lasts {frames_per_phoneme} frames.",
        extra={"dummy": True, "frames_per_phoneme": frames_per_phoneme, "seed": seed},
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_dummy_bert(Path(tmp), size, seed)
        return write_model_dir(out, manifest, acoustic, vocoder, tmp)
