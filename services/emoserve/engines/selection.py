"""Engine selection: the first configured engine of a stage that is available, loads and warms up.

Each stage lists engines in order of preference (``engine.encoder``, ``engine.acoustic``, ``engine.vocoder``;
the encoder's ``onnxruntime`` engine runs its style encoder on the CPU, see :mod:`emoserve.engines.style_onnx`).
Each is first checked for availability without loading anything (package installed, device and precision
supported); an available one is then built and warmed up. An engine that is unavailable or fails is recorded
with its reason, released, and the next one is tried; the reason for the final choice is logged and kept on
the stage (``StageService.engine_reason``). When none can start, the stage does not start:
:class:`EngineSelectionError` lists every engine's reason.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emoserve.runtime.errors import EmoserveError

if TYPE_CHECKING:
    from emoserve.model.modeldir import ModelDir
    from emoserve.runtime.config import StageConfig

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "tensorrt")
MAX_CAUSE_CHARS = 300
"""Longest cause kept per engine in a reason (reasons are logged and exported as a metric label)."""


class EngineSelectionError(EmoserveError, RuntimeError):
    """No configured engine of a stage could start; the message gives each one's reason."""


@dataclass(frozen=True)
class Candidate:
    """One engine a stage may run."""

    unavailable: Callable[[], str | None]
    """Why the engine cannot run here (checked without loading anything), or None."""
    build: Callable[[], Any]
    """Builds the engine (an object with ``run(items)``, ``warmup()`` and ``engine``)."""


@dataclass(frozen=True)
class EngineChoice:
    """The engine a stage runs, and why."""

    name: str
    engine: Any
    reason: str


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 1] + "…"


def _release() -> None:
    """Frees what a failed engine held (its GPU memory in particular) before the next one loads."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def select_engine(
    stage: str,
    preference: Sequence[str],
    candidates: Mapping[str, Candidate],
    warmup: bool = True,
    release: Callable[[], None] = _release,
) -> EngineChoice:
    """Builds (and warms up) the first engine of ``preference`` that is available and starts.

    Args:
        stage: stage name, for messages.
        preference: engine names in order of preference.
        candidates: the engines this stage has.
        warmup: warm the engine up as part of starting it (a failing warm-up moves on to the next engine).
        release: called after a failed build or warm-up.

    Returns:
        The engine, its name and the reason it was chosen.

    Raises:
        EngineSelectionError: no engine of ``preference`` could start.
    """
    skipped: list[str] = []
    for name in preference:
        candidate = candidates.get(name)
        cause = f"the {stage} stage has no {name} engine" if candidate is None else candidate.unavailable()
        if cause is not None:
            skipped.append(f"{name} is unavailable ({_short(cause)})")
            log.info("%s: engine %s is unavailable: %s", stage, name, cause)
            continue
        try:
            engine = candidate.build()
            if warmup:
                engine.warmup()
        except Exception as exc:
            log.warning("%s: engine %s failed to start", stage, name, exc_info=True)
            skipped.append(f"{name} failed ({_short(f'{type(exc).__name__}: {exc}')})")
            engine = None  # drop the half-built engine before releasing its memory
            release()
            continue
        if skipped:
            reason = "; ".join(skipped)
        else:
            reason = "it is the only configured engine" if len(preference) == 1 else (
                f"it is the first configured engine of {list(preference)}"
            )
        return EngineChoice(name, engine, reason)
    raise EngineSelectionError(
        f"{stage}: none of the configured engines {list(preference)} could start: {'; '.join(skipped)}"
    )


def _missing(*packages: str, extra: str) -> str | None:
    absent = [p for p in packages if importlib.util.find_spec(p) is None]
    if absent:
        return f"{' and '.join(repr(p) for p in absent)} not installed (pip install 'emoserve[{extra}]')"
    return None


def onnxruntime_unavailable(device: str, precision: str, providers: Sequence[str]) -> str | None:
    """Why the ONNX Runtime engine cannot run a stage on ``device`` in ``precision``, or None."""
    if precision not in ("fp32", "fp16"):
        return f"it runs fp32 and fp16 graphs, the stage runs {precision}"
    gpu = device.startswith("cuda")
    missing = _missing("onnxruntime", "onnx", extra="onnx-gpu" if gpu else "onnx")
    if missing:
        return missing
    import onnxruntime as ort

    from emoserve.engines.onnxruntime_engine import choose_providers

    try:
        choose_providers(providers, ort.get_available_providers(), "cuda" if gpu else "cpu")
    except ValueError as exc:
        return str(exc)
    return None


def tensorrt_unavailable(device: str, precision: str) -> str | None:
    """Why the TensorRT engine cannot run a stage on ``device`` in ``precision``, or None."""
    if not device.startswith("cuda"):
        return f"it needs a CUDA device, the stage runs on {device}"
    if precision not in ("fp32", "fp16"):
        return f"it runs fp32 and fp16 graphs, the stage runs {precision}"
    return _missing("tensorrt", "onnx", extra="tensorrt")


def stage_candidates(
    stage: str,
    model_dir: ModelDir,
    device: str,
    precision: str,
    config: StageConfig,
    torch_engine: Callable[[], Any],
) -> dict[str, Candidate]:
    """The engines of ``stage``: torch (``torch_engine``, the stage's own) for every stage; ONNX Runtime (CPU)
    for the encoder; ONNX Runtime and TensorRT for the acoustic and vocoder stages."""
    candidates = {"torch": Candidate(lambda: None, torch_engine)}
    engine = config.engine
    if stage == "encoder":
        candidates["onnxruntime"] = Candidate(
            lambda: onnxruntime_unavailable("cpu", "fp32", engine.onnxruntime_providers),
            lambda: build_style_engine(model_dir, config),
        )
    if stage not in ("acoustic", "vocoder"):
        return candidates
    candidates["onnxruntime"] = Candidate(
        lambda: onnxruntime_unavailable(device, precision, engine.onnxruntime_providers),
        lambda: build_graph_engine(stage, "onnxruntime", model_dir, device, precision, config),
    )
    candidates["tensorrt"] = Candidate(
        lambda: tensorrt_unavailable(device, precision),
        lambda: build_graph_engine(stage, "tensorrt", model_dir, device, precision, config),
    )
    return candidates


def build_style_engine(model_dir: ModelDir, config: StageConfig) -> Any:
    """The encoder with its style encoder in ONNX Runtime on the CPU (fp32, or int8 with
    ``engine.onnxruntime_int8_style``), exported once into ``engine.cache_dir``."""
    from emoserve.encoder.engine import EncoderEngine
    from emoserve.engines.style_onnx import OnnxRuntimeStyle, resolve_style_graph

    cfg = config.engine
    path = resolve_style_graph(model_dir, cfg.cache_dir, int8=cfg.onnxruntime_int8_style)
    backend = OnnxRuntimeStyle(path, cfg.onnxruntime_providers, cfg.onnxruntime_threads)
    return EncoderEngine(model_dir, "cpu", cache_size=config.embedding_cache_size, style_backend=backend)


def build_graph_engine(
    stage: str, kind: str, model_dir: ModelDir, device: str, precision: str, config: StageConfig
) -> Any:
    """The ONNX Runtime (``kind="onnxruntime"``) or TensorRT engine of the acoustic or vocoder stage.

    The stage's graphs come from :func:`~emoserve.engines.onnx_export.resolve_graphs` (the model's
    ``onnx/`` folder, or exported once into the cache); TensorRT plans from
    :func:`~emoserve.engines.tensorrt_build.cached_plan`.
    """
    from emoserve.engines.onnx_export import resolve_graphs
    from emoserve.engines.specs import Part, graph_spec
    from emoserve.engines.stage_engines import GraphAcousticEngine, GraphVocoderEngine

    cfg = config.engine
    part: Part = "vocoder" if stage == "vocoder" else "acoustic"
    paths = resolve_graphs(model_dir, part, precision, cache_dir=cfg.cache_dir, onnx_dir=cfg.onnx_dir,
                           export_missing=cfg.export_missing)
    manifest = model_dir.manifest

    def runner(graph: str) -> Any:
        spec = graph_spec(graph, manifest)
        if kind == "onnxruntime":
            from emoserve.engines.onnxruntime_engine import OnnxRuntimeGraph

            return OnnxRuntimeGraph(paths[graph], spec, device, cfg.onnxruntime_providers, cfg.onnxruntime_threads,
                                    cfg.cache_dir)
        from emoserve.engines.tensorrt_build import AxisRange, cached_plan, derive_profiles
        from emoserve.engines.tensorrt_engine import TensorRTGraph

        tokens = AxisRange(1, cfg.tensorrt_opt_tokens, cfg.tensorrt_max_tokens)
        frames = AxisRange(cfg.tensorrt_min_frames, cfg.tensorrt_opt_frames, cfg.tensorrt_max_frames)
        lengths = {"vocoder": {"frames": frames}, "acoustic.text": {"tokens": tokens},
                   "acoustic.frames": {"tokens": tokens, "frames": frames}}[graph]
        profiles = derive_profiles(config.batching.max_batch_size, lengths)
        plan = cached_plan(paths[graph], profiles, cfg.cache_dir, device, fp16=precision == "fp16")
        return TensorRTGraph(plan, spec, device)

    if stage == "vocoder":
        from emoserve.vocoder.streaming import receptive_field_frames

        return GraphVocoderEngine(runner("vocoder"), manifest.vocoder, receptive_field_frames(manifest.vocoder))
    return GraphAcousticEngine(runner("acoustic.text"), runner("acoustic.frames"), manifest.acoustic)
