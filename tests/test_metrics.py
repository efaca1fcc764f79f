"""metrics.py: the four metrics against hand-computed values, edge cases, the accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from axnb.metrics import Accumulator, cosine, from_moments, max_abs, moments, mse, sqnr


def test_hand_computed_values():
    x, y = np.array([3.0, 4.0]), np.array([4.0, 3.0])
    # x.y = 24, |x| = |y| = 5; d = (-1, 1): sum d^2 = 2, sum x^2 = 25
    assert cosine(x, y) == pytest.approx(24 / 25, abs=1e-15)
    assert mse(x, y) == pytest.approx(1.0, abs=1e-15)
    assert sqnr(x, y) == pytest.approx(10 * math.log10(25 / 2), abs=1e-12)
    assert max_abs(x, y) == 1.0


def test_tensors_are_flattened_and_accumulated_in_float64():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    y = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32)
    assert cosine(x, y) == pytest.approx(34 / math.sqrt(30 * 39), abs=1e-15)
    assert mse(x, y) == 0.25
    # NOTE: in float32, 2**48 + 1 + 1 == 2**48; the float64 sums keep both ones.
    big = np.array([2.0**24, 1.0, 1.0], np.float32)
    assert moments(big, np.zeros(3, np.float32))[2] == 2.0**48 + 2


def test_edge_cases():
    z = np.zeros(4)
    assert cosine(z, z) == 1.0
    assert cosine(z, np.ones(4)) == 0.0 and cosine(np.ones(4), z) == 0.0
    assert sqnr(np.ones(4), np.ones(4)) == math.inf
    assert sqnr(z, z) == math.inf
    assert mse(z, z) == 0.0 and max_abs(z, z) == 0.0
    assert sqnr(np.ones(4), z) == 0.0          # all signal lost: noise power == signal power
    assert cosine([1.0, 0.0], [-1.0, 0.0]) == -1.0


def test_nan_gives_nan_without_raising():
    x, y = np.array([1.0, np.nan]), np.array([1.0, 2.0])
    for f in (cosine, mse, sqnr, max_abs):
        assert math.isnan(f(x, y)), f.__name__
    # an in-graph max may ignore NaN; the sum of squares carries it into MaxAbs
    m = moments(x, y)
    m[5] = 1.0
    assert math.isnan(from_moments(m)["MaxAbs"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 and 2 elements"):
        cosine(np.ones(3), np.ones(2))


def test_accumulator_averages_per_sample_values():
    acc = Accumulator()
    acc.add([3.0, 4.0], [4.0, 3.0])            # cos 0.96, mse 1
    acc.add([1.0, 0.0], [1.0, 0.0])            # cos 1, mse 0, sqnr inf
    r = acc.result()
    assert acc.samples == 2
    assert r["Cosin"] == pytest.approx(0.98) and r["MSE"] == pytest.approx(0.5)
    assert r["SQNR"] == math.inf and r["MaxAbs"] == pytest.approx(0.5)


def test_vector_accumulator_matches_scalar_metrics():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(3, 10)) for _ in range(4)]
    ys = [x + rng.normal(scale=0.1, size=x.shape) for x in xs]
    acc = Accumulator((3,))
    for x, y in zip(xs, ys):
        acc.add_moments(np.stack([moments(a, b) for a, b in zip(x, y)]))
    r = acc.result()
    for i in range(3):
        assert r["Cosin"][i] == pytest.approx(np.mean([cosine(x[i], y[i])
                                                        for x, y in zip(xs, ys)]), rel=1e-14)
        assert r["SQNR"][i] == pytest.approx(np.mean([sqnr(x[i], y[i])
                                                       for x, y in zip(xs, ys)]), rel=1e-14)
    assert math.isnan(Accumulator().result()["Cosin"])
