"""``emoserve export-onnx`` and ``emoserve build-engine`` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import sys


def _missing_extra(command: str, exc: ModuleNotFoundError, extra: str) -> int:
    print(f"emoserve {command}: error: the {exc.name!r} package is missing: pip install 'emoserve[{extra}]'",
          file=sys.stderr)
    return 2


def export_onnx(args: argparse.Namespace) -> int:
    """Exports a model part to ONNX (default: into ``MODEL_DIR/onnx/``, where the stages look)."""
    from emoserve.engines.onnx_export import ExportError, export_part
    from emoserve.engines.specs import base_name
    from emoserve.model.modeldir import ModelDir

    try:
        model_dir = ModelDir(args.model_dir)
        out = args.out or model_dir.path / "onnx" / base_name(args.part, args.fp16)
        written = export_part(model_dir, args.part, out, fp16=args.fp16)
    except ModuleNotFoundError as exc:
        return _missing_extra("export-onnx", exc, "onnx")
    except (ExportError, OSError, ValueError) as exc:
        print(f"emoserve export-onnx: error: {exc}", file=sys.stderr)
        return 2
    for graph, path in written.items():
        print(f"wrote the {'fp16' if args.fp16 else 'fp32'} {graph} graph to {path} (checked against PyTorch)")
    return 0


def build_engine(args: argparse.Namespace) -> int:
    """Builds a TensorRT plan of an exported graph, into ``--out`` or the stages' engine cache."""
    from emoserve.engines.tensorrt_build import (
        AxisRange,
        PlanBuildError,
        build_plan,
        cached_plan,
        derive_profiles,
        inspect_onnx,
    )

    try:
        info = inspect_onnx(args.onnx)
        axes = {d for dims in info.input_dims.values() for d in dims if isinstance(d, str)}
        lengths = {}
        if "frames" in axes:
            lengths["frames"] = AxisRange(args.min_frames, args.opt_frames, args.max_frames)
        if "tokens" in axes:
            lengths["tokens"] = AxisRange(1, args.opt_tokens, args.max_tokens)
        profiles = derive_profiles(args.max_batch, lengths)
        import tensorrt  # noqa: F401 - fail here, before any work, when TensorRT is missing

        if args.out:
            path = build_plan(args.onnx, profiles, args.out, fp16=args.fp16, progress="bar")
        else:
            import torch

            path = cached_plan(args.onnx, profiles, args.cache_dir, torch.cuda.current_device(), fp16=args.fp16,
                               progress="bar")
    except ModuleNotFoundError as exc:
        return _missing_extra("build-engine", exc, "tensorrt" if exc.name == "tensorrt" else "onnx")
    except (PlanBuildError, OSError, ValueError) as exc:
        print(f"emoserve build-engine: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(profiles)} profiles: {[p.to_dict() for p in profiles]})")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds ``export-onnx`` and ``build-engine`` to the ``emoserve`` parser."""
    p = sub.add_parser("export-onnx", help="export the vocoder or the acoustic model to ONNX (checked against PyTorch)")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory")
    p.add_argument("--part", choices=["vocoder", "acoustic"], required=True,
                   help="vocoder: one graph; acoustic: FILE.text.onnx and FILE.frames.onnx (split at the durations)")
    p.add_argument("--out", help="FILE.onnx (default: MODEL_DIR/onnx/PART[.fp16].onnx, where the stages look)")
    p.add_argument("--fp16", action="store_true", help="export the fp16 model (fp16 inputs and outputs)")
    p.set_defaults(handler=export_onnx)

    p = sub.add_parser("build-engine", help="build a TensorRT plan from an exported graph (needs TensorRT and a GPU)")
    p.add_argument("onnx", metavar="FILE.onnx", help="an export of `emoserve export-onnx`")
    p.add_argument("--fp16", action="store_true",
                   help="fp16 plan: TensorRT 11 needs an fp16 export; TensorRT 10 also converts an fp32 one")
    p.add_argument("--min-frames", type=int, default=16, help="fewest mel frames (default 16)")
    p.add_argument("--opt-frames", type=int, default=256, help="mel frames the kernels are tuned for (default 256)")
    p.add_argument("--max-frames", type=int, default=2048, help="most mel frames (default 2048)")
    p.add_argument("--opt-tokens", type=int, default=64, help="acoustic graphs: phonemes tuned for (default 64)")
    p.add_argument("--max-tokens", type=int, default=512, help="acoustic graphs: most phonemes (default 512)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="largest batch; profiles cover [1], [2,4], [5,16], ... up to it (default 8)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="FILE.plan to write")
    where.add_argument("--cache-dir", help="store in this engine cache instead (a stage with engine.cache_dir set "
                                           "to it and the same ranges and max batch finds it)")
    p.set_defaults(handler=build_engine)
