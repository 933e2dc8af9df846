"""What each exported graph takes and returns: names, axes, dtypes and file names.

One description serves the exporter (input/output names, dynamic axes), ONNX Runtime (pre-allocated output
buffers for IO binding), TensorRT (optimisation-profile shapes) and the stage engines (padding).

The acoustic model is exported as two graphs split at its one data-dependent step, the durations:

* ``acoustic.text``: phoneme ids, voice, style and prosody → token features and integer durations;
* ``acoustic.frames``: token features, durations and a ``frame_index`` of length F → mel of F frames.

F (the longest item's total duration) is read on the host between the two, so neither graph has a
data-dependent output shape; the Gaussian upsampling runs inside ``acoustic.frames`` with the durations as an
input, on the accelerator, like the decoder that follows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from emoserve.model.modeldir import ModelManifest

Dim = int | str | tuple[str, int]
"""A fixed size, a named dynamic axis (``"batch"``), or a named axis times a factor (``("frames", 256)``)."""
DType = Literal["float", "float32", "int64"]
"""``float`` is the graph's precision (fp32 or fp16); ``float32`` stays fp32 in an fp16 graph (prosody
controls, as in the torch engine); integers are always int64."""
Part = Literal["vocoder", "acoustic"]

PARTS: dict[str, tuple[str, ...]] = {
    "vocoder": ("vocoder",),
    "acoustic": ("acoustic.text", "acoustic.frames"),
}
"""The graphs each model part is exported as."""
AXES = ("batch", "tokens", "frames")
"""Every dynamic axis a graph may have."""


@dataclass(frozen=True)
class IOSpec:
    """One named input or output of a graph."""

    name: str
    dims: tuple[Dim, ...]
    dtype: DType = "float"

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape for the given axis sizes."""
        out = []
        for dim in self.dims:
            if isinstance(dim, int):
                out.append(dim)
            elif isinstance(dim, str):
                out.append(sizes[dim])
            else:
                out.append(sizes[dim[0]] * dim[1])
        return tuple(out)


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one exported graph."""

    graph: str
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]

    def input(self, name: str) -> IOSpec:
        """The input called ``name``."""
        return next(spec for spec in self.inputs if spec.name == name)

    def axis_sizes(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
        """Reads the dynamic axis sizes off concrete input shapes.

        Raises:
            ValueError: an input is missing or unexpected, has the wrong rank or a wrong fixed size, or two
                inputs disagree on an axis (e.g. different batch sizes).
        """
        expected = {spec.name for spec in self.inputs}
        if set(shapes) != expected:
            raise ValueError(f"{self.graph}: inputs {sorted(shapes)} given, {sorted(expected)} expected")
        sizes: dict[str, int] = {}
        for spec in self.inputs:
            shape = tuple(shapes[spec.name])
            if len(shape) != len(spec.dims):
                raise ValueError(f"{self.graph}: input {spec.name!r} has shape {shape}, expected rank {len(spec.dims)}")
            for dim, size in zip(spec.dims, shape):
                if isinstance(dim, int):
                    if size != dim:
                        raise ValueError(f"{self.graph}: input {spec.name!r} has shape {shape}, expected {spec.dims}")
                elif isinstance(dim, str) and sizes.setdefault(dim, size) != size:
                    raise ValueError(
                        f"{self.graph}: axis {dim!r} is {sizes[dim]} in one input and {size} in {spec.name!r}"
                    )
        return sizes

    def output_shapes(self, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Shapes of the outputs for the given axis sizes."""
        return {spec.name: spec.shape(sizes) for spec in self.outputs}


def graph_spec(graph: str, manifest: ModelManifest) -> GraphSpec:
    """The spec of ``graph`` (one of :data:`PARTS`' values) for a model's shapes.

    Raises:
        ValueError: unknown graph name.
    """
    voc, am = manifest.vocoder, manifest.acoustic
    if graph == "vocoder":
        return GraphSpec(
            graph,
            inputs=(IOSpec("mel", ("batch", voc.n_mels, "frames")), IOSpec("lengths", ("batch",), "int64")),
            outputs=(IOSpec("wav", ("batch", ("frames", voc.hop_length))),),
        )
    if graph == "acoustic.text":
        return GraphSpec(
            graph,
            inputs=(
                IOSpec("ids", ("batch", "tokens"), "int64"),
                IOSpec("lengths", ("batch",), "int64"),
                IOSpec("speakers", ("batch",), "int64"),
                IOSpec("prompt", ("batch", am.style_dim)),
                IOSpec("content", ("batch", am.style_dim)),
                IOSpec("speed", ("batch",), "float32"),
                IOSpec("pitch", ("batch",), "float32"),
                IOSpec("energy", ("batch",), "float32"),
            ),
            outputs=(
                IOSpec("hidden", ("batch", "tokens", am.hidden)),
                IOSpec("durations", ("batch", "tokens"), "int64"),
            ),
        )
    if graph == "acoustic.frames":
        return GraphSpec(
            graph,
            inputs=(
                IOSpec("hidden", ("batch", "tokens", am.hidden)),
                IOSpec("durations", ("batch", "tokens"), "int64"),
                IOSpec("lengths", ("batch",), "int64"),
                IOSpec("frame_index", ("frames",), "int64"),
            ),
            outputs=(IOSpec("mel", ("batch", am.n_mels, "frames")),),
        )
    raise ValueError(f"unknown graph {graph!r}; choose from {[g for gs in PARTS.values() for g in gs]}")


def base_name(part: Part, fp16: bool) -> str:
    """File name of a part's export in a model's ``onnx/`` folder: ``vocoder.onnx``, ``acoustic.fp16.onnx``."""
    return f"{part}{'.fp16' if fp16 else ''}.onnx"


def graph_paths(out: str | Path, part: Part) -> dict[str, Path]:
    """Where the graphs of ``part`` are written for an ``--out FILE.onnx``.

    The vocoder is one graph, written to ``FILE.onnx``; the acoustic model's two go to ``FILE.text.onnx`` and
    ``FILE.frames.onnx``.

    Raises:
        ValueError: ``out`` does not end in ``.onnx``; unknown part.
    """
    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"the output file must end in .onnx, got {str(out)!r}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {sorted(PARTS)}")
    if part == "vocoder":
        return {"vocoder": out}
    stem = out.with_suffix("")
    return {graph: stem.with_name(f"{stem.name}.{graph.split('.')[1]}.onnx") for graph in PARTS[part]}
