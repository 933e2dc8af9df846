"""TensorRT plans: optimisation profiles, network typing, the engine cache and the builder.

Everything but :func:`build_plan` and :func:`cached_plan` is pure and runs without TensorRT: profile
derivation (:func:`derive_profiles`, :func:`profile_shapes`), network typing (:func:`network_typing`,
:func:`network_flags`) and cache keys (:func:`cache_key`).

Precision. TensorRT 11 builds strongly typed networks only (``BuilderFlag.FP16`` is gone): an fp16 plan
comes from an fp16 ONNX export (``emoserve export-onnx --fp16``), whose types TensorRT keeps, durations
math in fp32 included. With TensorRT 10 an fp32 export can still be built with the FP16 flag (weak typing).

Profiles. One profile per batch range — ``[1]``, ``[2, 4]``, ``[5, 16]``, ``[17, 64]``, … up to
``max_batch`` — each tuned for the top of its range, all sharing the same frame (and token) range. At run
time the smallest range holding the batch is used (:func:`emoserve.engines.tensorrt_engine.select_profile`).

Cache. A plan only runs on the GPU model and TensorRT version it was built with, for the shapes of its
profiles; the cache key covers all of them plus the ONNX file's hash, so a change of any rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

PLAN_FORMAT = "emoserve-trt/1"
"""Part of every cache key; bumped when the way plans are built changes."""
BATCH_RANGE_FACTOR = 4
Typing = Literal["strong", "weak-fp16"]
Progress = Literal["bar", "log", "none"]


class PlanBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build a plan from it."""


@dataclass(frozen=True)
class AxisRange:
    """min / opt / max size of one dynamic axis in a profile."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"axis range must satisfy 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}")

    def __contains__(self, size: int) -> bool:
        return self.min <= size <= self.max


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: a range for every dynamic axis (``batch``, ``frames``, ``tokens``)."""

    ranges: tuple[tuple[str, AxisRange], ...]

    def __getitem__(self, axis: str) -> AxisRange:
        for name, r in self.ranges:
            if name == axis:
                return r
        raise KeyError(axis)

    def to_dict(self) -> dict[str, list[int]]:
        return {name: [r.min, r.opt, r.max] for name, r in self.ranges}


def batch_ranges(max_batch: int, factor: int = BATCH_RANGE_FACTOR) -> list[AxisRange]:
    """``[1]``, ``[2, factor]``, ``[factor + 1, factor²]``, … cut at ``max_batch``; each tuned for its top.

    Raises:
        ValueError: ``max_batch < 1`` or ``factor < 2``.
    """
    if max_batch < 1 or factor < 2:
        raise ValueError(f"max_batch must be >= 1 and factor >= 2, got {max_batch} and {factor}")
    ranges, low, high = [], 1, 1
    while low <= max_batch:
        top = min(high, max_batch)
        ranges.append(AxisRange(low, top, top))
        low, high = top + 1, high * factor
    return ranges


def derive_profiles(max_batch: int, lengths: Mapping[str, AxisRange]) -> tuple[Profile, ...]:
    """One profile per batch range of :func:`batch_ranges`, each with the given length ranges.

    Args:
        max_batch: the largest batch the stage forms.
        lengths: ranges of the length axes (``frames``; ``tokens`` for the acoustic graphs).
    """
    if "batch" in lengths:
        raise ValueError("the batch ranges are derived from max_batch; give only length axes")
    extra = tuple(sorted(lengths.items()))
    return tuple(Profile((("batch", batch), *extra)) for batch in batch_ranges(max_batch))


def profile_shapes(
    input_dims: Mapping[str, Sequence[int | str]], profile: Profile
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input of a graph for one profile.

    Args:
        input_dims: each input's dims as the ONNX file declares them: sizes or dynamic axis names.
        profile: the ranges.

    Raises:
        ValueError: an input has a dynamic axis the profile has no range for.
    """
    shapes = {}
    for name, dims in input_dims.items():
        per = []
        for dim in dims:
            if isinstance(dim, int):
                per.append((dim, dim, dim))
                continue
            try:
                r = profile[dim]
            except KeyError:
                raise ValueError(
                    f"input {name!r} has dynamic axis {dim!r}, but the profile only ranges "
                    f"{[axis for axis, _ in profile.ranges]}"
                ) from None
            per.append((r.min, r.opt, r.max))
        shapes[name] = tuple(tuple(p[i] for p in per) for i in range(3))
    return shapes  # type: ignore[return-value]


@dataclass(frozen=True)
class OnnxInfo:
    """What the builder needs to know about an ONNX file."""

    input_dims: dict[str, tuple[int | str, ...]]
    precision: Literal["fp32", "fp16"]
    """fp16 when any floating-point input is fp16 (an ``--fp16`` export)."""
    sha256: str
    graph: str
    """The emoserve graph name from its metadata, or the file's stem for other ONNX files."""


def inspect_onnx(path: str | os.PathLike[str]) -> OnnxInfo:
    """Reads input dims, precision, hash and graph name of an ONNX file (needs the ``onnx`` package)."""
    import onnx

    data = Path(path).read_bytes()
    model = onnx.load_model_from_string(data)
    initializers = {i.name for i in model.graph.initializer}
    dims: dict[str, tuple[int | str, ...]] = {}
    fp16 = False
    for tensor in model.graph.input:
        if tensor.name in initializers:
            continue
        tt = tensor.type.tensor_type
        dims[tensor.name] = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in tt.shape.dim)
        fp16 |= tt.elem_type == onnx.TensorProto.FLOAT16
    meta = {p.key: p.value for p in model.metadata_props}
    return OnnxInfo(dims, "fp16" if fp16 else "fp32", hashlib.sha256(data).hexdigest(),
                    meta.get("emoserve.graph", Path(path).stem))


def network_typing(onnx_precision: str, fp16: bool, has_fp16_flag: bool) -> tuple[Typing, str]:
    """How to build a network, and the plan's precision.

    Args:
        onnx_precision: ``fp32`` or ``fp16`` (from :func:`inspect_onnx`).
        fp16: fp16 requested (``--fp16``).
        has_fp16_flag: this TensorRT still has ``BuilderFlag.FP16`` (TensorRT ≤ 10).

    Returns:
        ``("strong", precision)``: the ONNX file's types are kept (an fp16 export gives an fp16 plan);
        ``("weak-fp16", "fp16")``: an fp32 file with the FP16 flag (TensorRT ≤ 10 only).

    Raises:
        ValueError: fp16 asked of an fp32 file on a TensorRT without the FP16 flag.
    """
    if onnx_precision == "fp16":
        return "strong", "fp16"
    if not fp16:
        return "strong", "fp32"
    if has_fp16_flag:
        return "weak-fp16", "fp16"
    raise ValueError(
        "this TensorRT builds strongly typed networks only (no FP16 builder flag): an fp16 plan needs an fp16 "
        "ONNX file; export one with `emoserve export-onnx MODEL_DIR --part ... --fp16`"
    )


def network_flags(members: Mapping[str, Any], typing: Typing) -> int:
    """``create_network`` flags from the members of ``trt.NetworkDefinitionCreationFlag``.

    Explicit batch where the flag still exists (TensorRT < 11 accepts it; it is the only mode since 10);
    strongly typed for ``strong`` networks where the flag exists (TensorRT 11 is always strongly typed).
    """
    flags = 0
    if "EXPLICIT_BATCH" in members:
        flags |= 1 << int(members["EXPLICIT_BATCH"])
    if typing == "strong" and "STRONGLY_TYPED" in members:
        flags |= 1 << int(members["STRONGLY_TYPED"])
    return flags


def cache_key(
    gpu_name: str,
    capability: tuple[int, int],
    trt_version: str,
    onnx_sha256: str,
    profiles: Sequence[Profile],
    typing: Typing,
    precision: str,
) -> str:
    """Hex key of a plan in the engine cache: everything a plan depends on."""
    material = {
        "format": PLAN_FORMAT,
        "gpu": gpu_name,
        "capability": list(capability),
        "tensorrt": trt_version,
        "onnx_sha256": onnx_sha256,
        "profiles": [p.to_dict() for p in profiles],
        "typing": typing,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def plan_file(cache_dir: str | os.PathLike[str], graph: str, key: str) -> Path:
    """Where the plan with cache key ``key`` lives."""
    return Path(cache_dir).expanduser() / "tensorrt" / f"{graph}-{key[:32]}.plan"


def _progress_monitor(trt: Any, mode: Progress) -> Any:
    """A ``trt.IProgressMonitor``: tqdm bars (``bar``) or log lines for top-level phases (``log``)."""
    from tqdm import tqdm

    class _Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT calls from several threads
            self._bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                if mode == "bar":
                    self._bars[phase_name] = tqdm(
                        total=num_steps, desc=phase_name, position=len(self._bars), leave=False
                    )
                elif parent_phase is None:
                    log.info("TensorRT build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return _Monitor()


def build_plan(
    onnx_path: str | os.PathLike[str],
    profiles: Sequence[Profile],
    out: str | os.PathLike[str],
    fp16: bool = False,
    progress: Progress = "bar",
) -> Path:
    """Builds a TensorRT plan from an ONNX file with the TensorRT Python API; writes it atomically.

    Runs on the current CUDA device. Needs the ``tensorrt`` package.

    Raises:
        PlanBuildError: the parser or the builder failed (their messages are included).
        ValueError: a profile misses an axis of the graph, or fp16 cannot be honoured (see
            :func:`network_typing`).
    """
    import tensorrt as trt

    info = inspect_onnx(onnx_path)
    typing, precision = network_typing(info.precision, fp16, hasattr(trt.BuilderFlag, "FP16"))
    shapes = [profile_shapes(info.input_dims, p) for p in profiles]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt.NetworkDefinitionCreationFlag.__members__, typing))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PlanBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if typing == "weak-fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    for per_input in shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in per_input.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    if progress != "none" and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, progress)
    log.info("building a %s TensorRT plan (%s typing) of %s with %d profiles: %s",
             precision, typing, onnx_path, len(profiles), [p.to_dict() for p in profiles])
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PlanBuildError(f"TensorRT could not build a plan from {onnx_path} (its log above says why)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(memoryview(serialized))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def cached_plan(
    onnx_path: str | os.PathLike[str],
    profiles: Sequence[Profile],
    cache_dir: str | os.PathLike[str],
    device: Any,
    fp16: bool = False,
    progress: Progress = "log",
) -> Path:
    """The plan of ``onnx_path`` for ``profiles`` on ``device`` from the engine cache, built on a miss.

    The key (:func:`cache_key`) covers the GPU model, its compute capability, the TensorRT version, the ONNX
    file's hash, the profiles and the precision. Needs ``tensorrt`` and a CUDA device.
    """
    import tensorrt as trt
    import torch

    info = inspect_onnx(onnx_path)
    typing, precision = network_typing(info.precision, fp16, hasattr(trt.BuilderFlag, "FP16"))
    key = cache_key(
        torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device), trt.__version__,
        info.sha256, profiles, typing, precision,
    )
    path = plan_file(cache_dir, info.graph, key)
    if path.is_file():
        log.info("TensorRT plan of %s from the cache: %s", info.graph, path)
        return path
    with torch.cuda.device(device):
        return build_plan(onnx_path, profiles, path, fp16=fp16, progress=progress)
