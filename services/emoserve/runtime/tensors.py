"""The one tensor codec between stages: numpy/torch arrays <-> ``emoserve.v1.Tensor``.

Wire format: raw little-endian element bytes in row-major order plus dtype and
shape. Receivers describe what they accept with a :class:`TensorSpec`; every
check that bounds memory (dtype, rank, dims, element count, byte length) runs
before any array is materialised.

torch is imported lazily (only for torch inputs, bfloat16 and
:func:`decode_torch`) so torch-free processes like the gateway stay light.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from emoserve.runtime.errors import TensorValidationError
from emoserve.v1 import stages_pb2

if TYPE_CHECKING:
    import torch

_PB = stages_pb2.Tensor
# Canonical dtype name -> (wire enum, little-endian numpy dtype of the raw bytes).
# bfloat16 travels as its raw 16 bits, hence "<i2".
_DTYPES: dict[str, tuple[int, np.dtype]] = {
    "float32": (_PB.FLOAT32, np.dtype("<f4")),
    "float16": (_PB.FLOAT16, np.dtype("<f2")),
    "bfloat16": (_PB.BFLOAT16, np.dtype("<i2")),
    "int64": (_PB.INT64, np.dtype("<i8")),
    "int32": (_PB.INT32, np.dtype("<i4")),
    "int16": (_PB.INT16, np.dtype("<i2")),
}
_NAME_BY_ENUM = {enum: name for name, (enum, _) in _DTYPES.items()}
_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
_EXPONENT_BITS = {"float32": (np.dtype("<u4"), 0x7F800000), "float16": (np.dtype("<u2"), 0x7C00),
                  "bfloat16": (np.dtype("<u2"), 0x7F80)}
"""Float wire dtypes: (unsigned view of the raw bytes, exponent mask). A value is NaN or ±Inf exactly when its
exponent bits are all set."""

MAX_RANK = 8
"""Most dimensions any received tensor may have, whatever its spec."""
MAX_ELEMENTS = 1 << 26
"""Default cap on a received tensor's element count, and on each of its dimensions (a zero-sized tensor
cannot declare absurd dimensions either)."""

DimBound = Union[int, tuple[int, int], None]
"""Bound of one dimension: exact size, inclusive ``(min, max)`` range, or None (any)."""


def canonical_dtype(name: str) -> str:
    """Returns the canonical dtype name ("float32", ...) of a name or alias ("fp16", ...).

    Raises:
        ValueError: Unsupported dtype.
    """
    key = _ALIASES.get(name, name)
    if key not in _DTYPES:
        raise ValueError(f"unsupported tensor dtype {name!r}; supported: {sorted(_DTYPES) + sorted(_ALIASES)}")
    return key


@dataclass(frozen=True)
class TensorSpec:
    """What a receiver accepts for one named tensor.

    Attributes:
        name: Tensor name used in error messages, e.g. "mel".
        dtypes: Accepted dtype names (aliases allowed, e.g. ("fp16", "fp32")).
        rank: Required number of dimensions; None = any.
        max_elements: Upper bound on the element count and on every dimension.
        finite: Reject NaN/Inf in floating-point tensors.
        dims: Per-dimension bounds (length must equal ``rank``); empty = no bounds.
    """

    name: str
    dtypes: tuple[str, ...] = ("float32",)
    rank: int | None = None
    max_elements: int = MAX_ELEMENTS
    finite: bool = True
    dims: tuple[DimBound, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtypes", tuple(canonical_dtype(d) for d in self.dtypes))
        if self.dims and (self.rank is None or len(self.dims) != self.rank):
            raise ValueError(f"TensorSpec {self.name!r}: dims {self.dims!r} need rank={len(self.dims)}, got {self.rank!r}")


def _torch_module():
    """Returns torch if a torch object can exist (torch imported), else None."""
    return sys.modules.get("torch")


def encode(array: np.ndarray | torch.Tensor, dtype: str | None = None) -> stages_pb2.Tensor:
    """Serialises an array into a ``Tensor`` message.

    Args:
        array: numpy array or torch tensor (CUDA tensors are copied to host;
            non-contiguous inputs are made contiguous).
        dtype: Wire dtype name or alias ("float16", "fp16", "bf16", ...); the
            array is converted to it. None keeps the array's dtype, which must
            then be one of the supported ones (float64 is not: pass a dtype).

    Returns:
        The message with little-endian row-major data.

    Raises:
        ValueError: Unsupported dtype.
    """
    torch = _torch_module()
    if torch is not None and isinstance(array, torch.Tensor):
        name = canonical_dtype(dtype if dtype is not None else str(array.dtype).removeprefix("torch."))
        t = array.detach()
        target = getattr(torch, name)
        if t.dtype != target:
            t = t.to(target)
        t = t.cpu().contiguous()
        host = t.view(torch.int16 if name == "bfloat16" else target).numpy()
    else:
        arr = np.asarray(array)
        name = canonical_dtype(dtype if dtype is not None else arr.dtype.name)
        if name == "bfloat16":
            import torch as torch_mod

            as_bf16 = torch_mod.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(torch_mod.bfloat16)
            host = as_bf16.view(torch_mod.int16).numpy()
        else:
            host = arr
    enum, wire = _DTYPES[name]
    data = np.ascontiguousarray(host, dtype=wire).tobytes()
    return stages_pb2.Tensor(dtype=enum, shape=list(host.shape), data=data)


def _shape_text(shape: tuple[int, ...]) -> str:
    """A shape for error messages, shortened past MAX_RANK dimensions (errors never echo a huge input)."""
    if len(shape) <= MAX_RANK:
        return str(list(shape))
    return f"[{', '.join(map(str, shape[:MAX_RANK]))}, ... ({len(shape)} dims)]"


def _check_dims(spec: TensorSpec, shape: tuple[int, ...]) -> None:
    for axis, (size, bound) in enumerate(zip(shape, spec.dims)):
        if bound is None:
            continue
        lo, hi = (bound, bound) if isinstance(bound, int) else bound
        if not lo <= size <= hi:
            want = f"{lo}" if lo == hi else f"in [{lo}, {hi}]"
            raise TensorValidationError(
                f"tensor {spec.name!r}: dim {axis} is {size}, expected {want} (shape {_shape_text(shape)})"
            )


def _validated_raw(msg: stages_pb2.Tensor, spec: TensorSpec) -> tuple[str, np.ndarray]:
    """Validates ``msg`` against ``spec`` (values too, with ``spec.finite``); returns (dtype name, read-only
    raw view of the data, copied out of the message once)."""
    name = _NAME_BY_ENUM.get(msg.dtype)
    if name is None or name not in spec.dtypes:
        actual = name or (_PB.DType.Name(msg.dtype) if msg.dtype in _PB.DType.values() else f"enum value {msg.dtype}")
        raise TensorValidationError(
            f"tensor {spec.name!r}: expected dtype in {list(spec.dtypes)}, got {actual}"
        )
    shape = tuple(msg.shape)
    if spec.rank is not None and len(shape) != spec.rank:
        raise TensorValidationError(
            f"tensor {spec.name!r}: expected rank {spec.rank}, got rank {len(shape)} (shape {_shape_text(shape)})"
        )
    if len(shape) > MAX_RANK:
        raise TensorValidationError(f"tensor {spec.name!r}: rank {len(shape)} exceeds the maximum of {MAX_RANK}")
    if any(size < 0 for size in shape):
        raise TensorValidationError(f"tensor {spec.name!r}: negative dimension in shape {_shape_text(shape)}")
    if any(size > spec.max_elements for size in shape):
        raise TensorValidationError(
            f"tensor {spec.name!r}: dimension beyond max_elements={spec.max_elements} in shape {_shape_text(shape)}"
        )
    _check_dims(spec, shape)
    count = math.prod(shape)
    if count > spec.max_elements:
        raise TensorValidationError(
            f"tensor {spec.name!r}: {count} elements (shape {_shape_text(shape)}) exceeds max_elements={spec.max_elements}"
        )
    wire = _DTYPES[name][1]
    data = msg.data  # each read of a bytes field copies it out of the message
    if len(data) != count * wire.itemsize:
        raise TensorValidationError(
            f"tensor {spec.name!r}: data is {len(data)} bytes but shape {_shape_text(shape)} of {name} "
            f"needs {count * wire.itemsize} bytes"
        )
    raw = np.frombuffer(data, dtype=wire).reshape(shape)
    if spec.finite:
        _check_finite(spec, name, raw)
    return name, raw


def _check_finite(spec: TensorSpec, name: str, raw: np.ndarray) -> None:
    """Rejects NaN/Inf in a float tensor's raw wire view, by its exponent bits (integer work only: no float
    conversion, and no torch CPU op with its thread-pool wake-ups on the event loop)."""
    if name not in _EXPONENT_BITS:
        return
    unsigned, mask = _EXPONENT_BITS[name]
    bad = int(np.count_nonzero((raw.view(unsigned) & mask) == mask))
    if bad:
        raise TensorValidationError(f"tensor {spec.name!r}: {bad} non-finite value(s) (NaN/Inf) of {raw.size}")


def decode(msg: stages_pb2.Tensor, spec: TensorSpec) -> np.ndarray:
    """Validates and deserialises a ``Tensor`` into a numpy array.

    Args:
        msg: The received message.
        spec: What the receiver accepts.

    Returns:
        A read-only view of ``msg.data`` (read from the message once) in native byte order, except
        for bfloat16, which numpy lacks: it is widened to a new float32 array.
        Copy it before modifying in place.

    Raises:
        TensorValidationError: The message violates ``spec``; the message names
            the tensor and the expected vs actual dtype/rank/shape/size/values.
    """
    name, raw = _validated_raw(msg, spec)
    if name == "bfloat16":
        return (raw.astype("=i2").view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.astype(raw.dtype.newbyteorder("="), copy=False)


def decode_torch(
    msg: stages_pb2.Tensor, spec: TensorSpec, device: str | torch.device | None = None
) -> torch.Tensor:
    """Validates and deserialises a ``Tensor`` into a torch tensor (bfloat16 kept as is).

    Args:
        msg: The received message.
        spec: What the receiver accepts.
        device: Device to place the tensor on (default: CPU).

    Returns:
        A new, writable tensor of the wire dtype.

    Raises:
        TensorValidationError: The message violates ``spec``.
    """
    import torch

    name, raw = _validated_raw(msg, spec)
    if name == "bfloat16":
        tensor = torch.from_numpy(raw.astype("=i2")).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(raw.astype(raw.dtype.newbyteorder("="), copy=True))
    return tensor if device is None else tensor.to(device)
