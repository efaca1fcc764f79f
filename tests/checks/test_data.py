"""checks/data.py: mean/std, colour order, calibration size, calibration vs analysis data."""

from __future__ import annotations

import dataclasses

import pytest

from axnb import data
from axnb.checks import (
    calibration_size,
    colour_order,
    config_vs_data,
    distribution_gap,
    mean_std,
)


def test_colour_order_on_the_zoo_cnn_reports_both_orders(rapid):
    model, cfg = rapid
    check = colour_order(model, cfg)
    d = check.details
    print("\ncolour order (zoo CNN):", check.verdict, check.summary)
    assert d["configured"] == "BGR" and d["swapped"] == "RGB" and d["samples"] == 32
    assert set(d["confidence"]) == set(d["accuracy"]) == {"BGR", "RGB"}
    assert all(0.25 <= v <= 1 for v in d["confidence"].values())
    assert all(0 <= v <= 1 for v in d["accuracy"].values())
    # NOTE: which order wins is asserted only when the difference is clearly significant.
    if abs(d["confidence_z"]) < 3 and abs(d["accuracy_z"]) < 3:
        assert check.verdict in ("pass", "warn")


def test_colour_order_says_when_near_grey_images_cannot_tell(red, tmp_path):
    """Issue 30: on grey images both orders score alike; the check says it cannot tell
    instead of passing."""
    import numpy as np
    from PIL import Image

    from axnb.config import load_config

    model, _ = red
    folder = tmp_path / "grey"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(np.repeat(rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), 3, 2)
                        ).save(folder / f"{i:03d}.png")
    cfg = load_config({"quant": {"input_configs": [{"calibration_dataset": str(folder),
                                                    "calibration_size": 12}]},
                       "input_processors": [{"tensor_format": "RGB", "mean": [0, 0, 0],
                                             "std": [255.0] * 3}]})
    check = colour_order(model, cfg)
    assert check.verdict == "warn" and check.details["grey_samples"] == 12
    assert "cannot tell: 12 of 12 samples are near-grey" in check.summary
    assert "colour images" in check.fix


def test_swapped_colour_order_is_flagged(red):
    model, config = red
    labels = {f"{i:03d}.png": 0 for i in range(12)}
    with pytest.warns(UserWarning, match="only 12"):
        good, bad = (colour_order(model, config(f), labels) for f in ("RGB", "BGR"))
    assert good.verdict == "pass" and good.details["accuracy"] == {"RGB": 1.0, "BGR": 0.0}
    assert good.details["grey_samples"] == 0 and not good.details["cannot_tell"]
    assert bad.verdict == "fail" and bad.details["confidence_z"] < -3
    assert bad.details["confidence"]["BGR"] < 0.5 < 0.9 < bad.details["confidence"]["RGB"]
    assert "tensor_format RGB" in bad.fix


def test_mean_std_flags_a_std_off_by_a_factor(rapid):
    model, cfg = rapid
    assert mean_std(model, cfg).verdict == "pass"
    wrong = cfg.with_overrides({"quant.input_configs[0].calibration_std": [1.0] * 3,
                                "input_processors[0].std": [1.0] * 3})
    check = mean_std(model, wrong)
    x = check.details["inputs"]["x"]
    assert check.verdict == "fail" and min(x["normalised_std"]) > 40
    # NOTE: the suggested std is the pixel std, close to the right ~58 of the shipped config.
    assert all(50 < s < 70 for s in x["pixel_std"]) and str(x["pixel_std"][0])[:3] in check.fix


def test_calibration_size_and_distribution_gap(red):
    model, config = red
    assert [calibration_size([{}] * n).verdict for n in (3, 8, 32)] == ["fail", "warn", "pass"]
    cfg = config(size=8, sample_dir="blue")
    checks = {c.name: c for c in config_vs_data(model, cfg)}
    assert checks["calibration size"].verdict == "warn"
    assert checks["calibration vs analysis"].verdict == "warn"
    same = distribution_gap(data.calibration_set(model, cfg), data.calibration_set(model, cfg),
                            {"x": 1})
    assert same.verdict == "pass" and same.details["inputs"]["x"]["gap_sigma"]["mean"] == 0


def test_workbench_and_model_forms_agree(small_wb):
    model, cfg = small_wb.model, small_wb.config
    a = config_vs_data(small_wb)
    b = config_vs_data(model, dataclasses.replace(cfg))
    assert [c.name for c in a] == [c.name for c in b]
    assert a[0] == b[0] and a[1].details == b[1].details
