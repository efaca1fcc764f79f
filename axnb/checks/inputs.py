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

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from axnb.graph import Model
from axnb.results import Check

__all__ = ["ANY", "input_types", "io_rows", "io_specs"]

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
