"""advice.py: the thresholds written once and the tuning flowchart as one function."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from axnb import advice
from axnb import trials as nextsteps
from axnb.advice import FINAL, LAYER, advise, grade, where_lines
from axnb.outliers import outlier_row
from axnb.results import Advice, OutlierReport, TaskDelta, Trial, TrialKind

PACKAGE = Path(__file__).resolve().parents[1] / "axnb"


def test_the_thresholds_live_only_in_advice():
    """No number 0.98 / 0.999 in the package's code outside advice.py (docs may quote them)."""
    assert (FINAL, LAYER) == (0.98, 0.999)
    found = [f"{p.relative_to(PACKAGE.parent)}:{n.lineno}"
             for p in PACKAGE.rglob("*.py") if p.name != "advice.py"
             for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(n, ast.Constant) and type(n.value) is float and n.value in (0.98, 0.999)]
    assert found == []


def test_grade_is_the_one_colour_scale():
    assert [grade(c) for c in (0.5, FINAL, 0.995, LAYER, 1.0, float("nan"))] == \
        ["bad", "warn", "warn", "good", "good", "bad"]


def _outliers(hot: bool) -> OutlierReport:
    a = np.ones(64)
    if hot:
        a[0] = 1000.0
    return OutlierReport([outlier_row("t", a, "Add")])


def test_pass_warn_fail_branches():
    ok = advise({"out": 0.99}, method="MinMax", mode="Reference")
    assert ok.ok and ok.verdict == "pass" and "roughly normal" in ok.headline
    assert "NPUBackend" in ok.fix and ok.details["by_method"] == {"MinMax": 0.99}
    warn = advise({"out": 0.95}, method="MinMax", by_method={"MSE": 0.985, "Percentile": 0.96},
                  outliers=_outliers(True))
    assert warn.verdict == "warn" and "set calibration_method MSE" in warn.fix
    assert warn.steps[0].startswith("MSE calibration: 0.9500 -> 0.9850 (tried)")
    assert warn.steps[1].startswith("Percentile calibration: 0.9500 -> 0.9600 (tried)")
    # NOTE: SmoothQuant and U16 were not measured: named as untried, never recommended
    assert "Not measured yet (so not recommended): SmoothQuant" in warn.steps[2]
    fail = advise({"out": 0.9}, method="MinMax", by_method={"MSE": 0.91},
                  outliers=_outliers(True), plan_summary="73 layers: 73 U8")
    assert fail.verdict == "fail" and fail.steps[0].startswith("MSE calibration: 0.9000 -> "
                                                               "0.9100 (tried)")
    assert set(fail.details["by_method"]) == {"MinMax", "MSE"}
    nothing = advise({"out": 0.9})
    assert nothing.verdict == "fail" and "the other calibration methods" in nothing.steps[0]
    assert "No step measured raises" in nothing.steps[1]


def test_a_measured_step_that_lowers_the_metric_is_never_recommended():
    lower = [Trial("smooth_quant", "SmoothQuant", 0.9, 0.89, {}, "on"),
             Trial("u16", "U16 for a", 0.9, 0.9001, {"u16": ["a"]}, "a")]
    a = advise({"out": 0.9}, method="MinMax", by_method={"MSE": 0.8, "Percentile": 0.902},
               trials=lower)
    assert not any("(tried)" in s for s in a.steps) and a.trials == ()
    assert len(a.details["not_recommended"]) == 4 and "set calibration_method" not in a.fix
    good = Trial("u16", "U16 for b", 0.9, 0.99, {"u16": ["b"]}, "b", "1 of 9 layers U16")
    b = advise({"out": 0.9}, by_method={"MSE": 0.95}, trials=[good, *lower])
    assert b.steps[0] == "U16 for b: 0.9000 -> 0.9900 (tried) [1 of 9 layers U16]; b"
    assert [t.label for t in b.trials] == ["U16 for b", "MSE calibration"]
    assert b.verdict == "warn" and b.fix == b.steps[0]


def test_where_the_loss_starts_is_kept_apart_from_the_layers_that_cause_it():
    df = pd.DataFrame({"Operator": ["a", "b", "c"], "Cosin": [0.9999, 0.99, 0.995]})
    per = pd.DataFrame({"Operator": ["a", "b", "c"], "Cosin": [0.998, 0.9999, 0.99]})
    e2e, pl = where_lines([("EndToEnd", df, {"method": "EndToEnd"}),
                           ("PerLayer", per, {"method": "PerLayer"})])
    assert e2e.startswith("Where the loss starts (EndToEnd") and "the first: b (0.9900)" in e2e
    assert pl.startswith("The layers that cause it (PerLayer") and "worst: c (0.9900), a" in pl


def test_advice_round_trips_and_is_frozen(tmp_path):
    a = advise({"out": 0.9}, by_method={"MSE": 0.95})
    assert Advice.load(a.save(tmp_path / "a.json")) == a
    with pytest.raises(AttributeError):
        a.ok = True
    assert a.to_check().name == "next step" and a.to_check().verdict == a.verdict
    assert "<ol>" in a._repr_html_() and str(a).startswith(a.headline)
    assert advice.line(0.9995) == "99.95%"


# ---- measured on the zoo CNN (default config: MinMax, all analysis samples) -------------------
@pytest.fixture(scope="module")
def cnn_measured(zoo_workbench, lend):
    """The run's zoo Workbench (tests/conftest.py): its snapshot with the next steps measured,
    and the line they were measured against."""
    with lend(zoo_workbench) as wb:
        score = min(wb.final_cosine().values())
        # NOTE: the steps are measured against 98% when the CNN misses it; when its sample set
        # passes 98%, against a line it misses (half way from its cosine to 1), so there is
        # something to fix and the claims below are still checked on real numbers.
        line = FINAL if score < FINAL else 1 - (1 - score) / 2
        return nextsteps.measured(wb, threshold=line), line


@pytest.fixture
def cnn(zoo_wb, cnn_measured):
    return (zoo_wb, *cnn_measured)


def test_every_step_printed_was_measured_and_the_first_delivers_what_it_said(cnn):
    wb, an, line = cnn
    adv, before = an.advice, min(wb.final_cosine().values())
    print("\n" + str(adv))
    assert not adv.ok and adv.threshold == line and adv.trials
    assert {t.kind.value for t in an.trials} >= {"calibration", "u16"}
    assert [advice.step_text(t) for t in adv.trials] == list(adv.steps[:len(adv.trials)])
    assert not any("Not measured" in s for s in adv.steps)
    assert all(advice.helps(t) and t.after > t.before for t in adv.trials)
    low = [advice.step_text(t) for t in an.trials if not advice.helps(t)]
    assert low == adv.details["not_recommended"] and not set(low) & set(adv.steps)
    first = adv.trials[0]
    assert first.before == before and first.after == max(t.after for t in an.trials)
    plan, method = wb.plan, wb.method
    try:
        for t in adv.trials:  # NOTE: each step from the same start, as it was measured
            got = min(nextsteps.apply(wb, t).final_cosine().values())
            assert got == pytest.approx(t.after, abs=1e-9), t.label
            assert got - before == pytest.approx(t.after - t.before, abs=1e-9)
            wb.set_equalization(False).set_smooth_quant(False).set_method(method).set_plan(plan)
    finally:
        wb.set_equalization(False).set_smooth_quant(False).set_method(method).set_plan(plan)


def test_the_u16_step_is_small_and_says_its_cost(cnn):
    wb, an, _ = cnn
    u16 = next(t for t in an.trials if t.kind is TrialKind.u16)
    n = len(wb.plan.layer_types)
    assert 1 <= len(u16.change["u16"]) <= 8 and f"of {n} layers U16" in u16.cost
    assert "evaluations" in u16.cost and json.dumps(u16.change["u16"]) in u16.how


def test_the_verdict_says_when_a_few_samples_are_the_whole_story():
    per = [0.999] * 29 + [0.69, 0.80, 0.84]
    names = [f"img{i}.png" for i in range(32)]
    sp = advice.spread(per, names)
    assert (sp["n"], sp["under"], sp["min"], sp["worst"][0]) == (32, 3, 0.69, ("img29.png", 0.69))
    a = advise({"out": sum(per) / 32}, spread=sp)
    assert a.where[0] == ("A few samples are the whole story: 3 of 32 are under 98% (img29.png "
                          "0.6900, img30.png 0.8000, img31.png 0.8400); the others average "
                          "0.9990.") and a.details["spread"]["min"] == 0.69
    broad = advise({"out": 0.9}, spread=advice.spread([0.9] * 8))
    assert broad.where[0].startswith("Spread: per sample: mean 0.9000, min 0.9000; worst: "
                                     "sample #0 0.9000")
    assert advice.spread([]) is None and "n/a" in advice.spread_text(None)


def test_confirm_in_npubackend_only_when_the_figures_are_not_npubackend_already():
    ref = advise({"out": 0.95}, method="MinMax", mode="Reference", by_method={"MSE": 0.985})
    npu = advise({"out": 0.95}, method="MinMax", mode="NPUBackend", by_method={"MSE": 0.985})
    assert ref.steps[-1] == "Then confirm with precision_analysis_mode NPUBackend."
    assert not any("precision_analysis_mode NPUBackend" in s for s in npu.steps)
    assert npu.steps[0].startswith("MSE calibration: 0.9500 -> 0.9850 (tried)")


def test_a_failed_task_verdict_gets_steps_judged_by_the_task_metric():
    """The cosine passes its line but the task metric drops too much: the advice stays 'ok' on
    the cosine, lists the trials that lower the drop (smallest first), and rejects one that
    raises it even when it raises the cosine."""
    def t(label, after, drop):
        return Trial("calibration", label, 0.99, after, {}, "h").with_task(
            TaskDelta("top-1", "", 0.03, drop, f"top-1 drop 3.0 -> {drop}"))

    bad = (False, "top-1 drops 3.0 points (...): too much at ...")
    trials = [t("A", 0.995, 0.02), t("B", 0.999, 0.04), t("C", 0.991, 0.005)]
    a = advise({"out": 0.99}, trials=trials, task=bad, max_drop=0.01, mode="NPUBackend")
    assert a.ok and "roughly normal" in a.headline and a.verdict == "warn"  # C reaches 1 point
    assert [x.label for x in a.trials] == ["C", "A"] and a.steps[0].startswith("C: 0.9900")
    assert a.details["not_recommended"] == [advice.step_text(trials[1])]
    assert "top-1 drops 3.0 points" in a.summary and a.fix == a.steps[0]
    far = advise({"out": 0.99}, trials=trials[:2], task=bad, max_drop=0.01, mode="NPUBackend")
    assert far.verdict == "fail" and [x.label for x in far.trials] == ["A"]
    none = advise({"out": 0.99}, trials=trials[1:2], task=bad, max_drop=0.01)
    assert none.trials == () and "No step measured lowers the task metric's drop" in \
        " ".join(none.steps)
    # NOTE: an acceptable task verdict: pass, and no step asks to check the task metric
    ok = advise({"out": 0.99}, task=(True, "top-1 gains ..."), mode="NPUBackend")
    assert ok.verdict == "pass" and ok.steps == (
        "Confirm with precision_analysis_mode NPUBackend and on the board.",)
    assert advise({"out": 0.99}).steps[0].startswith("Check the task metric")
