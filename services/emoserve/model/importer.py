"""``emoserve import-emotivoice``: EmotiVoice checkpoint files → an emoserve model directory.

Shapes (widths, layer counts, kernel sizes) are read off the tensors; what tensors cannot tell (attention
heads, upsampling strides, dilations) comes from EmotiVoice's ``config.yaml`` when given, else from
EmotiVoice's published configuration.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from emoserve.model.acoustic import AcousticConfig, AcousticModel
from emoserve.model.checkpoint import (
    CheckpointError,
    bert_overrides,
    fill_module,
    load_torch_checkpoint,
    split_joint_generator,
)
from emoserve.model.modeldir import ModelManifest, StyleConfig, write_model_dir
from emoserve.model.vocoder import HiFiGAN, VocoderConfig

_BERT_BUFFERS = ("embeddings.position_ids",)


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty stripped lines of a label file (token list, speaker list)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({int(m.group(1)) for k in state if (m := pattern.match(k))})


def infer_acoustic_config(state: Mapping[str, torch.Tensor], heads: int = 8) -> AcousticConfig:
    """Reads the PromptTTS shape off its (prefix-stripped) tensors."""
    try:
        vocab, hidden = state["src_word_emb.weight"].shape
        style_dim = (state["embed_projection1.weight"].shape[1] - 2 * hidden) // 2
        return AcousticConfig(
            n_vocab=vocab,
            n_speakers=state["spk_tokenizer.weight"].shape[0],
            n_mels=state["to_mel.weight"].shape[0],
            hidden=hidden,
            heads=heads,
            encoder_layers=_count_blocks(state, "encoder.encoders."),
            decoder_layers=_count_blocks(state, "decoder.encoders."),
            ffn_kernel_size=state["encoder.encoders.0.feed_forward.w_1.weight"].shape[2],
            style_dim=style_dim,
            variance_channels=state["pitch_predictor.conv.0.0.weight"].shape[0],
            pitch_layers=_count_blocks(state, "pitch_predictor.conv."),
            energy_layers=_count_blocks(state, "energy_predictor.conv."),
            duration_layers=_count_blocks(state, "duration_predictor.conv."),
            variance_kernel_size=state["pitch_predictor.conv.0.0.weight"].shape[2],
            duration_kernel_size=state["duration_predictor.conv.0.0.weight"].shape[2],
            variance_embed_kernel_size=state["pitch_embed.0.weight"].shape[2],
        )
    except KeyError as exc:
        raise CheckpointError(f"acoustic: missing tensor am.{exc.args[0]}") from exc


def infer_vocoder_config(state: Mapping[str, torch.Tensor], model_cfg: Mapping | None = None) -> VocoderConfig:
    """Reads the HiFi-GAN shape off its (weight-norm-folded) tensors; strides/dilations from ``model_cfg``."""
    model_cfg = model_cfg or {}
    try:
        ups = _count_blocks(state, "ups.")
        kernels = tuple(int(state[f"ups.{i}.weight"].shape[2]) for i in range(ups))
        per_up = _count_blocks(state, "resblocks.") // max(ups, 1)
        res_kernels = tuple(int(state[f"resblocks.{j}.convs1.0.weight"].shape[2]) for j in range(per_up))
        default = VocoderConfig()
        return VocoderConfig(
            n_mels=state["conv_pre.weight"].shape[1],
            upsample_rates=tuple(model_cfg.get("upsample_rates", [k // 2 for k in kernels])),
            upsample_kernel_sizes=kernels,
            upsample_initial_channel=state["conv_pre.weight"].shape[0],
            resblock_kernel_sizes=res_kernels,
            resblock_dilation_sizes=tuple(
                tuple(d) for d in model_cfg.get("resblock_dilation_sizes", default.resblock_dilation_sizes)
            ),
        )
    except KeyError as exc:
        raise CheckpointError(f"vocoder: missing tensor generator.{exc.args[0]}") from exc


def _fill_bert(bert_dir: Path, overrides: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    bert = AutoModel.from_pretrained(str(bert_dir), local_files_only=True)
    own = bert.state_dict()
    overrides = {k: v for k, v in overrides.items() if k not in _BERT_BUFFERS or k in own}
    if not overrides:
        raise CheckpointError("style encoder: the checkpoint holds no 'module.bert.*' tensors")
    unexpected = sorted(set(overrides) - set(own))
    misshaped = [k for k in set(overrides) & set(own) if overrides[k].shape != own[k].shape]
    if unexpected or misshaped:
        raise CheckpointError(f"style encoder: unexpected {unexpected[:10]}, mis-shaped {sorted(misshaped)[:10]}")
    bert.load_state_dict(overrides, strict=False)
    return bert


def import_emotivoice(
    generator: str | os.PathLike,
    style_encoder: str | os.PathLike,
    bert_dir: str | os.PathLike,
    tokenlist: str | os.PathLike,
    speakers: str | os.PathLike,
    out: str | os.PathLike,
    lexicon: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    name: str = "emotivoice",
    default_voice: str | None = None,
    progress: bool = True,
) -> Path:
    """Converts EmotiVoice's files into an emoserve model directory.

    Args:
        generator: joint checkpoint (``g_*``) holding ``{'generator': state_dict}``.
        style_encoder: style-encoder checkpoint holding ``{'model': state_dict}`` (``module.``-prefixed).
        bert_dir: Hugging Face folder of the style encoder's BERT (config, vocab, weights).
        tokenlist: EmotiVoice token list (line index = token id).
        speakers: EmotiVoice speaker list (line index = speaker id).
        out: the model directory to create; nothing is written there if any step fails.
        lexicon: optional English lexicon (``WORD PH PH ...``); the CMU dictionary is used without it.
        config: optional EmotiVoice ``config.yaml`` (heads, strides, dilations).
        name: model name recorded in the manifest.
        default_voice: voice used when a request names none; the first speaker by default.
        progress: show a progress bar.

    Raises:
        CheckpointError: a file is unreadable, or a tensor is missing, unexpected or mis-shaped.
    """
    steps = tqdm(total=5, desc="import-emotivoice", unit="step", disable=not progress)
    model_cfg = {}
    if config is not None:
        model_cfg = (yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}).get("model", {})

    steps.set_postfix_str("reading generator")
    am_state, voc_state = split_joint_generator(load_torch_checkpoint(generator, "generator"))
    steps.update()

    steps.set_postfix_str("acoustic model")
    acoustic = AcousticModel(infer_acoustic_config(am_state, int(model_cfg.get("encoder_n_heads", 8))))
    fill_module(acoustic, am_state, "acoustic")
    steps.update()

    steps.set_postfix_str("vocoder")
    vocoder = HiFiGAN(infer_vocoder_config(voc_state, model_cfg))
    fill_module(vocoder, voc_state, "vocoder")
    steps.update()

    steps.set_postfix_str("style encoder")
    bert = _fill_bert(Path(bert_dir), bert_overrides(load_torch_checkpoint(style_encoder, "model")))
    tokens, voices = read_lines(tokenlist), read_lines(speakers)
    steps.update()

    steps.set_postfix_str("writing")
    manifest = ModelManifest(
        name=name,
        acoustic=acoustic.config,
        vocoder=vocoder.config,
        tokens=tuple(tokens),
        voices=tuple(voices),
        default_voice=default_voice or voices[0],
        style=StyleConfig(pooling="pooler"),
        lexicon="lexicon.txt" if lexicon else None,
        description="Imported from EmotiVoice checkpoints.",
    )
    with tempfile.TemporaryDirectory() as tmp:
        bert.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(str(bert_dir), local_files_only=True).save_pretrained(tmp)
        path = write_model_dir(out, manifest, acoustic, vocoder, tmp, lexicon)
    steps.update()
    steps.close()
    return path
