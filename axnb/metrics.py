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

import numpy as np

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

    def across_samples(self) -> np.ndarray | bool:
        """Where :meth:`result` compared across the samples (1 element per sample)."""
        one = self._pooled[..., 0] <= self.samples
        return bool(one) if one.ndim == 0 else one


# NOTE: fewer elements than this per sample make a per-sample cosine say little (1 element: it
# is always +-1); such outputs are compared across the samples instead.
MIN_ELEMENTS = 8


def output_metrics(float_outputs, quant_outputs) -> dict[str, dict]:
    """Final metrics of each model output over the samples: THE one final-metric path.

    Args:
        float_outputs / quant_outputs: one ``{output: array}`` dict per sample, same order.

    Returns:
        ``{output: {"Cosin", "MSE", "SQNR", "MaxAbs": mean over samples, "per_sample":
        [cosine of each sample], "across_samples": bool, "elements": n}}``. An output with one
        element per sample has no direction: its cosine (and every metric) is computed on the
        vector stacked across the samples (``across_samples`` True, ``per_sample`` empty).

    Example:
        >>> f = [{"p": np.array([0.9])}, {"p": np.array([0.1])}]
        >>> q = [{"p": np.array([0.8])}, {"p": np.array([0.3])}]
        >>> m = output_metrics(f, q)["p"]
        >>> round(m["Cosin"], 4), m["across_samples"]
        (0.9694, True)
    """
    return combine_outputs([sample_terms(f, q) for f, q in zip(float_outputs, quant_outputs)])


def sample_terms(float_out: dict, quant_out: dict) -> dict[str, object]:
    """One sample's share of :func:`output_metrics`: per output its moments, or, for an output
    of one element, the values themselves (compared across samples).

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
        if isinstance(ts[0], tuple):
            m = {k: float(v) for k, v in from_moments(moments(
                np.concatenate([x for x, _ in ts]), np.concatenate([y for _, y in ts]))).items()}
            out[o] = {**m, "per_sample": [], "across_samples": True, "elements": ts[0][0].size}
            continue
        per = from_moments(np.stack(ts))
        out[o] = {**{k: float(np.mean(v)) for k, v in per.items()},
                  "per_sample": [float(c) for c in per[Col.COSINE]], "across_samples": False,
                  "elements": int(ts[0][0])}
    return out
