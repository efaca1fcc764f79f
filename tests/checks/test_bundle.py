"""checks/bundle.py: a repro bundle re-runs to the same final cosine."""

from __future__ import annotations

import json

import pytest

from axnb.checks import repro_bundle, rerun_bundle


def test_repro_bundle_reruns_to_the_same_cosine(small_wb, tmp_path):
    path = repro_bundle(small_wb, tmp_path / "bundle.zip", samples=4, command="pytest")
    out = rerun_bundle(path, tmp_path / "rerun")
    rec = out["recorded"]
    assert out["complete"] and out["mode"] == "Reference"
    for name, value in small_wb.final_cosine().items():
        assert out["final_cosine"][name] == pytest.approx(value, abs=1e-9)
        assert rec[name] == pytest.approx(value, abs=1e-9)
    root = tmp_path / "rerun"
    assert {"config.json", "versions.json", "command.txt", "outliers.csv", "results.json"} <= \
        {p.name for p in root.iterdir()}
    assert json.loads((root / "versions.json").read_text())["onnxruntime"]
    assert len(list((root / "calib" / "x").glob("*.npy"))) == 4
    assert not list(tmp_path.glob(".bundle.zip*"))                       # no temp left
