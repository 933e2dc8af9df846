"""Training recipe of the demo voice: emoserve's acoustic model and HiFi-GAN, trained separately.

    python -m emoserve.tools.demo_voice.train --part am --data train.npz --ckpt-dir CKPT/am --out OUT/am \\
        --max-minutes 8.5
    python -m emoserve.tools.demo_voice.train --part vocoder --data train.npz --ckpt-dir CKPT/voc --out OUT/voc \\
        --max-minutes 8.5 --compile --set batch_size=32

The two parts share nothing but the data file and can run at the same time on one GPU. Each process
trains until ``--max-steps`` or its wall-clock budget ``--max-minutes`` (minus ``--reserve-seconds`` for the
last save), or until SIGTERM/SIGINT, then saves. It writes:

* ``CKPT/last.pt``: full state (fp32 weights, optimiser, step, random state); a run that finds it resumes
  exactly where the last one stopped;
* ``OUT/weights.pt``: compact fp16 weights + step + normalisation stats (what :mod:`.export` reads and what
  fits the GPU machine's 16 MiB per-file return limit); ``--init OUT/weights.pt`` continues from it with a
  fresh optimiser (after a short learning-rate re-warm-up);
* ``OUT/log.jsonl``: one line of losses and speed every ``--log-every`` steps.

Acoustic model: phoneme ids + prompt/content embeddings → mel with teacher-forced per-token pitch and energy;
an alignment module trained with the forward-sum loss gives hard durations by monotonic alignment search
(bin loss ramps in after ``bin_start`` steps); losses are mel L1, duration/pitch/energy MSE, forward-sum and
bin. Vocoder: mel L1 + multi-resolution STFT from the start, least-squares adversarial + feature matching
from ``adv_start`` on; ``--compile`` (CUDA) fuses its many small kernels (≈2 minutes of compilation, then
about twice the samples per second). Mixed precision is bf16 autocast on CUDA (``--precision fp32`` turns
it off). ``--set KEY=VALUE`` overrides a field of :class:`AcousticTrainConfig` / :class:`VocoderTrainConfig`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from emoserve.model.acoustic import AcousticConfig, AcousticModel, lengths_to_mask
from emoserve.model.vocoder import HiFiGAN, VocoderConfig
from emoserve.tools.demo_voice.align import (
    AlignmentModule,
    average_by_duration,
    beta_binomial_prior,
    bin_loss,
    forward_sum_loss,
    hard_alignment,
    monotonic_alignment,
)
from emoserve.tools.demo_voice.batches import AcousticBatch, DeviceData, Stats
from emoserve.tools.demo_voice.dataset import VoiceData
from emoserve.tools.demo_voice.features import FeatureConfig, mel_spectrogram
from emoserve.tools.demo_voice.gan import (
    DiscriminatorConfig,
    Discriminators,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multi_resolution_stft_loss,
)

CKPT_FORMAT = "emoserve-demo-ckpt/1"
Part = Literal["am", "vocoder"]
Size = Literal["demo", "tiny"]
VOICE = "joe"


def token_count() -> int:
    """Size of emoserve's packaged token list (the acoustic model's vocabulary)."""
    text = resources.files("emoserve.model").joinpath("data/tokenlist.txt").read_text(encoding="utf-8")
    return sum(1 for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class AcousticTrainConfig:
    """Acoustic-model optimisation."""

    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 400
    """Linear warm-up steps, then inverse-square-root decay."""
    rewarmup: int = 200
    """Warm-up after continuing from compact weights (fresh optimiser)."""
    grad_clip: float = 1.0
    bin_start: int = 600
    bin_ramp: int = 600
    """The bin loss weight ramps from 0 to 1 over these steps after ``bin_start``."""
    content_dropout: float = 0.1
    aligner_dim: int = 128


@dataclass(frozen=True)
class VocoderTrainConfig:
    """Vocoder optimisation (HiFi-GAN's optimiser settings)."""

    batch_size: int = 16
    segment: int = 8192
    lr: float = 2e-4
    rewarmup: int = 200
    adv_start: int = 1500
    """Steps of mel + STFT loss alone before the discriminators join."""
    mel_weight: float = 45.0
    stft_weight: float = 2.5
    fm_weight: float = 2.0
    grad_clip: float = 100.0
    semitones: tuple[float, float] = (-4.0, 5.0)
    """Range of the random pitch shift of each batch (covers every style)."""
    gain: tuple[float, float] = (0.5, 2.0)
    """Range of the random gains (log-uniform)."""


def acoustic_config(size: Size, n_vocab: int, style_dim: int, stats: Stats) -> AcousticConfig:
    """The demo voice's acoustic model (``demo``: ≈6 M parameters) or a tiny one for tests."""
    width = {"demo": 160, "tiny": 32}[size]
    layers = {"demo": 4, "tiny": 1}[size]
    return AcousticConfig(
        n_vocab=n_vocab,
        n_speakers=1,
        hidden=width,
        heads=2,
        encoder_layers=layers,
        decoder_layers=layers,
        style_dim=style_dim,
        variance_channels=width,
        pitch_stats=stats.pitch,
        energy_stats=stats.energy,
    )


def vocoder_config(size: Size) -> VocoderConfig:
    """HiFi-GAN V2 widths (``demo``: ≈0.9 M parameters) or a tiny one for tests."""
    if size == "demo":
        return VocoderConfig(upsample_initial_channel=128)
    return VocoderConfig(upsample_initial_channel=16, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))


def discriminator_config(size: Size) -> DiscriminatorConfig:
    if size == "demo":
        return DiscriminatorConfig()
    return DiscriminatorConfig(periods=(2, 3), period_channels=(4, 8), scales=1, scale_channels=(4, 8), scale_groups=(1, 4))


def _rewarm(step: int, opt_start: int, rewarmup: int) -> float:
    """Learning-rate factor after continuing with a fresh optimiser at step ``opt_start`` (> 0)."""
    return 1.0 if opt_start == 0 else min(1.0, (step - opt_start + 1) / rewarmup)


def _lr_factor(step: int, warmup: int, opt_start: int, rewarmup: int) -> float:
    base = min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
    return base * _rewarm(step, opt_start, rewarmup)


class AcousticPart(nn.Module):
    """The acoustic model plus its training-only aligner, and one optimisation step."""

    name = "am"

    def __init__(self, data: DeviceData, size: Size, cfg: AcousticTrainConfig, stats: Stats) -> None:
        super().__init__()
        self.data, self.cfg, self.stats = data, cfg, stats
        self.model_config = acoustic_config(size, token_count(), data.data.style_dim, stats)
        self.model = AcousticModel(self.model_config)
        self.aligner = AlignmentModule(self.model.config.hidden, data.features.n_mels, cfg.aligner_dim)
        self.optimizers = {"main": torch.optim.AdamW(self.parameters(), cfg.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.0)}

    def named_modules_to_save(self) -> dict[str, nn.Module]:
        return {"acoustic": self.model, "aligner": self.aligner}

    def losses(self, batch: AcousticBatch, content: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Loss terms of a batch (durations from monotonic alignment search on the aligner's output)."""
        am, st = self.model, self.stats
        b, t = batch.ids.shape
        n_frames = batch.mel.size(-1)
        token_mask = lengths_to_mask(batch.text_lengths, t)
        frame_mask = lengths_to_mask(batch.mel_lengths, n_frames)
        x = am.encoder(am.src_word_emb(batch.ids), token_mask)
        speaker = am.spk_tokenizer(torch.zeros(b, dtype=torch.long, device=x.device))
        cond = torch.cat([speaker, batch.prompt.to(x.dtype), content.to(x.dtype)], dim=-1)
        hidden = am.embed_projection1(torch.cat([x, cond[:, None, :].expand(b, t, -1)], dim=-1))

        mel_in = (batch.mel - st.mel[0]) / st.mel[1]
        prior = beta_binomial_prior(batch.text_lengths, batch.mel_lengths)
        log_p = self.aligner(x, mel_in, token_mask, prior)
        durations = torch.from_numpy(
            monotonic_alignment(
                log_p.detach().float().cpu().numpy(), batch.text_lengths.cpu().numpy(), batch.mel_lengths.cpu().numpy()
            )
        ).to(x.device)
        hard = hard_alignment(durations, n_frames)

        fmask = token_mask.float()
        pitch_target = (average_by_duration(batch.f0, durations) - st.pitch[0]) / st.pitch[1] * fmask
        energy_target = (average_by_duration(batch.energy, durations) - st.energy[0]) / st.energy[1] * fmask
        pitch_pred = am.pitch_predictor(hidden, token_mask).float()
        energy_pred = am.energy_predictor(hidden, token_mask).float()
        log_d_pred = am.duration_predictor(hidden, token_mask).float()
        hidden = (
            hidden
            + am.pitch_embed(pitch_target.to(hidden.dtype)[:, None, :]).transpose(1, 2)
            + am.energy_embed(energy_target.to(hidden.dtype)[:, None, :]).transpose(1, 2)
        )
        mel_pred = am.decode(hidden, durations, token_mask, n_frames).float()

        n_tok = fmask.sum()
        fm = frame_mask[:, None, :].float()
        ramp = min(1.0, max(0.0, (step - self.cfg.bin_start) / self.cfg.bin_ramp))
        terms = {
            "mel": (torch.abs(mel_pred - batch.mel) * fm).sum() / (fm.sum() * batch.mel.size(1)),
            "duration": (((log_d_pred - torch.log1p(durations.float())) ** 2) * fmask).sum() / n_tok,
            "pitch": (((pitch_pred - pitch_target) ** 2) * fmask).sum() / n_tok,
            "energy": (((energy_pred - energy_target) ** 2) * fmask).sum() / n_tok,
            "forward_sum": forward_sum_loss(log_p, batch.text_lengths, batch.mel_lengths),
            "bin": ramp * bin_loss(log_p, hard),
        }
        return terms

    def step(self, step: int, opt_start: int, rng: np.random.Generator, autocast: bool) -> dict[str, float]:
        """One optimisation step; ``opt_start`` is the step at which the optimiser state began."""
        cfg, data = self.cfg, self.data
        items = rng.integers(0, len(data), cfg.batch_size).tolist()
        prompts = rng.integers(0, len(data.data.prompts), cfg.batch_size).tolist()
        batch = data.acoustic_batch(items, prompts)
        keep = torch.from_numpy(rng.random(batch.content.shape) >= cfg.content_dropout).to(batch.content.device)
        content = batch.content * keep / (1.0 - cfg.content_dropout)
        opt = self.optimizers["main"]
        lr = cfg.lr * _lr_factor(step, cfg.warmup, opt_start, cfg.rewarmup)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=autocast):
            terms = self.losses(batch, content, step)
        loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
        opt.step()
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}, "grad": grad.item(), "lr": lr}


def init_generator(cfg: VocoderConfig) -> HiFiGAN:
    """HiFi-GAN with its training init (normal, std 0.01) and weight norm on every convolution."""
    gen = HiFiGAN(cfg)
    for module in list(gen.modules()):
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            with torch.no_grad():
                module.weight.normal_(0.0, 0.01)
            weight_norm(module)
    return gen


class VocoderPart(nn.Module):
    """Generator and discriminators, and one optimisation step of each."""

    name = "vocoder"

    def __init__(self, data: DeviceData, size: Size, cfg: VocoderTrainConfig, compile_models: bool = False) -> None:
        super().__init__()
        self.data, self.cfg, self.stats = data, cfg, None
        self.model_config = vocoder_config(size)
        self.generator = init_generator(self.model_config)
        self.discriminators = Discriminators(discriminator_config(size))
        # Fixed shapes (batch × segment), so torch.compile fuses the many small kernels once and for all.
        self.run_generator = torch.compile(self.generator) if compile_models else self.generator
        self.run_discriminators = torch.compile(self.discriminators) if compile_models else self.discriminators
        betas = (0.8, 0.99)
        self.optimizers = {
            "generator": torch.optim.AdamW(self.generator.parameters(), cfg.lr, betas=betas, weight_decay=0.01),
            "discriminators": torch.optim.AdamW(self.discriminators.parameters(), cfg.lr, betas=betas, weight_decay=0.01),
        }

    def named_modules_to_save(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminators": self.discriminators}

    def step(self, step: int, opt_start: int, rng: np.random.Generator, autocast: bool) -> dict[str, float]:
        """One discriminator step (from ``adv_start`` on) and one generator step."""
        cfg, data = self.cfg, self.data
        n = cfg.batch_size
        items = rng.integers(0, len(data), n).tolist()
        semitones = float(rng.uniform(*cfg.semitones))
        gains = np.exp(rng.uniform(math.log(cfg.gain[0]), math.log(cfg.gain[1]), n)).tolist()
        mel, wav = data.vocoder_batch(items, semitones, gains, rng.random(n).tolist(), cfg.segment)
        lr = cfg.lr * _rewarm(step, opt_start, cfg.rewarmup)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        dtype = torch.bfloat16
        with torch.autocast(data.device.type, dtype=dtype, enabled=autocast):
            fake = self.run_generator(mel).float()
        out: dict[str, float] = {"lr": lr}
        adversarial = step >= cfg.adv_start
        if adversarial:
            with torch.autocast(data.device.type, dtype=dtype, enabled=autocast):
                real_logits, _ = self.run_discriminators(wav)
                fake_logits, _ = self.run_discriminators(fake.detach())
                loss_d = discriminator_loss(real_logits, fake_logits)
            opt_d = self.optimizers["discriminators"]
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            torch.nn.utils.clip_grad_norm_(self.discriminators.parameters(), cfg.grad_clip)
            opt_d.step()
            out["disc"] = loss_d.item()
        loss_mel = F.l1_loss(mel_spectrogram(fake, data.features), mel)
        loss_stft = multi_resolution_stft_loss(fake, wav)
        loss_g = cfg.mel_weight * loss_mel + cfg.stft_weight * loss_stft
        if adversarial:
            with torch.autocast(data.device.type, dtype=dtype, enabled=autocast):
                fake_logits, fake_maps = self.run_discriminators(fake)
                with torch.no_grad():
                    _, real_maps = self.run_discriminators(wav)
                loss_adv = generator_adversarial_loss(fake_logits)
                loss_fm = feature_matching_loss(real_maps, fake_maps)
            loss_g = loss_g + loss_adv + cfg.fm_weight * loss_fm
            out.update(adv=loss_adv.item(), fm=loss_fm.item())
        opt_g = self.optimizers["generator"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        grad = torch.nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.grad_clip)
        opt_g.step()
        out.update(loss=loss_g.item(), mel=loss_mel.item(), stft=loss_stft.item(), grad=grad.item())
        return out


@dataclass(frozen=True)
class RunConfig:
    """One training process."""

    part: Part
    data: Path
    ckpt_dir: Path
    out: Path
    init: Path | None = None
    size: Size = "demo"
    device: str = "cuda"
    precision: Literal["bf16", "fp32"] = "bf16"
    max_minutes: float = 8.5
    reserve_seconds: float = 20.0
    max_steps: int = 10**9
    save_every: int = 1000
    log_every: int = 100
    overrides: tuple[tuple[str, object], ...] = ()
    """Fields of :class:`AcousticTrainConfig` / :class:`VocoderTrainConfig` to change (``--set k=v``)."""
    seed: int = 0
    threads: int = 4
    compile: bool = False
    """torch.compile the vocoder's generator and discriminators (CUDA; fixed shapes)."""


def _atomic_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _header(part: nn.Module, size: str, step: int, compact: bool) -> dict:
    return {
        "format": CKPT_FORMAT,
        "part": part.name,
        "size": size,
        "step": step,
        "compact": compact,
        "stats": None if part.stats is None else part.stats.to_dict(),
        "model_config": part.model_config.to_dict(),
        "train_config": asdict(part.cfg),
    }


def save_checkpoints(part: nn.Module, run: RunConfig, step: int, opt_start: int, rng: np.random.Generator) -> None:
    """Writes ``CKPT/last.pt`` (full) and ``OUT/weights.pt`` (compact fp16)."""
    modules = part.named_modules_to_save()
    full = _header(part, run.size, step, compact=False)
    full["opt_start"] = opt_start
    full["models"] = {k: m.state_dict() for k, m in modules.items()}
    full["optimizers"] = {k: o.state_dict() for k, o in part.optimizers.items()}
    full["rng"] = json.dumps(rng.bit_generator.state)
    _atomic_save(full, run.ckpt_dir / "last.pt")
    compact = _header(part, run.size, step, compact=True)
    compact["models"] = {
        k: {n: (t.half() if t.is_floating_point() else t) for n, t in m.state_dict().items()} for k, m in modules.items()
    }
    _atomic_save(compact, run.out / "weights.pt")


def load_checkpoint(path: str | Path) -> dict:
    """Reads a checkpoint written by :func:`save_checkpoints` (tensors only, no code).

    Raises:
        ValueError: not a demo-voice checkpoint.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a demo-voice checkpoint")
    return ckpt


def _restore(part: nn.Module, ckpt: dict, with_optimizer: bool) -> None:
    if ckpt["part"] != part.name:
        raise ValueError(f"checkpoint is for part {ckpt['part']!r}, not {part.name!r}")
    for name, module in part.named_modules_to_save().items():
        state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["models"][name].items()}
        module.load_state_dict(state)
    if with_optimizer:
        for name, opt in part.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])


def build_part(run: RunConfig, data: DeviceData, source: dict | None) -> nn.Module:
    """The part to train; the acoustic model's normalisation stats come from ``source`` or are measured."""
    torch.manual_seed(run.seed)
    cfg = AcousticTrainConfig() if run.part == "am" else VocoderTrainConfig()
    known = set(asdict(cfg))
    unknown = sorted(k for k, _ in run.overrides if k not in known)
    if unknown:
        raise ValueError(f"unknown {run.part} training settings {unknown}; known: {sorted(known)}")
    cfg = replace(cfg, **{k: tuple(v) if isinstance(v, list) else v for k, v in run.overrides})
    if run.part == "am":
        stats = Stats.from_dict(source["stats"]) if source is not None else data.measure_stats()
        return AcousticPart(data, run.size, cfg, stats).to(data.device)
    return VocoderPart(data, run.size, cfg, run.compile).to(data.device)


def train(run: RunConfig, log=print) -> dict:
    """Runs (or resumes) one part; returns a summary (final step, steps/s, last losses)."""
    started = time.monotonic()
    deadline = started + run.max_minutes * 60 - run.reserve_seconds
    device = torch.device(run.device)
    torch.set_num_threads(run.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = False
    data = DeviceData(VoiceData.load(run.data), device, FeatureConfig())
    last = run.ckpt_dir / "last.pt"
    resume = load_checkpoint(last) if last.is_file() else None
    init = load_checkpoint(run.init) if resume is None and run.init is not None else None
    source = resume or init
    if source is not None and source["size"] != run.size:
        raise ValueError(f"checkpoint size {source['size']!r} != --size {run.size!r}")
    part = build_part(run, data, source)
    rng = np.random.default_rng(run.seed + (0 if run.part == "am" else 1))
    step = opt_start = 0
    if resume is not None:
        _restore(part, resume, with_optimizer=True)
        rng.bit_generator.state = json.loads(resume["rng"])
        step, opt_start = int(resume["step"]), int(resume["opt_start"])
        log(json.dumps({"resumed": str(last), "step": step}))
    elif init is not None:
        _restore(part, init, with_optimizer=False)
        step = opt_start = int(init["step"])
        log(json.dumps({"initialised": str(run.init), "step": step}))
    start_step = step
    run.out.mkdir(parents=True, exist_ok=True)
    log(json.dumps({"part": run.part, "size": run.size, "device": str(device), "sentences": len(data),
                    "params": {k: sum(p.numel() for p in m.parameters()) for k, m in part.named_modules_to_save().items()},
                    "stats": part.stats and part.stats.to_dict()}))
    stop = {"signal": False}

    def on_signal(signum, frame):
        stop["signal"] = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    autocast = run.precision == "bf16" and device.type == "cuda"  # CPU bf16 autocast is slower than fp32
    window_start, window_steps, metrics = time.monotonic(), 0, {}
    part.train()
    try:
        with (run.out / "log.jsonl").open("a", encoding="utf-8") as log_file:
            while step < run.max_steps and time.monotonic() < deadline and not stop["signal"]:
                metrics = part.step(step, opt_start, rng, autocast)
                step += 1
                window_steps += 1
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise FloatingPointError(f"non-finite loss at step {step}: {metrics}")
                if step % run.log_every == 0:
                    now = time.monotonic()
                    line = {"step": step, "steps_per_s": round(window_steps / (now - window_start), 2),
                            "elapsed_s": round(now - started, 1), **{k: round(v, 5) for k, v in metrics.items()}}
                    log(json.dumps(line))
                    log_file.write(json.dumps(line) + "\n")
                    log_file.flush()
                    window_start, window_steps = now, 0
                if step % run.save_every == 0:
                    save_checkpoints(part, run, step, opt_start, rng)
            save_checkpoints(part, run, step, opt_start, rng)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    elapsed = time.monotonic() - started
    summary = {"part": run.part, "step": step, "steps_this_run": step - start_step, "elapsed_s": round(elapsed, 1),
               "last": {k: round(v, 5) for k, v in metrics.items()}, "stopped_by_signal": stop["signal"]}
    log(json.dumps(summary))
    return summary


def _parse_setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["am", "vocoder"], required=True)
    p.add_argument("--data", type=Path, required=True, help="train.npz from `dataset build`")
    p.add_argument("--ckpt-dir", type=Path, required=True, help="full checkpoint (last.pt); resumed when present")
    p.add_argument("--out", type=Path, help="compact weights.pt and log.jsonl (default: --ckpt-dir)")
    p.add_argument("--init", type=Path, help="continue from a weights.pt (fresh optimiser)")
    p.add_argument("--size", choices=["demo", "tiny"], default="demo")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--max-minutes", type=float, default=8.5)
    p.add_argument("--reserve-seconds", type=float, default=20.0)
    p.add_argument("--max-steps", type=int, default=10**9)
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting (JSON value), e.g. --set batch_size=16 --set adv_start=500")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--compile", action="store_true", help="torch.compile the vocoder's networks (CUDA)")
    a = p.parse_args(argv)
    run = RunConfig(
        part=a.part, data=a.data, ckpt_dir=a.ckpt_dir, out=a.out or a.ckpt_dir, init=a.init, size=a.size,
        device=a.device, precision=a.precision, max_minutes=a.max_minutes, reserve_seconds=a.reserve_seconds,
        max_steps=a.max_steps, save_every=a.save_every, log_every=a.log_every,
        overrides=tuple(_parse_setting(s) for s in a.set), seed=a.seed, threads=a.threads, compile=a.compile,
    )
    train(run, log=lambda m: print(m, flush=True))
    sys.exit(0)


if __name__ == "__main__":
    main()
