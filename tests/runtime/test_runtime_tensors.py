"""The tensor codec: round trips for every dtype and every validation failure."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from emoserve.runtime import TensorSpec, TensorValidationError, decode, decode_torch, encode
from emoserve.v1 import stages_pb2

ALL_DTYPES = ("float32", "float16", "bfloat16", "int64", "int32")


def sample(dtype: str) -> torch.Tensor:
    """Values exactly representable in every dtype (small integers and halves)."""
    values = torch.arange(-12, 12, dtype=torch.float32).reshape(2, 3, 4) / 2
    return values.to(getattr(torch, dtype)) if dtype.startswith(("float", "bfloat")) else values.round().to(getattr(torch, dtype))


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_torch_round_trip_preserves_values_dtype_and_shape(dtype: str) -> None:
    x = sample(dtype)
    msg = encode(x)
    assert list(msg.shape) == [2, 3, 4]
    back = decode_torch(msg, TensorSpec("x", (dtype,), rank=3))
    assert back.dtype == x.dtype and torch.equal(back, x)
    back[0, 0, 0] = 1  # writable


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_numpy_round_trip_matches_torch_encoding(dtype: str) -> None:
    x = sample(dtype)
    as_numpy = x.float().numpy() if dtype == "bfloat16" else x.numpy()
    msg = encode(as_numpy, dtype)
    assert msg == encode(x)
    back = decode(msg, TensorSpec("x", (dtype,), rank=3))
    np.testing.assert_array_equal(back, as_numpy)
    assert back.dtype == (np.float32 if dtype == "bfloat16" else as_numpy.dtype)


def test_encode_converts_to_requested_dtype_with_aliases() -> None:
    msg = encode(torch.ones(5), "fp16")
    assert msg.dtype == stages_pb2.Tensor.FLOAT16 and len(msg.data) == 10
    assert encode(np.ones(3, dtype=np.float64), "fp32").dtype == stages_pb2.Tensor.FLOAT32


def test_encode_rejects_unsupported_dtype_without_explicit_target() -> None:
    with pytest.raises(ValueError, match="unsupported tensor dtype 'float64'"):
        encode(np.ones(3))


def test_wire_format_is_little_endian_row_major() -> None:
    assert encode(np.array([1, 2], dtype=">i4")).data == b"\x01\x00\x00\x00\x02\x00\x00\x00"
    transposed = np.arange(6, dtype=np.int32).reshape(2, 3).T  # non-contiguous
    back = decode(encode(transposed), TensorSpec("t", ("int32",), rank=2))
    np.testing.assert_array_equal(back, transposed)


def test_scalar_tensor_round_trips() -> None:
    back = decode(encode(np.float32(2.5)), TensorSpec("s", rank=0))
    assert back.shape == () and back == 2.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_is_copied_to_host() -> None:
    x = torch.randn(4, 4, device="cuda")
    assert torch.equal(decode_torch(encode(x), TensorSpec("x", rank=2)), x.cpu())


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), elements=st.floats(-1e6, 1e6, width=32)))
def test_float32_round_trip_is_exact(array: np.ndarray) -> None:
    np.testing.assert_array_equal(decode(encode(array), TensorSpec("a")), array)


def spec(**kw: object) -> TensorSpec:
    return TensorSpec("mel", **{"dtypes": ("float16", "float32"), "rank": 2, **kw})


def mel_msg(shape: tuple[int, ...] = (80, 10), dtype: str = "float16") -> stages_pb2.Tensor:
    return encode(np.zeros(shape, dtype=np.float32), dtype)


@pytest.mark.parametrize(
    ("msg", "tensor_spec", "message"),
    [
        (mel_msg(dtype="int32"), spec(), r"tensor 'mel': expected dtype in \['float16', 'float32'\], got int32"),
        (stages_pb2.Tensor(shape=[1], data=b"\0\0"), spec(rank=1), "got DTYPE_UNSPECIFIED"),
        (stages_pb2.Tensor(dtype=99, shape=[1], data=b"\0\0"), spec(rank=1), "got enum value 99"),
        (mel_msg((1, 80, 10)), spec(), r"expected rank 2, got rank 3 \(shape \[1, 80, 10\]\)"),
        (mel_msg((81, 10)), spec(dims=(80, None)), r"dim 0 is 81, expected 80"),
        (mel_msg((80, 10)), spec(dims=(80, (20, 4000))), r"dim 1 is 10, expected in \[20, 4000\]"),
        (mel_msg((80, 10)), spec(max_elements=100), r"800 elements \(shape \[80, 10\]\) exceeds max_elements=100"),
        (stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[80, 10], data=b"\0" * 1599), spec(),
         r"data is 1599 bytes but shape \[80, 10\] of float16 needs 1600 bytes"),
        (stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[-1, 2], data=b""), spec(), "negative dimension"),
        (stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[1] * 9, data=b"\0\0"), spec(rank=None),
         "rank 9 exceeds the maximum of 8"),
        (stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[0, 1 << 40], data=b""), spec(),
         r"dimension beyond max_elements=67108864 in shape \[0, 1099511627776\]"),
        (stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT16, shape=[3] * 100_000, data=b""), spec(),
         r"got rank 100000 \(shape \[3, 3, 3, 3, 3, 3, 3, 3, \.\.\. \(100000 dims\)\]\)$"),
    ],
    ids=["dtype", "unspecified-dtype", "unknown-dtype", "rank", "exact-dim", "dim-range", "max-elements", "byte-size",
         "negative-dim", "max-rank", "default-dim-cap", "long-shape-shortened"],
)
def test_violations_raise_tensor_validation_error_naming_expected_and_actual(
    msg: stages_pb2.Tensor, tensor_spec: TensorSpec, message: str
) -> None:
    with pytest.raises(TensorValidationError, match=message):
        decode(msg, tensor_spec)
    with pytest.raises(TensorValidationError, match=message):
        decode_torch(msg, tensor_spec)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_are_rejected(dtype: str, bad: float) -> None:
    msg = encode(torch.tensor([0.0, bad, 1.0]), dtype)
    finite_spec = TensorSpec("audio", (dtype,), rank=1)
    with pytest.raises(TensorValidationError, match=r"tensor 'audio': 1 non-finite value\(s\) \(NaN/Inf\) of 3"):
        decode(msg, finite_spec)
    with pytest.raises(TensorValidationError, match="non-finite"):
        decode_torch(msg, finite_spec)
    lenient = TensorSpec("audio", (dtype,), rank=1, finite=False)
    assert decode_torch(msg, lenient).isfinite().sum() == 2


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_extreme_finite_floats_are_accepted(dtype: str) -> None:
    info = torch.finfo(getattr(torch, dtype))
    values = torch.tensor([info.max, -info.max, info.tiny, info.tiny / 4, -0.0, 0.0], dtype=getattr(torch, dtype))
    msg = encode(values)
    spec = TensorSpec("audio", (dtype,), rank=1)
    assert torch.equal(decode_torch(msg, spec), values)
    assert np.array_equal(decode(msg, spec), values.float().numpy())


def test_huge_declared_shape_is_rejected_before_allocating() -> None:
    msg = stages_pb2.Tensor(dtype=stages_pb2.Tensor.FLOAT32, shape=[1 << 30, 1 << 30], data=b"\0" * 8)
    t0 = time.perf_counter()
    with pytest.raises(TensorValidationError, match="bytes but shape"):
        decode(msg, TensorSpec("x", rank=2, max_elements=1 << 62))
    assert time.perf_counter() - t0 < 0.5


def test_spec_rejects_dims_inconsistent_with_rank_and_unknown_dtypes() -> None:
    with pytest.raises(ValueError, match="dims"):
        TensorSpec("x", rank=1, dims=(1, 2))
    with pytest.raises(ValueError, match="unsupported tensor dtype 'complex64'"):
        TensorSpec("x", ("complex64",))
