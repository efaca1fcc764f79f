"""Pre/post-processing alignment: dump every stage on the training side, compare the deployed
side's dumps with it (:func:`dump_reference`, :func:`compare_dumps`).

Example:
    >>> compare_dumps("ref", "board").worst     # doctest: +SKIP
    'pass'
"""

from __future__ import annotations

import io
import json
import re
import tempfile  # noqa: F401 - used by the doctests
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from axnb import data
from axnb.errors import AxnbError
from axnb.files import write_bytes
from axnb.results import Check, Diagnosis

__all__ = ["STAGES", "compare_dumps", "dump_reference"]

STAGES = ("input", "preprocess", "output", "postprocess")
_IMAGES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _safe(s: str) -> str:
    return re.sub(r"[^\w.-]", "_", str(s))


def _parts(value: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(value, Mapping):
        return [(str(k), np.asarray(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [(str(i), np.asarray(v)) for i, v in enumerate(value)]
    return [("", np.asarray(value))]


def _raw(x: Any) -> Any:
    """A raw input as an array: .npy loaded, images decoded (RGB), other files as bytes."""
    if not isinstance(x, str | Path):
        return x
    suffix = Path(x).suffix.lower()
    return (np.load(x) if suffix == ".npy" else data.read_image(x) if suffix in _IMAGES
            else np.frombuffer(Path(x).read_bytes(), np.uint8))


def dump_reference(samples: Mapping[str, Any] | Iterable[Any], preprocess: Callable,
                   model_run: Callable, postprocess: Callable, out_dir: str | Path,
                   fmt: str = "npy") -> Path:
    """The training side: run and save every stage of every sample, plus ``manifest.json``.

    ``samples`` is ``{id: raw input}`` or an iterable of raw inputs (ids 0, 1, ...); a path
    is decoded for the "input" stage. Files are ``<stage>/<id>[__<key>].<fmt>`` for the stages
    input, preprocess, output, postprocess (a dict or tuple result: one file per key); the
    manifest lists stage, sample, key, dtype, shape, format. The deployed side writes the same
    relative names, as ``.npy`` or raw ``.bin``.

    Example:
        >>> dump_reference({"a": np.ones(3)}, lambda x: x / 2, lambda x: x + 1, np.argmax,
        ...                tempfile.mkdtemp()).joinpath("manifest.json").is_file()
        True
    """
    if fmt not in ("npy", "bin"):
        raise AxnbError(f"fmt {fmt!r}; valid: npy, bin")
    out, files = Path(out_dir), []
    for sid, raw in samples.items() if isinstance(samples, Mapping) else enumerate(samples):
        x = preprocess(raw)
        y = model_run(x)
        for stage, value in zip(STAGES, (_raw(raw), x, y, postprocess(y))):
            for key, arr in _parts(value):
                rel = f"{stage}/{_safe(sid)}{'__' + _safe(key) if key else ''}.{fmt}"
                if fmt == "npy":
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    write_bytes(out / rel, buf.getvalue())
                else:
                    write_bytes(out / rel, np.ascontiguousarray(arr).tobytes())
                files.append({"file": rel, "stage": stage, "sample": str(sid), "key": key,
                              "dtype": str(arr.dtype), "shape": list(arr.shape), "format": fmt})
    write_bytes(out / "manifest.json", json.dumps({"files": files}, indent=1).encode())
    return out


def _manifest(folder: Path) -> dict[tuple, dict]:
    p = folder / "manifest.json"
    rows = json.loads(p.read_text())["files"] if p.is_file() else []
    return {(r["stage"], r["sample"], r.get("key", "")): r for r in rows}


def _load_dumped(folder: Path, ref: dict, own: dict | None) -> np.ndarray | None:
    """The deployed array for a reference entry: its manifest's file, else the same stem."""
    stem = ref["file"].rsplit(".", 1)[0]  # NOTE: sample ids may hold dots ("a.png")
    cands = [folder / own["file"]] if own else []
    cands += [folder / f"{stem}{s}" for s in (".npy", ".bin")]
    for p in cands:
        if p.is_file():
            if p.suffix == ".npy":
                return np.load(p, allow_pickle=False)
            meta = own or ref  # NOTE: a .bin has no header; dtype/shape come from a manifest
            arr = np.frombuffer(p.read_bytes(), dtype=np.dtype(meta["dtype"]))
            return arr.reshape(meta["shape"]) if arr.size == np.prod(meta["shape"]) else arr
    return None


def _diff(ref: np.ndarray, dep: np.ndarray, tol: float) -> dict:
    if ref.shape != dep.shape:
        return {"error": f"shape {list(dep.shape)} vs reference {list(ref.shape)}", "ok": False}
    d = np.abs(ref.astype(np.float64) - dep.astype(np.float64))
    bad = ~(d <= tol)  # NOTE: NaN counts as a mismatch
    return {"max_abs": float(np.nanmax(d)) if d.size else 0.0, "mismatches": int(bad.sum()),
            "size": int(d.size), "first_mismatch": np.argwhere(bad)[:5].tolist(),
            "ok": not bad.any()}


_ALIGN_FIX = {
    "input": "Feed both sides the same raw file (decoder, EXIF rotation, colour conversion).",
    "preprocess": "Align the deployed preprocessing with the training side: resize and its "
                  "interpolation, crop, colour order, mean/std, layout, dtype.",
    "output": "",
    "postprocess": "Feed the reference model output to the deployed post-processing and fix "
                   "it (decode, thresholds, NMS, sort order) until it is within tolerance.",
}


def compare_dumps(reference_dir: str | Path, deployed_dir: str | Path, pre_tol: float = 1e-4,
                  post_tol: float = 1e-3, out_tol: float | None = None) -> Diagnosis:
    """Compare deployed dumps with :func:`dump_reference`'s: one check per stage present.

    Per file: max |a-b|, elements with |a-b| > tol, first mismatching indices. A stage fails
    when a file is over tolerance, of another shape, or missing. Input and preprocess use
    ``pre_tol``, postprocess ``post_tol``; model outputs (quantized: they differ by design)
    are reported only, unless ``out_tol`` is given. A deployed ``.bin`` takes dtype/shape from
    the deployed manifest if there is one, else from the reference's.

    Example:
        >>> compare_dumps("ref", "board").worst     # doctest: +SKIP
        'pass'
    """
    ref_dir, dep_dir = Path(reference_dir), Path(deployed_dir)
    ref, own = _manifest(ref_dir), _manifest(dep_dir)
    if not ref:
        raise AxnbError(f"{ref_dir / 'manifest.json'}: missing or empty; see dump_reference")
    tols = dict(zip(STAGES, (pre_tol, pre_tol, out_tol, post_tol)))
    return Diagnosis(tuple(
        _stage_check(s, [(k, r) for k, r in ref.items() if k[0] == s], own, ref_dir, dep_dir,
                     tols[s]) for s in STAGES if any(k[0] == s for k in ref)))


def _stage_check(stage, entries, own, ref_dir, dep_dir, tol) -> Check:
    rows, missing = [], []
    for key, r in entries:
        dep = _load_dumped(dep_dir, r, own.get(key))
        if dep is None:
            missing.append(r["file"])
            continue
        res = _diff(_load_dumped(ref_dir, r, None), dep, np.inf if tol is None else tol)
        rows.append({"file": r["file"], "sample": r["sample"], "key": r["key"], **res})
    bad = [x for x in rows if not x["ok"]]
    worst = max((x.get("max_abs", np.inf) for x in rows), default=0.0)
    tol_s = "report only" if tol is None else f"tol {tol:g}"
    text = f"{len(rows)} files compared, max |a-b| {worst:.3g} ({tol_s})"
    if missing:
        text += f"; {len(missing)} missing (first: {missing[0]})"
    if bad:
        b = bad[0]
        text += (f"; {len(bad)} over: {b['file']} "
                 + (b["error"] if "error" in b else f"max {b['max_abs']:.3g}, "
                    f"{b['mismatches']}/{b['size']} elements, first at {b['first_mismatch'][0]}"))
    verdict = "fail" if tol is not None and (bad or missing) else "pass"
    return Check(f"alignment: {stage}", verdict, text,
                 {"tolerance": tol, "rows": rows, "missing": missing},
                 "" if verdict == "pass" else _ALIGN_FIX[stage])
