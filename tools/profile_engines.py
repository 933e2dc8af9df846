"""Times the stage engines directly (no gRPC): where a request's time goes, per precision and batch size.

    python tools/profile_engines.py --model MODEL_DIR [--device cuda] [--seconds 5] --out engines.json

Use a full-size dummy model (``emoserve init-dummy --size full --frames-per-phoneme 8``) for EmotiVoice's
compute. Reports, for fp32 and fp16 eager, fp16 with CUDA graphs and fp16 with CUDA graphs of the TorchInductor-compiled
acoustic model (on a GPU), and bf16 (with ``--bf16``): acoustic-model latency at batch 1 and
throughput at batch 32, vocoder real-time factor at batch 1 and 32, the first streamed chunk's latency,
style-encoder latency, peak GPU memory at batch 32, and each variant's agreement with fp32 eager (SNR, dB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from emoserve.acoustic.engine import AcousticEngine, AcousticItem
from emoserve.model.modeldir import ModelDir
from emoserve.model.style import StyleEncoder
from emoserve.vocoder.engine import VocodeJob, VocoderEngine
from emoserve.vocoder.streaming import receptive_field_frames


def timed_ms(fn: Callable[[], object], device: str, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in ms (synchronising the GPU around each call)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = float(np.sum((reference - estimate) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


def profile(model_dir: str, device: str, seconds: float, variants: list[tuple[str, str, bool, bool]]) -> dict:
    """Times each ``(name, precision, cuda_graphs, inductor)`` variant; the first is the reference of the SNRs."""
    model = ModelDir(model_dir)
    m = model.manifest
    fpp = int(m.extra.get("frames_per_phoneme", 8))
    frames = int(seconds * m.audio.sample_rate / m.audio.hop_length)
    n_tokens = max(3, frames // fpp)
    rng = np.random.default_rng(0)
    item = AcousticItem(
        ids=rng.integers(2, m.acoustic.n_vocab, n_tokens).astype(np.int64),
        speaker=0,
        prompt=rng.standard_normal(m.acoustic.style_dim).astype(np.float32),
        content=rng.standard_normal(m.acoustic.style_dim).astype(np.float32),
    )
    audio_s = n_tokens * fpp * m.audio.hop_length / m.audio.sample_rate
    out: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                 "model": m.name, "audio_s": audio_s, "tokens": n_tokens, "variants": {}}
    reference_mel = reference_wav = None
    for name, precision, graphs, inductor in variants:
        am = AcousticEngine(model, device, precision, max_batch=32, cuda_graphs=graphs, inductor=inductor)
        voc = VocoderEngine(model, device, precision, max_batch=32, cuda_graphs=graphs)
        mel = am.run([item])[0].mel
        wav = voc.run([VocodeJob(mel)])[0]
        row = {
            "am_b1_ms": timed_ms(lambda: am.run([item]), device),
            "am_b32_ms": timed_ms(lambda: am.run([item] * 32), device, repeats=5),
            "voc_b1_ms": timed_ms(lambda: voc.run([VocodeJob(mel)]), device),
            "voc_b32_ms": timed_ms(lambda: voc.run([VocodeJob(mel)] * 32), device, repeats=5),
        }
        first = VocodeJob(mel[:, : 8 + receptive_field_frames(m.vocoder)], keep=8)
        row["first_chunk_ms"] = timed_ms(lambda: voc.run([first]), device)
        row["voc_b1_rtfx"] = audio_s / (row["voc_b1_ms"] / 1e3)
        row["voc_b32_rtfx"] = 32 * audio_s / (row["voc_b32_ms"] / 1e3)
        row["am_b32_rtfx"] = 32 * audio_s / (row["am_b32_ms"] / 1e3)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            am.run([item] * 32)
            voc.run([VocodeJob(mel)] * 32)
            torch.cuda.synchronize()
            row["peak_mem_b32_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            row["weights_mib"] = base / 2**20
        if reference_mel is None:
            reference_mel, reference_wav = mel.float().numpy(), wav
        else:
            row["mel_snr_vs_first_db"] = snr_db(reference_mel, mel.float().numpy())
            n = min(len(reference_wav), len(wav))
            row["wav_snr_vs_first_db"] = snr_db(reference_wav[:n], wav[:n])
        out["variants"][name] = row
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    style = StyleEncoder.for_model(model, device)
    text = "今天天气真不错，我们一起去公园散步吧。" * 2
    out["style_content_ms"] = timed_ms(lambda: style.embed([text]), device)
    out["style_prompt_cached_ms"] = timed_ms(lambda: style.embed_cached(["开心"]), device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="utterance length")
    parser.add_argument("--bf16", action="store_true", help="also profile bf16")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = [("fp32", "fp32", False, False), ("fp16", "fp16", False, False)]
    variants += [("bf16", "bf16", False, False)] if args.bf16 else []
    if args.device.startswith("cuda"):
        variants += [("fp16+graphs", "fp16", True, False), ("fp16+graphs+inductor", "fp16", True, True)]
    precisions = [v[0] for v in variants]
    report = profile(args.model, args.device, args.seconds, variants)
    print(f"{report['device']}, {report['model']}, {report['audio_s']:.2f} s utterance ({report['tokens']} tokens)")
    keys = ["am_b1_ms", "am_b32_ms", "am_b32_rtfx", "voc_b1_ms", "voc_b1_rtfx", "voc_b32_ms", "voc_b32_rtfx",
            "first_chunk_ms", "peak_mem_b32_mib", "weights_mib", "mel_snr_vs_first_db", "wav_snr_vs_first_db"]
    print(f"{'metric':<22}" + "".join(f"{p:>21}" for p in precisions))
    for key in keys:
        values = [report["variants"][p].get(key) for p in precisions]
        print(f"{key:<22}" + "".join(f"{v:>21.2f}" if v is not None else f"{'-':>21}" for v in values))
    print(f"style encoder: content {report['style_content_ms']:.2f} ms, cached prompt {report['style_prompt_cached_ms']:.3f} ms")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
