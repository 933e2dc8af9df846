"""TensorRT runtime: a plan executed on the caller's torch CUDA stream with torch-owned buffers.

Inputs and outputs are torch tensors on the stage's GPU whose addresses are handed to TensorRT
(``set_tensor_address``); ``execute_async_v3`` enqueues on the current torch stream, so nothing crosses the
host and torch orders everything around it. The optimisation profile is chosen per batch
(:func:`select_profile`): the first (smallest batch range) that holds every input shape; inputs outside
every profile are rejected with the ranges in the message. Profile selection and bounds are pure functions.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from emoserve.engines.specs import AXES, GraphSpec

Shape = tuple[int, ...]
ProfileShapes = Mapping[str, tuple[Shape, Shape, Shape]]
"""(min, opt, max) shape per input name, as ``ICudaEngine.get_tensor_profile_shape`` gives them."""


class ShapeOutOfProfileError(ValueError):
    """Input shapes that no optimisation profile of a plan holds."""


def _fits(shape: Shape, ranges: tuple[Shape, Shape, Shape]) -> bool:
    low, _, high = ranges
    return len(shape) == len(low) and all(lo <= s <= hi for s, lo, hi in zip(shape, low, high))


def select_profile(profiles: Sequence[ProfileShapes], shapes: Mapping[str, Shape]) -> int:
    """Index of the first profile whose ranges hold every input shape.

    Profiles are ordered by batch range (see :func:`~emoserve.engines.tensorrt_build.derive_profiles`), so
    the first match is the one tuned closest to the batch.

    Raises:
        ShapeOutOfProfileError: no profile holds the shapes (the message lists every profile's ranges).
    """
    for index, profile in enumerate(profiles):
        if all(_fits(tuple(shapes[name]), ranges) for name, ranges in profile.items()):
            return index
    listed = "; ".join(
        f"profile {i}: " + ", ".join(f"{name} {r[0]}..{r[2]}" for name, r in p.items()) for i, p in enumerate(profiles)
    )
    raise ShapeOutOfProfileError(
        f"input shapes { {k: tuple(v) for k, v in shapes.items()} } are outside every optimisation profile "
        f"of the TensorRT plan ({listed}); rebuild it with wider ranges (engine.tensorrt_* settings)"
    )


def profile_bounds(spec: GraphSpec, profiles: Sequence[ProfileShapes]) -> dict[str, tuple[int, int | None]]:
    """Smallest and largest size of each dynamic axis over all profiles (None: the graph lacks the axis)."""
    bounds: dict[str, tuple[int, int | None]] = {}
    for axis in AXES:
        where = [(s.name, i) for s in spec.inputs for i, d in enumerate(s.dims) if d == axis]
        if not where:
            bounds[axis] = (1, None)
            continue
        name, dim = where[0]
        bounds[axis] = (min(p[name][0][dim] for p in profiles), max(p[name][2][dim] for p in profiles))
    return bounds


def profile_sizes(spec: GraphSpec, profile: ProfileShapes, which: int = 1) -> dict[str, int]:
    """Axis sizes of a profile's min (0), opt (1) or max (2) shapes."""
    return spec.axis_sizes({name: ranges[which] for name, ranges in profile.items()})


class TensorRTGraph:
    """A TensorRT plan of one exported graph, run on torch tensors.

    Args:
        plan: the serialized engine (``emoserve build-engine`` or the stage's engine cache).
        spec: the graph's inputs and outputs.
        device: the CUDA device the plan runs on.

    Raises:
        RuntimeError: the plan cannot be deserialized here (other GPU or TensorRT version).
        ValueError: the plan's tensors are not the spec's.
    """

    def __init__(self, plan: str | Path, spec: GraphSpec, device: str | torch.device) -> None:
        import tensorrt as trt

        self.spec = spec
        self.device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(Path(plan).read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT cannot deserialize {plan} (built for another GPU or TensorRT version?)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        expected = (sorted(s.name for s in spec.inputs), sorted(s.name for s in spec.outputs))
        if (sorted(inputs), sorted(outputs)) != expected:
            raise ValueError(f"{plan}: tensors {inputs} -> {outputs} are not those of the {spec.graph} graph")
        self.dtypes = {
            n: torch.from_numpy(np.empty(0, trt.nptype(self.engine.get_tensor_dtype(n)))).dtype for n in names
        }
        self.profiles: tuple[dict[str, tuple[Shape, Shape, Shape]], ...] = tuple(
            {n: tuple(tuple(int(d) for d in s) for s in self.engine.get_tensor_profile_shape(n, p)) for n in inputs}
            for p in range(self.engine.num_optimization_profiles)
        )
        self.float_dtype = next(self.dtypes[s.name] for s in spec.inputs + spec.outputs if s.dtype == "float")
        self.bounds = profile_bounds(spec, self.profiles)
        self.name = "tensorrt"
        self._lock = threading.Lock()  # one execution context: calls are enqueued one at a time
        self._profile: int | None = None
        self._last_stream: torch.cuda.Stream | None = None

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Enqueues the plan on the current torch stream; returns its outputs (valid in stream order).

        Raises:
            ShapeOutOfProfileError: shapes outside every profile.
            ValueError: inputs that do not fit the spec.
            RuntimeError: TensorRT refused to enqueue.
        """
        shapes = {name: tuple(t.shape) for name, t in inputs.items()}
        self.spec.axis_sizes(shapes)
        index = select_profile(self.profiles, shapes)
        stream = torch.cuda.current_stream(self.device)
        tensors = {s.name: inputs[s.name].to(self.device, self.dtypes[s.name]).contiguous() for s in self.spec.inputs}
        with self._lock:
            if self._last_stream is not None and self._last_stream != stream:
                stream.wait_stream(self._last_stream)  # the context's scratch memory is still in use there
            if index != self._profile:
                self.context.set_optimization_profile_async(index, stream.cuda_stream)
                self._profile = index
            for name, tensor in tensors.items():
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for spec in self.spec.outputs:
                out = torch.empty(tuple(self.context.get_tensor_shape(spec.name)), dtype=self.dtypes[spec.name],
                                  device=self.device)
                self.context.set_tensor_address(spec.name, out.data_ptr())
                outputs[spec.name] = out
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT could not enqueue the {self.spec.graph} plan (its log says why)")
            self._last_stream = stream
        return outputs

    def warmup_sizes(self) -> list[dict[str, int]]:
        """The opt sizes of every profile (the first run of a profile initialises it)."""
        return [profile_sizes(self.spec, p) for p in self.profiles]
