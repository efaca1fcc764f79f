"""checks/align.py: reference dumps and the deployed side compared within tolerances."""

from __future__ import annotations

import json

import pytest

from axnb.checks import compare_dumps


def test_dump_reference_writes_every_stage_and_a_manifest(reference):
    files = json.loads((reference / "manifest.json").read_text())["files"]
    assert {f["stage"] for f in files} == {"input", "preprocess", "output", "postprocess"}
    pre = next(f for f in files if f["stage"] == "preprocess")
    assert pre["dtype"] == "float32" and pre["shape"] == [1, 3, 224, 224]
    assert {f["key"] for f in files if f["stage"] == "postprocess"} == {"probs", "top"}
    assert len(files) == 2 * 5


@pytest.mark.parametrize("fmt", ["npy", "bin"])
@pytest.mark.parametrize(("pre_err", "post_err", "failing"), [
    (5e-5, 5e-4, set()), (2e-4, 5e-4, {"preprocess"}), (5e-5, 2e-3, {"postprocess"})])
def test_compare_dumps_tolerances(reference, deploy, tmp_path, fmt, pre_err, post_err, failing):
    dep = deploy(reference, tmp_path, fmt, pre_err, post_err)
    diag = compare_dumps(reference, dep)
    bad = {c.name.split(": ")[1] for c in diag if c.verdict == "fail"}
    assert bad == failing
    assert diag["alignment: output"].verdict == "pass"            # model outputs: report only
    pre = diag["alignment: preprocess"]
    assert pre.details["rows"][0]["max_abs"] == pytest.approx(pre_err, rel=0.2)
    if "preprocess" in failing:
        row = pre.details["rows"][0]
        assert row["mismatches"] == row["size"] == 3 * 224 * 224
        assert row["first_mismatch"][0] == [0, 0, 0, 0] and "first at" in pre.summary
        assert pre.fix


def test_compare_dumps_names_a_missing_file(reference, deploy, tmp_path):
    files = json.loads((reference / "manifest.json").read_text())["files"]
    gone = next(f["file"] for f in files if f["stage"] == "postprocess")
    dep = deploy(reference, tmp_path, "npy", drop=gone.split("/")[1])
    check = compare_dumps(reference, dep)["alignment: postprocess"]
    assert check.verdict == "fail" and check.details["missing"] == [gone]
    assert gone in check.summary
