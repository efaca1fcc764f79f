"""Observers: exact streaming/merging, and each range method against an oracle on raw data."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest

from axnb import qmath
from axnb.errors import DataError
from axnb.observers import Observer, expected_sq_error, mse_candidates
from axnb.types import QType

METHODS = ["MinMax", "Percentile", "MSE", "KL"]
QTYPES = [QType.U8, QType.S8, QType.U16]


def _observe(x, **kw) -> Observer:
    o = Observer(**kw)
    o.observe(x)
    return o


def _same(a: Observer, b: Observer) -> None:
    """Bit-for-bit equality of two observers' state and of every range they give."""
    da, db = a.to_arrays(), b.to_arrays()
    assert da.keys() == db.keys()
    for k in da:
        assert np.array_equal(da[k], db[k]), k
    for m in METHODS:
        for q in QTYPES:
            assert a.range(m, q) == b.range(m, q), (m, q)


def _laplace_outliers(n, seed, outliers=3, factor=100.0):
    rng = np.random.default_rng(seed)
    x = rng.laplace(size=n).astype(np.float32)
    x[:outliers] = factor * rng.choice([-1.0, 1.0], outliers) * rng.uniform(0.5, 1, outliers)
    return x


def _raw_mse(x, lo, hi, q, chunk=32) -> np.ndarray:
    """Quantize-dequantize MSE of x for each candidate range, on the raw data."""
    out = []
    for i in range(0, len(lo), chunk):
        s, z = qmath.qparams(lo[i:i + chunk], hi[i:i + chunk], q)
        err = qmath.fake_quant(np.broadcast_to(x, (len(s), x.size)), s, z, q, axis=0) - x
        out.append(np.einsum("ij,ij->i", err, err, dtype=np.float64) / x.size)
    return np.concatenate(out)


# -- binning and MinMax ------------------------------------------------------------------------
def test_minmax_and_channels_exact():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, 5, 4, 3)).astype(np.float32) * (i + 1) for i in range(4)]
    o = Observer(channel_axis=1)
    for x in xs:
        o.observe(x)
    a = np.concatenate(xs)
    assert (o.min, o.max) == (float(a.min()), float(a.max()))
    assert o.range("MinMax") == (float(a.min()), float(a.max()))
    assert np.array_equal(o.channel_min, a.min(axis=(0, 2, 3)))
    assert np.array_equal(o.channel_max, a.max(axis=(0, 2, 3)))
    assert np.array_equal(o.channel_absmax, np.abs(a).max(axis=(0, 2, 3)))
    assert o.count == a.size and o._hist.sum() == a.size
    assert _observe(np.float32([2.0, 3.0]), channel_axis=None).range() == (0.0, 3.0)
    last = _observe(a, channel_axis=-1)
    assert np.array_equal(last.channel_max, a.max(axis=(0, 1, 2)))
    assert _observe(np.ones(4), channel_axis=1).channel_min is None  # rank too low


@pytest.mark.parametrize("pos,neg,dtype", [(37.0, 37.0, np.float32), (1e-6, 1e5, np.float32),
                                           (1e30, 1e-38, np.float32), (1e-300, 1e200, np.float64)])
def test_histogram_bins_follow_the_definition(pos, neg, dtype):
    rng = np.random.default_rng(1)
    x = np.concatenate([np.abs(rng.normal(size=3000)) * pos, -np.abs(rng.normal(size=3000)) * neg])
    x = rng.permutation(x).astype(dtype)
    x[:3] = [0.0, -0.0, pos * 1e-30]
    o = _observe(x, channel_axis=None, bins=256)
    for side, v in ((0, x[x >= 0]), (1, -x[x < 0])):
        e = math.frexp(float(v.max()))[1]  # R = 2**e: the smallest power of two above the max
        assert v.max() < 2.0**e <= 2 * v.max()
        want = np.bincount(np.floor(np.ldexp(v.astype(np.float64), 8 - e)).astype(int),
                           minlength=256)
        assert np.array_equal(o._hist[side], want)


@pytest.mark.parametrize("seed", range(6))
def test_merge_and_streaming_equal_one_pass_exactly(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 7, 1000, 60_000, 200_000]))
    kind = seed % 3
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6)
    x = np.abs(x) if kind == 1 else x  # one-sided data exercises the fast paths
    x = -np.abs(x) if kind == 2 else x
    x = x.astype(np.float32)
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(1, 6))))
    parts = np.split(x, cuts)
    parts[0] = parts[0] * np.float32(1e3)  # parts (and sides) of very different magnitudes
    parts[-1] = np.where(parts[-1] > 0, parts[-1] * np.float32(1e-4), parts[-1])
    x = np.concatenate(parts)
    full = _observe(x, channel_axis=None)
    stream = Observer(channel_axis=None)
    merged = Observer(channel_axis=None)
    for p in parts:
        stream.observe(p)
        merged = merged.merge(_observe(p, channel_axis=None))
    _same(full, stream)
    _same(full, merged)
    pieces = [_observe(p, channel_axis=None) for p in parts]
    tree = pieces[0]
    for p in reversed(pieces[1:]):  # merge order does not matter
        tree = p.merge(tree)
    _same(full, tree)


def test_merge_channels_and_counts():
    rng = np.random.default_rng(2)
    a, b = (rng.normal(size=(3, 4, 5)).astype(np.float32) for _ in range(2))
    b[0, 0, 0] = np.nan
    m = _observe(a).merge(_observe(b))
    _same(m, _observe(np.concatenate([a, b])))
    assert m.nonfinite == 1 and m.count == a.size + b.size - 1
    with pytest.raises(DataError, match="different"):
        Observer(bins=1024).merge(Observer())
    with pytest.raises(DataError, match="channels"):
        _observe(a).merge(_observe(a[:, :2]))


# -- Percentile ----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [99.99, 99.9, 99.0, 90.0])
@pytest.mark.parametrize("seed", range(3))
def test_percentile_within_one_bin_of_numpy_quantile(p, seed):
    x = _laplace_outliers(50_000, seed, factor=30.0) * np.float32(10.0 ** (seed - 1))
    x = x + np.float32(seed * x.std())  # shifted distributions too
    o = _observe(x, channel_axis=None)
    lo, hi = o.range("Percentile", percentile=p)
    cut = (100 - p) / 200
    # NOTE: inverted_cdf is the definition used: the smallest x with F(x) >= q.
    q_lo, q_hi = np.quantile(x.astype(np.float64), [cut, 1 - cut], method="inverted_cdf")
    wp, wn = o._widths()
    assert abs(lo - min(q_lo, 0.0)) <= wn * 1.0001 and abs(hi - max(q_hi, 0.0)) <= wp * 1.0001


@pytest.mark.parametrize("p", [99.99, 99.9, 99.0])
@pytest.mark.parametrize("seed", range(3))
def test_percentile_agrees_with_onnxruntime_within_one_of_its_bins(p, seed):
    from onnxruntime.quantization.calibrate import HistogramCollector

    # NOTE: 40001 values: no whole-count cut, where onnxruntime's float cdf may round either way.
    x = _laplace_outliers(40_001, seed + 10, factor=20.0)
    x = (x + np.float32(seed)) * np.float32(10.0 ** (2 * seed - 2))
    hc = HistogramCollector(method="percentile", symmetric=False, num_bins=2048,
                            num_quantized_bins=128, percentile=p, scenario="same")
    with contextlib.redirect_stdout(io.StringIO()):
        hc.collect({"t": x})
        ort = hc.compute_collection_result()["t"]
    w = 2 * max(abs(float(x.min())), abs(float(x.max()))) / 2048
    lo, hi = _observe(x, channel_axis=None).range("Percentile", percentile=p)
    assert abs(lo - min(float(ort[0]), 0.0)) <= w * 1.0001
    assert abs(hi - max(float(ort[1]), 0.0)) <= w * 1.0001


# -- MSE -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [QType.U8, QType.S8, QType.U16])
@pytest.mark.parametrize("seed", range(3))
def test_mse_matches_brute_force_on_raw_data(q, seed):
    # NOTE: 50k values: with fewer, clipping rarely pays and every method is MinMax.
    x = _laplace_outliers(50_000, seed, outliers=20, factor=30.0)
    x = np.abs(x) if seed == 1 else x + np.float32(1.5 * (seed == 2))
    o = _observe(x, channel_axis=None)
    cand_lo, cand_hi = mse_candidates(*o.range("MinMax"), q, octaves=11)
    lo, hi = o.range("MSE", q)
    mine = np.flatnonzero((cand_lo == lo) & (cand_hi == hi))
    assert mine.size == 1
    if cand_lo.size > 177:
        # 2-D grid: brute force on every 8th step of each end and on both lines through ours
        i, j = np.divmod(np.arange(cand_lo.size), 177)
        keep = (i % 8 == 0) & (j % 8 == 0) | (i == i[mine]) | (j == j[mine])
        cand_lo, cand_hi = cand_lo[keep], cand_hi[keep]
    raw = _raw_mse(x, cand_lo, cand_hi, q)
    ours = _raw_mse(x, np.array([lo]), np.array([hi]), q)[0]
    best = int(np.argmin(raw))
    assert (lo, hi) == (cand_lo[best], cand_hi[best]) or ours <= raw[best] * 1.01
    if q is not QType.U16:
        assert raw[0] > 1.02 * ours  # the test data makes clipping pay


def test_expected_error_model_is_close_to_raw_error():
    x = _laplace_outliers(100_000, 5)
    o = _observe(x, channel_axis=None)
    lo, hi = mse_candidates(*o.range(), QType.U8, octaves=11)
    pick = np.arange(0, lo.size, 997)
    model = expected_sq_error(*o._signed(), lo[pick], hi[pick], QType.U8) / x.size
    raw = _raw_mse(x, lo[pick], hi[pick], QType.U8)
    assert np.allclose(model, raw, rtol=0.05)


def test_mse_beats_minmax_with_outliers_and_u16_is_wider():
    x = _laplace_outliers(100_000, 3, outliers=10, factor=100.0)
    o = _observe(x, channel_axis=None)
    mm = o.range("MinMax")
    for q in (QType.U8, QType.S8):
        r = o.range("MSE", q)
        assert mm[0] <= r[0] <= 0 <= r[1] <= mm[1]
        err = _raw_mse(x, np.array([r[0], mm[0]]), np.array([r[1], mm[1]]), q)
        assert err[0] < err[1]
    for q8, q16 in ((QType.U8, QType.U16), (QType.S8, QType.S16)):
        lo8, hi8 = o.range("MSE", q8)
        lo16, hi16 = o.range("MSE", q16)
        assert lo16 <= lo8 and hi16 >= hi8 and (lo16, hi16) != (lo8, hi8)


# -- KL ------------------------------------------------------------------------------------------
def test_kl_clips_a_single_outlier():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(100_000).astype(np.float32)
    x[0] = 1000.0
    o = _observe(x, channel_axis=None)
    lo, hi = o.range("KL", "S8")
    assert lo == o.min and np.quantile(x, 0.9999) < hi < 100.0
    assert o.range("KL", "U16") == o.range("MinMax")  # 32768 levels > bins: no candidate


def test_kl_matches_a_loop_implementation():
    from axnb.observers import _kl_threshold

    def kl_loop(h, levels, eps=1e-4):
        out = []
        for i in range(levels, h.size + 1):
            p = h[:i].astype(np.float64)
            p[-1] += h[i:].sum()
            lev = np.arange(i) * levels // i
            nz = h[:i] > 0
            qs = np.bincount(lev, weights=h[:i], minlength=levels)
            qn = np.bincount(lev, weights=nz, minlength=levels)
            q = np.where(nz, qs[lev] / np.maximum(qn[lev], 1), 0.0)
            if q.sum() == 0:
                out.append(np.inf)
                continue
            qq = np.where((q == 0) & (p > 0), eps, q) / q.sum()
            pp = p / p.sum()
            m = pp > 0
            out.append(np.sum(pp[m] * np.log(pp[m] / qq[m])))
        return (levels + int(np.argmin(out))) / h.size

    for seed in range(3):
        x = _laplace_outliers(20_000, seed, outliers=2, factor=40.0)
        o = _observe(x, channel_axis=None, bins=512)
        h, w = o._magnitude()
        assert _kl_threshold(h, w, 128) == pytest.approx(kl_loop(h, 128) * w * h.size)


# -- edge cases ------------------------------------------------------------------------------------
def test_nonfinite_values_are_skipped_and_counted():
    x = np.array([[1.0, np.nan, -2.0], [np.inf, 3.0, -np.inf]], np.float32)
    o = _observe(x, channel_axis=1)
    assert (o.min, o.max, o.count, o.nonfinite) == (-2.0, 3.0, 3, 3)
    assert o.channel_min.tolist() == [1.0, 3.0, -2.0]
    assert o.channel_max.tolist() == [1.0, 3.0, -2.0]
    assert o._hist.sum() == 3
    o.observe(np.full((1, 3), np.nan, np.float32))
    assert o.nonfinite == 6 and o.count == 3 and o.channel_absmax.tolist() == [1.0, 3.0, 2.0]
    o.observe_histogram(np.array([np.nan, 5.0], np.float32))
    assert o.nonfinite == 7 and o.count == 4 and o.max == 3.0
    c = Observer(channel_axis=1)
    c.observe_channels(np.array([np.nan, -1.0]), np.array([2.0, np.inf]))
    assert c.nonfinite == 2 and (c.min, c.max) == (-1.0, 2.0)
    assert c.channel_absmax.tolist() == [2.0, 1.0]
    for m in METHODS:
        lo, hi = o.range(m)
        assert np.isfinite([lo, hi]).all() and lo <= 0 <= hi
    empty = _observe(np.full(4, np.nan), channel_axis=None)
    assert empty.range("MSE") == (0.0, 0.0) and empty.nonfinite == 4


@pytest.mark.parametrize("value", [0.0, 3.0, -2.5, 1e-40])
def test_constant_tensor_gives_valid_ranges(value):
    o = _observe(np.full((2, 3, 4), value, np.float32))
    for m in METHODS:
        for q in QTYPES:
            lo, hi = o.range(m, q)
            assert lo <= 0.0 <= hi and np.isfinite([lo, hi]).all()
            s, _ = qmath.qparams(lo, hi, q)
            assert np.isfinite(s) and s > 0


def test_to_arrays_round_trip_through_npz():
    x = _laplace_outliers(3000, 6).reshape(3, 10, 100)
    for kw in ({}, {"channel_axis": None}, {"histogram": False}, {"bins": 64}):
        o = _observe(x, **kw)
        buf = io.BytesIO()
        np.savez(buf, **o.to_arrays())
        buf.seek(0)
        with np.load(buf) as z:
            back = Observer.from_arrays({k: z[k] for k in z.files})
        assert back.channel_axis == o.channel_axis and back.has_histogram == o.has_histogram
        if o.has_histogram:
            _same(o, back)
        else:
            assert back.range() == o.range() and np.array_equal(back.channel_max, o.channel_max)
    fresh = Observer.from_arrays(Observer().to_arrays())
    fresh.observe(x)
    _same(fresh, _observe(x))


def test_observe_channels_plus_histogram_equals_observe():
    rng = np.random.default_rng(7)
    o1, o2 = Observer(channel_axis=1), Observer(channel_axis=1)
    for _ in range(3):
        x = rng.normal(size=(2, 6, 5, 5)).astype(np.float32) * rng.uniform(0.1, 10)
        o1.observe(x)
        o2.observe_channels(x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3)))
        o2.observe_histogram(x)
    _same(o1, o2)


def test_inputs_of_other_dtypes_and_errors():
    h = _observe(np.arange(-3, 5, dtype=np.float16), channel_axis=None)
    d = _observe(np.arange(-3, 5, dtype=np.float64), channel_axis=None)
    i = _observe(np.arange(-3, 5), channel_axis=None)
    _same(h, d)
    _same(h, i)
    with pytest.raises(ValueError, match="power of two"):
        Observer(bins=1000)
    no_hist = _observe(np.ones((1, 2)), histogram=False)
    with pytest.raises(DataError, match="histogram"):
        no_hist.range("MSE")
    with pytest.raises(DataError, match="histogram=False"):
        no_hist.observe_histogram(np.ones(2))
    with pytest.raises(DataError, match="channels"):
        no_hist.observe(np.ones((1, 3)))
    with pytest.raises(ValueError, match="percentile"):
        _observe(np.ones(3) - 2).range("Percentile", percentile=101)


def test_fast_binning_equals_ldexp_binning():
    # NOTE: the float32 power-of-two product must bin exactly like np.ldexp (the old path),
    # also for tiny, huge, subnormal, one-sided and very unequal-sided data
    rng = np.random.default_rng(1)
    cases = [rng.standard_normal(70000).astype(np.float32) * s for s in (1e-30, 1e-3, 1, 1e30)]
    cases += [np.abs(c) for c in cases[:3]] + [-np.abs(c) for c in cases[:3]]
    cases.append(np.concatenate([rng.random(999).astype(np.float32) * 1e20,
                                 -rng.random(999).astype(np.float32) * 1e-20]))
    cases.append(np.float32([2**-126, 2**-149, 3.0, -2**-140, 0.99999994, 1.0, -1.0, 0.0]))
    for c in cases:
        for bins in (16, 2048):
            fast = Observer(channel_axis=None, bins=bins)
            fast.observe(c)
            slow = Observer(channel_axis=None, bins=bins)
            mn, mx = float(c.min()), float(c.max())
            for side, m in ((0, mx), (1, -mn)):
                if m > 0:
                    slow._grow(side, int(np.frexp(np.float64(m))[1]))
            kp, kn = (bins.bit_length() - 1 - e if m > 0 else 0
                      for e, m in zip(slow._exp, (mx, -mn)))
            slow._bin_ldexp(c, mn, mx, kp, kn)
            assert np.array_equal(fast._hist, slow._hist), (c[:3], bins)
