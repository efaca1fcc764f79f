"""ONNX QuantizeLinear / DequantizeLinear semantics in numpy, bit-exact with ``onnx.reference``.

Formulas (ONNX opset 21, saturating integer types)::

    quantize(x)   = saturate(round_half_to_even(x / scale) + zero_point)   # x / scale in float32
    dequantize(q) = (q - zero_point) * scale                               # float32 result

Quantization parameters follow onnxruntime's ``quant_utils.compute_scale_zp``: the range is first
widened to include 0 (so 0 is exactly representable), unsigned types are asymmetric
(``scale = (hi - lo) / (qmax - qmin)``, ``zp = round(qmin - lo / scale)``), signed types are
symmetric (``zp = 0``, ``scale = max(|lo|, |hi|) / qmax``, e.g. ``/127`` for S8). Scales are
computed in float64 and stored as float32, like onnxruntime.

Example:
    >>> s, z = qparams(-1.0, 3.0, "U8")
    >>> [round(float(v), 4) for v in fake_quant(np.array([0.0, 1.0, 5.0]), s, z, "U8")]
    [0.0, 1.0039, 2.9961]
"""

from __future__ import annotations

import numpy as np

from axnb.types import QType, parse_enum

_RANGES = {QType.U8: (0, 255), QType.S8: (-128, 127), QType.S4: (-8, 7), QType.U16: (0, 65535),
           QType.S16: (-32768, 32767)}
# NOTE: numpy has no 4-bit integer: S4 values are held in int8 and written as ONNX INT4 (ml_dtypes,
# a dependency of onnx) only in the exported model (axnb.qdq).
_DTYPES = {QType.U8: np.uint8, QType.S8: np.int8, QType.S4: np.int8, QType.U16: np.uint16,
           QType.S16: np.int16}
# NOTE: onnxruntime's choice for a degenerate range (an all-zero tensor): any scale represents
# it exactly, and 1.0 keeps values seen later (other data) representable instead of saturating.
DEGENERATE_SCALE = 1.0
_TINY = float(np.finfo(np.float32).tiny)


def _qtype(qtype) -> QType:
    q = parse_enum(QType, qtype, "qtype")
    if q.is_float:
        raise ValueError(f"{q} is a float type: it has no integer range or quantization "
                         "parameters (use U8, S8, U16 or S16)")
    return q


def qrange(qtype) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of a quantized type.

    Example:
        >>> qrange("S8"), qrange("U16"), qrange("S4")
        ((-128, 127), (0, 65535), (-8, 7))
    """
    return _RANGES[_qtype(qtype)]


def np_dtype(qtype) -> np.dtype:
    """The numpy dtype storing a quantized type.

    Example:
        >>> np_dtype("S16")
        dtype('int16')
    """
    return np.dtype(_DTYPES[_qtype(qtype)])


def qparams(lo, hi, qtype) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point for the range ``[lo, hi]`` (scalars or per-channel arrays).

    The range is widened to include 0. Unsigned types are asymmetric, signed types symmetric
    (``zp = 0``). A degenerate range (``lo == hi == 0``, or a scale below the smallest normal
    float32) gets ``scale = 1.0, zp = 0``, like onnxruntime.

    Args:
        lo: lower end(s) of the range.
        hi: upper end(s) of the range.
        qtype: U8, S8, U16 or S16.

    Returns:
        ``(scale, zero_point)``: float32 and the qtype's dtype, shaped like ``lo``/``hi``.

    Raises:
        ValueError: NaN/inf in the range, ``lo > hi``, or a float qtype.

    Example:
        >>> s, z = qparams(0.0, 2.55, "U8"); float(s), int(z)
        (0.009999999776482582, 0)
        >>> s, z = qparams([-1.0, -0.5], [0.5, 2.0], "S8"); s.tolist(), z.tolist()
        ([0.007874015718698502, 0.015748031437397003], [0, 0])
    """
    q = _qtype(qtype)
    qmin, qmax = _RANGES[q]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError(f"quantization range must be finite, got lo={lo}, hi={hi}")
    if np.any(lo > hi):
        raise ValueError(f"quantization range has lo > hi: lo={lo}, hi={hi}")
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if q.signed:
        scale = np.maximum(-lo, hi) / qmax
        zp = np.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.clip(np.rint(qmin - lo / scale), qmin, qmax)
    bad = scale < _TINY
    scale = np.where(bad, DEGENERATE_SCALE, scale).astype(np.float32)
    zp = np.where(bad, 0, zp).astype(_DTYPES[q])
    return scale, zp


def weight_qparams(w, qtype=QType.S8, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel parameters of a weight: symmetric for signed types (the default).

    Args:
        w: the weight.
        qtype: the weight type (S8 by default).
        axis: the output-channel axis: 0 for Conv ``[O, I, kh, kw]`` and Gemm with
            ``transB=1``; pass 1 for MatMul ``[in, out]`` weights.

    Returns:
        ``(scale[C], zero_point[C])``.

    Example:
        >>> w = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
        >>> weight_qparams(w)[0].tolist()
        [0.015748031437397003, 0.003937007859349251]
    """
    w = np.asarray(w)
    axes = tuple(i for i in range(w.ndim) if i != axis % max(w.ndim, 1))
    return qparams(w.min(axis=axes), w.max(axis=axes), qtype)


def bias_qparams(s_in, s_w) -> tuple[np.ndarray, np.ndarray]:
    """Bias parameters of Conv/Gemm: ``scale = s_in * s_w`` (float32), int32 zero point 0.

    Example:
        >>> s, z = bias_qparams(np.float32(0.5), np.array([0.25, 0.125], np.float32))
        >>> s.tolist(), z.dtype.name
        ([0.125, 0.0625], 'int32')
    """
    scale = np.asarray(s_in, np.float32) * np.asarray(s_w, np.float32)
    return scale, np.zeros(scale.shape, np.int32)


def _along(v: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a per-channel vector to broadcast along ``axis`` (as ONNX's ``axis`` does)."""
    if v.size == 1:
        return v.reshape(())
    if axis is None:
        raise ValueError(f"per-channel parameters ({v.size} values) need an axis")
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def quantize(x, scale, zp, qtype, axis: int | None = None) -> np.ndarray:
    """``saturate(round_half_to_even(x / scale) + zp)``, computed in float32 like ONNX.

    NaN inputs map to qmin (ONNX leaves them undefined).

    Args:
        x: float input (cast to float32).
        scale: scalar or per-channel float32 scale.
        zp: scalar or per-channel zero point.
        qtype: U8, S8, U16 or S16 (the output dtype).
        axis: the channel axis of per-channel parameters.

    Returns:
        Integer ndarray of the qtype's dtype, shaped like ``x``.

    Example:
        >>> quantize(np.array([0.5, 1.5, -9.0, 300.0], np.float32), 1.0, 0, "U8").tolist()
        [0, 2, 0, 255]
    """
    q = _qtype(qtype)
    qmin, qmax = _RANGES[q]
    x = np.asarray(x, np.float32)
    s = _along(np.asarray(scale, np.float32), x.ndim, axis)
    z = _along(np.asarray(zp).astype(np.int32), x.ndim, axis)
    r = np.rint(x / s)
    # NOTE: clip before the integer cast: the cast of values beyond int32 is undefined in
    # numpy, and the bounds qmin - zp, qmax - zp are exact in float32. fmax/fmin (not clip)
    # also send NaN to a bound instead of an undefined cast.
    r = np.fmin(np.fmax(r, (qmin - z).astype(np.float32)), (qmax - z).astype(np.float32))
    return (r.astype(np.int32) + z).astype(_DTYPES[q])


def dequantize(q, scale, zp, axis: int | None = None) -> np.ndarray:
    """``(q - zp) * scale`` as float32, bit-exact with ONNX DequantizeLinear.

    Example:
        >>> dequantize(np.array([0, 128, 255], np.uint8), 0.5, 128).tolist()
        [-64.0, 0.0, 63.5]
    """
    q = np.asarray(q)
    s = _along(np.asarray(scale, np.float32), q.ndim, axis)
    z = _along(np.asarray(zp), q.ndim, axis)
    # NOTE: float64 is exact for q - zp and for the float32 product, so one final rounding to
    # float32 equals ONNX's float32 arithmetic (and its float64 promotion for int32 biases).
    d = q.astype(np.float32).astype(np.float64) - z.astype(np.float64)
    return (d * s.astype(np.float64)).astype(np.float32)


def fake_quant(x, scale, zp, qtype, axis: int | None = None) -> np.ndarray:
    """``dequantize(quantize(x))``: the float values the quantized model computes with.

    Example:
        >>> fake_quant(np.array([0.26, 7.0], np.float32), 0.5, 0, "S8").tolist()
        [0.5, 7.0]
    """
    return dequantize(quantize(x, scale, zp, qtype, axis), scale, zp, axis)
