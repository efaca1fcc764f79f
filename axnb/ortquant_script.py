"""Quantize with onnxruntime's own ``quantize_static`` so that it reproduces axnb's plan.

Written by axnb (``axnb build`` -> ``ort_quant/``, or ``Workbench.export_ort``); copied verbatim,
it needs only numpy, onnx and onnxruntime (not axnb)::

    python quantize.py                          # -> model.quant.onnx beside this file
    python quantize.py --output q.onnx --calibration my_feeds.npz

The files beside it:

- ``model.onnx``: the float model as axnb's frontend optimized it; the tensor names of the
  overrides refer to it (quantize this one, not the original export).
- ``tensor_quant_overrides.json``: onnxruntime ``TensorQuantOverrides`` with enum names as
  strings: per quantized tensor its ``quant_type`` and the ``scale``/``zero_point`` axnb chose.
- ``quantize_static.json``: the other ``quantize_static`` arguments (activation / weight types,
  per-channel, op types, ``nodes_to_exclude`` for FP32 layers, ``extra_options``) and
  ``float_tensors``: tensors axnb keeps float where onnxruntime would put a Q/DQ pair anyway
  (inside fused groups); their pairs are removed after ``quantize_static``.
- ``calibration.npz``: calibration feeds, arrays named ``<sample>/<input>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OVERRIDES, OPTIONS = "tensor_quant_overrides.json", "quantize_static.json"
_ZP = {"QUInt8": np.uint8, "QInt8": np.int8, "QUInt16": np.uint16, "QInt16": np.int16}


def load_overrides(path) -> dict:
    """``tensor_quant_overrides.json`` -> the dict ``TensorQuantOverrides`` takes (QuantType
    enums, float32 scales, zero points of the quant type's dtype)."""
    from onnxruntime.quantization import QuantType

    out = {}
    for tensor, entries in json.loads(Path(path).read_text()).items():
        out[tensor] = []
        for e in entries:
            d = dict(e)
            name = d.get("quant_type")
            if name is not None:
                d["quant_type"] = QuantType[name]
            if "scale" in d:
                d["scale"] = np.array(d["scale"], np.float32)
                d["zero_point"] = np.array(d["zero_point"], _ZP[name])
            out[tensor].append(d)
    return out


def read_feeds(path) -> list[dict]:
    """``calibration.npz`` (``<sample>/<input>`` arrays) -> one feed dict per sample."""
    feeds: dict[int, dict] = {}
    with np.load(path) as z:
        for key in z.files:
            sample, name = key.split("/", 1)
            feeds.setdefault(int(sample), {})[name] = z[key]
    return [feeds[k] for k in sorted(feeds)]


def _reader(feeds):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def strip(model, tensors, float_model) -> list[str]:
    """Undo onnxruntime's quantization of ``tensors``: an activation loses its Q/DQ pair, a
    constant gets its float value back (from ``float_model``); returns the tensors changed."""
    g, want = model.graph, set(tensors)
    init = {t.name: t for t in g.initializer}
    q_of = {n.output[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
    outputs = {o.name for o in g.output}
    drop, done, rename = [], [], {}
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        src = q_of[dq.input[0]].input[0] if dq.input[0] in q_of else dq.input[0]
        name = _float_name(src)
        if name not in want or (dq.input[0] not in q_of and dq.input[0] not in init):
            continue
        if dq.input[0] in q_of:
            drop.append(q_of[dq.input[0]])
            # NOTE: a graph output keeps its name: its producer writes it again.
            if dq.output[0] in outputs:
                rename[src] = dq.output[0]
            else:
                rename[dq.output[0]] = src
        else:
            if name not in init:
                g.initializer.append(float_model[name])
            rename[dq.output[0]] = name
        drop.append(dq)
        done.append(name)
    for n in drop:
        g.node.remove(n)
    for n in g.node:
        n.input[:] = [rename.get(i, i) for i in n.input]
        n.output[:] = [rename.get(o, o) for o in n.output]
    unused = {i for n in drop for i in n.input} - _reads(g)
    keep = [t for t in g.initializer if t.name not in unused]
    del g.initializer[:]
    g.initializer.extend(keep)
    return done


def _reads(g) -> set[str]:
    """Every tensor name a node reads, in subgraphs (If / Loop bodies) too."""
    out = set()
    for n in g.node:
        out.update(n.input)
        for a in n.attribute:
            for sub in [a.g] * a.HasField("g") + list(a.graphs):
                out |= _reads(sub)
    return out


def _float_name(name: str) -> str:
    for suffix in ("_QuantizeLinear_Input", "_quantized"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def quantize(folder=HERE, output=None, calibration=None) -> Path:
    """Run ``quantize_static`` with the files in ``folder``; returns the quantized model path."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    folder = Path(folder)
    opts = json.loads((folder / OPTIONS).read_text())
    output = Path(output or folder / "model.quant.onnx")
    feeds = read_feeds(calibration or folder / opts["calibration"])
    extra = {**opts["extra_options"], "TensorQuantOverrides": load_overrides(folder / OVERRIDES)}
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=output.parent)
    os.close(fd)
    try:
        quantize_static(
            str(folder / opts["model"]), tmp, _reader(feeds),
            quant_format=QuantFormat[opts["quant_format"]],
            activation_type=QuantType[opts["activation_type"]],
            weight_type=QuantType[opts["weight_type"]], per_channel=opts["per_channel"],
            calibrate_method=CalibrationMethod[opts["calibrate_method"]],
            op_types_to_quantize=opts["op_types_to_quantize"],
            nodes_to_exclude=opts["nodes_to_exclude"], extra_options=extra)
        model = onnx.load(tmp)
        floats = {t.name: t for t in onnx.load(folder / opts["model"]).graph.initializer}
        stripped = strip(model, opts["float_tensors"], floats)
        onnx.save(model, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"{output}: quantize_static with {len(extra['TensorQuantOverrides'])} tensor "
          f"overrides, {len(opts['nodes_to_exclude'])} nodes excluded; {len(stripped)} tensors "
          "axnb keeps float made float again")
    return output


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default=None, help="default: model.quant.onnx beside this file")
    p.add_argument("--calibration", default=None, help="an .npz of <sample>/<input> arrays")
    args = p.parse_args(argv)
    quantize(HERE, args.output, args.calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
