"""Config vs data: mean/std, colour order, calibration size, calibration vs analysis data.

Example:
    >>> [c.verdict for c in config_vs_data(wb)]          # doctest: +SKIP
    ['pass', 'warn', 'pass', 'pass']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from axnb import data, zoo
from axnb.config import Config
from axnb.errors import AxnbError
from axnb.graph import Model
from axnb.results import VERDICTS, Check
from axnb.types import DataFormat, Layout, TensorFormat
from axnb.workbench import Workbench

__all__ = ["calibration_size", "colour_order", "config_vs_data", "distribution_gap", "mean_std"]


def _context(src: Any, cfg: Config | None) -> tuple[Model, Config, Any, Any]:
    if isinstance(src, Workbench):
        # NOTE: the Workbench keeps the calibration feeds it was given (maybe not the config's).
        return src.model, src.config, src.calibration, src.samples
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


GREY = 2.0
"""Mean |R - B| of a sample, in pixel levels of 255, under which it is near-grey: swapping
BGR <-> RGB changes nothing a model can see."""
COLOUR_MIN = 8
"""Colour (not near-grey) samples needed to tell the two orders apart."""


def _grey_samples(model: Model, cfg: Config, name: str, max_samples: int) -> tuple[int, int]:
    """(near-grey samples, samples) among the analysis images of input ``name``."""
    axis = 1 if cfg.input_processor(name).tensor_layout is Layout.NCHW else 3
    grey = n = 0
    for f in data.analysis_set(model, _without_norm(cfg)).take(max_samples):
        x = np.moveaxis(f[name].astype(np.float64), axis, 1)
        grey, n = grey + int(np.abs(x[:, 0] - x[:, -1]).mean() < GREY), n + 1
    return grey, n


def _cannot_tell(z: float, acc_z: float, grey: int, n: int) -> str:
    """Why this data cannot tell the colour orders apart, or ""."""
    if n - grey < COLOUR_MIN:
        return (f"cannot tell: {grey} of {n} samples are near-grey (mean |R - B| < {GREY:g} of "
                f"255), so swapping the channels changes little")
    if abs(z) < 2 and abs(acc_z) < 2:
        return (f"cannot tell: the two orders score alike on this data (|z| < 2; {grey} of {n} "
                "samples near-grey)")
    return ""


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
    order. Warn when the configured order is less confident or less accurate, or when the data
    cannot tell (fewer than :data:`COLOUR_MIN` samples that are not near-grey, or both |z| < 2:
    the summary says "cannot tell"); fail when confidence_z <= -3 or accuracy_z >= 3. Not
    applicable without a (batch, classes) output.

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
    grey, n = _grey_samples(model, cfg, next(iter(fmts)), max_samples)
    why = _cannot_tell(z, acc_z, grey, n) if verdict != "fail" else ""
    det |= {"grey_samples": grey, "cannot_tell": bool(why)}
    if why:
        # NOTE: a pass here would claim the configured order is right; the data cannot say
        verdict, text = "warn", f"{text}; {why}"
        fix = (f"Confirm {a} from the training pipeline, or run this check on colour images "
               f"of the deployment data (at least {COLOUR_MIN} that are not near-grey).")
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
