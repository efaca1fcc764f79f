"""Streaming, mergeable statistics of one tensor, and the range methods built on them.

An :class:`Observer` keeps min/max, per-channel min/max and two histograms; its memory does not
grow with the number of samples, and merging the observers of disjoint data gives exactly
(bit for bit) the observer of all the data.

Histograms: one of the values ``x >= 0`` and one of the magnitudes ``-x`` of the values
``x < 0``, each with ``bins`` equal bins over ``[0, R)``, ``R`` the smallest power of two
strictly above the largest magnitude seen on that side. A value ``v`` falls in bin
``floor(v * bins / R)``. When ``R`` doubles, adjacent bin pairs are summed; this is exact
because scaling by a power of two is exact in floating point, so merging and streaming give
the same counts as one pass.

Range methods (``Observer.range``; every result satisfies ``lo <= 0 <= hi``):

- **MinMax**: ``(min(x_min, 0), max(x_max, 0))``, the exact observed extremes.
- **Percentile** (default ``p = 99.99``): onnxruntime's Percentile calibrator with
  ``symmetric=False``: on the signed histogram (negative side mirrored, then positive side)
  with cumulative counts ``cum``, ``lo = edge[i_lo]`` and ``hi = edge[i_hi]``, ``i_lo`` / ``i_hi``
  the first bins where ``cum`` reaches ``c * N`` / ``(1 - c) * N``, ``c = (100 - p) / 200``,
  ``N`` the count (``edge[i]`` is the left edge of bin ``i``, as in onnxruntime), then clamped
  to ``[x_min, x_max]`` and widened to include 0.
- **MSE**: the candidate range with the smallest expected quantize-dequantize squared error for
  the target qtype. Candidates scale the MinMax ends by ``a = 2**(-k/16)``,
  ``k = 0 .. 16*log2(bins)``: signed types are symmetric, threshold ``t = a * max(|lo|, |hi|)``;
  unsigned types are asymmetric, ``(a_lo * lo, a_hi * hi)`` over the full grid of both factors.
  Each candidate gets ``(scale, zp)`` from :func:`axnb.qmath.qparams`, representable limits
  ``A = (qmin - zp) * scale``, ``B = (qmax - zp) * scale``, and expected error
  ``E = N_in * scale**2 / 12 + sum_{x > B} (x - B)**2 + sum_{x < A} (A - x)**2``, with values
  spread uniformly inside each histogram bin (rounding noise inside the limits, exact clipping
  error beyond them). Ties keep the wider range.
- **KL**: TensorRT entropy calibration on the magnitude histogram (both sides brought to the same
  ``R`` and added). For each candidate of ``i`` bins, ``i = 2**(bits-1) .. bins``: reference
  ``p = h[:i]`` with the clipped mass added to ``p[i-1]``; ``q`` merges ``h[:i]`` into
  ``2**(bits-1)`` levels (bin ``k`` goes to level ``floor(k * levels / i)``) and spreads each
  level evenly over its non-empty bins; divergence ``KL(p || q)`` of the normalised
  distributions, where an empty ``q`` entry under a non-empty ``p`` entry (clipped mass landing
  in an empty bin) counts as ``1e-4`` as in onnxruntime's smoothing (its matching shift of
  the other entries, below 1e-4 of a count, is left out). The first argmin gives
  ``t = i * R / bins`` and the range ``(max(x_min, -t), min(x_max, t))`` widened to include 0.
  With 16-bit types (32768 levels > bins) there is no candidate and KL returns MinMax.

MSE and KL return MinMax for the float type FP32. An observer that saw no finite value has the
range ``(0.0, 0.0)``.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from axnb import qmath
from axnb.errors import DataError
from axnb.types import CalibMethod, QType, parse_enum

_EMPTY = -(1 << 30)  # histogram exponent of a side with no non-zero magnitude yet
# NOTE: chunks keep temporaries in cache and avoid fresh-page faults (3x faster than 1e6 at once)
_CHUNK = 1 << 16
MSE_STEPS = 16  # MSE candidates per octave
KL_EPS = 1e-4  # onnxruntime's smooth_distribution eps, in counts


def _exponent(m: float) -> int:
    """The smallest ``e`` with ``m < 2**e`` (``m > 0``)."""
    return int(np.frexp(np.float64(m))[1])


def _rebin(h: np.ndarray, shift: int) -> np.ndarray:
    """Counts of ``h`` re-binned at ``R * 2**shift`` (sums of ``2**shift`` adjacent bins)."""
    if shift <= 0:
        return h.copy()
    out = np.zeros_like(h)
    if shift >= int(h.size).bit_length() - 1:
        out[0] = h.sum()
    else:
        out[: h.size >> shift] = h.reshape(-1, 1 << shift).sum(axis=1)
    return out


def _as_float(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype in (np.float32, np.float64):
        return x
    return x.astype(np.float32 if x.dtype.itemsize <= 2 else np.float64)


def _reduce_channels(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    c = x.shape[axis]
    xr = x.reshape(math.prod(x.shape[:axis]), c, -1)
    return (xr.min(axis=2).min(axis=0).astype(np.float64),
            xr.max(axis=2).max(axis=0).astype(np.float64))


class Observer:
    """Streaming statistics of one tensor: min/max, per-channel min/max, histograms.

    Args:
        channel_axis: axis of the per-channel min/max (negative ok); None for none. Tensors of
            rank too low for the axis get no per-channel statistics.
        bins: histogram bins per sign, a power of two.
        histogram: keep histograms (needed by Percentile, MSE and KL).

    Attributes:
        min, max: extremes of the finite values seen (``inf``/``-inf`` before any).
        channel_min, channel_max: per-channel extremes (float64) or None.
        count: finite values seen by ``observe``/``observe_histogram``.
        nonfinite: NaN/inf values skipped (the caller warns).

    Example:
        >>> o = Observer(channel_axis=1)
        >>> o.observe(np.array([[-1.0, 2.0], [0.5, 4.0]], np.float32))
        >>> o.min, o.max, o.channel_absmax.tolist(), o.range("MinMax")
        (-1.0, 4.0, [1.0, 4.0], (-1.0, 4.0))
    """

    def __init__(self, channel_axis: int | None = 1, bins: int = 2048, histogram: bool = True):
        if bins < 2 or bins & (bins - 1):
            raise ValueError(f"bins must be a power of two >= 2, got {bins}")
        self.channel_axis, self.bins, self.has_histogram = channel_axis, int(bins), histogram
        self.min, self.max = math.inf, -math.inf
        self.channel_min: np.ndarray | None = None
        self.channel_max: np.ndarray | None = None
        self.count = self.nonfinite = 0
        # rows: positive side, negative side (no memory without histograms)
        self._hist = np.zeros((2, self.bins if histogram else 0), np.int64)
        self._exp = [_EMPTY, _EMPTY]
        self._ranges: dict = {}  # cache of range() results

    def __repr__(self) -> str:
        return (f"Observer(min={self.min:g}, max={self.max:g}, count={self.count}, "
                f"channels={None if self.channel_min is None else self.channel_min.size})")

    @property
    def channel_absmax(self) -> np.ndarray | None:
        """Per-channel ``max(|min|, |max|)`` (0 for a channel with no finite value)."""
        if self.channel_min is None:
            return None
        return np.maximum(np.maximum(-self.channel_min, self.channel_max), 0.0)

    # -- updates -------------------------------------------------------------------------------
    def observe(self, x: np.ndarray) -> None:
        """Update every statistic with a batch; NaN/inf are skipped and counted.

        Example:
            >>> o = Observer(channel_axis=None); o.observe(np.array([1.0, np.nan, -3.0]))
            >>> o.min, o.max, o.count, o.nonfinite
            (-3.0, 1.0, 2, 1)
        """
        x = _as_float(x)
        if x.size == 0:
            return
        axis = self._axis(x.ndim)
        if axis is None:
            mn, mx = x.min(), x.max()
        else:
            cmin, cmax = _reduce_channels(x, axis)
            mn, mx = cmin.min(), cmax.max()
        if not (np.isfinite(mn) and np.isfinite(mx)):
            keep = np.isfinite(x)
            if axis is not None:
                cmin = _reduce_channels(np.where(keep, x, np.inf), axis)[0]
                cmax = _reduce_channels(np.where(keep, x, -np.inf), axis)[1]
            x = x[keep]
            self.nonfinite += keep.size - x.size
            mn, mx = (x.min(), x.max()) if x.size else (np.inf, -np.inf)
        if axis is not None:
            self._update_channels(cmin, cmax)
        self.min, self.max = min(self.min, float(mn)), max(self.max, float(mx))
        self.count += x.size
        if self.has_histogram and x.size:
            self._bin(x.ravel(), float(mn), float(mx))

    def observe_channels(self, ch_min: np.ndarray, ch_max: np.ndarray) -> None:
        """Update min/max and per-channel min/max from reductions done elsewhere.

        Non-finite entries are skipped and counted in ``nonfinite`` (one per entry).

        Example:
            >>> o = Observer(); o.observe_channels(np.array([-1.0, 0.0]), np.array([2.0, 3.0]))
            >>> o.min, o.max, o.channel_absmax.tolist()
            (-1.0, 3.0, [2.0, 3.0])
        """
        cmin = np.asarray(ch_min, np.float64).ravel()
        cmax = np.asarray(ch_max, np.float64).ravel()
        if cmin.shape != cmax.shape:
            raise DataError(f"observe_channels: {cmin.size} channel minima but {cmax.size} maxima")
        okn, okx = np.isfinite(cmin), np.isfinite(cmax)
        self.nonfinite += int((~okn).sum() + (~okx).sum())
        cmin, cmax = np.where(okn, cmin, np.inf), np.where(okx, cmax, -np.inf)
        if self.channel_axis is not None:
            self._update_channels(cmin, cmax)
        if cmin.size:
            self.min, self.max = min(self.min, float(cmin.min())), max(self.max, float(cmax.max()))

    def observe_histogram(self, x: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        """Update the histograms (and ``count``/``nonfinite``) only.

        ``bounds``: the finite (min, max) of ``x`` when already known (reduced inside the
        onnxruntime graph), which saves a pass over the data.

        Example:
            >>> o = Observer(); o.observe_histogram(np.array([0.5, -2.0], np.float32))
            >>> o.count, o.min
            (2, inf)
        """
        if not self.has_histogram:
            raise DataError("observe_histogram: this Observer was created with histogram=False")
        x = _as_float(x).ravel()
        if x.size == 0:
            return
        # NOTE: in-graph ReduceMin/Max may skip NaN, so finite bounds do not prove finite data;
        # one sum (a fraction of the binning's cost) does, and NaN would corrupt bin indexes.
        if bounds is not None and np.isfinite(bounds).all() and np.isfinite(np.add.reduce(x)):
            self.count += x.size
            self._bin(x, float(bounds[0]), float(bounds[1]))
            return
        mn, mx = x.min(), x.max()
        if not (np.isfinite(mn) and np.isfinite(mx)):
            keep = np.isfinite(x)
            x = x[keep]
            self.nonfinite += keep.size - x.size
            if not x.size:
                return
            mn, mx = x.min(), x.max()
        self.count += x.size
        self._bin(x, float(mn), float(mx))

    def _axis(self, ndim: int) -> int | None:
        a = self.channel_axis
        if a is None or not -ndim <= a < ndim:
            return None
        return a % ndim

    def _update_channels(self, cmin: np.ndarray, cmax: np.ndarray) -> None:
        if self.channel_min is None:
            self.channel_min, self.channel_max = cmin.copy(), cmax.copy()
            return
        if cmin.shape != self.channel_min.shape:
            raise DataError(f"Observer: {cmin.size} channels now, {self.channel_min.size} before "
                            f"(channel_axis={self.channel_axis})")
        self.channel_min = np.minimum(self.channel_min, cmin)
        self.channel_max = np.maximum(self.channel_max, cmax)

    def _grow(self, side: int, exp: int) -> None:
        if exp > self._exp[side]:
            self._hist[side] = _rebin(self._hist[side], exp - self._exp[side])
            self._exp[side] = exp

    def _bin(self, x: np.ndarray, mn: float, mx: float) -> None:
        if mx > 0:
            self._grow(0, _exponent(mx))
        if mn < 0:
            self._grow(1, _exponent(-mn))
        b = self.bins
        # NOTE: v * bins / R = v * 2**k, k = log2(bins) - e, is exact for every float (results
        # stay below bins; any that underflow are below 1, in bin 0 either way). 2**k is built
        # from its float32 bits per element (a side's k where v < 0), 8x cheaper than np.ldexp
        # with an exponent array; a per-element product of two different factors would round.
        kp, kn = (0 if e == _EMPTY else b.bit_length() - 1 - e for e in self._exp)
        if x.dtype != np.float32 or not all(-126 <= k <= 127 for k in (kp, kn)):
            return self._bin_ldexp(x, mn, mx, kp, kn)
        base, step, nb = np.int32((127 + kp) << 23), np.int32((kn - kp) << 23), np.int32(b)
        for i in range(0, x.size, _CHUNK):
            c = x[i : i + _CHUNK]
            if mn >= 0 or mx < 0:
                side, k = (0, kp) if mn >= 0 else (1, kn)
                a = np.abs(c, dtype=np.float32)
                a *= np.float32(2.0 ** k)
                self._hist[side] += np.bincount(a.astype(np.int32), minlength=b)
                continue
            neg = c < 0
            f = neg * step
            f += base
            a = np.abs(c, dtype=np.float32)
            a *= f.view(np.float32)
            idx = a.astype(np.int32)
            idx += neg * nb
            self._hist += np.bincount(idx, minlength=2 * b).reshape(2, b)

    def _bin_ldexp(self, x: np.ndarray, mn: float, mx: float, kp: int, kn: int) -> None:
        b = self.bins
        for i in range(0, x.size, _CHUNK):
            c = x[i : i + _CHUNK]
            if mn >= 0:
                self._hist[0] += np.bincount(np.ldexp(c, kp).astype(np.intp), minlength=b)
            elif mx < 0:
                self._hist[1] += np.bincount(np.ldexp(-c, kn).astype(np.intp), minlength=b)
            else:
                neg = c < 0
                k = neg.astype(np.int32)
                k *= kn - kp
                k += kp
                idx = np.ldexp(np.abs(c), k).astype(np.intp)
                idx += neg * np.intp(b)
                self._hist += np.bincount(idx, minlength=2 * b).reshape(2, b)

    # -- merge and save ------------------------------------------------------------------------
    def merge(self, other: Observer) -> Observer:
        """A new observer of both observers' data (exactly equal to observing all of it).

        Example:
            >>> a, b = Observer(), Observer()
            >>> a.observe(np.ones((1, 2), np.float32)); b.observe(-np.ones((1, 2), np.float32))
            >>> a.merge(b).range("Percentile", percentile=100.0)
            (-1.0, 1.0)
        """
        if (self.bins, self.has_histogram, self.channel_axis) != (
                other.bins, other.has_histogram, other.channel_axis):
            raise DataError("cannot merge observers with different bins, histogram or "
                            f"channel_axis: {(self.bins, self.has_histogram, self.channel_axis)} "
                            f"vs {(other.bins, other.has_histogram, other.channel_axis)}")
        out = copy.deepcopy(self)
        if other.channel_min is not None:
            out._update_channels(other.channel_min, other.channel_max)
        out.min, out.max = min(self.min, other.min), max(self.max, other.max)
        out.count, out.nonfinite = self.count + other.count, self.nonfinite + other.nonfinite
        for side in (0, 1):
            e = max(self._exp[side], other._exp[side])
            out._exp[side] = e
            out._hist[side] = (_rebin(self._hist[side], e - self._exp[side])
                               + _rebin(other._hist[side], e - other._exp[side]))
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as numpy arrays (for ``np.savez``); :meth:`from_arrays` inverts it.

        Example:
            >>> o = Observer(); o.observe(np.arange(6.0).reshape(1, 2, 3))
            >>> Observer.from_arrays(o.to_arrays()).channel_max.tolist()
            [2.0, 5.0]
        """
        d = {"min": np.float64(self.min), "max": np.float64(self.max),
             "count": np.int64(self.count), "nonfinite": np.int64(self.nonfinite),
             "bins": np.int64(self.bins), "histogram": np.bool_(self.has_histogram)}
        d = {k: np.asarray(v) for k, v in d.items()}
        if self.channel_axis is not None:
            d["channel_axis"] = np.asarray(self.channel_axis, np.int64)
        if self.channel_min is not None:
            d["channel_min"], d["channel_max"] = self.channel_min.copy(), self.channel_max.copy()
        if self.has_histogram:
            d["hist"], d["hist_exp"] = self._hist.copy(), np.asarray(self._exp, np.int64)
        return d

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> Observer:
        """Rebuild an observer from :meth:`to_arrays` (exact round trip)."""
        axis = int(d["channel_axis"]) if "channel_axis" in d else None
        o = cls(channel_axis=axis, bins=int(d["bins"]), histogram=bool(d["histogram"]))
        o.min, o.max = float(d["min"]), float(d["max"])
        o.count, o.nonfinite = int(d["count"]), int(d["nonfinite"])
        if "channel_min" in d:
            o.channel_min = np.asarray(d["channel_min"], np.float64).copy()
            o.channel_max = np.asarray(d["channel_max"], np.float64).copy()
        if o.has_histogram:
            o._hist = np.asarray(d["hist"], np.int64).reshape(2, o.bins).copy()
            o._exp = [int(e) for e in d["hist_exp"]]
        return o

    # -- ranges --------------------------------------------------------------------------------
    def range(self, method: CalibMethod | str = "MinMax", qtype: QType | str = "U8",
              percentile: float = 99.99) -> tuple[float, float]:
        """The quantization range ``(lo, hi)``, ``lo <= 0 <= hi``, chosen by ``method``.

        - MinMax: ``(min(x_min, 0), max(x_max, 0))``.
        - Percentile: onnxruntime's (symmetric=False): cut ``c = (100 - p) / 200`` of the values
          from each tail of the signed histogram: the left edges of the first bins where the
          cumulative count reaches ``c * N`` and ``(1 - c) * N``, clamped to ``[x_min, x_max]``,
          widened to include 0. Default ``p = 99.99``.
        - MSE: the candidate (MinMax ends scaled by ``2**(-k/16)``; symmetric for signed,
          both ends independently for unsigned qtypes) of least expected squared
          quantize-dequantize error for ``qtype``:
          ``N_in * scale**2 / 12 + sum (x - B)**2 [x > B] + sum (A - x)**2 [x < A]``.
        - KL: TensorRT entropy calibration with ``2**(bits-1)`` levels on the magnitude
          histogram; threshold ``t`` gives ``(max(x_min, -t), min(x_max, t))``.

        See the module docstring for the exact definitions.

        Args:
            method: MinMax, Percentile, MSE or KL.
            qtype: the target type (MSE and KL depend on it; FP32 gives MinMax).
            percentile: ``p`` of the Percentile method, in [0, 100].

        Returns:
            ``(lo, hi)`` as Python floats; ``(0.0, 0.0)`` if no finite value was seen.

        Raises:
            DataError: a histogram method on an observer without histogram data.

        Example:
            >>> x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
            >>> x[:2] = [50.0, -30.0]
            >>> o = Observer(channel_axis=None); o.observe(x)
            >>> [round(v, 2) for v in o.range("KL", "S8")], o.range("KL", "S16")
            ([-4.09, 4.09], (-30.0, 50.0))
        """
        m = parse_enum(CalibMethod, method, "calibration_method")
        q = parse_enum(QType, qtype, "qtype")
        # NOTE: MSE and KL take milliseconds; the key holds the state a direct edit could change.
        key = (m, q, float(percentile), self.min, self.max, self.count, self.nonfinite)
        if key not in self._ranges:
            if len(self._ranges) >= 32:
                self._ranges.clear()
            self._ranges[key] = self._range(m, q, float(percentile))
        return self._ranges[key]

    def _range(self, m: CalibMethod, q: QType, percentile: float) -> tuple[float, float]:
        if self.min > self.max:
            return 0.0, 0.0
        lo0, hi0 = min(self.min, 0.0), max(self.max, 0.0)
        if m is CalibMethod.MinMax or lo0 == hi0 or (m is not CalibMethod.Percentile
                                                    and q.is_float):
            return lo0, hi0
        if not self.has_histogram or not self._hist.any():
            raise DataError(f"the {m} range needs a histogram, and this tensor has none "
                            "(calibrate with histograms=True)")
        if m is CalibMethod.Percentile:
            if not 0.0 <= percentile <= 100.0:
                raise ValueError(f"percentile must be in [0, 100], got {percentile}")
            lo, hi = _percentile(*self._signed(), percentile)
        elif m is CalibMethod.MSE:
            return _mse(*self._signed(), lo0, hi0, q)
        else:
            t = _kl_threshold(*self._magnitude(), 2 ** (q.bits - 1))
            lo, hi = (lo0, hi0) if t is None else (-t, t)
        return min(max(lo, self.min), 0.0), max(min(hi, self.max), 0.0)

    def _widths(self) -> list[float]:
        e = [x if x != _EMPTY else max(self._exp) for x in self._exp]
        return [math.ldexp(1.0, x) / self.bins for x in e]

    def _signed(self) -> tuple[np.ndarray, np.ndarray]:
        """Signed histogram: edges (float64, ``2*bins+1``) and counts, negative side first."""
        wp, wn = self._widths()
        k = np.arange(self.bins + 1, dtype=np.float64)
        edges = np.concatenate([-k[:0:-1] * wn, k * wp])
        return edges, np.concatenate([self._hist[1, ::-1], self._hist[0]])

    def _magnitude(self) -> tuple[np.ndarray, float]:
        e = max(self._exp)
        h = _rebin(self._hist[0], e - self._exp[0]) + _rebin(self._hist[1], e - self._exp[1])
        return h, math.ldexp(1.0, e) / self.bins


def _percentile(edges: np.ndarray, counts: np.ndarray, p: float) -> tuple[float, float]:
    cum = np.cumsum(counts).astype(np.float64)
    total = cum[-1]
    cut = (100.0 - p) / 200.0 * total
    # NOTE: onnxruntime searches cumsum(counts / total), whose rounding may step one bin further
    # when cut * total is a whole count; integer counts (with a tolerance far below one count)
    # make that case deterministic.
    tol = 1e-6 + 1e-15 * total
    lo, hi = np.searchsorted(cum, [cut - tol, total - cut - tol])
    return float(edges[lo]), float(edges[hi])


def mse_candidates(lo0: float, hi0: float, qtype: QType, octaves: int) -> tuple[np.ndarray, ...]:
    """The MSE candidate ranges ``(lo[], hi[])`` for MinMax ends ``lo0 <= 0 <= hi0``.

    Example:
        >>> lo, hi = mse_candidates(-1.0, 2.0, QType.S8, 1); lo[:2].tolist(), hi[:2].tolist()
        ([-1.0, -1.0], [2.0, 1.9152065613971474])
    """
    a = 2.0 ** (-np.arange(MSE_STEPS * octaves + 1) / MSE_STEPS)
    if qtype.signed:
        t = a * max(-lo0, hi0)
        return np.maximum(-t, lo0), np.minimum(t, hi0)
    if lo0 == 0.0 or hi0 == 0.0:
        return a * lo0, a * hi0
    lo, hi = np.meshgrid(a * lo0, a * hi0, indexing="ij")
    return lo.ravel(), hi.ravel()


def expected_sq_error(edges, counts, lo, hi, qtype: QType) -> np.ndarray:
    """Expected total squared quantize-dequantize error of each candidate range on a histogram.

    Values are uniform inside each bin: ``scale**2 / 12`` each inside the representable limits
    ``[A, B]``, the exact clipping error ``(x - B)**2`` / ``(A - x)**2`` beyond them.

    Example:
        >>> e = np.array([0.0, 1.0, 2.0]); n = np.array([10, 10])
        >>> expected_sq_error(e, n, np.array([0.0]), np.array([1.0]), QType.U8).round(3).tolist()
        [3.333]
    """
    qmin, qmax = qmath.qrange(qtype)
    scale, zp = qmath.qparams(lo, hi, qtype)
    s, z = scale.astype(np.float64), zp.astype(np.float64)
    lim_a, lim_b = (qmin - z) * s, (qmax - z) * s
    n = counts.astype(np.float64)
    w = np.diff(edges)
    c = (edges[:-1] + edges[1:]) / 2
    moments = (n, n * c, n * (c * c + w * w / 12))
    p0, p1, p2 = (np.concatenate([[0.0], np.cumsum(v)]) for v in moments)
    last = n.size - 1
    kb = np.clip(np.searchsorted(edges, lim_b, "right") - 1, 0, last)
    fb = np.clip((edges[kb + 1] - lim_b) / w[kb], 0.0, 1.0)
    t0, t1, t2 = (p[-1] - p[kb + 1] for p in (p0, p1, p2))
    err_b = t2 - 2 * lim_b * t1 + lim_b**2 * t0 + n[kb] * fb * (fb * w[kb]) ** 2 / 3
    ka = np.clip(np.searchsorted(edges, lim_a, "right") - 1, 0, last)
    fa = np.clip((lim_a - edges[ka]) / w[ka], 0.0, 1.0)
    err_a = p2[ka] - 2 * lim_a * p1[ka] + lim_a**2 * p0[ka] + n[ka] * fa * (fa * w[ka]) ** 2 / 3
    inside = p0[-1] - (t0 + n[kb] * fb) - (p0[ka] + n[ka] * fa)
    return inside * s * s / 12 + err_a + err_b


def _mse(edges, counts, lo0: float, hi0: float, qtype: QType) -> tuple[float, float]:
    lo, hi = mse_candidates(lo0, hi0, qtype, int(counts.size // 2).bit_length() - 1)
    i = int(np.argmin(expected_sq_error(edges, counts, lo, hi, qtype)))
    return float(lo[i]), float(hi[i])


def _xlogx(v: np.ndarray) -> np.ndarray:
    return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def _kl_threshold(h: np.ndarray, width: float, levels: int) -> float | None:
    """TensorRT's entropy threshold on a magnitude histogram; None without candidates."""
    if levels > h.size:
        return None
    hf = h.astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(hf)])
    nz = np.concatenate([[0], np.cumsum(h > 0)])
    hlogh = np.concatenate([[0.0], np.cumsum(_xlogx(hf))])
    total = cum[-1]
    i = np.arange(levels, h.size + 1)
    tail = total - cum[i]
    plogp = hlogh[i - 1] + _xlogx(hf[i - 1] + tail)
    j = np.arange(levels + 1)
    edge = (j[None, :] * i[:, None] + levels - 1) // levels  # level j holds bins edge[j]..edge[j+1]
    qsum = cum[edge[:, 1:]] - cum[edge[:, :-1]]
    qnz = nz[edge[:, 1:]] - nz[edge[:, :-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        logq = np.log(qsum / qnz)
        plogq = np.where(qsum > 0, qsum * logq, 0.0).sum(axis=1)
        # NOTE: the clipped mass sits in bin i-1; its q is its level's mean if that bin is
        # non-empty, else 0, smoothed to KL_EPS as onnxruntime's smooth_distribution does.
        plogq += np.where(tail > 0, tail * np.where(h[i - 1] > 0, logq[:, -1], math.log(KL_EPS)), 0)
        kl = (plogp - plogq) / total - math.log(total)
        kl = np.where(total - tail > 0, kl + np.log(total - tail), np.inf)
    return float(i[int(np.argmin(kl))] * width)
