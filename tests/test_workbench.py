"""workbench.py: cached sessions, cheap toggles and method switches, exports."""

from __future__ import annotations

import importlib

import numpy as np
import onnxruntime as ort
import pytest

from axnb.config import load_config
from axnb.errors import ConfigError
from axnb.metrics import output_metrics
from axnb.plan import QuantPlan
from axnb.results import Analysis
from axnb.types import CalibMethod, QType

# NOTE: axnb.simulate / axnb.calibrate are the functions; patch the modules' own names.
wbmod = importlib.import_module("axnb.workbench")
runtime = importlib.import_module("axnb.runtime")
simmod = importlib.import_module("axnb.simulate")
calmod = importlib.import_module("axnb.calibrate")   # NOTE: the executors call it


@pytest.fixture
def wb(zoo_wb6):
    """The run's zoo Workbench on 6 analysis samples (tests/conftest.py)."""
    return zoo_wb6


def test_toggle_changes_only_the_toggled_layer(wb, monkeypatch):
    wb.reset_plan()
    base = wb.final_cosine()
    qm0 = wb.quantized()
    layer = wb.plan.layers()[12]
    before = wb.plan
    # NOTE: a toggle must not calibrate again nor build a new graph or session.
    monkeypatch.setattr(calmod, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    monkeypatch.setattr(simmod, "reference_model", lambda *a, **k: pytest.fail("graph rebuilt"))
    monkeypatch.setattr(runtime, "session", lambda *a, **k: pytest.fail("new session"))
    wb.set_qtype(layer, "U16")
    changed = before.changed(wb.plan)
    assert changed and all(wb.plan.qtype(t) is QType.U16 for t in changed
                           if t in wb.plan.acts)
    qm1 = wb.quantized()
    assert qm1.proto is qm0.proto
    diff = {t for t in qm0.qparams if qm0.qparams[t] != qm1.qparams.get(t)}
    assert diff == set(changed) & set(qm0.qparams)
    after = wb.final_cosine()
    assert after.keys() == base.keys()
    wb.set_qtype(layer, "U8")
    assert wb.final_cosine() == base


def test_method_switch_without_recalibration(wb, monkeypatch):
    wb.reset_plan().set_method("MinMax")
    c_minmax = wb.final_cosine()
    monkeypatch.setattr(calmod, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    for m in ("Percentile", "MSE", "KL"):
        wb.set_method(m)
        assert wb.quantized().method is CalibMethod(m)
        assert set(wb.final_cosine()) == set(c_minmax)
    wb.set_method("MinMax")
    assert wb.final_cosine() == c_minmax


def test_all_u16_beats_all_u8(wb):
    wb.reset_plan().set_method("MinMax")
    u8 = wb.set_all("U8").final_cosine()
    u16 = wb.set_all("U16").final_cosine()
    assert all(u16[o] >= u8[o] for o in u8)
    wb.reset_plan()


def test_exports(wb, tmp_path):
    wb.reset_plan().set_qtype(wb.plan.layers()[3:6], "U16").set_method("Percentile")
    cfg_path = wb.export_config(tmp_path / "out" / "config.json")
    cfg = load_config(cfg_path)
    assert cfg.quant.calibration_method is CalibMethod.Percentile
    again = QuantPlan.from_config(wb.model, cfg)
    assert dict(again.acts) == dict(wb.plan.acts)
    # NOTE: the calibration data path still points at the same files from the new folder.
    assert cfg.resolve_path(cfg.quant.input_configs[0].calibration_dataset).is_dir()
    q = wb.export_quantized(tmp_path / "out" / "quantized.onnx")
    sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    out = sess.run(None, wb.samples[0])[0]
    assert out.shape == (1, 4) and np.isfinite(out).all()
    wb.reset_plan().set_method("MinMax")


def _direct_cosine(wb, feeds) -> dict[str, float]:
    """The final cosine of ``feeds`` computed here, outside every Workbench cache."""
    sess = wb.model.session()
    names = list(wb.model.outputs)
    fl = [dict(zip(names, sess.run(names, f))) for f in feeds]
    qm = wb.quantized()
    return {o: m["Cosin"] for o, m in output_metrics(fl, [qm.run(f) for f in feeds]).items()}


def test_set_samples_drops_every_cache_of_the_old_samples(wb):
    wb.reset_plan().set_method("MinMax")
    first, rest = wb.samples[:2], wb.samples[2:6]
    wb.set_samples(first)
    old_cos, old_rep = wb.final_cosine(), wb.report("EndToEnd")
    wb.set_samples(rest)
    assert len(wb.float_outputs()) == len(rest)
    # NOTE: stale float outputs or reports of the first samples would fail these.
    assert wb.final_cosine() == pytest.approx(_direct_cosine(wb, rest), abs=1e-12)
    assert wb.final_cosine() != old_cos
    rep = wb.report("EndToEnd")
    assert rep is not old_rep and rep.meta["samples"] == len(rest)
    assert wb.snapshot([]).samples["analysis"] == len(rest)
    with pytest.raises(AttributeError):
        wb.samples = first                          # read-only: set_samples invalidates
    wb.set_samples(first + rest)


def test_final_cosine_is_output_metrics(wb):
    wb.reset_plan()
    fm = wb.final_metrics()
    assert wb.final_cosine() == {o: m["Cosin"] for o, m in fm.items()}
    assert set(fm[next(iter(fm))]) >= {"Cosin", "MSE", "SQNR", "MaxAbs", "per_sample"}
    assert len(fm[next(iter(fm))]["per_sample"]) == len(wb.samples)


def test_evaluator_scores_a_plan_without_touching_the_workbench(wb):
    wb.reset_plan()
    base, layer = wb.plan, wb.plan.layers()[12]
    ev = wb.evaluator()
    u16 = base.set(layer, "U16")
    got = ev(u16)
    assert wb.plan is base and ev.context["samples"] == len(wb.samples)
    assert got == wb.set_plan(u16).final_cosine()
    wb.set_plan(base)
    assert ev(base) == wb.final_cosine()
    with pytest.raises(ConfigError, match="valid metrics: cosine"):
        wb.evaluator(metric="cosin")


def test_snapshot_is_cached_frozen_and_round_trips(wb, tmp_path):
    wb.reset_plan().set_method("MinMax")
    an = wb.snapshot(methods=["EndToEnd"])
    assert wb.snapshot(methods=["EndToEnd"]) is an             # nothing missing: no run
    assert an.final_cosine() == wb.final_cosine() and an.method == "MinMax"
    assert list(an.reports) == ["EndToEnd"] and an.advice.headline.startswith("Final-output")
    assert an.samples == {"calibration": wb.stats.samples, "analysis": len(wb.samples),
                          "analysis_origin": "given to the Workbench"}
    with pytest.raises(AttributeError):
        an.method = "MSE"
    back = Analysis.load(an.save(tmp_path / "analysis.json"))
    assert back.final == an.final and back.advice == an.advice and back.plan == an.plan
    assert back.reports["EndToEnd"].rows == an.reports["EndToEnd"].rows
    assert back.outliers.rows == an.outliers.rows and back.model == an.model
    wb.set_qtype(wb.plan.layers()[3], "U16")
    assert wb.snapshot(methods=["EndToEnd"]) is not an          # a new plan, a new snapshot
    wb.reset_plan()


def test_workbench_imports_no_view_checks_or_widgets():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(wbmod))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in names if m.startswith(("axnb.view", "axnb.widgets", "axnb.checks",
                                                  "axnb.diagnose"))}


def test_ranking_is_the_perlayer_table_worst_first_one_candidate_per_group(wb):
    rank = wb.ranking()
    rep = {r["Operator"]: r["Cosin"] for r in wb.report("PerLayer").rows}
    assert rank and all(n in wb.plan.layer_types for n in rank)
    assert [rep[n] for n in rank] == sorted(rep[n] for n in rank)
    members = {m for g in wb.model.groups if g.output for m in g.members if m != g.name}
    assert not members & set(rank)
    assert not any(wb.plan.layer_sources[n].startswith("follows") for n in rank)


def test_evaluator_rank_reads_the_cached_table_of_the_current_plan(wb, monkeypatch):
    import importlib

    cmp = importlib.import_module("axnb.ranking")     # NOTE: the compare ranking calls
    want = wb.ranking()                                  # the table of wb.plan is now cached
    ev = wb.evaluator()
    other = wb.plan.set(want[0], "U16")
    calls = []
    real = cmp.compare
    monkeypatch.setattr(cmp, "compare", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert ev.rank(wb.plan) == want and not calls
    assert ev.rank(other) == cmp.layer_ranking(
        real(wb.model, wb.quantized().with_plan(wb.stats, other), wb.samples, "PerLayer",
             progress=False), other)
    assert calls == [1]                                  # another plan: one compare pass


def test_snapshot_task_carries_the_evaluation_per_mode_cached_per_plan(wb, zoo_ready, tmp_path,
                                                                        monkeypatch):
    import dataclasses

    from evalsubset import FLIPS, small_eval_config

    from axnb.errors import AxnbError

    monkeypatch.setattr(wb, "config", small_eval_config(zoo_ready, tmp_path / "labelled"))
    wb.reset_plan().set_method("MinMax")
    an = wb.snapshot(methods=[], modes=["NPUBackend"], task=True)
    assert list(an.task) == ["Reference", "NPUBackend"] and an.max_drop == 0.01
    for mode, r in an.task.items():
        assert r == wb.evaluate(mode=mode) and r.mode == mode and set(r.flips) == set(FLIPS)
    calls = []
    real = wb.evaluate
    monkeypatch.setattr(wb, "evaluate", lambda **k: calls.append(k) or real(**k))
    assert wb.snapshot(methods=[], modes=["NPUBackend"], task=True) is an
    assert wb.task_reports(["NPUBackend"])["NPUBackend"] is an.task["NPUBackend"]
    assert calls == [] and wb.snapshot(methods=[], modes=["NPUBackend"]).task == {}
    wb.set_qtype(wb.plan.layers()[5], "U16")
    new = wb.snapshot(methods=[], task=True).task["Reference"]
    assert calls == [{"mode": wb.mode}] and new.cosine != an.task["Reference"].cosine
    wb.reset_plan()
    monkeypatch.setattr(wb, "config", dataclasses.replace(wb.config, evaluation=None))
    with pytest.raises(AxnbError, match='no "evaluation" block'):
        wb.snapshot(methods=[], task=True)


def test_set_samples_keeps_given_names(wb):
    feeds, names = wb.samples, list(wb.sample_names)
    wb.set_samples(feeds[:2], names[:2])
    assert wb.sample_names == names[:2] and wb.snapshot([]).sample_names == tuple(names[:2])
    wb.set_samples(feeds[:2])
    assert wb.sample_names == ["sample #0", "sample #1"]
    wb.set_samples(feeds, names)


def test_the_table_pass_fills_the_final_metrics(wb, monkeypatch):
    """Issue 30: after a layer table, final_metrics runs no pass of its own and gives what its
    own pass gives, bit for bit (several plans, both modes)."""
    from test_compare import _same

    cands = wb.plan.candidates()
    for plan in (wb.plan, wb.plan.override(dict.fromkeys(cands[::3], "U16")),
                 wb.plan.override(dict.fromkeys(cands[1::5], "FP32"))):
        wb.set_plan(plan)
        for mode in ("Reference", "NPUBackend"):
            qm = wb.quantized(mode)
            want = wb.executor.output_metrics(wb.model, qm, wb.samples,
                                              float_outputs=wb.float_outputs)
            wb._finals.clear()
            wb._reports.clear()
            wb.report("EndToEnd", mode)
            with monkeypatch.context() as mp:
                mp.setattr(wb.executor, "output_metrics", lambda *a, **k: pytest.fail("a pass"))
                assert _same(wb.final_metrics(mode), want)
    wb.reset_plan()
