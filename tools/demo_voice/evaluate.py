"""Scores a model directory against the teacher on held-out sentences, and measures each style.

    python -m emoserve.tools.demo_voice.evaluate --model MODEL_DIR --data /work/demo_data/heldout.npz \\
        [--json eval.json] [--card]

Against the teacher (neutral prompt, every held-out sentence):

* MCD (dB): mel-cepstral distortion ``(10 / ln 10) · sqrt(2 Σ_{n=1..24} (Δc_n)²)`` where ``c_n`` is the
  cepstrum of the log *power* spectrum (1024-point STFT) on the all-pass warped frequency axis
  (α = 0.42, the mel approximation at 16 kHz) — the convention of ``pysptk.sp2mc``, on raw STFT frames
  rather than a WORLD envelope — averaged over the teacher's speech frames (within 40 dB of its loudest
  frame) after dynamic time warping of the model's frames onto the teacher's. For scale, here: the teacher
  against a second rendering of the same sentence ≈ 2.8 dB, against a different sentence 8–10 dB, white
  noise 14–16 dB;
* F0 RMSE (Hz): on the same warping path, over frames that both voices voice (YIN, :mod:`.features`).

Per style (its first English and first Chinese prompt, on the first ``--style-sentences`` sentences): mean
F0 (Hz; shift in semitones from the neutral prompt, from the mean of log F0 over voiced frames) and speaking
rate (phonemes per second of speech, the span between the first and last frame within 40 dB of the
loudest), next to the styles' targets. Targets checked: MCD ≤ 7 dB, and "Happy" vs "Sad" ≥ 2 semitones in
mean F0 and ≥ 15 % in speaking rate.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emoserve.tools.demo_voice.dataset import VoiceData
from emoserve.tools.demo_voice.features import (
    FeatureConfig,
    frame_energy,
    magnitude,
    yin_f0,
)

CEPSTRUM_ORDER = 24
WARP_ALPHA = 0.42
WARP_POINTS = 512
SPEECH_DB = 40.0
TARGET_MCD_DB = 7.0
TARGET_SEMITONES = 2.0
TARGET_RATE = 0.15
_HAN = re.compile("[\u4e00-\u9fff]")


def mel_cepstrum(mag: np.ndarray, order: int = CEPSTRUM_ORDER, alpha: float = WARP_ALPHA) -> np.ndarray:
    """``[K + 1, F]`` STFT magnitudes → ``[F, order]`` mel-cepstral coefficients ``c_1 .. c_order``.

    ``c_n = (1/N) Σ_m ln|X(ω(ω̃_m))|² cos(n ω̃_m)`` over ``N`` points ``ω̃_m = π (m + ½) / N`` of the warped axis,
    where ``ω(ω̃)`` inverts the all-pass warping ``ω̃ = ω + 2 atan(α sin ω / (1 - α cos ω))``.
    """
    bins = mag.shape[0] - 1
    warped = np.pi * (np.arange(WARP_POINTS) + 0.5) / WARP_POINTS
    linear = warped + 2 * np.arctan(-alpha * np.sin(warped) / (1 + alpha * np.cos(warped)))
    pos = linear / np.pi * bins
    lo = np.clip(np.floor(pos).astype(np.int64), 0, bins - 1)
    frac = (pos - lo)[:, None]
    log_power = 2 * np.log(np.maximum(mag, 1e-5))
    sampled = log_power[lo] * (1 - frac) + log_power[lo + 1] * frac  # [N, F]
    basis = np.cos(np.arange(1, order + 1)[:, None] * warped[None, :]) / WARP_POINTS
    return (basis @ sampled).T


def mcd_frames(ref: np.ndarray, syn: np.ndarray) -> np.ndarray:
    """Per-frame MCD in dB between aligned cepstra ``[F, order]``."""
    return (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum((ref - syn) ** 2, axis=-1))


def dtw_path(cost: np.ndarray) -> np.ndarray:
    """Warps sequence B onto sequence A: for each row ``i`` of ``cost[A, B]`` the matched column ``j``.

    The path runs from (0, 0) to (A-1, B-1) and advances one row per step while the column moves by 0, 1
    or 2: B may be any amount shorter (faster speech) than A, and up to ``2 A - 1`` frames long.

    Raises:
        ValueError: B is longer than that (no path).
    """
    a, b = cost.shape
    if b > 2 * a - 1:
        raise ValueError(f"cannot warp {b} frames onto {a}: more than twice as many")
    total = np.full((a, b), np.inf)
    move = np.zeros((a, b), dtype=np.int8)
    total[0, 0] = cost[0, 0]
    for i in range(1, a):
        prev = total[i - 1]
        options = np.stack([prev, np.r_[np.inf, prev[:-1]], np.r_[np.inf, np.inf, prev[:-2]]])
        move[i] = np.argmin(options, axis=0)
        total[i] = cost[i] + options[move[i], np.arange(b)]
    path = np.zeros(a, dtype=np.int64)
    j = b - 1
    for i in range(a - 1, -1, -1):
        path[i] = j
        j -= int(move[i, j])
    return path


def speech_frames(energy: np.ndarray, db: float = SPEECH_DB) -> np.ndarray:
    """Boolean mask of frames whose energy is within ``db`` of the loudest frame."""
    level = 20 * np.log10(np.maximum(energy, 1e-10))
    return level >= level.max() - db


def speech_seconds(energy: np.ndarray, hop_seconds: float, db: float = SPEECH_DB) -> float:
    """Seconds from the first to the last speech frame (pauses inside count)."""
    idx = np.flatnonzero(speech_frames(energy, db))
    return 0.0 if idx.size == 0 else (idx[-1] - idx[0] + 1) * hop_seconds


@dataclass
class Analysis:
    """Frame features of one waveform."""

    cepstrum: np.ndarray
    """``[F, order]`` mel-cepstrum."""
    energy: np.ndarray
    f0: np.ndarray
    """Hz, 0 where unvoiced."""


def analyse(wav: np.ndarray, cfg: FeatureConfig | None = None) -> Analysis:
    """Mel-cepstrum, energy and F0 tracks of a waveform."""
    cfg = cfg or FeatureConfig()
    x = torch.from_numpy(np.asarray(wav, np.float32))[None]
    mag = magnitude(x, cfg)
    return Analysis(mel_cepstrum(mag[0].numpy()), frame_energy(mag)[0].numpy(), yin_f0(x, cfg)[0].numpy())


def compare(ref: Analysis, syn: Analysis) -> dict:
    """MCD (dB, over the reference's speech frames) and F0 RMSE (Hz, both voiced) after DTW."""
    c_ref, c_syn = ref.cepstrum, syn.cepstrum
    cost = np.sqrt(((c_ref[:, None, :] - c_syn[None, :, :]) ** 2).sum(-1))
    path = dtw_path(cost)
    speech = speech_frames(ref.energy)
    mcd = float(mcd_frames(c_ref[speech], c_syn[path][speech]).mean())
    f_ref, f_syn = ref.f0, syn.f0[path]
    both = (f_ref > 0) & (f_syn > 0)
    rmse = float(np.sqrt(np.mean((f_ref[both] - f_syn[both]) ** 2))) if both.any() else float("nan")
    return {"mcd_db": mcd, "f0_rmse_hz": rmse, "voiced_frames": int(both.sum())}


def spoken_phonemes(ids: np.ndarray, tokens: tuple[str, ...]) -> int:
    """Phones among the ids (ARPAbet ``[..]`` tokens and pinyin; no boundaries or pauses)."""
    return sum(1 for i in ids if not re.fullmatch(r"<sos/eos>|engsp\d|sp\d|cn_eng_sp|eng_cn_sp", tokens[int(i)]))


class Synthesizer:
    """Text + emotion prompt → waveform through a model directory's stages, in-process.

    Args:
        model_dir: an emoserve model directory.
        device: torch device.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        from emoserve.frontend import Frontend, read_lexicon
        from emoserve.model.modeldir import ModelDir
        from emoserve.model.style import StyleEncoder

        self.model_dir = ModelDir(model_dir)
        manifest = self.model_dir.manifest
        lexicon = self.model_dir.lexicon_path
        self.frontend = Frontend(read_lexicon(lexicon) if lexicon else None, list(manifest.tokens))
        self.style = StyleEncoder.for_model(self.model_dir, device)
        self.acoustic = self.model_dir.load_acoustic(device)
        self.vocoder = self.model_dir.load_vocoder(device)
        self.device = device
        self.tokens = manifest.tokens

    @torch.inference_mode()
    def __call__(self, text: str, emotion: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Returns ``(float32 samples, token ids)``."""
        ids, unknown = self.frontend.to_ids(self.frontend.phonemes(text))
        if unknown:
            raise ValueError(f"symbols missing from the token list: {unknown}")
        content, prompt = self.style.embed([text, emotion])
        ids_t = torch.tensor([ids], device=self.device)
        out = self.acoustic.generate(
            ids_t,
            torch.tensor([len(ids)], device=self.device),
            torch.zeros(1, dtype=torch.long, device=self.device),
            prompt[None].to(self.device),
            content[None].to(self.device),
        )
        wav = self.vocoder.vocode(out.mel, out.mel_lengths)[0]
        return wav.float().cpu().numpy(), np.asarray(ids)


def style_prompts(data: VoiceData) -> list[tuple[str, str]]:
    """``(style, prompt)`` pairs: each style's first English and first Chinese prompt."""
    out = []
    for i, name in enumerate(data.style_names):
        prompts = [p for p, s in zip(data.prompts, data.prompt_style) if s == i]
        english = next((p for p in prompts if not _HAN.search(p)), None)
        chinese = next((p for p in prompts if _HAN.search(p)), None)
        out += [(name, p) for p in (english, chinese) if p is not None]
    return out


def evaluate(synth: Synthesizer, data: VoiceData, style_sentences: int, log=print) -> dict:
    """Runs every measurement; returns the JSON-able report."""
    cfg = FeatureConfig()
    hop_s = cfg.hop_length / cfg.sample_rate
    started = time.monotonic()
    per_sentence = []
    for i, text in enumerate(data.texts):
        ref = analyse(data.audio[i].astype(np.float32) / 32768.0, cfg)
        wav, _ = synth(text, "")
        try:
            scores = compare(ref, analyse(wav, cfg))
        except ValueError as exc:  # the model's utterance is too long to warp onto the teacher's
            scores = {"mcd_db": float("nan"), "f0_rmse_hz": float("nan"), "voiced_frames": 0, "error": str(exc)}
        row = {"text": text, **scores, "seconds": wav.size / cfg.sample_rate,
               "teacher_seconds": data.audio[i].size / cfg.sample_rate}
        per_sentence.append(row)
    log(f"teacher comparison: {len(per_sentence)} sentences in {time.monotonic() - started:.0f} s")

    styles = {}
    params = {name: data.style_params[i] for i, name in enumerate(data.style_names)}
    for name, prompt in style_prompts(data):
        log_f0, voiced_hz, phones, seconds = [], [], 0, 0.0
        for text in data.texts[:style_sentences]:
            wav, ids = synth(text, prompt)
            a = analyse(wav, cfg)
            voiced = a.f0[a.f0 > 0]
            log_f0.append(np.log2(voiced))
            voiced_hz.append(voiced)
            phones += spoken_phonemes(ids, synth.tokens)
            seconds += speech_seconds(a.energy, hop_s)
        semitones, tempo, _ = (float(v) for v in params[name])
        voiced_all = np.concatenate(voiced_hz)
        styles[f"{name} / {prompt or '(empty)'}"] = {
            "style": name,
            "prompt": prompt,
            "mean_f0_hz": float(voiced_all.mean()) if voiced_all.size else float("nan"),
            "mean_log2_f0": float(np.concatenate(log_f0).mean()) if voiced_all.size else float("nan"),
            "rate_phones_per_s": phones / seconds if seconds > 0 else float("nan"),
            "target_semitones": semitones,
            "target_rate": 2 ** (semitones / 12) * tempo,
        }
    neutral = next(v for v in styles.values() if v["style"] == data.style_names[0])
    for v in styles.values():
        v["semitones_vs_neutral"] = 12 * (v["mean_log2_f0"] - neutral["mean_log2_f0"])
        v["rate_vs_neutral"] = v["rate_phones_per_s"] / neutral["rate_phones_per_s"]

    def first(style: str) -> dict:
        return next(v for v in styles.values() if v["style"] == style and not _HAN.search(v["prompt"]))

    happy, sad = first("happy"), first("sad")
    scored = [r for r in per_sentence if "error" not in r]
    mcd = float(np.mean([r["mcd_db"] for r in scored])) if scored else float("nan")
    rmses = [r["f0_rmse_hz"] for r in scored if math.isfinite(r["f0_rmse_hz"])]
    f0_rmse = float(np.mean(rmses)) if rmses else float("nan")
    happy_sad_st = float(12 * (happy["mean_log2_f0"] - sad["mean_log2_f0"]))
    happy_sad_rate = float(happy["rate_phones_per_s"] / sad["rate_phones_per_s"] - 1)
    summary = {
        "sentences": len(per_sentence),
        "unscored_sentences": len(per_sentence) - len(scored),
        "mcd_db": mcd,
        "f0_rmse_hz": f0_rmse,
        "happy_vs_sad_semitones": happy_sad_st,
        "happy_vs_sad_rate": happy_sad_rate,
        "checks": {
            f"mcd <= {TARGET_MCD_DB} dB": bool(mcd <= TARGET_MCD_DB),
            f"happy vs sad >= {TARGET_SEMITONES} semitones": bool(happy_sad_st >= TARGET_SEMITONES),
            f"happy vs sad rate >= {TARGET_RATE:.0%}": bool(happy_sad_rate >= TARGET_RATE),
        },
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    return {"summary": summary, "styles": styles, "sentences": per_sentence, "style_sentences": style_sentences}


def format_report(report: dict) -> str:
    """The evaluation as Markdown tables."""
    s = report["summary"]
    lines = [
        (
            f"Held-out sentences: {s['sentences']} (neutral prompt, against the teacher; "
            f"{s['unscored_sentences']} could not be time-warped and are left out)."
        ),
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| MCD (dB, mel-cepstrum c1–c24, α 0.42, DTW) | {s['mcd_db']:.2f} | ≤ {TARGET_MCD_DB:.0f} |",
        f"| F0 RMSE (Hz, DTW, voiced in both) | {s['f0_rmse_hz']:.1f} | |",
        f"| \"Happy\" vs \"Sad\": mean F0 | {s['happy_vs_sad_semitones']:+.2f} semitones | ≥ {TARGET_SEMITONES:.0f} |",
        f"| \"Happy\" vs \"Sad\": speaking rate | {s['happy_vs_sad_rate']:+.1%} | ≥ {TARGET_RATE:.0%} |",
        "",
        f"Per style ({report['style_sentences']} sentences each):",
        "",
        "| style | prompt | mean F0 (Hz) | vs neutral (semitones) | target | rate (phones/s) | vs neutral | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in report["styles"].values():
        lines.append(
            f"| {v['style']} | {v['prompt'] or '(empty)'} | {v['mean_f0_hz']:.1f} | {v['semitones_vs_neutral']:+.2f} | "
            f"{v['target_semitones']:+.1f} | {v['rate_phones_per_s']:.2f} | ×{v['rate_vs_neutral']:.2f} | "
            f"×{v['target_rate']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory")
    p.add_argument("--data", type=Path, required=True, help="heldout.npz from `dataset build`")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--style-sentences", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--card", action="store_true", help="write the results into MODEL/MODEL_CARD.md")
    a = p.parse_args(argv)
    synth = Synthesizer(a.model, a.device)
    data = VoiceData.load(a.data)
    report = evaluate(synth, data, a.style_sentences, log=lambda m: print(m, flush=True))
    table = format_report(report)
    print(table)
    if a.json:
        a.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    if a.card:
        from emoserve.tools.demo_voice.export import CARD, render_card

        command = f"`python -m emoserve.tools.demo_voice.evaluate --model MODEL_DIR --data {a.data.name}`"
        (a.model / CARD).write_text(render_card(synth.model_dir.manifest, f"{table}\n\nMeasured with {command}."),
                                    encoding="utf-8")


if __name__ == "__main__":
    main()
