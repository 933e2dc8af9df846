"""ONNX Runtime: one exported graph in an inference session, run on torch tensors through IO binding.

Inputs and outputs are torch tensors bound by address (``data_ptr``), on the CPU or on the stage's GPU, so
nothing is copied through the host or converted to numpy; outputs are pre-allocated by torch from the
graph's :class:`~emoserve.engines.specs.GraphSpec`. On a GPU the session runs on the torch CUDA stream that
was current when it was created (``user_compute_stream``), so its work is ordered with torch's.

Execution providers are taken in the configured preference (default CUDA, TensorRT, CPU) among those the
installed onnxruntime build has; ONNX Runtime gives each node to the first listed provider that can run it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoserve.engines.specs import AXES, GraphSpec, IOSpec

PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider", "cpu": "CPUExecutionProvider"}
"""Config names of the execution providers emoserve uses."""
GPU_PROVIDERS = ("cuda", "tensorrt")
_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def choose_providers(preference: Sequence[str], available: Sequence[str], device: str) -> list[str]:
    """The execution providers of a session on ``device``, in order.

    Args:
        preference: config names (``cuda``, ``tensorrt``, ``cpu``) in order of preference.
        available: ``onnxruntime.get_available_providers()``.
        device: the stage's device type, ``cpu`` or ``cuda``.

    Returns:
        ONNX Runtime provider names: on ``cpu`` only the CPU provider; on ``cuda`` the preferred GPU providers
        this build has, then the CPU provider if preferred (for nodes no GPU provider can run).

    Raises:
        ValueError: nothing usable: a GPU device without a GPU provider in this build (or in the preference),
            or a CPU device with ``cpu`` not in the preference.
    """
    if device == "cpu":
        if "cpu" not in preference:
            raise ValueError(f"the stage runs on the CPU but onnxruntime_providers {list(preference)} exclude 'cpu'")
        return [PROVIDERS["cpu"]]
    gpu = [PROVIDERS[p] for p in preference if p in GPU_PROVIDERS and PROVIDERS[p] in available]
    if not gpu:
        wanted = [PROVIDERS[p] for p in preference if p in GPU_PROVIDERS]
        raise ValueError(
            f"onnxruntime has none of {wanted or 'no GPU provider is configured'} (it has {list(available)}); "
            "install emoserve[onnx-gpu] for the CUDA and TensorRT providers"
        )
    return gpu + ([PROVIDERS["cpu"]] if "cpu" in preference else [])


def session_options(threads: int) -> Any:
    """Session options, set deliberately for a serving process.

    * all graph optimisations (constant folding, fusions, layout changes), done once at load;
    * sequential execution with one inter-op thread: the graphs are chains, parallel branches buy nothing;
    * ``threads`` intra-op threads (0 = one per physical core), not spinning between batches: the same cores
      serve gRPC, and a spinning pool would burn them while the stage waits for work;
    * no memory pattern: shapes change with every batch, so a plan made for one shape is rarely reused (the
      arena still recycles blocks);
    * warnings and errors only in the log.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 2
    return options


def provider_options(provider: str, device_id: int, stream: int | None, cache_dir: Path) -> dict[str, Any]:
    """Options of one provider: the device and the torch stream for GPU providers; TensorRT's engine cache."""
    if provider == PROVIDERS["cpu"]:
        return {}
    options: dict[str, Any] = {"device_id": device_id}
    if stream is not None:
        options["user_compute_stream"] = str(stream)
    if provider == PROVIDERS["tensorrt"]:
        options.update(
            trt_engine_cache_enable=True,
            trt_engine_cache_path=str(cache_dir / "onnxruntime-tensorrt"),
            trt_timing_cache_enable=True,
            trt_timing_cache_path=str(cache_dir / "onnxruntime-tensorrt"),
        )
    return options


class OnnxRuntimeGraph:
    """One exported graph in an ONNX Runtime session.

    Args:
        path: the ``.onnx`` file (an :mod:`emoserve.engines.onnx_export` export).
        spec: its inputs and outputs.
        device: ``cpu`` or ``cuda[:N]``; inputs are moved there, outputs are allocated there.
        providers: provider preference (config names, see :func:`choose_providers`).
        threads: intra-op threads (0 = ONNX Runtime's default).
        cache_dir: where the TensorRT provider caches its engines.

    Raises:
        ValueError: no usable provider, or the file's inputs are not the spec's.
    """

    def __init__(
        self,
        path: str | Path,
        spec: GraphSpec,
        device: str | torch.device = "cpu",
        providers: Sequence[str] = ("cuda", "tensorrt", "cpu"),
        threads: int = 0,
        cache_dir: str | Path = "",
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        chosen = choose_providers(providers, ort.get_available_providers(), self.device.type)
        self.stream = torch.cuda.current_stream(self.device) if on_cuda else None
        if self.device.index is not None:
            self.device_id = self.device.index
        else:
            self.device_id = torch.cuda.current_device() if on_cuda else 0
        cache = Path(cache_dir).expanduser()
        stream_ptr = self.stream.cuda_stream if self.stream is not None else None
        self.session = ort.InferenceSession(
            str(path),
            sess_options=session_options(threads),
            providers=chosen,
            provider_options=[provider_options(p, self.device_id, stream_ptr, cache) for p in chosen],
        )
        names = [i.name for i in self.session.get_inputs()]
        if names != [s.name for s in spec.inputs]:
            expected = [s.name for s in spec.inputs]
            raise ValueError(f"{path}: inputs {names} are not those of the {spec.graph} graph {expected}")
        meta = self.session.get_modelmeta().custom_metadata_map
        self.float_dtype = torch.float16 if meta.get("emoserve.precision") == "fp16" else torch.float32
        self.bounds: dict[str, tuple[int, int | None]] = {
            axis: (1, int(meta[f"emoserve.max_{axis}"]) if f"emoserve.max_{axis}" in meta else None) for axis in AXES
        }
        """Smallest and largest size per axis (None: unbounded); acoustic graphs end at their positional table."""
        self.providers = tuple(self.session.get_providers())
        self.name = "onnxruntime+" + next(k for k, v in PROVIDERS.items() if v == self.providers[0])
        self._run_options = ort.RunOptions()
        if on_cuda:  # the caller's stream orders what follows; no device-wide wait after each run
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def dtype(self, spec: IOSpec) -> torch.dtype:
        """The torch dtype of an input or output."""
        return {"float": self.float_dtype, "float32": torch.float32, "int64": torch.int64}[spec.dtype]

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Runs the graph; inputs are converted to the graph's dtypes and device, outputs are new tensors there.

        Raises:
            ValueError: inputs that do not fit the spec (names, ranks, fixed sizes, inconsistent axes).
        """
        sizes = self.spec.axis_sizes({name: tuple(t.shape) for name, t in inputs.items()})
        binding = self.session.io_binding()
        bound = []
        for spec in self.spec.inputs:
            tensor = inputs[spec.name].to(self.device, self.dtype(spec)).contiguous()
            bound.append(tensor)
            binding.bind_input(spec.name, self.device.type, self.device_id, _NUMPY[tensor.dtype],
                               tuple(tensor.shape), tensor.data_ptr())
        outputs = {}
        for spec in self.spec.outputs:
            out = torch.empty(spec.shape(sizes), dtype=self.dtype(spec), device=self.device)
            outputs[spec.name] = out
            bound.append(out)
            binding.bind_output(spec.name, self.device.type, self.device_id, _NUMPY[out.dtype], tuple(out.shape),
                                out.data_ptr())
        caller = torch.cuda.current_stream(self.device) if self.stream is not None else None
        if caller is not None and caller != self.stream:
            self.stream.wait_stream(caller)
            for tensor in bound:  # their memory must outlive the session's work on its stream
                tensor.record_stream(self.stream)
        self.session.run_with_iobinding(binding, self._run_options)
        if caller is not None and caller != self.stream:
            caller.wait_stream(self.stream)
        return outputs

    def warmup_sizes(self) -> list[dict[str, int]]:
        """Axis sizes to run once before serving (ONNX Runtime plans and allocates on first use)."""
        return [{"batch": 1, "tokens": 16, "frames": 32}]
