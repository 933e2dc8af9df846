"""The encoder stage's ``onnxruntime`` engine: the style encoder (BERT + pooling) run by ONNX Runtime on the CPU.

The model of ``MODEL_DIR/style/`` (or of the package ``model.json`` names) and its pooling
(:class:`~emoserve.model.style.StylePooling`) are exported once, with dynamic ``batch`` and ``tokens`` axes,
into ``engine.cache_dir/onnx/`` under a key made of a hash of the style folder (and of ``style.dtype``) and
:data:`STYLE_EXPORT_VERSION`; with ``engine.onnxruntime_int8_style`` the export is
then quantized dynamically to int8 weights (``onnxruntime.quantization.quantize_dynamic``). Each export is
checked against the fp32 PyTorch model on tokenized texts of two batch shapes: max abs error ≤
:data:`~emoserve.engines.onnx_export.FP32_MAX_ABS` (relative to the output's scale) in fp32, cosine
similarity ≥ :data:`INT8_MIN_COSINE` per vector in int8. The graph runs in an
:class:`~emoserve.engines.onnxruntime_engine.OnnxRuntimeGraph` (the same providers, session options and IO
binding as the other stages' ONNX Runtime engines); tokenization and the embedding cache stay in
:class:`~emoserve.model.style.StyleEncoder`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from emoserve.engines.onnx_export import (
    META_PREFIX,
    OPSET,
    ExportError,
    _compare,
    _quiet_exporter,
    read_metadata,
)
from emoserve.engines.onnxruntime_engine import OnnxRuntimeGraph
from emoserve.engines.specs import GraphSpec, IOSpec
from emoserve.model.modeldir import ModelDir
from emoserve.model.style import StylePooling, load_style_model

log = logging.getLogger(__name__)

STYLE_EXPORT_VERSION = "1"
"""Bumped whenever the exported style graph changes; part of its cache key."""
INT8_MIN_COSINE = 0.98
"""Least cosine similarity of an int8 vector to the fp32 PyTorch one."""
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "style_vector"
VERIFY_TEXTS: tuple[tuple[str, ...], ...] = (
    ("Good morning, how can I help you today?",),
    ("Happy", "今天天气很好，我们去公园散步吧。", "The train to Cambridge leaves from platform nine at seven fifteen."),
)
"""Batches the exports are checked on (padded to their longest text; other shapes than the traced one)."""
TRACE_TEXTS = ("a short one", "and a somewhat longer second text")


def style_spec(dim: int) -> GraphSpec:
    """The style graph: int64 ``[batch, tokens]`` inputs → float32 ``[batch, dim]`` vectors."""
    return GraphSpec(
        "style",
        inputs=tuple(IOSpec(name, ("batch", "tokens"), "int64") for name in INPUTS),
        outputs=(IOSpec(OUTPUT, ("batch", dim), "float32"),),
    )


def style_sha256(directory: str | os.PathLike[str], weights_dtype: torch.dtype | None = None) -> str:
    """SHA-256 over the style folder's files (names and contents) and the dtype its weights are rounded to on
    load (if any): ties an export to its weights."""
    digest = hashlib.sha256()
    if weights_dtype is not None:
        digest.update(f"weights_dtype={weights_dtype}\0".encode())
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _tokens(tokenizer, texts: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, ...]:
    batch = tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=max_tokens)
    return tuple(batch[name] for name in INPUTS)


def _cosines(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    norms = np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
    return (got * ref).sum(1) / norms


def verify_style(path: Path, reference: StylePooling, tokenizer, max_tokens: int, int8: bool) -> float:
    """Runs the export with ONNX Runtime against the fp32 PyTorch model on :data:`VERIFY_TEXTS`.

    Returns:
        The worst figure seen: max abs error (fp32) or least cosine similarity (int8).

    Raises:
        ExportError: a vector differs beyond the tolerance.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 1.0 if int8 else 0.0
    for texts in VERIFY_TEXTS:
        inputs = _tokens(tokenizer, texts, max_tokens)
        with torch.inference_mode():
            ref = reference(*inputs).numpy()
        (got,) = session.run(None, {name: t.numpy() for name, t in zip(INPUTS, inputs)})
        if int8:
            cosine = float(_cosines(got, ref).min())
            worst = min(worst, cosine)
            if cosine < INT8_MIN_COSINE:
                raise ExportError(f"int8 style export: cosine similarity {cosine:.4f} < {INT8_MIN_COSINE} "
                                  f"for a batch of {len(texts)}")
            continue
        problem = _compare("style", OUTPUT, got, ref, fp16=False)
        if problem:
            raise ExportError(f"ONNX style export does not match PyTorch for a batch of {len(texts)}: {problem}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _write_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=META_PREFIX + key, value=value)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def export_style(
    directory: str | os.PathLike[str], pooling: str, out: str | os.PathLike[str], *, max_tokens: int = 512,
    int8: bool = False, weights_dtype: torch.dtype | None = None,
) -> float:
    """Exports a style folder's model and pooling to ``out`` (atomically), checked against PyTorch.

    Args:
        directory: Hugging Face model folder (a model directory's ``style/``).
        pooling: ``pooler`` or ``mean``.
        out: the ``.onnx`` file.
        max_tokens: texts are truncated to this many tokens (as the stage does).
        int8: quantize the weights of MatMul/Gather nodes to int8 (dynamic quantization).
        weights_dtype: round the weights to this dtype first (the model's ``style.dtype``), as the stage does.

    Returns:
        The check's worst figure (see :func:`verify_style`).

    Raises:
        ExportError: the export failed its check (nothing is left at ``out``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    model = StylePooling(load_style_model(directory, weights_dtype).float(), pooling).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    fp32, final = tmp / "fp32.onnx", tmp / "final.onnx"
    batch, tokens = torch.export.Dim("batch", min=1), torch.export.Dim("tokens", min=1, max=max_tokens)
    try:
        with _quiet_exporter():
            torch.onnx.export(
                model, _tokens(tokenizer, TRACE_TEXTS, max_tokens), str(fp32), input_names=list(INPUTS),
                output_names=[OUTPUT], dynamic_shapes=tuple({0: batch, 1: tokens} for _ in INPUTS), dynamo=True,
                opset_version=OPSET, external_data=False, verbose=False,
            )
        if int8:
            quantize_dynamic(fp32, final, weight_type=QuantType.QInt8)
        else:
            fp32.replace(final)
        _write_metadata(final, {
            "export_version": STYLE_EXPORT_VERSION, "graph": "style", "pooling": pooling,
            "precision": "int8" if int8 else "fp32", "weights_sha256": style_sha256(directory, weights_dtype),
            "torch": torch.__version__, "max_tokens": str(max_tokens), "dim": str(model.model.config.hidden_size),
        })
        worst = verify_style(final, model, tokenizer, max_tokens, int8)
        final.chmod(0o644)
        os.replace(final, out)
    finally:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    log.info("style encoder exported to %s (%s: %s %.3g)", out, "int8" if int8 else "fp32",
             "least cosine" if int8 else "max abs error", worst)
    return worst


def resolve_style_graph(model_dir: ModelDir, cache_dir: str, int8: bool = False) -> Path:
    """The model's style graph in ``cache_dir/onnx/``, exported on first use.

    Raises:
        ExportError: the export failed its check, or the cached file is not this model's.
    """
    style = model_dir.manifest.style
    weights = style_sha256(model_dir.style_dir, style.weights_dtype)
    precision = "int8" if int8 else "fp32"
    key = f"{model_dir.manifest.name}-style-{weights[:16]}-v{STYLE_EXPORT_VERSION}"
    path = Path(cache_dir).expanduser() / "onnx" / key / f"style.{style.pooling}.{precision}.onnx"
    if not path.is_file():
        log.info("exporting the %s style encoder to %s (first use)", precision, path)
        export_style(model_dir.style_dir, style.pooling, path, max_tokens=style.max_tokens, int8=int8,
                     weights_dtype=style.weights_dtype)
    meta = read_metadata(path)
    expected = {"graph": "style", "precision": precision, "pooling": style.pooling, "weights_sha256": weights}
    wrong = {k: meta.get(k) for k, v in expected.items() if meta.get(k) != v}
    if wrong:
        raise ExportError(f"{path} is not the {precision} style graph of this model (its metadata: {wrong}); "
                          "delete it to export it again")
    return path


class OnnxRuntimeStyle:
    """A :class:`~emoserve.model.style.StyleBackend` running an exported style graph on the CPU.

    Args:
        path: the export (:func:`export_style`).
        providers: provider preference (config names); must include ``cpu``.
        threads: intra-op threads (0 = one per physical core).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cpu",), threads: int = 0) -> None:
        meta = read_metadata(path)
        if meta.get("graph") != "style" or "dim" not in meta:
            raise ExportError(f"{path} is not a style graph exported by emoserve (its metadata: {meta})")
        self.graph = OnnxRuntimeGraph(path, style_spec(int(meta["dim"])), "cpu", providers, threads)
        self.name = self.graph.name + ("+int8" if meta.get("precision") == "int8" else "")

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        inputs = dict(zip(INPUTS, (input_ids, attention_mask, token_type_ids)))
        return self.graph.run(inputs)[OUTPUT]
