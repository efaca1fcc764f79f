"""checks/__init__.py: the next step (the one advice) and the diagnose() aggregate."""

from __future__ import annotations

import pytest

from axnb.checks import Check, Diagnosis, diagnose, next_step
from axnb.workbench import Workbench


@pytest.mark.slow                 # NOTE: a MiniLM Workbench
def test_next_step_on_minilm_names_smooth_quant_untried(zoo_ready):
    wb = Workbench("zoo:minilm", progress=False)
    wb.set_samples(wb.samples[:8])
    check = next_step(wb)
    print("\nnext step (MiniLM):", check.summary, "|", check.fix)
    assert check.verdict == "fail" and check.details["outliers_level5"] > 0
    # NOTE: next_step reads the snapshot: the calibration methods are measured, SmoothQuant is
    # named (level>=5 channels) but not recommended before axnb.trials.measure has tried it
    assert check.fix.startswith("MSE calibration: ") and "(tried)" in check.fix
    assert "level>=5" in check.summary and any(
        "Not measured yet" in s and "SmoothQuant" in s for s in check.details["steps"])
    assert min(check.details["final_cosine"].values()) < 0.9
    # NOTE: every calibration method, the same set the measured steps try (advice.METHODS_TRIED)
    assert set(check.details["by_method"]) == {"MinMax", "MSE", "Percentile", "KL"}
    assert wb.method.value == "MinMax"                                  # restored


def test_next_step_on_the_zoo_cnn_follows_the_flowchart(zoo_wb):
    wb = zoo_wb                               # NOTE: the run's zoo Workbench (tests/conftest.py)
    check = next_step(wb)
    by_m, final = check.details["by_method"], min(check.details["final_cosine"].values())
    print("\nnext step (zoo CNN):", check.verdict, check.summary, "|", check.fix)
    assert by_m["MinMax"] == pytest.approx(final)
    best = max(by_m, key=by_m.get)
    if final >= 0.98:
        assert check.verdict == "pass"
    elif by_m[best] >= 0.98:                  # a method alone is enough: say which one
        assert check.verdict == "warn" and f"set calibration_method {best}" in check.fix
    else:                                     # NOTE: only measured steps are recommended
        assert check.verdict == "fail" and ("(tried)" in check.fix) == (
            by_m[best] > final + 0.005)


def test_diagnose_runs_and_round_trips(small_wb, reference, deploy, tmp_path):
    dep = deploy(reference, tmp_path / "dep", "bin", 5e-5, 5e-4)
    diag = diagnose(small_wb, reference_dir=reference, deployed_dir=dep)
    names = [c.name for c in diag]
    assert names[:4] == ["alignment: input", "alignment: preprocess", "alignment: output",
                         "alignment: postprocess"]
    assert {"input types", "deployed input", "mean/std", "colour order", "calibration size",
            "calibration vs analysis", "next step"} <= set(names)
    assert diag["calibration size"].verdict == "warn"                    # 4 samples
    print("\n" + diag.to_frame()[["check", "verdict", "summary"]].to_string())
    # NOTE: the zoo config deploys U8 NHWC with mean/std inside: the compiled model's input
    # differs from the float model's (issue 30); the rest of the checklist warns at worst
    assert diag["deployed input"].verdict == "fail" and diag.worst == "fail"
    assert max((c.verdict for c in diag if c.name != "deployed input"),
               key=["pass", "warn", "fail"].index) == "warn"
    assert len(diag.to_frame()) == len(diag)
    again = Diagnosis.load(diag.save(tmp_path / "diag.json"))
    assert again == diag and "<table>" in again._repr_html_()
    with pytest.raises(ValueError, match="verdict"):
        Check("x", "ok", "bad verdict")


def test_the_next_step_is_the_snapshots_advice(small_wb):
    """One flowchart: the checklist's next step is the advice the report and Explorer show."""
    an = small_wb.snapshot(methods=["EndToEnd"])
    check = next_step(small_wb, analysis=an)
    assert check == an.advice.to_check() and check.summary == an.advice.summary
    assert next_step(small_wb) == small_wb.snapshot(methods=[]).advice.to_check()
    strict = next_step(small_wb, target=1.0, analysis=an)
    assert strict.verdict == "fail" and "< 1.0" in strict.summary
