"""taskmetrics.py: task metrics against hand computations, a tiny model run for real, the zoo
CNN."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import tiny

from axnb import taskmetrics as ev
from axnb.calibrate import calibrate
from axnb.errors import AxnbError, ConfigError, DataError
from axnb.graph import load
from axnb.plan import QuantPlan
from axnb.results.serialize import save_json
from axnb.simulate import simulate

F = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
Q = np.array([[0.3, 0.6, 0.1], [0.3, 0.5, 0.2], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
Y = [1, 0, 2, 1]
NAMES = ["a.png", "b.png", "c.png", "d.png"]


def outs(rows, name="p"):
    return [{name: np.asarray(r, np.float32)[None]} for r in rows]


def test_classifier_metrics_by_hand():
    # NOTE: argmax F = 1 0 2 0 and argmax Q = 1 1 2 1; labels 1 0 2 1: each side is right on
    # three samples, but not the same three (b: right -> wrong, d: wrong -> right).
    r = ev.score("top1", outs(F), outs(Q), dict(zip(NAMES, Y)), NAMES)
    assert (r.float_score, r.quant_score, r.drop) == (0.75, 0.75, 0.0)
    assert r.flips == ("b.png", "d.png") and r.samples == 4
    assert [x["quant_pred"] for x in r.rows] == [1, 1, 2, 1]
    top2 = ev.score("topk", outs(F), outs(Q), Y, k=2)      # every label is in the top two
    assert (top2.float_score, top2.quant_score, top2.params) == (1.0, 1.0, {"k": 2})
    agree = ev.score("agreement", outs(F), outs(Q))
    assert (agree.float_score, agree.quant_score, agree.drop) == (1.0, 0.5, 0.5)
    assert agree.reference == "float outputs" and "by definition" in agree.note
    cos = [float(f @ q / np.linalg.norm(f) / np.linalg.norm(q)) for f, q in zip(F, Q)]
    assert r.cosine == pytest.approx(np.mean(cos), abs=1e-6)
    assert [x["cosine"] for x in r.rows] == pytest.approx(cos, abs=1e-6)


def test_dense_regression_and_embedding_metrics_by_hand():
    # NOTE: > 0.25: F {1} {0,1} {1,2} {0,1}; Q {0,1} {0,1} {1,2} {0,1,2}: IoU 1/2, 1, 1, 2/3.
    iou = ev.score("iou", outs(F), outs(Q), threshold=0.25)
    assert iou.quant_score == pytest.approx((0.5 + 1 + 1 + 2 / 3) / 4)
    assert iou.float_score == 1.0 and iou.flips == () and not iou.binary
    assert ev.score("iou", outs([[0.0, 0.1]]), outs([[0.2, 0.0]]), threshold=0.5
                    ).quant_score == 1.0                    # both maps empty: nothing to find
    mae = ev.score("mae", outs(F), outs(Q))                  # no labels: |q - f|
    assert mae.quant_score == pytest.approx((0.4 / 3 + 0.4 / 3 + 0 + 0.2 / 3) / 4)
    assert mae.float_score == 0.0 and mae.drop == pytest.approx(mae.quant_score)
    lab = ev.score("mae", outs(F), outs(Q), [[0.0, 1.0, 0.0]] * 4)
    assert lab.float_score == pytest.approx(np.mean(np.abs(F - [0, 1, 0])))
    assert lab.drop == pytest.approx(np.mean(np.abs(Q - [0, 1, 0])) - lab.float_score)
    # NOTE: nearest other sample by cosine: float 0->1, 1->0, 2->3, 3->2; the quantized e1
    # [.5, .5] is nearer e3 (0.78) than e0 (0.71): only sample 1 changes its neighbour.
    e_f = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
    e_q = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.1, 0.9]]
    nn = ev.score("nn_agreement", outs(e_f, "e"), outs(e_q, "e"), names=NAMES)
    assert nn.quant_score == 0.75 and nn.flips == ("b.png",)
    assert (nn.rows[1]["float_pred"], nn.rows[1]["quant_pred"]) == ("a.png", "d.png")


def test_any_callable_scores_float_and_quantized_the_same_way():
    def acc(f, q, y):
        return np.mean(q.argmax(1) == np.asarray(y))

    r = ev.score(acc, outs(F), outs(Q), Y)
    assert (r.metric, r.float_score, r.quant_score, r.rows) == ("acc", 0.75, 0.75, ())
    per = ev.score(lambda f, q, y: (q.argmax(1) == f.argmax(1)) * 1.0, outs(F), outs(Q))
    assert per.quant_score == 0.5 and per.binary and len(per.flips) == 2
    assert ev.resolve_metric("numpy:mean") is np.mean
    with pytest.raises(AxnbError, match="returned 3 values for 4 samples"):
        ev.score(lambda f, q, y: [1, 2, 3], outs(F), outs(Q))


def test_bad_input_names_the_problem_and_the_alternatives():
    with pytest.raises(ConfigError, match="did you mean 'top1'"):
        ev.score("top_1", outs(F), outs(Q), Y)
    with pytest.raises(DataError, match="needs labels.*label-free: agreement"):
        ev.score("top1", outs(F), outs(Q))
    with pytest.raises(DataError, match="no label for 1 of 4 samples, e.g. 'd.png'"):
        ev.score("top1", outs(F), outs(Q), dict(zip(NAMES[:3], Y)), NAMES)
    with pytest.raises(DataError, match="label 3 is not a class index 0..2"):
        ev.score("top1", outs(F), outs(Q), [1, 0, 3, 1])
    with pytest.raises(DataError, match="no model output 'q'; valid: p"):
        ev.score("top1", outs(F), outs(Q), Y, output="q")
    with pytest.raises(DataError, match=">= 3 samples"):
        ev.score("nn_agreement", outs(F[:2]), outs(Q[:2]))
    with pytest.raises(AxnbError, match="classifier-like output"):
        ev.score("agreement", outs([[1.0]] * 2), outs([[1.0]] * 2))
    with pytest.raises(ConfigError, match="cannot import"):
        ev.resolve_metric("no_such_pkg.mod:fn")


def test_report_saves_loads_and_reads(tmp_path):
    r = ev.score("top1", outs(F), outs(Q), Y, NAMES, mode="NPUBackend")
    again = ev.TaskReport.load(r.save(tmp_path / "task.json"))
    assert again == r and again.flips == r.flips
    assert list(r.to_frame()["sample"][:2]) == ["b.png", "d.png"]   # flipped first
    assert r.summary().startswith("top1 0.7500 float -> 0.7500 NPUBackend (drop 0.0000), 2 of 4")
    assert r.verdict(0.01)[0] and not ev.score("agreement", outs(F), outs(Q)).verdict(0.01)[0]
    with pytest.raises(AxnbError, match="not a saved TaskReport"):
        ev.TaskReport.load(save_json(tmp_path / "x.json", "Other", {}))


# ---------------------------------------------------------------- a tiny model, run for real


def _near_tie(tmp_path):
    """logits = [x0 + x1, x0 + x1 + 0.002 * x2]: class 1 wins by a hair that U8 rounds away."""
    w = np.array([[1, 1], [1, 1], [0, 0.002]], np.float32)
    m = tiny._model("near_tie", [tiny._n("MatMul", ["x", "w"], ["logits"])],
                    [("x", tiny.FLOAT, [1, 3])], [("logits", tiny.FLOAT, [1, 2])], {"w": w})
    xs = [np.array([[np.sin(i), np.cos(2 * i), 0.5 + 0.5 * np.sin(3 * i)]], np.float32)
          for i in range(24)]
    path = tmp_path / "near_tie.onnx"
    path.write_bytes(m.SerializeToString())
    return load(path), [{"x": x} for x in xs], w


def test_tiny_model_top1_and_agreement_match_a_hand_computation(tmp_path):
    model, feeds, w = _near_tie(tmp_path)
    stats = calibrate(model, feeds, progress=False)
    qm = simulate(model, stats, QuantPlan.from_config(model), "Reference")
    labels = [int(i % 3 == 0) for i in range(len(feeds))]
    # NOTE: the hand side: float logits in numpy, the metric counted here, not by axnb; U8
    # makes the two logits equal (ties go to class 0, as argmax breaks them).
    f = np.concatenate([fd["x"] @ w for fd in feeds])
    q = np.concatenate([qm.run(fd)["logits"] for fd in feeds])
    r = ev.evaluate(model, qm, feeds, "top1", labels)
    assert r.float_score == np.mean(f.argmax(1) == labels) == 1 / 3
    assert r.quant_score == np.mean(q.argmax(1) == labels) == 2 / 3
    changed = [i for i in range(len(feeds)) if (f[i].argmax() == labels[i]) !=
               (q[i].argmax() == labels[i])]
    assert len(changed) == 24 and r.flips == tuple(f"sample #{i}" for i in changed)
    assert r.mode == "Reference" and r.drop == pytest.approx(-1 / 3)
    top2 = ev.evaluate(model, qm, feeds, "topk", labels, k=2)
    assert top2.float_score == top2.quant_score == 1.0            # two classes: always in


def test_exported_model_is_scored_with_plain_onnxruntime(tmp_path):
    model, feeds, w = _near_tie(tmp_path)
    stats = calibrate(model, feeds, progress=False)
    qm = simulate(model, stats, QuantPlan.from_config(model), "NPUBackend")
    path = qm.save(tmp_path / "q.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    q = np.concatenate([sess.run(None, fd)[0] for fd in feeds])
    f = np.concatenate([fd["x"] @ w for fd in feeds])
    agree = ev.evaluate(model, path, feeds, "agreement")
    assert agree.quant_score == np.mean(q.argmax(1) == f.argmax(1))
    assert agree.cosine == pytest.approx(np.mean(
        [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(f, q)]), abs=1e-5)
    assert ev.evaluate(model, qm, feeds, "agreement").quant_score == agree.quant_score


# ---------------------------------------------------------------- the zoo CNN


def test_zoo_cnn_top1_float_and_quantized_in_both_modes(zoo_wb, tmp_path):
    """The config's evaluation block: top-1 on the 128 labelled text samples, both modes."""
    reports = {m: zoo_wb.evaluate(mode=m) for m in ("Reference", "NPUBackend")}
    for mode, r in reports.items():
        print(f"\n{r.summary()}; flips {r.flips}")
        assert (r.metric, r.mode, r.samples, r.reference) == ("top1", mode, 128, "labels")
        assert r.float_score >= 0.90 and 0.0 < r.cosine <= 1.0
        rows = r.rows
        assert r.quant_score == np.mean([x["quant_pred"] == x["label"] for x in rows])
        assert r.float_score == np.mean([x["float_pred"] == x["label"] for x in rows])
        assert ev.TaskReport.load(r.save(tmp_path / f"{mode}.json")) == r
    assert reports["Reference"].float_score == reports["NPUBackend"].float_score
    labels = json.loads(zoo_wb.config.resolve_path(
        zoo_wb.config.evaluation.labels).read_text())
    assert [x["label"] for x in reports["Reference"].rows] == [
        labels[x["sample"]] for x in reports["Reference"].rows]
    agree = zoo_wb.evaluate("agreement")                    # label-free, same samples
    assert agree.samples == 128 and agree.float_score == 1.0
    assert agree.quant_score == np.mean([x["float_pred"] == x["quant_pred"]
                                         for x in reports["Reference"].rows])
