"""``emoserve export-onnx``: the vocoder and the two acoustic graphs as ONNX, checked against PyTorch.

Every graph has a dynamic ``batch`` axis and dynamic length axes (``frames``, ``tokens``; see
:mod:`emoserve.engines.specs`), static rank and no data-dependent shapes. Weight norm is already folded by
the model loaders. Each export is checked with ``onnx.checker`` (full check, with shape inference) and run
by ONNX Runtime on random inputs of other shapes than the traced ones, against the fp32 PyTorch model:
max abs error ≤ 1e-3 (relative to the output's scale) for fp32 graphs, SNR ≥ 30 dB for fp16 graphs.
Files are written atomically and carry their provenance in ONNX metadata (``emoserve.*`` keys).

A stage finds its graphs in ``MODEL_DIR/onnx/`` (or ``engine.onnx_dir``); missing ones are exported on first
use into ``engine.cache_dir`` (:func:`resolve_graphs`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emoserve.engines.specs import GraphSpec, Part, base_name, graph_paths, graph_spec
from emoserve.model.acoustic import AcousticModel, Prosody, lengths_to_mask
from emoserve.model.modeldir import ModelDir
from emoserve.model.vocoder import HiFiGAN

log = logging.getLogger(__name__)

OPSET = 18
"""ONNX opset of the exports (the lowest the dynamo exporter writes; ONNX Runtime and TensorRT ≥ 10 run it)."""
EXPORT_VERSION = "1"
"""Bumped whenever the exported graphs change; part of the export cache key."""
FP32_MAX_ABS = 1e-3
FP16_MIN_SNR_DB = 30.0
WEIGHTS = {"vocoder": "vocoder.safetensors", "acoustic": "acoustic.safetensors"}
META_PREFIX = "emoserve."


class ExportError(RuntimeError):
    """An export failed its check, or an existing export does not match the model."""


class _VocoderGraph(nn.Module):
    def __init__(self, model: HiFiGAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(mel, lengths)


class _AcousticTextGraph(nn.Module):
    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids, lengths, speakers, prompt, content, speed, pitch, energy):
        hidden, durations, _, _, _ = self.model.encode(
            ids, lengths, speakers, prompt, content, Prosody(speed, pitch, energy)
        )
        return hidden, durations


class _AcousticFramesGraph(nn.Module):
    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, hidden, durations, lengths, frame_index):
        token_mask = lengths_to_mask(lengths, hidden.shape[1])
        return self.model.decode(hidden, durations, token_mask, frame_index.shape[0])


def _max_positions(model: AcousticModel) -> dict[str, int]:
    """Longest token and frame sequences the exported graphs hold a positional table for."""
    return {
        "tokens": int(model.encoder.embed[0].pe.shape[0]),
        "frames": int(model.decoder.embed[0].pe.shape[0]),
    }


def random_inputs(
    spec: GraphSpec, sizes: Mapping[str, int], model_dir: ModelDir, dtype: torch.dtype, seed: int
) -> dict[str, torch.Tensor]:
    """Plausible random inputs of ``spec`` for the given axis sizes (lengths vary within the batch)."""
    g = torch.Generator().manual_seed(seed)
    batch = sizes["batch"]
    am = model_dir.manifest.acoustic

    def lengths(axis: str) -> torch.Tensor:
        full = sizes[axis]
        out = torch.randint(max(1, full // 2), full + 1, (batch,), generator=g)
        out[0] = full
        return out

    if spec.graph == "vocoder":
        return {"mel": torch.randn(spec.input("mel").shape(sizes), generator=g).to(dtype), "lengths": lengths("frames")}
    if spec.graph == "acoustic.text":
        return {
            "ids": torch.randint(0, am.n_vocab, (batch, sizes["tokens"]), generator=g),
            "lengths": lengths("tokens"),
            "speakers": torch.randint(0, am.n_speakers, (batch,), generator=g),
            "prompt": torch.randn(batch, am.style_dim, generator=g).to(dtype),
            "content": torch.randn(batch, am.style_dim, generator=g).to(dtype),
            # neutral controls on the first item (EmotiVoice's exact path), others varied
            "speed": torch.cat([torch.ones(1), 0.8 + 0.4 * torch.rand(batch - 1, generator=g)]),
            "pitch": torch.cat([torch.zeros(1), 4 * torch.rand(batch - 1, generator=g) - 2]),
            "energy": torch.cat([torch.ones(1), 0.8 + 0.4 * torch.rand(batch - 1, generator=g)]),
        }
    if spec.graph == "acoustic.frames":
        tokens, frames = sizes["tokens"], sizes["frames"]
        token_lengths = lengths("tokens")
        mask = lengths_to_mask(token_lengths, tokens)
        durations = torch.randint(1, max(2, 2 * frames // tokens), (batch, tokens), generator=g) * mask
        return {
            "hidden": torch.randn(batch, tokens, am.hidden, generator=g).to(dtype),
            "durations": durations,
            "lengths": token_lengths,
            "frame_index": torch.arange(frames),
        }
    raise ValueError(f"unknown graph {spec.graph!r}")


def _module(graph: str, model: nn.Module) -> nn.Module:
    wrappers = {"vocoder": _VocoderGraph, "acoustic.text": _AcousticTextGraph, "acoustic.frames": _AcousticFramesGraph}
    return wrappers[graph](model).eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keeps the exporter's chatter (a line per optimizer pass and folded constant, warnings about torchvision
    ops these models do not use) out of the logs."""
    loggers = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in loggers}
    try:
        for name, level in loggers.items():
            logging.getLogger(name).setLevel(level)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _dynamic_shapes(spec: GraphSpec, limits: Mapping[str, int]) -> tuple[dict[int, torch.export.Dim], ...]:
    dims = {
        axis: torch.export.Dim(axis, min=1, max=limits[axis]) if axis in limits else torch.export.Dim(axis, min=1)
        for axis in ("batch", "tokens", "frames")
    }
    return tuple({i: dims[d] for i, d in enumerate(s.dims) if isinstance(d, str)} for s in spec.inputs)


def _compare(graph: str, name: str, got: np.ndarray, ref: np.ndarray, fp16: bool) -> str | None:
    """Why ``got`` is not close enough to the fp32 reference ``ref``, or None."""
    if got.shape != ref.shape:
        return f"{graph}.{name}: shape {got.shape} != PyTorch's {ref.shape}"
    if np.issubdtype(ref.dtype, np.integer):  # durations: rounding may flip at .5, more so in fp16
        diff = np.abs(got.astype(np.int64) - ref)
        allowed = np.maximum(1, np.abs(ref) // 100)
        return None if (diff <= allowed).all() else f"{graph}.{name}: max difference {diff.max()} frames"
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    if fp16:
        snr = 10 * np.log10(np.sum(ref**2) / max(np.sum((got - ref) ** 2), 1e-30))
        return None if snr >= FP16_MIN_SNR_DB else f"{graph}.{name}: SNR {snr:.1f} dB < {FP16_MIN_SNR_DB} dB"
    err, scale = float(np.abs(got - ref).max(initial=0.0)), max(1.0, float(np.abs(ref).max(initial=0.0)))
    if err <= FP32_MAX_ABS * scale:
        return None
    return f"{graph}.{name}: max abs error {err:.2e} > {FP32_MAX_ABS * scale:.2e}"


VERIFY_SIZES: dict[str, tuple[dict[str, int], ...]] = {
    "vocoder": ({"batch": 1, "frames": 9}, {"batch": 3, "frames": 50}),
    "acoustic.text": ({"batch": 1, "tokens": 5}, {"batch": 3, "tokens": 30}),
    "acoustic.frames": ({"batch": 1, "tokens": 5, "frames": 20}, {"batch": 3, "tokens": 30, "frames": 140}),
}
"""Shapes the exports are checked at (other than the traced ones: catches shapes baked in by tracing)."""
TRACE_SIZES = {"batch": 2, "tokens": 13, "frames": 37}


def verify_graph(path: Path, spec: GraphSpec, reference: nn.Module, model_dir: ModelDir, fp16: bool) -> None:
    """Runs the export with ONNX Runtime (CPU) against the fp32 PyTorch module on random inputs.

    Raises:
        ExportError: an output differs beyond the tolerance.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtype = torch.float16 if fp16 else torch.float32
    for seed, sizes in enumerate(VERIFY_SIZES[spec.graph]):
        inputs = random_inputs(spec, sizes, model_dir, dtype, seed)
        with torch.inference_mode():
            ref = reference(*(t.float() if t.is_floating_point() else t for t in inputs.values()))
        refs = (ref,) if isinstance(ref, torch.Tensor) else tuple(ref)
        got = session.run(None, {name: t.numpy() for name, t in inputs.items()})
        for out, g, r in zip(spec.outputs, got, refs):
            problem = _compare(spec.graph, out.name, g, r.numpy(), fp16)
            if problem:
                raise ExportError(f"ONNX export does not match PyTorch at {sizes}: {problem}")


def weights_sha256(model_dir: ModelDir, part: Part) -> str:
    """SHA-256 of the part's weights file (ties an export to the weights it came from)."""
    digest = hashlib.sha256()
    with open(model_dir.path / WEIGHTS[part], "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``emoserve.*`` metadata of an ONNX file, without the prefix."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def _export_graph(graph: str, model: nn.Module, spec: GraphSpec, model_dir: ModelDir, out: Path,
                  metadata: Mapping[str, str], limits: Mapping[str, int]) -> None:
    import onnx

    dtype = next(model.parameters()).dtype
    example = tuple(random_inputs(spec, TRACE_SIZES, model_dir, dtype, seed=1234).values())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _quiet_exporter():
            torch.onnx.export(
                _module(graph, model), example, str(tmp),
                input_names=[s.name for s in spec.inputs], output_names=[s.name for s in spec.outputs],
                dynamic_shapes=_dynamic_shapes(spec, limits), dynamo=True, opset_version=OPSET,
                external_data=False, verbose=False,
            )
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=META_PREFIX + key, value=str(value))
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def export_part(
    model_dir: ModelDir, part: Part, out: str | os.PathLike[str], fp16: bool = False, verify: bool = True
) -> dict[str, Path]:
    """Exports a model part's graphs (see :func:`~emoserve.engines.specs.graph_paths` for the file names).

    Args:
        model_dir: the model directory.
        part: ``vocoder`` or ``acoustic``.
        out: ``FILE.onnx``.
        fp16: export the fp16 model (fp16 float inputs/outputs; durations still computed in fp32).
        verify: check each graph against the fp32 PyTorch model with ONNX Runtime (needs onnxruntime).

    Returns:
        The written files by graph name.

    Raises:
        ExportError: a graph failed its check (nothing is left at its path).
        ValueError: bad part or file name.
    """
    paths = graph_paths(out, part)
    precision = "fp16" if fp16 else "fp32"
    load = model_dir.load_vocoder if part == "vocoder" else model_dir.load_acoustic
    model, reference = load("cpu", precision), load("cpu", "fp32")
    limits = _max_positions(model) if part == "acoustic" else {}
    metadata = {
        "export_version": EXPORT_VERSION, "model": model_dir.manifest.name, "part": part, "precision": precision,
        "weights_sha256": weights_sha256(model_dir, part), "torch": torch.__version__,
        **{f"max_{axis}": str(n) for axis, n in limits.items()},
    }
    written: dict[str, Path] = {}
    try:
        for graph, path in paths.items():
            spec = graph_spec(graph, model_dir.manifest)
            _export_graph(graph, model, spec, model_dir, path, {**metadata, "graph": graph}, limits)
            written[graph] = path
            if verify:
                verify_graph(path, spec, _module(graph, reference), model_dir, fp16)
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return written


def check_export(path: Path, graph: str, precision: str, weights: str) -> None:
    """Raises :class:`ExportError` unless ``path`` is an export of ``graph`` in ``precision`` of these weights."""
    meta = read_metadata(path)
    expected = {"graph": graph, "precision": precision, "weights_sha256": weights}
    wrong = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise ExportError(
            f"{path} is not the {precision} {graph} graph of this model's weights (its metadata: {wrong}); "
            "re-export it with `emoserve export-onnx`"
        )


def resolve_graphs(
    model_dir: ModelDir,
    part: Part,
    precision: str,
    *,
    cache_dir: str,
    onnx_dir: str = "",
    export_missing: bool = True,
) -> dict[str, Path]:
    """The ONNX graphs a stage runs: from ``onnx_dir`` (default ``MODEL_DIR/onnx``), else exported once into
    ``cache_dir/onnx/`` (keyed by the weights' hash and :data:`EXPORT_VERSION`).

    Raises:
        FileNotFoundError: graphs missing and ``export_missing`` is off.
        ExportError: a graph does not belong to this model, part or precision, or its export failed.
        ValueError: precision other than fp32/fp16.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"ONNX graphs are exported in fp32 or fp16, not {precision}")
    fp16 = precision == "fp16"
    folder = Path(onnx_dir).expanduser() if onnx_dir else model_dir.path / "onnx"
    paths = graph_paths(folder / base_name(part, fp16), part)
    weights = weights_sha256(model_dir, part)
    if not all(p.is_file() for p in paths.values()):
        if not export_missing:
            missing = [str(p) for p in paths.values() if not p.is_file()]
            raise FileNotFoundError(
                f"no ONNX export of the {part} at {missing}: run `emoserve export-onnx {model_dir.path} --part {part}"
                f"{' --fp16' if fp16 else ''}` or set engine.export_missing: true"
            )
        key = f"{model_dir.manifest.name}-{weights[:16]}-v{EXPORT_VERSION}"
        cached_base = Path(cache_dir).expanduser() / "onnx" / key / base_name(part, fp16)
        paths = graph_paths(cached_base, part)
        if not all(p.is_file() for p in paths.values()):
            log.info("exporting the %s %s graphs to %s (first use)", precision, part, cached_base.parent)
            export_part(model_dir, part, cached_base, fp16=fp16)
    for graph, path in paths.items():
        check_export(path, graph, precision, weights)
    return paths
