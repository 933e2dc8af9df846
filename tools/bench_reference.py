"""EmotiVoice's own inference path, on an emoserve model's weights, as the benchmark's baseline.

Builds EmotiVoice's ``JETSGenerator`` and ``StyleEncoder`` from a checkout given at run time (no
EmotiVoice code lives in this repository) and fills them from an emoserve model directory:

* the generator's config is EmotiVoice's ``config/joint/config.yaml`` with the model sizes taken from
  ``model.json``; ``acoustic.safetensors`` fills ``am.*`` and ``vocoder.safetensors`` fills
  ``generator.*`` after EmotiVoice's ``remove_weight_norm()`` (emoserve stores folded weights);
* the style encoder's BERT is the model's ``style/`` folder.

Each request then runs what ``openaiapi.py`` does per request: ``g2p_cn_en`` front end (English lexicon
written by :func:`emoserve.frontend.write_lexicon`, ``g2p_en`` replaced by the stand-in of
``record_frontend_reference``), ``emotivoice_tts``: BERT for the prompt and for the content on the CPU,
the generator at batch 1 in fp32 on the GPU (CPU without one), int16 audio copied to the host.
EmotiVoice's server handles one request at a time, so its throughput at any concurrency is this
single-stream throughput.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn.utils import parametrize
from tqdm import tqdm
from transformers import AutoConfig, AutoTokenizer
from yacs.config import CfgNode, load_cfg

from emoserve.frontend import write_lexicon
from emoserve.model.modeldir import ModelDir, ModelManifest
from emoserve.tools.bench import BenchOptions, keep_going, summarize
from emoserve.tools.record_emotivoice_reference import import_emotivoice, read_labels
from emoserve.tools.record_frontend_reference import _load_emotivoice as load_emotivoice_frontend

MAX_WAV_VALUE = 32768.0
ALLOWED_MISSING_PREFIX = "am.alignment_module."
"""Training-only aligner of EmotiVoice's acoustic model; emoserve does not store it."""
EMOTIVOICE_ENERGY_LAYERS = 2
"""EmotiVoice hard-codes its energy predictor's depth."""
STYLE_DIM = 128
"""``Config.style_dim`` of EmotiVoice (its style heads' size; the pooled BERT output does not depend on it)."""


def generator_config(repo: Path, manifest: ModelManifest) -> CfgNode:
    """EmotiVoice's joint config with the sizes of ``manifest`` (EmotiVoice's field names)."""
    am, voc = manifest.acoustic, manifest.vocoder
    if am.energy_layers != EMOTIVOICE_ENERGY_LAYERS:
        raise ValueError(f"EmotiVoice's energy predictor has {EMOTIVOICE_ENERGY_LAYERS} layers, "
                         f"the model {am.energy_layers}")
    with open(repo / "config" / "joint" / "config.yaml", encoding="utf-8") as f:
        conf = load_cfg(f)
    sizes = {
        "encoder_n_layers": am.encoder_layers, "encoder_n_heads": am.heads, "encoder_n_hidden": am.hidden,
        "encoder_kernel_size_conv_mod": am.ffn_kernel_size,
        "decoder_n_layers": am.decoder_layers, "decoder_n_heads": am.heads, "decoder_n_hidden": am.hidden,
        "decoder_kernel_size_conv_mod": am.ffn_kernel_size,
        "variance_n_hidden": am.variance_channels, "variance_n_layers": am.pitch_layers,
        "variance_kernel_size": am.variance_kernel_size, "variance_embed_kernel_size": am.variance_embed_kernel_size,
        "duration_n_layers": am.duration_layers, "duration_kernel_size": am.duration_kernel_size,
        "bert_embedding": am.style_dim, "initial_channel": voc.n_mels,
        "upsample_rates": list(voc.upsample_rates), "upsample_kernel_sizes": list(voc.upsample_kernel_sizes),
        "upsample_initial_channel": voc.upsample_initial_channel,
        "resblock_kernel_sizes": list(voc.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in voc.resblock_dilation_sizes], "resblock": "1",
    }
    for key, value in sizes.items():
        setattr(conf.model, key, value)
    conf.n_mels = am.n_mels
    conf.n_vocab = am.n_vocab
    conf.n_speaker = am.n_speakers
    return conf


def remove_weight_norm(vocoder: torch.nn.Module) -> None:
    """EmotiVoice's ``remove_weight_norm()``; where torch made weight norm a parametrization (which that
    method cannot remove), the parametrizations are folded instead, with the same result."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # EmotiVoice prints while removing weight norm
            vocoder.remove_weight_norm()
    except ValueError:
        for module in vocoder.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight")
    if any(parametrize.is_parametrized(m) or hasattr(m, "weight_g") for m in vocoder.modules()):
        raise RuntimeError("weight norm is left in EmotiVoice's vocoder")


def load_generator(generator_cls: type, conf: CfgNode, model: ModelDir, device: torch.device) -> torch.nn.Module:
    """``JETSGenerator`` filled from the model's safetensors (weight norm removed, as emoserve stores it)."""
    generator = generator_cls(conf)
    remove_weight_norm(generator.generator)
    state = {f"am.{k}": v for k, v in load_file(model.path / "acoustic.safetensors").items()}
    state |= {f"generator.{k}": v for k, v in load_file(model.path / "vocoder.safetensors").items()}
    missing, unexpected = generator.load_state_dict(state, strict=False)
    stray = [k for k in missing if not k.startswith(ALLOWED_MISSING_PREFIX)]
    if stray or unexpected:
        raise ValueError(f"EmotiVoice generator vs model: missing {stray[:10]}, unexpected {unexpected[:10]}")
    return generator.to(device).eval()


def style_encoder_config(bert_dir: Path, repo: Path) -> SimpleNamespace:
    """The attributes of EmotiVoice's ``Config`` that its ``StyleEncoder`` reads (heads sized from its lists)."""
    text_dir = repo / "data" / "youdao" / "text"
    return SimpleNamespace(
        bert_path=str(bert_dir),
        bert_hidden_size=AutoConfig.from_pretrained(str(bert_dir)).hidden_size,
        style_dim=STYLE_DIM,
        **{f"{name}_n_labels": len(read_labels(text_dir / name)) for name in ("pitch", "speed", "energy", "emotion")},
    )


@dataclass
class EmotiVoiceReference:
    """EmotiVoice's models and front end, ready to serve one request at a time."""

    frontend: ModuleType
    g2p: Any
    lexicon: dict
    style_encoder: torch.nn.Module
    generator: torch.nn.Module
    tokenizer: Any
    token2id: dict[str, int]
    speaker2id: dict[str, int]
    default_voice: str
    sample_rate: int
    device: torch.device

    def style_embedding(self, text: str) -> np.ndarray:
        """As ``openaiapi.get_style_embedding`` (BERT on the CPU)."""
        encoded = self.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            output = self.style_encoder(input_ids=encoded["input_ids"], token_type_ids=encoded["token_type_ids"],
                                        attention_mask=encoded["attention_mask"])
        return output["pooled_output"].cpu().squeeze().numpy()

    def tts(self, phonemes: str, prompt: str, content: str, speaker: str) -> np.ndarray:
        """As ``openaiapi.emotivoice_tts``: int16 audio on the host."""
        style = self.style_embedding(prompt)
        content_embedding = self.style_embedding(content)
        text_int = [self.token2id[ph] for ph in phonemes.split()]
        with torch.no_grad():
            out = self.generator(
                inputs_ling=torch.from_numpy(np.array(text_int)).to(self.device).long().unsqueeze(0),
                inputs_style_embedding=torch.from_numpy(style).to(self.device).unsqueeze(0),
                input_lengths=torch.from_numpy(np.array([len(text_int)])).to(self.device),
                inputs_content_embedding=torch.from_numpy(content_embedding).to(self.device).unsqueeze(0),
                inputs_speaker=torch.from_numpy(np.array([self.speaker2id[speaker]])).to(self.device),
                alpha=1.0,
            )
        audio = out["wav_predictions"].squeeze() * MAX_WAV_VALUE
        return audio.cpu().numpy().astype("int16")

    def synthesize(self, text: str, prompt: str, voice: str) -> np.ndarray:
        """One request of ``openaiapi.text_to_speech`` up to the int16 audio: front end, then ``tts``."""
        phonemes = self.frontend.g2p_cn_en(text, self.g2p, self.lexicon)
        return self.tts(phonemes, prompt, text, voice or self.default_voice)


def load_reference(repo: str | Path, model_dir: str | Path, device: str | None = None) -> EmotiVoiceReference:
    """EmotiVoice's generator, style encoder and front end over the emoserve model in ``model_dir``."""
    repo, model = Path(repo).resolve(), ModelDir(model_dir)
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator_cls, style_encoder_cls = import_emotivoice(repo)
    frontend = load_emotivoice_frontend(repo)
    manifest = model.manifest
    style_encoder = style_encoder_cls(style_encoder_config(model.style_dir, repo)).eval()
    lexicon_path = model.lexicon_path
    with tempfile.TemporaryDirectory() as tmp:
        if lexicon_path is None:
            lexicon_path = Path(tmp) / "lexicon.txt"
            write_lexicon(lexicon_path)
        lexicon = frontend.read_lexicon(str(lexicon_path))
    return EmotiVoiceReference(
        frontend=frontend, g2p=frontend.G2p(), lexicon=lexicon, style_encoder=style_encoder,
        generator=load_generator(generator_cls, generator_config(repo, manifest), model, target),
        tokenizer=AutoTokenizer.from_pretrained(str(model.style_dir)),
        token2id={t: i for i, t in enumerate(manifest.tokens)},
        speaker2id={v: i for i, v in enumerate(manifest.voices)},
        default_voice=manifest.default_voice, sample_rate=manifest.audio.sample_rate, device=target,
    )


def measure(reference: EmotiVoiceReference, options: BenchOptions) -> dict[str, Any]:
    """Serial latency and RTFX over the bench's sentences for its duration (or iterations).

    The warm-up covers every sentence once (at least ``options.warmup`` requests): on the CPU, PyTorch
    spends seconds on the first convolution of each new length, which is not steady-state serving.
    """
    sentences = options.sentences
    warmup = max(options.warmup, len(sentences))
    for k in range(warmup):
        _attempt(reference, sentences[k % len(sentences)], options)
    latencies, audio_s, errors = [], 0.0, Counter()
    bar = tqdm(total=options.iterations, desc="EmotiVoice reference", unit="req", file=sys.stderr,
               disable=not options.progress, leave=False)
    start = time.perf_counter()
    deadline, done = start + options.duration_s, 0
    while keep_going(options, done, deadline):
        outcome = _attempt(reference, sentences[(warmup + done) % len(sentences)], options)
        if isinstance(outcome, str):
            errors[outcome] += 1
        else:
            latencies.append(outcome[0])
            audio_s += outcome[1]
        done += 1
        bar.update()
    wall_s = time.perf_counter() - start
    bar.close()
    return {
        "device": str(reference.device),
        "warmup_requests": warmup,
        "requests": len(latencies),
        "errors": dict(errors),
        "wall_s": wall_s,
        "audio_s": audio_s,
        "throughput_rps": len(latencies) / wall_s,
        "rtfx": audio_s / wall_s,
        "e2e_ms": summarize(latencies, 1e3),
    }


def _attempt(reference: EmotiVoiceReference, text: str, options: BenchOptions) -> tuple[float, float] | str:
    """(latency s, audio s) of one request, or the exception's name: a failing sentence is counted, not fatal."""
    start = time.perf_counter()
    try:
        audio = reference.synthesize(text, options.emotion, options.voice)
    except Exception as exc:  # noqa: BLE001 - EmotiVoice's front end or a token lookup failing on a sentence
        return type(exc).__name__
    return time.perf_counter() - start, len(audio) / reference.sample_rate


def reference_runner(repo: str | Path, model_dir: str | Path) -> Callable[[BenchOptions], dict[str, Any]]:
    """A callable for :func:`emoserve.tools.bench.run_bench` that loads the reference and measures it."""

    def run(options: BenchOptions) -> dict[str, Any]:
        return measure(load_reference(repo, model_dir), options)

    return run
