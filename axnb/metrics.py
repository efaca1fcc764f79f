"""Similarity metrics between a float tensor x and its quantized counterpart y.

Each metric is computed per sample on the flattened tensors with float64 accumulation, then
averaged (arithmetic mean) over the samples. With n elements, d = x - y:

- **Cosin** (cosine similarity) = sum(x*y) / sqrt(sum(x^2) * sum(y^2)); 1 when x and y are both
  all-zero, 0 when only one of them is.
- **MSE** = sum(d^2) / n.
- **SQNR** (dB) = 10 * log10(sum(x^2) / sum(d^2)); +inf when x == y.
- **MaxAbs** = max |d|.

A NaN anywhere gives NaN (no exception). Every metric is a function of the per-sample moments
(n, sum(x*y), sum(x^2), sum(y^2), sum(d^2), max|d|), so they can be reduced inside an
onnxruntime graph and only six numbers per tensor cross into numpy.

Example:
    >>> x, y = np.array([1.0, 2.0]), np.array([1.0, 1.0])
    >>> round(cosine(x, y), 4), mse(x, y), round(sqnr(x, y), 3), max_abs(x, y)
    (0.9487, 0.5, 6.99, 1.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from axnb.errors import NonFiniteWarning
from axnb.types import Col

METRICS = Col.METRICS  # NOTE: the column names live in axnb.types.Col only
# NOTE: the module docstring in one line each, for reports (x float, y quantized, d = x - y).
FORMULAS = (
    "per sample on the flattened tensors, float64 sums, then the mean over samples; d = x - y",
    "Cosin = sum(x*y) / sqrt(sum(x^2) * sum(y^2)); 1 if both all-zero, 0 if only one is",
    "MSE = sum(d^2) / n",
    "SQNR = 10 * log10(sum(x^2) / sum(d^2)) dB; +inf if x == y",
    "MaxAbs = max |d|",
)
MOMENTS = ("n", "sxy", "sxx", "syy", "sdd", "maxabs")


def moments(x, y) -> np.ndarray:
    """The six moments of one sample, float64: n, sum(x*y), sum(x^2), sum(y^2), sum(d^2), max|d|.

    Example:
        >>> moments([3.0, 0.0], [3.0, 1.0]).tolist()
        [2.0, 9.0, 9.0, 10.0, 1.0, 1.0]
    """
    a = np.asarray(x, np.float64).ravel()
    b = np.asarray(y, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot compare tensors of {a.size} and {b.size} elements")
    d = a - b
    mx = float(np.abs(d).max()) if d.size else 0.0
    return np.array([a.size, a @ b, a @ a, b @ b, d @ d, mx], np.float64)


def mismatch_moments(x, y) -> np.ndarray:
    """The moments of a float / quantized pair whose shapes differ (a data-dependent length: a
    Loop that ran another number of iterations, a NonZero that kept other elements).

    NOTE: no element aligns, so the pair is scored as unrelated tensors (sum(x*y) = 0): cosine
    0, as for a tensor that lost everything; n is the larger size, max|d| the larger max |value|.

    Example:
        >>> from_moments(mismatch_moments([3.0, 4.0], [3.0]))["Cosin"].item()
        0.0
    """
    a = np.asarray(x, np.float64).ravel()
    b = np.asarray(y, np.float64).ravel()
    mx = max(float(np.abs(a).max(initial=0.0)), float(np.abs(b).max(initial=0.0)))
    return np.array([max(a.size, b.size), 0.0, a @ a, b @ b, a @ a + b @ b, mx], np.float64)


@dataclass(frozen=True)
class Mismatch:
    """:func:`sample_terms` of an output whose float and quantized shapes differ on a sample."""

    moments: np.ndarray
    float_shape: tuple[int, ...]
    quant_shape: tuple[int, ...]


def from_moments(m) -> dict[str, np.ndarray]:
    """The four metrics from moments shaped ``[..., 6]`` (vectorized over leading axes).

    Example:
        >>> {k: float(v) for k, v in from_moments(moments([1.0, 0.0], [0.0, 0.0])).items()}
        {'Cosin': 0.0, 'MSE': 0.5, 'SQNR': 0.0, 'MaxAbs': 1.0}
    """
    n, sxy, sxx, syy, sdd, mx = np.moveaxis(np.asarray(m, np.float64), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = sxy / np.sqrt(sxx * syy)
        # NOTE: all-zero tensors: the quantizer kept zeros exactly (1), or lost everything (0).
        cos = np.where((sxx == 0) & (syy == 0), 1.0, np.where((sxx == 0) ^ (syy == 0), 0.0, cos))
        mse = sdd / np.maximum(n, 1)
        snr = np.where(sdd == 0, np.where(np.isnan(sxx), np.nan, np.inf),
                       10.0 * np.log10(sxx / sdd))
    # NOTE: an in-graph max may drop NaN; sum(d^2) never does, so NaN follows it.
    mx = np.where(np.isnan(sdd), np.nan, mx)
    return {Col.COSINE: cos, Col.MSE: mse, Col.SQNR: snr, Col.MAXABS: mx}


def _one(x, y, key: str) -> float:
    return float(from_moments(moments(x, y))[key])


def cosine(x, y) -> float:
    """Cosine similarity of two tensors, flattened (see the module formulas).

    Example:
        >>> cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
        0.7071067811865475
    """
    return _one(x, y, Col.COSINE)


def mse(x, y) -> float:
    """Mean squared error, sum((x - y)^2) / n.

    Example:
        >>> mse([0.0, 2.0], [1.0, 2.0])
        0.5
    """
    return _one(x, y, Col.MSE)


def sqnr(x, y) -> float:
    """Signal-to-quantization-noise ratio in dB, 10 log10(sum(x^2) / sum((x - y)^2)).

    Example:
        >>> sqnr([10.0], [9.0]), sqnr([1.0], [1.0])
        (20.0, inf)
    """
    return _one(x, y, Col.SQNR)


def max_abs(x, y) -> float:
    """Largest absolute difference, max |x - y|.

    Example:
        >>> max_abs([1.0, -3.0], [1.5, -1.0])
        2.0
    """
    return _one(x, y, Col.MAXABS)


class Accumulator:
    """Streaming per-sample metrics of one or many tensors, averaged over samples.

    Only running sums are kept, so memory does not grow with the number of samples.

    Example:
        >>> acc = Accumulator()
        >>> acc.add([1.0, 0.0], [1.0, 0.0]); acc.add([1.0, 0.0], [0.0, 1.0])
        >>> acc.result()["Cosin"], acc.samples
        (0.5, 2)
    """

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.shape = tuple(shape)
        self._sums = {k: np.zeros(self.shape, np.float64) for k in METRICS}
        self._pooled = np.zeros(self.shape + (6,), np.float64)
        self.samples = 0

    def add(self, x, y) -> None:
        """Add one sample (float tensor x, quantized tensor y); only for ``shape == ()``."""
        self.add_moments(moments(x, y))

    def add_moments(self, m) -> None:
        """Add one sample given its moments, shaped ``shape + (6,)``."""
        m = np.asarray(m, np.float64)
        for k, v in from_moments(m).items():
            self._sums[k] += v
        self._pooled[..., :5] += m[..., :5]
        self._pooled[..., 5] = np.fmax(self._pooled[..., 5], m[..., 5])
        self.samples += 1

    def merge(self, other: Accumulator) -> Accumulator:
        """A new accumulator of both accumulators' samples (sums added: equal to adding every
        sample to one accumulator up to float64 rounding of the sums, ~1e-16 relative).

        Example:
            >>> a, b = Accumulator(), Accumulator()
            >>> a.add([1.0, 0.0], [1.0, 0.0]); b.add([1.0, 0.0], [0.0, 1.0])
            >>> a.merge(b).result()["Cosin"], a.merge(b).samples
            (0.5, 2)
        """
        if self.shape != other.shape:
            raise ValueError(f"cannot merge accumulators of shapes {self.shape} and {other.shape}")
        out = Accumulator(self.shape)
        for k in METRICS:
            out._sums[k] = self._sums[k] + other._sums[k]
        out._pooled[..., :5] = self._pooled[..., :5] + other._pooled[..., :5]
        out._pooled[..., 5] = np.fmax(self._pooled[..., 5], other._pooled[..., 5])
        out.samples = self.samples + other.samples
        return out

    def result(self) -> dict[str, float | np.ndarray]:
        """Mean over the samples added so far of each metric (NaN before any sample)."""
        n = self.samples or np.nan
        out = {k: v / n for k, v in self._sums.items()}
        if self.samples:
            # NOTE: a 1-element tensor has no direction per sample (its cosine is +-1): its
            # metrics are those of the vector stacked across the samples (summed moments).
            one = self._pooled[..., 0] <= self.samples
            if one.any():
                pooled = from_moments(self._pooled)
                out = {k: np.where(one, pooled[k], v) for k, v in out.items()}
        return {k: float(v) if np.ndim(v) == 0 else v for k, v in out.items()}

    def rms(self) -> float | np.ndarray:
        """The float tensor's RMS over every element of every sample, sqrt(sum x^2 / sum n).

        Example:
            >>> acc = Accumulator(); acc.add([3.0, 4.0], [3.0, 4.0]); acc.rms()
            3.5355339059327378
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.sqrt(self._pooled[..., 2] / self._pooled[..., 0])
        return float(r) if np.ndim(r) == 0 else r

    def across_samples(self) -> np.ndarray | bool:
        """Where :meth:`result` compared across the samples (1 element per sample)."""
        one = self._pooled[..., 0] <= self.samples
        return bool(one) if one.ndim == 0 else one


# NOTE: fewer elements than this per sample make a per-sample cosine say little (1 element: it
# is always +-1); such outputs are compared across the samples instead.
MIN_ELEMENTS = 8

SILENT_SAMPLE = 1e-2
"""A sample whose float output has less energy (mean square) than this fraction of the median
sample's is *near-silent*: judged by its error against the median sample's energy
(:func:`judged`), not by its own cosine.

NOTE: quantization noise is absolute: the step is fixed by the range calibrated over all the
data, so on a near-zero output (a black super-resolution tile) the same noise is a large
fraction of the signal and the cosine collapses (0.42) while the error is as small as on any
other tile. Judging that error against the energy the output typically has (the median
sample's) is what a PSNR does instead of an SNR. Under 1% of the median energy (RMS under a
tenth of the typical sample's), the output's own U8 rounding alone (step = range / 255) costs
the cosine more than 0.0005, so the cosine measures the sample's darkness more than the
quantization."""

SILENT_TENSOR = 1e-6
"""A tensor of a layer table whose float energy (mean square) is under this fraction of the
median tensor's is *near-silent*: its cosine says nothing about the output, and "where the
loss starts" and the worst-rows rankings pass over it (:func:`silent_tensors`).

NOTE: unlike the samples of one output, the tensors of one network legitimately differ in
scale: the smallest meaningful tensors measured are MiniLM's attention probabilities and
normalized embedding (5e-3 of the median tensor's energy) and the CNN's squeeze-excite gates
(8e-3); a line 1e-6 (RMS 1e-3 of the median's, under one 8-bit step at the typical scale)
stays three orders of magnitude below them. An error on a tensor that small matters only if
a later layer amplifies it, and then that later tensor is named."""


def near_silent(energy, line: float) -> np.ndarray:
    """Where ``energy`` (mean squares) is under ``line`` times the median of the finite,
    non-negative ones (the one near-silent rule of :data:`SILENT_SAMPLE` and
    :data:`SILENT_TENSOR`); False where the median is 0 or undefined.

    Example:
        >>> near_silent([1.0, 0.9, 1.1, 1e-4], SILENT_SAMPLE).tolist()
        [False, False, False, True]
    """
    e = np.asarray(energy, np.float64)
    ok = e[np.isfinite(e) & (e >= 0)]
    med = float(np.median(ok)) if ok.size else 0.0
    with np.errstate(invalid="ignore"):
        return (e < line * med) & (med > 0)


def judged(m) -> tuple[np.ndarray, np.ndarray]:
    """(score, near-silent) per sample of moments shaped ``[samples, 6]``: the cosine, except
    for a near-silent sample (:data:`SILENT_SAMPLE`), whose score is the cosine its error would
    give on a sample of the median energy with noise uncorrelated to the signal:
    ``1 / sqrt(1 + (sum(d^2) / n) / median energy)``.

    Example:
        >>> m = np.stack([moments([2.0, 2.0], [2.0, 2.01]), moments([2.0, 1.9], [2.0, 1.9]),
        ...               moments([1e-3, 0.0], [0.0, 1e-3])])       # a near-silent third sample
        >>> score, silent = judged(m)
        >>> silent.tolist(), float(from_moments(m)["Cosin"][2]), round(float(score[2]), 6)
        ([False, False, True], 0.0, 1.0)
    """
    m = np.asarray(m, np.float64)
    n = np.maximum(m[:, 0], 1)
    energy = m[:, 2] / n
    silent = near_silent(energy, SILENT_SAMPLE)
    cos = from_moments(m)[Col.COSINE]
    if not silent.any():
        return cos, silent
    med = float(np.median(energy[~silent & np.isfinite(energy)]))
    return np.where(silent, 1.0 / np.sqrt(1.0 + m[:, 4] / n / med), cos), silent


def silent_tensors(rms) -> np.ndarray:
    """Where the tensors of a table are near-silent (:data:`SILENT_TENSOR`), from their float
    RMS (the ``Float RMS`` column).

    Example:
        >>> silent_tensors([1.0, 0.5, 2.0, 2.4e-5]).tolist()
        [False, False, False, True]
    """
    return near_silent(np.square(np.asarray(rms, np.float64)), SILENT_TENSOR)


SKIPPED = "skipped"
"""Key of a final-metric entry that is not scored (why, in words); see :func:`scored`."""


def is_scored(a) -> bool:
    """Whether an output is scored by the metrics: float outputs only.

    NOTE: an int64 / int32 / bool output (an Identity copy of the token ids, an argmax index,
    a mask) is not quantized and has no direction: its cosine is 1.00000 on a copy and
    meaningless on an index. Its exact equality per sample is reported instead.

    Example:
        >>> is_scored(np.zeros(2, np.float16)), is_scored(np.zeros(2, np.int64))
        (True, False)
    """
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def scored(final: dict) -> dict[str, dict]:
    """The entries of :func:`output_metrics` that are scored (float outputs).

    Example:
        >>> f = [{"p": np.array([1.0, 0.0]), "ids": np.array([3, 4])}]
        >>> list(scored(output_metrics(f, f)))
        ['p']
    """
    return {o: m for o, m in final.items() if SKIPPED not in m}


def skipped(final: dict) -> dict[str, str]:
    """Output -> why it is not scored, of the entries of :func:`output_metrics`.

    Example:
        >>> f = [{"ids": np.array([3, 4])}]
        >>> skipped(output_metrics(f, f))["ids"]
        'int64 output (ids, indices or a mask): not scored by cosine; equal in 1 of 1 samples'
    """
    return {o: m[SKIPPED] for o, m in final.items() if SKIPPED in m}


def silent_text(m: dict) -> str:
    """One sentence on the near-silent samples of a final-metric entry ("" when none).

    Example:
        >>> f = [{"p": np.full(4, v)} for v in (1.0, 1.1, 0.9, 1e-3)]
        >>> q = [{"p": x["p"] + np.array([.01, -.01, .01, -.01])} for x in f]
        >>> print(silent_text(output_metrics(f, q)["p"])[:42])
        1 of 4 samples near-silent (float energy <
    """
    sil = m.get("silent") or []
    if not sil:
        return ""
    n = len(m.get("per_sample") or ()) or len(sil)
    raw = m.get("per_sample_cosine") or []
    cos = ", ".join(f"#{i} {raw[i]:.4f}" for i in sil[:3] if i < len(raw))
    return (f"{len(sil)} of {n} samples near-silent (float energy < {SILENT_SAMPLE:g} of the "
            f"median sample's): judged by their error against the median sample's energy, "
            f"not by their cosine ({cos}); plain cosine over all samples "
            f"{m.get('raw_cosine', np.nan):.5f}")


def final_notes(m: dict) -> list[str]:
    """What a final-metric entry needs said beside its cosine: its near-silent samples
    (:func:`silent_text`), its samples of another shape (:func:`shape_mismatch_text`) and where
    its NaN/Inf start (:func:`nonfinite_text`).

    Example:
        >>> final_notes({"Cosin": 0.99})
        []
    """
    nf = nonfinite_text(m.get("nonfinite"))
    return [t for t in (silent_text(m), shape_mismatch_text(m), f"NaN/Inf: {nf}" if nf else "")
            if t]


def nonfinite_text(info: dict | None) -> str:
    """The one sentence naming the first non-finite tensor (``{"tensor", "operator", "side"}``:
    ``side`` "float" when the float model itself gives NaN/Inf there, else "quantized").

    Example:
        >>> nonfinite_text({"tensor": "t", "operator": "Div_3", "side": "quantized"})[:53]
        'the quantized model gives NaN/Inf first at Div_3 (t) '
    """
    if not info:
        return ""
    if info.get("side") == "float":
        return (f"the FLOAT model itself gives NaN/Inf from {info['operator']} "
                f"({info['tensor']}); metrics of such tensors are NaN")
    return (f"the quantized model gives NaN/Inf first at {info['operator']} ({info['tensor']}) "
            "where the float model is finite; metrics from there on are NaN: fix that layer "
            "first (U16/FP32)")


def output_metrics(float_outputs, quant_outputs) -> dict[str, dict]:
    """Final metrics of each model output over the samples: THE one final-metric path.

    Args:
        float_outputs / quant_outputs: one ``{output: array}`` dict per sample, same order.

    Returns:
        ``{output: {"Cosin", "MSE", "SQNR", "MaxAbs": mean over samples, "per_sample":
        [cosine of each sample], "across_samples": bool, "elements": n}}``. An output with one
        element per sample has no direction: its cosine (and every metric) is computed on the
        vector stacked across the samples (``across_samples`` True, ``per_sample`` empty).
        A near-silent sample (:data:`SILENT_SAMPLE`) is scored by :func:`judged` in
        ``per_sample`` and the mean ``Cosin``; then ``raw_cosine``, ``per_sample_cosine`` and
        ``silent`` (its indices) say so (:func:`silent_text`). An output that is not float
        (:func:`is_scored`) has no metric, only ``skipped`` (why, with how many samples are
        equal; :func:`scored` leaves it out).

    Example:
        >>> f = [{"p": np.array([0.9])}, {"p": np.array([0.1])}]
        >>> q = [{"p": np.array([0.8])}, {"p": np.array([0.3])}]
        >>> m = output_metrics(f, q)["p"]
        >>> round(m["Cosin"], 4), m["across_samples"]
        (0.9694, True)
    """
    return combine_outputs([sample_terms(f, q) for f, q in zip(float_outputs, quant_outputs)])


def mark_nonfinite(final: dict, locate: Callable[[], dict | None], what: str = "final metric"
                   ) -> dict:
    """``final`` (:func:`output_metrics`) with each non-finite entry naming where the NaN/Inf
    start (``"nonfinite"``: ``locate()``, e.g. the first non-finite row of an EndToEnd table,
    :func:`axnb.compare.first_nonfinite`), and a :class:`~axnb.errors.NonFiniteWarning` saying
    it: the one "never a silent NaN" step of the final metrics. ``locate`` runs only then.

    Example:
        >>> import warnings
        >>> f = {"y": {"Cosin": float("nan")}}
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     out = mark_nonfinite(f, lambda: {"tensor": "t", "operator": "Div"})
        >>> out["y"]["nonfinite"]["tensor"], str(w[0].message)[:56]
        ('t', 'final metric of y is NaN/Inf: the quantized model gives ')
    """
    bad = [o for o, m in scored(final).items() if not np.isfinite(m[Col.COSINE])]
    if not bad:
        return final
    info = locate() or {"tensor": bad[0], "operator": "(model output)", "side": "quantized"}
    warnings.warn(f"{what} of {', '.join(bad)} is NaN/Inf: {nonfinite_text(info)}",
                  NonFiniteWarning, stacklevel=3)
    return {o: {**m, "nonfinite": info} if o in bad else m for o, m in final.items()}


def sample_terms(float_out: dict, quant_out: dict) -> dict[str, object]:
    """One sample's share of :func:`output_metrics`: per output its moments, or, for an output
    of one element, the values themselves (compared across samples); for an output that is not
    scored (:func:`is_scored`), its dtype and whether the quantized model's equals the float's.

    NOTE: a pure function of the sample, so samples can be scored on any worker and
    :func:`combine_outputs` on the client gives exactly what one pass gives.

    Example:
        >>> t = sample_terms({"p": np.array([1.0, 0.0])}, {"p": np.array([1.0, 1.0])})
        >>> t["p"].tolist()
        [2.0, 1.0, 1.0, 2.0, 1.0, 1.0]
    """
    out: dict[str, object] = {}
    for o, x in float_out.items():
        x, y = np.asarray(x), np.asarray(quant_out[o])
        if not is_scored(x):
            out[o] = {"dtype": x.dtype.name, "equal": bool(np.array_equal(x, y))}
            continue
        if x.shape != y.shape:
            out[o] = Mismatch(mismatch_moments(x, y), x.shape, y.shape)
            continue
        out[o] = (x.ravel(), y.ravel()) if x.size <= 1 else moments(x, y)
    return out


def combine_outputs(terms: list[dict]) -> dict[str, dict]:
    """:func:`output_metrics` from the :func:`sample_terms` of every sample, in sample order.

    Example:
        >>> f, q = {"p": np.array([0.9])}, {"p": np.array([0.8])}
        >>> combine_outputs([sample_terms(f, q)])["p"]["across_samples"]
        True
    """
    out: dict[str, dict] = {}
    for o in (terms[0] if terms else {}):
        ts = [t[o] for t in terms]
        if isinstance(ts[0], dict):
            out[o] = _skipped(ts)
        elif all(isinstance(t, tuple) for t in ts):
            m = {k: float(v) for k, v in from_moments(moments(
                np.concatenate([x for x, _ in ts]), np.concatenate([y for _, y in ts]))).items()}
            out[o] = {**m, "per_sample": [], "across_samples": True, "elements": ts[0][0].size}
        else:
            out[o] = _per_sample(np.stack([_term_moments(t) for t in ts]),
                                 [i for i, t in enumerate(ts) if isinstance(t, Mismatch)])
            out[o]["elements"] = _elements(ts[0])
            _mismatched(o, out[o], ts)
    return out


def _term_moments(term) -> np.ndarray:
    # NOTE: a data-dependent size can be 1 on some samples only: those score per sample too.
    if isinstance(term, Mismatch):
        return term.moments
    return moments(*term) if isinstance(term, tuple) else term


def _elements(term) -> int:
    if isinstance(term, Mismatch):
        return int(np.prod(term.float_shape))
    return term[0].size if isinstance(term, tuple) else int(term[0])


def _mismatched(o: str, entry: dict, ts: list) -> None:
    """List (``shape_mismatch``) and warn of the samples where the output's shapes differ."""
    bad = [f"sample {i}: float {t.float_shape} vs quantized {t.quant_shape}"
           for i, t in enumerate(ts) if isinstance(t, Mismatch)]
    if bad:
        entry["shape_mismatch"] = bad
        warnings.warn(f"output {o}: {shape_mismatch_text(entry)}", stacklevel=3)


def shape_mismatch_text(m: dict) -> str:
    """One sentence on the samples of a final-metric entry whose float and quantized shapes
    differ ("" when none).

    Example:
        >>> print(shape_mismatch_text({"shape_mismatch": ["sample 2: float (3,) vs quantized "
        ...                                               "(2,)"]})[:52])
        the quantized model gives another shape than the flo
    """
    bad = m.get("shape_mismatch") or []
    if not bad:
        return ""
    return (f"the quantized model gives another shape than the float model on {len(bad)} "
            f"sample(s) ({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''}): a "
            "data-dependent length (Loop, NonZero) changed under quantization; those samples "
            "score cosine 0 (an accuracy failure, not an error)")


def _skipped(ts: list[dict]) -> dict:
    eq, dt = sum(t["equal"] for t in ts), ts[0]["dtype"]
    why = (f"{dt} output (ids, indices or a mask): not scored by cosine; equal in {eq} of "
           f"{len(ts)} samples")
    return {SKIPPED: why, "dtype": dt, "equal_samples": eq, "samples": len(ts),
            "per_sample": [], "across_samples": False}


def _per_sample(m: np.ndarray, mismatched: list[int] = ()) -> dict:
    """The final entry of per-sample moments ``[samples, 6]``: the means, with the cosine of a
    near-silent sample replaced by its :func:`judged` score (``raw_cosine`` keeps the mean of
    the plain cosines, ``silent`` the indices of those samples).

    NOTE: a ``mismatched`` sample (another shape quantized) keeps its cosine 0 even when it is
    near-silent: a different length is a structural failure, not quantization noise."""
    per = from_moments(m)
    score, silent = judged(m)
    if len(mismatched):
        silent[list(mismatched)] = False
        score = np.where(silent, score, per[Col.COSINE])
    out = {**{k: float(np.mean(v)) for k, v in per.items()},
           "per_sample": [float(c) for c in score], "across_samples": False,
           "elements": int(m[0, 0])}
    if silent.any():
        out |= {Col.COSINE: float(np.mean(score)), "raw_cosine": float(np.mean(per[Col.COSINE])),
                "per_sample_cosine": [float(c) for c in per[Col.COSINE]],
                "silent": [int(i) for i in np.flatnonzero(silent)]}
    return out
