"""Times the vocoder alone on a GPU: the reference HiFi-GAN against the fused Triton generator.

    python tools/profile_vocoder.py [--model MODEL_DIR] [--seconds 15] [--batches 1,8,32] \\
        [--variants ref-fp32,ref-fp16,fused-fp16] [--breakdown] [--sweep] --out vocoder.json

Without ``--model`` the generator has EmotiVoice's shapes and seeded random weights (weights don't change the
compute). Every variant runs as a CUDA graph captured per batch size, as the vocoder engine runs it (lengths
passed, every item full length), on the same random mels; a time is the median of CUDA-event-timed replays.
Per variant and batch: ms per batch, × real time (audio seconds per wall second), achieved TFLOP/s, and SNR
against ``ref-fp32`` on the same input.

Variants: ``ref-fp32``, ``ref-fp16``, ``ref-bf16`` (the reference generator, cuDNN), ``ref-fp16-bench``
(the same with ``torch.backends.cudnn.benchmark``), ``fused-fp16``, ``fused-bf16``, ``fused-fp32``
(:class:`emoserve.vocoder.fused.FusedHiFiGAN`, Triton), ``fused-fp16-unpaired`` (every convolution its own
kernel, no fused resblock steps). ``--breakdown`` adds each generator's GPU time by
kernel (one eager batch at the largest size, torch.profiler); ``--sweep`` times each upsampler and each resblock
convolution (fused resblock step in the narrow stages) alone under candidate launch settings and adds a
``fused-fp16-tuned`` variant with the fastest ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch

from emoserve.model.graphs import CapturedGraph
from emoserve.model.vocoder import HiFiGAN, VocoderConfig
from emoserve.vocoder.fused import FusedHiFiGAN

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
VARIANTS = ("ref-fp32", "ref-fp16", "ref-bf16", "ref-fp16-bench", "fused-fp16", "fused-fp16-unpaired", "fused-bf16",
            "fused-fp32")
Generator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gflop_per_audio_second(config: VocoderConfig, sample_rate: int) -> float:
    """Multiply-adds × 2 of one second of audio through the generator (convolutions only)."""
    frames = sample_rate / config.hop_length
    total = 2 * config.n_mels * config.upsample_initial_channel * 7 * frames  # conv_pre
    steps, channels = frames, config.upsample_initial_channel
    for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
        total += 2 * channels * (channels // 2) * kernel * steps  # each input step feeds `kernel` outputs
        steps, channels = steps * rate, channels // 2
        taps = sum(2 * k * len(d) for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))
        total += 2 * channels * channels * taps * steps
    total += 2 * channels * 7 * steps  # conv_post
    return total / 1e9


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` in dB (float64)."""
    ref, est = reference.double(), estimate.double()
    noise = float(((ref - est) ** 2).sum())
    return float("inf") if noise == 0 else 10 * torch.log10((ref**2).sum() / noise).item()


def time_graph(graph: torch.cuda.CUDAGraph, budget_s: float = 1.0, warmup: int = 3) -> float:
    """Median ms of CUDA-event-timed replays (5 to 50 of them, about ``budget_s`` in all)."""
    for _ in range(warmup):
        graph.replay()
    samples: list[float] = []
    while len(samples) < 5 or (sum(samples) < budget_s * 1e3 and len(samples) < 50):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return statistics.median(samples)


def build(name: str, model: HiFiGAN, tiles: dict | None = None, pair_tiles: dict | None = None) -> Generator:
    """The generator of a variant: ``fn(mel, lengths) -> wav`` on the model's device."""
    kind, precision = name.split("-")[0], name.split("-")[1]
    source = HiFiGAN(model.config).to(model.conv_pre.weight.device)
    source.load_state_dict(model.state_dict())
    source = source.to(DTYPES[precision]).eval()
    if kind == "ref":
        return source
    pair_max_channels = 0 if name.endswith("-unpaired") else 64  # -unpaired: every convolution its own kernel
    return FusedHiFiGAN.from_model(source, backend="triton", tiles=tiles, pair_max_channels=pair_max_channels,
                                   pair_tiles=pair_tiles)


def run_variant(name: str, fn: Generator, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(median ms per batch, output) of ``fn`` captured as a CUDA graph."""
    dtype = DTYPES[name.split("-")[1]]
    bench = name.endswith("-bench")
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bench or previous
    try:
        graph = CapturedGraph(lambda m, n: (fn(m, n),), (mel.to(dtype), lengths))
        ms = time_graph(graph.graph)
        return ms, graph.outputs[0].float().clone()
    finally:
        torch.backends.cudnn.benchmark = previous


def kernel_breakdown(fn: Generator, mel: torch.Tensor, lengths: torch.Tensor, top: int = 12) -> list[dict]:
    """GPU time per kernel name of one eager batch, largest first (the rest summed as ``(other)``)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        fn(mel, lengths)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(mel, lengths)
            torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
        if us > 0:
            rows.append({"kernel": event.key[:90], "calls": event.count, "ms": us / 1e3})
    rows.sort(key=lambda r: -r["ms"])
    total = sum(r["ms"] for r in rows)
    out = rows[:top]
    if len(rows) > top:
        out.append({"kernel": "(other)", "calls": sum(r["calls"] for r in rows[top:]),
                    "ms": sum(r["ms"] for r in rows[top:])})
    for r in out:
        r["share"] = r["ms"] / total
    return out


def _candidates(default: object, alternatives: Iterable[object]) -> list:
    """The default launch settings first, then the distinct alternatives."""
    return list(dict.fromkeys([default, *alternatives]))


CONV_SHAPES = ((128, 128, 4, 3), (128, 128, 8, 3), (128, 256, 8, 3), (128, 128, 8, 1), (64, 128, 4, 3),
               (128, 64, 4, 3))
"""``(block_t, block_n, num_warps, num_stages)`` tried for convolutions and upsamplers."""
PAIR_SHAPES = ((128, 4, 3, 4), (128, 4, 3, 6), (128, 4, 3, 12), (128, 4, 1, 8), (128, 4, 1, 12), (128, 2, 1, 16),
               (128, 8, 1, 4), (256, 4, 1, 4))
"""``(block_t, num_warps, num_stages, programs_per_sm)`` tried for the fused resblock steps."""


def _conv_candidates(c_in: int, c_out: int, itemsize: int) -> list:
    """The default tile of a ``c_in`` → ``c_out`` convolution or upsampler, then the CONV_SHAPES alternatives."""
    from emoserve.vocoder import kernels

    default = kernels.default_tile(c_in, c_out, itemsize)
    return _candidates(default, (kernels.Tile(t, min(n, c_out), default.block_k, w, s) for t, n, w, s in CONV_SHAPES))


def sweep(fused: FusedHiFiGAN, batch: int, frames: int) -> tuple[dict, dict, list[dict]]:
    """Times each upsampler and each resblock kernel size of each stage (at the second dilation) alone per
    candidate launch setting, at ``batch`` × ``frames``: a fused resblock step where the stage's channels
    allow it, else one convolution. Returns the fastest tile per ``(c_in, c_out)`` (a stage's convolutions:
    least time over its kernel sizes), the fastest pair tile per ``(channels, kernel_size)``, and all rows."""
    from triton.testing import do_bench

    from emoserve.model.vocoder import LRELU_SLOPE
    from emoserve.vocoder import kernels

    tiles: dict = {}
    pair_tiles: dict = {}
    rows: list[dict] = []

    def time_all(row: dict, job: Callable, candidates: list, flop: float) -> list[tuple[float, object]]:
        timings = []
        for tile in candidates:
            entry = {**row, "tile": repr(tile)}
            try:
                ms = do_bench(partial(job, tile=tile), warmup=25, rep=100, return_mode="median")
            except Exception as exc:  # noqa: BLE001 - a tile the compiler rejects (shared memory) is skipped
                rows.append({**entry, "error": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            timings.append((ms, tile))
            rows.append({**entry, "ms": ms, "tflops": flop / ms / 1e9})
        return timings

    steps = frames
    dtype = fused.conv_pre.weight.dtype
    device = fused.conv_pre.weight.device
    for up, stage in zip(fused.ups, fused.resblocks):
        c_in, c = (int(n) for n in up.weight.shape[1:])
        x = torch.randn(batch, steps, c_in, device=device).to(dtype)
        lengths = torch.full((batch,), steps * up.stride, dtype=torch.long, device=device)  # no masking
        flop = 2 * c_in * c * up.kernel_size * steps * batch
        timings = time_all({"op": "upsample", "c_in": c_in, "c_out": c, "kernel": up.kernel_size}, partial(
            kernels.upsample, x, up.weight, up.bias, lengths, 1, stride=up.stride, padding=up.padding,
            slope=LRELU_SLOPE), _conv_candidates(c_in, c, dtype.itemsize), flop)
        tiles[(c_in, c)] = min(timings, key=lambda t: t[0])[1]
        steps *= up.stride
        h = torch.randn(batch, steps, c, device=device).to(dtype)
        lengths = torch.full((batch,), steps, dtype=torch.long, device=device)
        per_tile: dict = {}
        for block in stage:
            c1, c2 = block[min(1, len(block) - 1)]
            k = c1.kernel_size
            row = {"c_in": c, "c_out": c, "kernel": k, "dilation": c1.dilation}
            if c <= fused.pair_max_channels:
                candidates = _candidates(kernels.default_pair_tile(c, k), (
                    kernels.PairTile(t, w, s, p) for t, w, s, p in PAIR_SHAPES if t > k - 1))
                timings = time_all({"op": "pair", **row}, partial(
                    kernels.resblock_pair, h, c1.weight, c1.bias, c2.weight, c2.bias, lengths, 1,
                    dilation=c1.dilation, slope=LRELU_SLOPE, accumulate=h), candidates, 4 * c * c * k * steps * batch)
                pair_tiles[(c, k)] = min(timings, key=lambda t: t[0])[1]
                continue
            for ms, tile in time_all({"op": "conv", **row}, partial(
                    kernels.conv1d, h, c1.weight, c1.bias, lengths, 1, dilation=c1.dilation, padding=c1.padding,
                    pre_slope=LRELU_SLOPE, residual=h), _conv_candidates(c, c, dtype.itemsize),
                    2 * c * c * k * steps * batch):
                per_tile.setdefault(tile, []).append(ms)
        complete = [(sum(v), t) for t, v in per_tile.items() if len(v) == len(stage)]
        if complete:
            tiles[(c, c)] = min(complete, key=lambda t: t[0])[1]
        del x, h
    return tiles, pair_tiles, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: full-size generator, random weights)")
    parser.add_argument("--seconds", type=float, default=15.0, help="audio per item")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--variants", default="ref-fp32,ref-fp16,ref-fp16-bench,fused-fp16,fused-bf16")
    parser.add_argument("--sample-rate", type=int, default=16000, help="without --model")
    parser.add_argument("--breakdown", action="store_true", help="GPU time by kernel (largest batch)")
    parser.add_argument("--sweep", action="store_true", help="tune Triton block shapes; adds fused-fp16-tuned")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if "ref-fp32" not in variants:
        variants.insert(0, "ref-fp32")  # the SNR reference
    batches = [int(b) for b in args.batches.split(",")]

    torch.manual_seed(args.seed)
    if args.model:
        from emoserve.model.modeldir import ModelDir

        model_dir = ModelDir(args.model)
        model, sample_rate = model_dir.load_vocoder("cuda", "fp32"), model_dir.manifest.audio.sample_rate
    else:
        model, sample_rate = HiFiGAN(VocoderConfig()).cuda().eval(), args.sample_rate
    config = model.config
    frames = round(args.seconds * sample_rate / config.hop_length)
    audio_s = frames * config.hop_length / sample_rate
    gflop = gflop_per_audio_second(config, sample_rate)
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "audio_s_per_item": audio_s,
                    "frames": frames, "gflop_per_audio_s": gflop, "results": [], "breakdown": {}, "sweep": []}
    try:
        import triton

        report["triton"] = triton.__version__
    except ImportError:
        report["triton"] = None

    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    mels = torch.randn(max(batches), config.n_mels, frames, device="cuda", generator=gen)
    references: dict[int, torch.Tensor] = {}

    def measure(names: list[str], tiles: dict | None = None, pair_tiles: dict | None = None) -> None:
        for batch in batches:
            mel = mels[:batch].contiguous()
            lengths = torch.full((batch,), frames, dtype=torch.long, device="cuda")
            for name in names:
                row = {"variant": name, "batch": batch}
                try:
                    fn = build(name, model, tiles, pair_tiles)
                    ms, wav = run_variant(name, fn, mel, lengths)
                    row.update(ms=ms, rtfx=batch * audio_s / (ms / 1e3), tflops=gflop * batch * audio_s / ms)
                    if name == "ref-fp32":
                        references[batch] = wav
                    elif batch in references:
                        row["snr_db"] = snr_db(references[batch], wav)
                    del fn, wav
                except Exception as exc:  # noqa: BLE001 - a failing variant is reported, the others still run
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                report["results"].append(row)
                print(json.dumps(row), flush=True)
                save()
                torch.cuda.empty_cache()

    def save() -> None:
        if args.out:
            args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")

    measure(variants)
    if args.sweep:
        best, best_pairs, rows = sweep(build("fused-fp16", model), max(batches), frames)
        report["sweep"] = rows
        report["tuned_tiles"] = {f"{k[0]}x{k[1]}": repr(v) for k, v in best.items()}
        report["tuned_pair_tiles"] = {f"{k[0]}k{k[1]}": repr(v) for k, v in best_pairs.items()}
        for r in rows:
            line = f"{r['ms']:8.3f} ms {r['tflops']:7.1f} TFLOP/s" if "ms" in r else r["error"]
            print(f"sweep {r['op']:<8} {r['c_in']:>4}->{r['c_out']:<4} k{r['kernel']:<3} {r['tile']:<80} {line}",
                  flush=True)
        save()
        measure(["fused-fp16-tuned"], best, best_pairs)
    if args.breakdown:
        batch = max(batches)
        lengths = torch.full((batch,), frames, dtype=torch.long, device="cuda")
        for name in ("ref-fp16", "fused-fp16"):
            report["breakdown"][name] = kernel_breakdown(build(name, model), mels.half(), lengths)
            save()
            print(f"\n{name}, batch {batch}: GPU time by kernel")
            for r in report["breakdown"][name]:
                print(f"  {r['ms']:9.2f} ms {100 * r['share']:5.1f}% {r['calls']:5d}x  {r['kernel']}")

    print(f"\n{report['device']}, torch {report['torch']}, triton {report['triton']}; {audio_s:.2f} s of audio per "
          f"item; {gflop:.1f} GFLOP per audio second")
    print(f"{'variant':<18}{'batch':>6}{'ms/batch':>11}{'x real time':>13}{'TFLOP/s':>9}{'SNR dB':>8}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['variant']:<18}{r['batch']:>6}  error: {r['error'][:80]}")
            continue
        snr = f"{r['snr_db']:8.1f}" if "snr_db" in r else f"{'ref':>8}"
        print(f"{r['variant']:<18}{r['batch']:>6}{r['ms']:>11.2f}{r['rtfx']:>13,.0f}{r['tflops']:>9.1f}{snr}")
    save()


if __name__ == "__main__":
    main()
