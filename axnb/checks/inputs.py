"""THE float-vs-quantized input/output check: name, dtype and shape of every graph input and
output, as each model declares them. The view renders its rows (:func:`axnb.view.tables.io_table`).

One semantics: a name missing on one side, a different dtype, or a different static dim is a
mismatch; a dynamic dim ("?", or a named dim_param) matches any size.

Example:
    >>> check = input_types({"x": ((1, 3), "float32")}, {"x": (("?", 3), "float32")})
    >>> check.verdict, check.table()["match"].tolist()
    ('pass', ['ok'])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from axnb.graph import Model
from axnb.results import Check

__all__ = ["ANY", "deployed_input", "deployed_signature", "input_types", "io_rows", "io_specs"]

ANY = "?"  # a dynamic dim: matches any size


def _dtype(d) -> str:
    if isinstance(d, int):
        from onnx import helper

        d = helper.tensor_dtype_to_np_dtype(d)
    return np.dtype(d).name


def _dims(shape) -> list:
    return [d if isinstance(d, int) and d > 0 else ANY for d in shape]


def _spec(v) -> tuple[list, str]:
    if isinstance(v, Mapping):
        return _dims(v.get("shape", ())), _dtype(v["dtype"])
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return _dims(v.shape), _dtype(v.dtype)
    shape, dtype = v
    return _dims(shape), _dtype(dtype)


def _vi(v) -> tuple[list, str]:
    t = v.type.tensor_type
    return ([d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else ANY
             for d in t.shape.dim], _dtype(t.elem_type))


def io_specs(x: Any) -> dict[str, tuple[str, list, str]]:
    """name -> (kind, shape, dtype) of a Model, an ONNX ModelProto or its path (the graph's
    declared inputs, initializers excluded, and outputs), a mapping name -> TensorSpec /
    (shape, dtype) (kind ""), or an iterable of TensorSpec.

    Example:
        >>> io_specs({"x": ((1, 3), "float32")})
        {'x': ('', [1, 3], 'float32')}
    """
    if isinstance(x, Model):
        x = x.proto
    if isinstance(x, str) or hasattr(x, "__fspath__"):
        x = onnx.load(str(x), load_external_data=False)
    if hasattr(x, "graph"):
        inits = {i.name for i in x.graph.initializer}
        return ({v.name: ("input", *_vi(v)) for v in x.graph.input if v.name not in inits}
                | {v.name: ("output", *_vi(v)) for v in x.graph.output})
    if isinstance(getattr(x, "inputs", None), Mapping):
        return ({n: ("input", *_spec(s)) for n, s in x.inputs.items()}
                | {n: ("output", *_spec(s)) for n, s in x.outputs.items()})
    if isinstance(x, Mapping):
        return {n: ("", *_spec(s)) for n, s in x.items()}
    return {s.name: ("", *_spec(s)) for s in x}


def _same_shape(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x == y or ANY in (x, y) for x, y in zip(a, b))


def io_rows(float_model: Any, quantized: Any) -> list[dict]:
    """One row per input/output of either model: kind, name, float/quantized dtype and shape,
    ``match`` ("ok", "dtype", "shape", "dtype + shape", "missing") and ``issue`` (the text)."""
    a, b = io_specs(float_model), io_specs(quantized)
    rows = []
    for name in dict.fromkeys([*a, *b]):
        fk, fs, fd = a.get(name, ("", None, None))
        qk, qs, qd = b.get(name, ("", None, None))
        if qd is None or fd is None:
            match = "missing"
            issue = "missing in the quantized model" if qd is None else "missing in the float model"
        else:
            what = [w for w, bad in (("dtype", fd != qd), ("shape", not _same_shape(fs, qs)))
                    if bad]
            match = " + ".join(what) or "ok"
            issue = "; ".join(([f"dtype {fd} vs {qd}"] if "dtype" in what else [])
                              + ([f"shape {fs} vs {qs}"] if "shape" in what else []))
        rows.append({"kind": fk or qk, "name": name, "float dtype": fd, "float shape": fs,
                     "quantized dtype": qd, "quantized shape": qs, "match": match,
                     "issue": issue})
    return rows


def input_types(float_model: Any, quantized: Any) -> Check:
    """Name, dtype and shape of every input and output, float vs quantized (Model, ModelProto,
    path, or specs as for :func:`io_specs`).

    What the guide checks in netron. A row fails when the name is missing on one side, the
    dtype differs, or a static dim differs ("?" matches anything); ``.table()`` shows them.

    Example:
        >>> input_types(wb.model, wb.quantized().qdq()).table()      # doctest: +SKIP
    """
    rows = io_rows(float_model, quantized)
    bad = [r for r in rows if r["issue"]]
    if not bad:
        return Check("input types", "pass", f"all {len(rows)} inputs and outputs match in name, "
                     "dtype and shape", {"rows": rows})
    first = bad[0]
    return Check("input types", "fail", f"{len(bad)} of {len(rows)} differ; {first['kind']} "
                 f"{first['name']!r}: {first['issue']}", {"rows": rows},
                 "Feed the deployed model what it declares (src_dtype U8 takes uint8 pixels "
                 "with mean/std inside the model), or rebuild it with src_dtype and "
                 "input_shapes matching the float model.")


# ---- the deployed input: what the compiled model takes, from input_processors ---------------

_DTYPES = {"U8": "uint8", "FP32": "float32"}


def _processor(cfg, name: str) -> tuple[Any, int | None]:
    """The processor of ``name`` and its index in ``input_processors`` (None: the defaults)."""
    procs = list(cfg.input_processors)
    for want in (name, "DEFAULT"):
        for i, p in enumerate(procs):
            if p.tensor_name == want:
                return p, i
    return cfg.input_processor(name), None


def _colour(fmt, channels: int) -> str:
    v = getattr(fmt, "value", fmt)
    if v == "AutoColorSpace":  # NOTE: Pulsar2's rule: BGR for 3 channels, GRAY for 1
        return {3: "BGR", 1: "GRAY"}.get(channels, "AutoColorSpace")
    return v


def _permuted(shape: list, src: str, dst: str) -> list:
    if src == dst:
        return list(shape)
    return [shape[i] for i in ((0, 2, 3, 1) if dst == "NHWC" else (0, 3, 1, 2))]


def _folds_norm(p) -> bool:
    """Whether the compiled model subtracts mean / divides by std itself (mean 0 / std 1 is
    the identity, as the guide's "eliminate distractions" config writes it)."""
    return any(v != 0 for v in (p.mean or ())) or any(v != 1 for v in (p.std or ()))


def _sides(spec, p, csc) -> tuple[dict, dict]:
    """(float, deployed) signature of one 4-D float input under processor ``p``."""
    layout = p.tensor_layout.value
    shape = _dims(spec.shape)
    channels = shape[1] if layout == "NCHW" else shape[3]
    fmt = _colour(p.tensor_format, channels)
    src_layout = (p.src_layout or p.tensor_layout).value
    flt = {"dtype": _dtype(spec.dtype), "shape": shape, "layout": layout, "format": fmt,
           "mean/std": "outside", "csc": "none"}
    dep = {"dtype": _DTYPES[p.src_dtype.value], "shape": _permuted(shape, layout, src_layout),
           "layout": src_layout, "format": _colour(p.src_format or p.tensor_format, channels),
           "mean/std": "inside" if _folds_norm(p) else "outside",
           "csc": csc if csc not in (None, "NoCSC") else "none"}
    return flt, dep


def _sig_text(s: dict) -> str:
    shape = "x".join(map(str, s["shape"]))
    parts = [s["dtype"], shape]
    if "layout" in s:
        parts += [s["layout"], s["format"], "raw (mean/std inside the model)"
                  if s["mean/std"] == "inside" else "normalised"]
        parts += [f"csc {s['csc']}"] if s["csc"] != "none" else []
    return " ".join(parts)


def _calibration_norm(cfg, name: str, p) -> str:
    """Why the calibration data is normalised unlike the deployed model, or ""."""
    ic = cfg.input_config(name)
    if ic is None or not _folds_norm(p):
        return ""
    for key, mine, theirs in (("mean", ic.calibration_mean, p.mean),
                              ("std", ic.calibration_std, p.std)):
        if mine is not None and theirs is not None and list(mine) != list(theirs):
            return (f"calibration_{key} {list(mine)} but the compiled model applies "
                    f"{key} {list(theirs)}")
    return ""


def _first_feed(feeds) -> dict:
    for f in feeds:  # NOTE: one sample is enough for dtype and shape (all are fitted alike)
        return f
    return {}


def _calibration_issue(cfg, name: str, p, flt: dict, feed: dict) -> str:
    x = feed.get(name)
    if x is None:
        return "no calibration data for this input" if feed else ""
    got = (_dtype(x.dtype), _dims(x.shape))
    if got[0] != flt["dtype"] or not _same_shape(got[1], flt["shape"]):
        return (f"calibration data is {got[0]} {'x'.join(map(str, got[1]))}, the float model "
                f"takes {flt['dtype']} {'x'.join(map(str, flt['shape']))}")
    return _calibration_norm(cfg, name, p)


def _fix_keys(p, flt: dict) -> dict:
    """The ``input_processors`` keys under which the compiled model takes the float input
    (the guide's "eliminate distractions" entry)."""
    c = len(p.mean or p.std or ()) or (flt["shape"][1] if flt["layout"] == "NCHW"
                                         else flt["shape"][3])
    return {"src_dtype": "FP32" if flt["dtype"] == "float32" else flt["dtype"],
            "src_layout": flt["layout"], "src_format": flt["format"],
            "mean": [0] * c, "std": [1] * c}


def _fix(cfg, name: str, idx: int | None, p, flt: dict) -> str:
    """The config change that makes the compiled model take the float model's input."""
    keys = _fix_keys(p, flt)
    c = len(keys["mean"])
    where = f"input_processors[{idx}]" if idx is not None else "input_processors"
    fix = f"{where} ({name}): set " + ", ".join(f'"{k}": {json.dumps(v)}' for k, v in keys.items())
    ic = cfg.input_config(name)
    if _folds_norm(p) and (ic is None or ic.calibration_mean is None):
        # NOTE: the calibration images were normalised by the processor's mean/std; moved, not lost
        fix += (f", and move mean/std to quant.input_configs calibration_mean "
                f"{list(p.mean or [0] * c)} / calibration_std {list(p.std or [1] * c)}")
    return fix + ("; csc_mode NoCSC" if flt["csc"] != "none" else "")


def deployed_signature(model: Model, cfg, calibration: Any = None) -> list[dict]:
    """One row per model input: what the float model takes, what the compiled model will take
    (from ``input_processors``: ``src_dtype``, ``src_layout``, ``src_format``, ``mean``/``std``
    folded in, ``csc_mode``), the calibration data's dtype and shape, and what differs.

    Processors apply to 4-D float inputs (images); other inputs are taken as declared.
    ``calibration``: feeds to read one sample of (default: the config's calibration set).

    Example:
        >>> deployed_signature(wb.model, wb.config)[0]["changes"]    # doctest: +SKIP
        ['dtype float32 -> uint8', 'layout NCHW -> NHWC', 'mean/std folded in']
    """
    from axnb import data

    feeds = calibration if calibration is not None else data.calibration_set(model, cfg)
    feed = _first_feed(feeds.take(1) if hasattr(feeds, "take") else feeds)
    rows = []
    for name, spec in model.inputs.items():
        p, idx = _processor(cfg, name)
        image = len(spec.shape) == 4 and np.dtype(spec.dtype).kind == "f"
        if not image:
            flt = dep = {"dtype": _dtype(spec.dtype), "shape": _dims(spec.shape)}
        else:
            csc = cfg.extra.get(f"input_processors[{idx}].csc_mode") if idx is not None else None
            flt, dep = _sides(spec, p, csc)
        changes = [f"{k} {flt[k]} -> {dep[k]}" for k in ("dtype", "layout", "format", "csc")
                   if k in flt and flt[k] != dep[k]]
        changes += ["mean/std folded in"] if dep.get("mean/std") == "inside" else []
        calib = _calibration_issue(cfg, name, p, flt, feed)
        rows.append({"name": name, "float": _sig_text(flt), "deployed": _sig_text(dep),
                     "changes": changes, "calibration": calib or "consistent",
                     "fix": _fix(cfg, name, idx, p, flt) if changes and image else "",
                     "fix_keys": _fix_keys(p, flt) if changes and image else {},
                     "processor": idx, "processed": image})
    return rows


def deployed_input(source: Any, cfg=None, calibration: Any = None) -> Check:
    """Does the compiled model take what the float model takes? Pulsar2's guide asks this
    first ("Eliminate distractions": ``input_processors`` consistent with the float model, so
    that a board-vs-float comparison measures quantization, not preprocessing).

    Built from the config alone (no compile): fail when ``input_processors`` change an input's
    dtype, layout, colour order, fold mean/std in or convert colour space, or when the
    calibration data does not match the float model (dtype, shape, a calibration_mean/std
    other than the one folded in); pass when they keep it. ``fix``: the config change.

    Args:
        source: a Workbench, or a Model with ``cfg``.
        cfg: the Config (with a Model).
        calibration: the calibration feeds (default: the Workbench's, else the config's).

    Example:
        >>> deployed_input(wb).summary                                 # doctest: +SKIP
        'x: compiled model takes uint8 1x224x224x3 NHWC BGR mean/std inside, ...'
    """
    model = getattr(source, "model", source)
    cfg = cfg if cfg is not None else getattr(source, "config", None)
    if cfg is None:
        from axnb.errors import AxnbError

        raise AxnbError("deployed_input(model, cfg): a Config is needed with a Model "
                        "(or pass a Workbench)")
    calib = calibration if calibration is not None else getattr(source, "calibration", None)
    rows = deployed_signature(model, cfg, calib)
    bad = [r for r in rows if r["changes"] or r["calibration"] != "consistent"]
    if not bad:
        what = "; ".join(f"{r['name']} as {r['deployed']}" for r in rows)
        return Check("deployed input", "pass", f"the compiled model takes {what}, as the float "
                     "model does; calibration data consistent", {"rows": rows})
    r = bad[0]
    why = ", ".join(r["changes"]) or r["calibration"]
    also = [r["calibration"]] if r["changes"] and r["calibration"] != "consistent" else []
    text = (f"{r['name']}: the compiled model takes {r['deployed']}, the float model "
            f"{r['float']} ({'; '.join([why, *also])})"
            + (f"; {len(bad) - 1} more input(s) differ" if len(bad) > 1 else ""))
    fix = r["fix"] or ("Calibrate on data like the float model's input (quant.input_configs "
                       "calibration_mean/std as the training code normalises).")
    if r["fix"]:
        fix = ("To troubleshoot accuracy with the compiled model taking the float model's input "
               f"(the guide's \"eliminate distractions\"): {fix}.")
    return Check("deployed input", "fail", text, {"rows": rows}, fix)
