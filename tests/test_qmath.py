"""qmath against the oracle: onnx.reference running one QuantizeLinear/DequantizeLinear node."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from axnb import qmath
from axnb.errors import ConfigError
from axnb.types import QType

INT_TYPES = [QType.U8, QType.S8, QType.U16, QType.S16]
ONNX_TYPE = {QType.U8: TensorProto.UINT8, QType.S8: TensorProto.INT8,
             QType.U16: TensorProto.UINT16, QType.S16: TensorProto.INT16}


def _run(op: str, x, scale, zp, axis: int | None, in_type: int, out_type: int):
    """Run one opset-21 QuantizeLinear/DequantizeLinear node with onnx.reference."""
    kw = {} if axis is None else {"axis": axis}
    node = helper.make_node(op, ["x", "s", "z"], ["y"], **kw)
    zt = out_type if op == "QuantizeLinear" else in_type
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", in_type, None),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", zt, None)],
        [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return ReferenceEvaluator(model).run(None, {"x": x, "s": scale, "z": zp})[0]


def _ref_quantize(x, scale, zp, q: QType, axis=None):
    return _run("QuantizeLinear", x, scale, zp, axis, TensorProto.FLOAT, ONNX_TYPE[q])


def _ref_dequantize(v, scale, zp, axis=None, in_type=None):
    return _run("DequantizeLinear", v, scale, zp, axis, in_type, TensorProto.FLOAT)


def _data(rng, shape, scale, q: QType) -> np.ndarray:
    """Random values with exact .5 ties (on a power-of-two scale), saturating values, signs."""
    qmin, qmax = qmath.qrange(q)
    x = rng.uniform(2 * qmin - 10, 2 * qmax + 10, size=shape).astype(np.float32)
    ties = (rng.integers(qmin - 5, qmax + 5, size=shape) + 0.5).astype(np.float32)
    pick = rng.random(shape) < 0.4
    x = np.where(pick, ties, x) * np.float32(scale)
    x.flat[:6] = [0.0, -0.0, 0.5 * scale, -0.5 * scale, 1.5 * scale, -2.5 * scale]
    return x.astype(np.float32)


def _zero_points(rng, q: QType, n: int) -> np.ndarray:
    qmin, qmax = qmath.qrange(q)
    zp = rng.integers(qmin, qmax + 1, size=n)
    zp[0] = qmin if q.signed else qmax  # negative (signed) and extreme zero points
    return zp.astype(qmath.np_dtype(q))


@pytest.mark.parametrize("q", INT_TYPES)
@pytest.mark.parametrize("scale", [0.25, 1.0, 0.1, 3.7e-3])
def test_quantize_per_tensor_matches_reference(q, scale):
    rng = np.random.default_rng(int(scale * 1000) + len(q.value))
    x = _data(rng, (3, 5, 7), scale, q)
    s = np.float32(scale)
    for zp in _zero_points(rng, q, 4):
        got = qmath.quantize(x, s, zp, q)
        want = _ref_quantize(x, s, zp, q)
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)


@pytest.mark.parametrize("q", INT_TYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_channel_matches_reference(q, axis):
    rng = np.random.default_rng(7)
    shape = (4, 6, 5)
    c = shape[axis]
    scales = np.array([0.25, 0.5, 2.0, 0.1, 0.037, 1.0][:c], np.float32)
    x = _data(rng, shape, 1.0, q)
    bshape = [1, 1, 1]
    bshape[axis] = c
    x = (x * scales.reshape(bshape)).astype(np.float32)
    zp = _zero_points(rng, q, c)
    got = qmath.quantize(x, scales, zp, q, axis=axis)
    want = _ref_quantize(x, scales, zp, q, axis=axis)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("q", INT_TYPES)
def test_dequantize_matches_reference(q):
    rng = np.random.default_rng(3)
    qmin, qmax = qmath.qrange(q)
    v = rng.integers(qmin, qmax + 1, size=(4, 3, 5)).astype(qmath.np_dtype(q))
    v.flat[:2] = [qmin, qmax]
    for s, zp in [(np.float32(0.1), _zero_points(rng, q, 1)[0]),
                  (np.float32(3.3e-5), qmath.np_dtype(q).type(qmin // 2))]:
        got = qmath.dequantize(v, s, zp)
        want = _ref_dequantize(v, s, zp, in_type=ONNX_TYPE[q])
        assert got.dtype == np.float32 and np.array_equal(got, want)
    scales = np.array([0.1, 1.7, 2.0**-9], np.float32)
    zps = _zero_points(rng, q, 3)
    got = qmath.dequantize(v, scales, zps, axis=1)
    assert np.array_equal(got, _ref_dequantize(v, scales, zps, axis=1, in_type=ONNX_TYPE[q]))


def test_dequantize_int32_bias_matches_reference():
    rng = np.random.default_rng(4)
    v = rng.integers(-(2**31), 2**31 - 1, size=50, dtype=np.int64).astype(np.int32)
    s = np.float32(1.3e-4)
    zp = np.int32(0)
    assert np.array_equal(qmath.dequantize(v, s, zp),
                          _ref_dequantize(v, s, zp, in_type=TensorProto.INT32))


@pytest.mark.parametrize("q", INT_TYPES)
def test_fake_quant_is_dequantize_of_quantize(q):
    rng = np.random.default_rng(5)
    x = rng.normal(size=100).astype(np.float32) * 3
    s, zp = qmath.qparams(x.min(), x.max(), q)
    want = _ref_dequantize(_ref_quantize(x, s, zp, q), s, zp, in_type=ONNX_TYPE[q])
    assert np.array_equal(qmath.fake_quant(x, s, zp, q), want)


def test_quantize_rounds_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], np.float32) * np.float32(0.25)
    assert qmath.quantize(x, 0.25, 0, "S8").tolist() == [0, 2, 2, 0, -2, -2]
    assert qmath.quantize(x, 0.25, 100, "U8").tolist() == [100, 102, 102, 100, 98, 98]


def test_quantize_saturates_beyond_int32_and_maps_nan_to_qmin():
    x = np.array([1e30, -1e30, np.inf, -np.inf, np.nan], np.float32)
    assert qmath.quantize(x, 1e-3, 10, "U8").tolist() == [255, 0, 255, 0, 0]
    assert qmath.quantize(x, 1e-3, -3, "S16").tolist() == [32767, -32768, 32767, -32768, -32768]


@pytest.mark.parametrize("q", INT_TYPES)
def test_qparams_properties(q):
    rng = np.random.default_rng(11)
    qmin, qmax = qmath.qrange(q)
    lo = -np.abs(rng.normal(size=200)) * 10.0 ** rng.uniform(-4, 4, 200)
    hi = np.abs(rng.normal(size=200)) * 10.0 ** rng.uniform(-4, 4, 200)
    lo[:3], hi[3:6] = 0.0, 0.0  # one-sided ranges
    s, zp = qmath.qparams(lo, hi, q)
    assert s.dtype == np.float32 and zp.dtype == qmath.np_dtype(q) and s.shape == (200,)
    assert np.all(s > 0) and np.all(np.isfinite(s))
    sd = s.astype(np.float64)
    # 0 is exactly representable
    assert np.array_equal(qmath.quantize(np.zeros(200), s, zp, q, axis=0), zp)
    assert np.all(qmath.fake_quant(np.zeros(200), s, zp, q, axis=0) == 0.0)
    # the representable range covers [lo, hi] to half a step
    a = (qmin - zp.astype(np.float64)) * sd
    b = (qmax - zp.astype(np.float64)) * sd
    tol = sd * (0.5 + 1e-4)
    assert np.all(a <= lo + tol) and np.all(b >= hi - tol)
    if q.signed:
        assert np.all(zp == 0)
        assert np.allclose(sd, np.maximum(-lo, hi) / qmax, rtol=1e-7)
    else:
        assert np.allclose(sd, (hi - lo) / (qmax - qmin), rtol=1e-7)


def test_qparams_matches_onnxruntime_compute_scale_zp():
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    rng = np.random.default_rng(12)
    for q, qmin, qmax, sym in [(QType.U8, np.uint8(0), np.uint8(255), False),
                               (QType.S8, np.int8(-127), np.int8(127), True),
                               (QType.U16, np.uint16(0), np.uint16(65535), False)]:
        for _ in range(50):
            lo, hi = np.float32(-abs(rng.normal()) * 5), np.float32(abs(rng.normal()) * 5)
            zo, so = compute_scale_zp(lo, hi, qmin, qmax, symmetric=sym)
            s, z = qmath.qparams(lo, hi, q)
            assert s == so and int(z) == int(zo)


@pytest.mark.parametrize("q", INT_TYPES)
def test_degenerate_range_gives_valid_nonzero_scale(q):
    for lo, hi in [(0.0, 0.0), (-1e-45, 0.0), (0.0, 1e-42)]:
        s, zp = qmath.qparams(lo, hi, q)
        assert np.isfinite(s) and s == qmath.DEGENERATE_SCALE and zp == 0
        assert qmath.fake_quant(np.zeros(3, np.float32), s, zp, q).tolist() == [0.0] * 3
    s, zp = qmath.qparams(3.0, 3.0, q)  # constant tensor: range widened to [0, 3]
    assert s > 0 and qmath.fake_quant(np.float32(3.0), s, zp, q) == pytest.approx(3.0, rel=1e-2)


@pytest.mark.parametrize("lo,hi", [(np.nan, 1.0), (-1.0, np.inf), (-np.inf, 0.0), (2.0, 1.0)])
def test_qparams_rejects_bad_ranges(lo, hi):
    with pytest.raises(ValueError):
        qmath.qparams(lo, hi, "U8")


def test_qrange_dtype_and_bad_types():
    assert [qmath.qrange(q) for q in INT_TYPES] == [(0, 255), (-128, 127), (0, 65535),
                                                     (-32768, 32767)]
    assert [qmath.np_dtype(q).name for q in INT_TYPES] == ["uint8", "int8", "uint16", "int16"]
    with pytest.raises(ValueError, match="float type"):
        qmath.qrange("FP32")
    with pytest.raises(ConfigError, match="did you mean"):
        qmath.qrange("U9")


def test_weight_and_bias_qparams():
    rng = np.random.default_rng(13)
    w = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    s, zp = qmath.weight_qparams(w)
    absmax = np.abs(w).reshape(8, -1).max(axis=1)
    assert s.shape == (8,) and np.all(zp == 0) and zp.dtype == np.int8
    assert np.array_equal(s, (absmax.astype(np.float64) / 127).astype(np.float32))
    q = qmath.quantize(w, s, zp, "S8", axis=0)
    assert np.abs(q.reshape(8, -1)).max(axis=1).tolist() == [127] * 8
    wm = rng.normal(size=(16, 4)).astype(np.float32)  # MatMul [in, out]
    s1, _ = qmath.weight_qparams(wm, "S8", axis=1)
    assert np.array_equal(s1, (np.abs(wm).max(axis=0).astype(np.float64) / 127).astype(np.float32))
    bs, bz = qmath.bias_qparams(np.float32(0.02), s)
    assert bs.dtype == np.float32 and bz.dtype == np.int32 and np.all(bz == 0)
    assert np.array_equal(bs, np.float32(0.02) * s)
