"""Weight-side recovery: what the layers' inputs say about their weights, and the fixes it drives.

Every fix here is measured on the same quantity before it is kept: a layer's output error
under its calibration inputs, ``E||(W_q - W) x||^2``. For a linear layer (Conv as a product with
its input patches, Gemm, MatMul) that error is a quadratic form in the weight error, so the
input's second moment ``H = sum x x^T`` and mean ``mu`` (:class:`Moments`, one pass of the float
model over the calibration set: :func:`collect`) give it exactly for any candidate weights,
row by row (an output channel's error depends on its own row only):

- **rounding** (:class:`~axnb.types.Rounding`): ``GPTQ`` (second-order closed form, OBQ's
  column-by-column update with the inverse Cholesky factor of ``H``, no training loop) or
  ``AdaRound`` (soft rounding variables optimized with Adam on the same quadratic loss, plus
  AdaRound's annealed regularizer; numpy, layer by layer, float inputs);
- **scale search** (EasyQuant's weight half): each channel's scale from a grid ``a * s``,
  ``a`` in [0.5, 1], the one with the least output error (the activation half is the
  calibration method's);
- **bias correction**: the bias absorbs the mean output error ``-(W_q - W) mu``, which lowers
  the error by ``((W_q - W) mu)^2`` per channel.

A fix is kept per output channel only where it lowers that channel's error (PPQ keeps a
layer's result only where its loss falls); :func:`report` gives the measured losses.
:func:`equalize` is cross-layer equalization, a float-equivalent rewrite of the float model.

Example:
    >>> from axnb.types import Rounding, WeightFix
    >>> wb.set_weight_fix(WeightFix(Rounding.GPTQ, bias=True))      # doctest: +SKIP
    >>> print(report(wb.plan, wb.stats).line())                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from axnb import qmath
from axnb.errors import ModelError
from axnb.graph import BIASED_OPS, Model, weighted_nodes
from axnb.types import QType, Rounding, WeightFix

# NOTE: past this many inputs per output (K), H (K x K, float32) would take > 85 MB per layer;
# such a layer keeps round-to-nearest and says so.
MAX_K = 4608
# NOTE: H from at most this many patches per layer and sample (evenly strided; the mean from
# all): layout_cdla's moments took 385 s from every patch of 8 samples; GPTQ estimates H from
# 128 sequences, a few thousand rows per layer.
MAX_ROWS = 4096
SCALE_GRID = np.linspace(1.0, 0.5, 26)
# NOTE: tuned on the zoo CNN at S4 (layer output error, conv2d.6: 1000 iterations, lr 0.02 -> 4.9,
# lr 1.0 lam 0.01 -> 1.4, lr 1.0 lam 1.0 -> 0.44; GPTQ 0.37): Adam on V in logit units.
ADAROUND = {"iters": 1000, "lam": 1.0, "lr": 1.0, "warmup": 0.2, "beta": (20.0, 2.0)}
_ZETA, _GAMMA = 1.1, -0.1     # AdaRound's rectified sigmoid stretch
# NOTE: Adam's betas; 1 - 1e-3 so that the guide's 0.999 threshold stays advice.py's literal
_B1, _B2 = 0.9, 1 - 1e-3


# NOTE: the one place that says what each Pulsar2 weight-side key means here (README's config
# section and config_fix read it): simulated, approximated, or not simulated.
PULSAR2_KEYS = {
    "enable_adaround": ("simulated", "AdaRound, layer by layer on the float inputs' moments "
                        "(numpy Adam, 1000 iterations), kept per channel where the layer "
                        "error falls"),
    "enable_easy_quant": ("approximated", "EasyQuant's weight half: each channel's scale "
                          "from a grid on the layer output error; activation ranges stay the "
                          "calibration_method's"),
    "enable_brecq": ("not simulated", "block reconstruction trains on a GPU; axnb's closest "
                     "is weight_rounding GPTQ (second-order, closed form)"),
    "enable_lsq": ("not simulated", "learned step sizes need training; axnb's closest is "
                   "enable_easy_quant (scale search)"),
    "finetune_epochs / finetune_block_size / finetune_batch_size / finetune_lr":
        ("ignored", "settings of enable_brecq / enable_lsq training"),
    "refine_weight_threshold / disable_auto_refine_scale":
        ("ignored", "Pulsar2's own weight-threshold refinement"),
}


FIXES_TRIED = (WeightFix(bias=True), WeightFix(scales=True), WeightFix(Rounding.GPTQ),
               WeightFix(Rounding.GPTQ, True, True))
"""The weight fixes the tuner and the next steps try on every weight (seconds each on the zoo
CNN). NOTE: each alone too: on silero_vad_op15 (S8) the scale search alone gives 0.9927, all
three 0.9676 (start 0.9273). AdaRound is not among them: minutes per model in numpy for about
GPTQ's layer error (docs/ARCHITECTURE.md)."""


def parse_fix(fix) -> WeightFix:
    """A :class:`WeightFix` from itself, None (round to nearest) or a string such as
    ``"GPTQ + bias"`` / ``"AdaRound+scales"`` / ``"bias correction"``.

    Example:
        >>> parse_fix("GPTQ + scales + bias").label
        'GPTQ + scale search + bias correction'
    """
    if fix is None or isinstance(fix, WeightFix):
        return fix or WeightFix()
    parts = [p.strip().lower() for p in str(fix).split("+") if p.strip()]
    names = {r.value.lower(): r for r in Rounding}
    words = {"bias", "bias correction", "scales", "scale search", "easyquant", *names}
    bad = [p for p in parts if p not in words]
    if bad:
        raise ModelError(f"unknown weight fix {bad[0]!r}; valid: GPTQ, AdaRound, nearest, "
                         "scales (scale search), bias (bias correction), joined with '+'")
    rounding = next((names[p] for p in parts if p in names), Rounding.nearest)
    return WeightFix(rounding, any(p in ("scales", "scale search", "easyquant") for p in parts),
                     any(p.startswith("bias") for p in parts))


def config_fix(quant) -> tuple[WeightFix, list[str]]:
    """The weight fix a config's ``quant`` section asks for, and one note per key that axnb
    does not run as Pulsar2 does (:data:`PULSAR2_KEYS`)."""
    rounding = Rounding.AdaRound if quant.enable_adaround else quant.weight_rounding
    fix = WeightFix(rounding, quant.enable_easy_quant, quant.enable_bias_correction)
    notes = [f"{k}: {PULSAR2_KEYS[k][0]} ({PULSAR2_KEYS[k][1]})"
             for k in ("enable_adaround", "enable_easy_quant", "enable_brecq", "enable_lsq")
             if getattr(quant, k) and PULSAR2_KEYS[k][0] != "simulated"]
    return fix, notes


def config_keys(fixes: Iterable[WeightFix]) -> dict:
    """The ``quant`` keys that ask for ``fixes`` (the deployed config's weight-side part)."""
    fixes = list(fixes)
    ada = any(f.rounding is Rounding.AdaRound for f in fixes)
    gptq = any(f.rounding is Rounding.GPTQ for f in fixes)
    return {"enable_adaround": ada, "enable_easy_quant": any(f.scales for f in fixes),
            "weight_rounding": (Rounding.GPTQ if gptq else Rounding.nearest).value,
            "enable_bias_correction": any(f.bias for f in fixes)}


# ---- statistics of the layers' inputs -----------------------------------------------------
@dataclass
class Moments:
    """Second moment and mean of one layer's input patches, per group of the layer.

    Attributes:
        node: the layer.
        h: ``[G, K, K]``: sum over ``n`` patches of ``x x^T`` (float64; at most
            :data:`MAX_ROWS` evenly strided patches per sample).
        mu: ``[G, K]``: mean patch (over every patch).
        n: patches per group in ``h``.
        cache: fixes computed from these moments (weight fix, qtype) -> (WeightQ, FixRecord).
    """

    node: str
    h: np.ndarray
    mu: np.ndarray
    n: int
    cache: dict = field(default_factory=dict, repr=False)


def _attr(node: onnx.NodeProto, name: str, default):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else onnx.helper.get_attribute_value(a)


def unsupported(model: Model, node: onnx.NodeProto) -> str | None:
    """Why this weighted layer cannot take a fix (None if it can)."""
    w = model.spec(node.input[1]).shape
    shared = [n.name for n in model.consumers.get(node.input[1], []) if n is not node]
    if shared:
        return f"weight shared with {shared[0]}"
    if node.op_type == "ConvTranspose":
        return "ConvTranspose"
    if node.op_type == "Gemm" and _attr(node, "transA", 0):
        return "Gemm with transA"
    if node.op_type == "MatMul" and len(w) != 2:
        return f"MatMul weight of rank {len(w)}"
    if node.op_type == "Conv" and _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET",
                                                                               b"VALID", "VALID"):
        return "Conv with auto_pad SAME"
    k = int(np.prod(w[1:])) if node.op_type == "Conv" else (
        w[1] if node.op_type == "Gemm" and _attr(node, "transB", 0) else w[0])
    return f"{k} inputs per output (> {MAX_K})" if k > MAX_K else None


def _rows(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    """The weight as ``[G, O/G, K]``: row (g, o) is output channel ``g * O/G + o``, its K
    entries in the order of the layer's input patches (:func:`_patches`)."""
    if node.op_type == "Conv":
        g = _attr(node, "group", 1)
        return w.reshape(g, w.shape[0] // g, -1)
    if node.op_type == "Gemm" and _attr(node, "transB", 0):
        return w[None]
    return w.T[None]


def _unrows(node: onnx.NodeProto, r: np.ndarray, shape: tuple) -> np.ndarray:
    if node.op_type == "Conv":
        return r.reshape(shape)
    if node.op_type == "Gemm" and _attr(node, "transB", 0):
        return r[0]
    return r[0].T


def _patches(node: onnx.NodeProto, x: np.ndarray, kshape: tuple) -> np.ndarray:
    """The layer's input as ``[G, patches, K]`` (im2col for Conv, rows for Gemm/MatMul)."""
    if node.op_type != "Conv":
        return x.reshape(-1, x.shape[-1])[None]
    d = len(kshape)
    pads = _attr(node, "pads", [0] * 2 * d)
    strides, dil = _attr(node, "strides", [1] * d), _attr(node, "dilations", [1] * d)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + d]) for i in range(d)])
    eff = [(k - 1) * dl + 1 for k, dl in zip(kshape, dil)]
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + d)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, dl) for dl in dil)]
    g = _attr(node, "group", 1)
    n, c, out = x.shape[0], x.shape[1], win.shape[2:2 + d]
    win = win.reshape(n, g, c // g, *out, *kshape)
    perm = (1, 0, *range(3, 3 + d), 2, *range(3 + d, 3 + 2 * d))
    return win.transpose(perm).reshape(g, -1, (c // g) * int(np.prod(kshape)))


def collect(model: Model, feeds: Iterable[Mapping[str, np.ndarray]],
            progress: bool = False) -> dict[str, Moments | str]:
    """One float pass over ``feeds``: weight -> :class:`Moments` of its layer's input, or why
    the layer cannot take a fix (:func:`unsupported`).

    Example:
        >>> moments = collect(wb.model, wb.calibration)           # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    out: dict[str, Moments | str] = {}
    nodes = []
    for n in weighted_nodes(model):
        why = unsupported(model, n)
        if why:
            out[n.input[1]] = why
        elif n.input[1] not in out:
            nodes.append(n)
    xs = list(dict.fromkeys(n.input[0] for n in nodes))
    sess = model.session(model.with_outputs(xs), optimize=False, low_memory=True)
    acc = {n.input[1]: [0.0, 0.0, 0, 0] for n in nodes}
    for f in tqdm(list(feeds), desc="layer moments", unit="sample", disable=not progress):
        vals = dict(zip(xs, sess.run(xs, dict(f))))
        for n in nodes:
            kshape = model.spec(n.input[1]).shape[2:]
            p = _patches(n, vals[n.input[0]].astype(np.float32), kshape)
            a = acc[n.input[1]]
            r = p[:, ::-(-p.shape[1] // MAX_ROWS)]
            a[0] = a[0] + np.matmul(r.transpose(0, 2, 1), r).astype(np.float64)
            a[1], a[2], a[3] = a[1] + p.sum(1, dtype=np.float64), a[2] + p.shape[1], \
                a[3] + r.shape[1]
    for n in nodes:
        h, s, k, kh = acc[n.input[1]]
        out[n.input[1]] = Moments(n.name, np.asarray(h), np.asarray(s) / max(k, 1), kh)
    return out


# ---- the algorithms (rows [G, O, K], scales [G, O, 1], inputs' H [G, K, K]) ---------------
def errors(d: np.ndarray, mom: Moments, bias: bool = False) -> np.ndarray:
    """Mean squared output error of each row for a weight error ``d`` ([G, O, K], float units):
    ``d H d^T / n``, less ``(d mu)^2`` when the bias absorbs the mean (bias correction)."""
    e = np.einsum("gok,gok->go", d @ mom.h, d) / max(mom.n, 1)
    return e - np.einsum("gok,gk->go", d, mom.mu) ** 2 if bias else e


def gptq(w: np.ndarray, h: np.ndarray, s: np.ndarray, qmin: int, qmax: int,
         damp: float = 0.01, block: int = 128) -> np.ndarray:
    """Integer rows by GPTQ (Frantar et al. 2022): quantize column by column, spreading each
    column's error over the later columns through the inverse Cholesky factor of ``H``."""
    w = w.astype(np.float64).copy()
    k = w.shape[-1]
    h = h.astype(np.float64).copy()
    idx = np.arange(k)
    diag = h[:, idx, idx]
    h[:, idx, idx] += damp * diag.mean(1, keepdims=True) + (diag == 0)
    u = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)   # NOTE: H^-1 = U^T U
    q = np.empty_like(w)
    for a in range(0, k, block):
        b = min(a + block, k)
        w1, e1, u1 = w[:, :, a:b].copy(), np.empty_like(w[:, :, a:b]), u[:, a:b, a:b]
        for i in range(b - a):
            col = w1[:, :, i]
            qi = np.clip(np.rint(col / s[..., 0]), qmin, qmax)
            q[:, :, a + i] = qi
            e = (col - qi * s[..., 0]) / u1[:, i, i][:, None]
            w1[:, :, i:] -= e[:, :, None] * u1[:, None, i, i:]
            e1[:, :, i] = e
        w[:, :, b:] -= e1 @ u[:, a:b, b:]
    return q


def adaround(w: np.ndarray, h: np.ndarray, s: np.ndarray, qmin: int, qmax: int,
             iters: int = ADAROUND["iters"], lam: float = ADAROUND["lam"],
             lr: float = ADAROUND["lr"]) -> np.ndarray:
    """Integer rows by AdaRound (Nagel et al. 2020): up or down per weight, from soft rounding
    variables trained with Adam on the layer's output error plus the annealed regularizer
    that pushes each towards 0 or 1."""
    # NOTE: float32 inside the loop (2x faster than float64; the choice is up or down)
    x = (w.astype(np.float64) / s).astype(np.float32)
    floor = np.floor(x)
    p = np.clip((x - floor - _GAMMA) / (_ZETA - _GAMMA), 1e-3, 1 - 1e-3)
    v = np.log(p / (1 - p))
    idx = np.arange(h.shape[-1])
    hn = (h / np.maximum(h[:, idx, idx].mean(1), 1e-30)[:, None, None]).astype(np.float32)
    s2 = ((s ** 2) / np.maximum((s ** 2).mean(axis=(1, 2), keepdims=True), 1e-30)
          ).astype(np.float32)
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    warm = int(iters * ADAROUND["warmup"])
    for t in range(iters):
        sig = 1 / (1 + np.exp(-v))
        raw = sig * (_ZETA - _GAMMA) + _GAMMA
        soft = np.clip(raw, 0, 1)
        inside = (raw > 0) & (raw < 1)
        d = np.clip(floor + soft, qmin, qmax) - x
        g = 2 * s2 * (d @ hn)
        if t >= warm:
            beta = np.interp(t, [warm, iters - 1], ADAROUND["beta"])
            c = 2 * soft - 1
            g = g - lam * beta * np.abs(c) ** (beta - 1) * np.sign(c) * 2
        g = g * inside * (_ZETA - _GAMMA) * sig * (1 - sig)
        m1 = _B1 * m1 + (1 - _B1) * g
        m2 = _B2 * m2 + (1 - _B2) * g * g
        v -= lr * (m1 / (1 - _B1 ** (t + 1))) / (np.sqrt(m2 / (1 - _B2 ** (t + 1))) + 1e-8)
    up = (1 / (1 + np.exp(-v))) * (_ZETA - _GAMMA) + _GAMMA >= 0.5
    return np.clip(floor + up, qmin, qmax).astype(np.float64)


def search_scales(w: np.ndarray, mom: Moments, s: np.ndarray, qmin: int, qmax: int,
                  bias: bool = False) -> np.ndarray:
    """Each row's scale from ``SCALE_GRID * s``: the one whose round-to-nearest rows have the
    least output error (EasyQuant's weight half, on the layer's output error)."""
    best, best_e = s.copy(), np.full(s.shape[:2], np.inf)
    for a in SCALE_GRID:
        c = s * a
        e = errors(np.clip(np.rint(w / c), qmin, qmax) * c - w, mom, bias)
        better = e < best_e
        best = np.where(better[..., None], c, best)
        best_e = np.where(better, e, best_e)
    return best


# ---- one weight -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixRecord:
    """What a fix did to one weight: its layer's output error (sum over channels) before
    (round to nearest at the plan's scale) and after, channels kept, seconds spent."""

    weight: str
    layer: str
    fix: WeightFix
    qtype: QType
    before: float
    after: float
    kept: int
    channels: int
    seconds: float
    skipped: str = ""


def fixed(model: Model, node: onnx.NodeProto, rtn, fix: WeightFix, stats) -> object:
    """``rtn`` (a round-to-nearest :class:`axnb.qdq.WeightQ`) with ``fix`` applied, computed
    once per (fix, qtype) from ``stats.moments`` (:func:`collect`)."""
    moments = getattr(stats, "moments", None) or {}
    w = node.input[1]
    mom = moments.get(w)
    if mom is None:
        raise ModelError(f"weight fix {fix.label!r} on {w!r} needs the layer moments of the "
                         "calibration set: use Workbench.set_weight_fix, or pass stats."
                         "with_moments(recover.collect(model, feeds))")
    if isinstance(mom, str):
        return rtn
    key = (fix, rtn.qtype)
    if key not in mom.cache:
        mom.cache[key] = _fix(model, node, rtn, fix, mom)
    return mom.cache[key][0]


def _fix(model: Model, node: onnx.NodeProto, rtn, fix: WeightFix, mom: Moments):
    t0 = time.perf_counter()
    arr = model.weight(node.input[1]).astype(np.float64)
    rows = _rows(node, arr)
    g, o, _ = rows.shape
    qmin, qmax = qmath.qrange(rtn.qtype)
    s0 = rtn.scale.astype(np.float64).reshape(g, o, 1)
    q0 = _rows(node, rtn.q.astype(np.float64))
    has_bias = fix.bias and node.op_type in BIASED_OPS and len(node.input) > 2 \
        and bool(node.input[2]) and node.input[2] in model.initializers
    before = errors(q0 * s0 - rows, mom)
    s = search_scales(rows, mom, s0, qmin, qmax, has_bias) if fix.scales else s0
    q = np.clip(np.rint(rows / s), qmin, qmax)
    if fix.rounding is Rounding.GPTQ:
        q = gptq(rows, mom.h, s, qmin, qmax)
    elif fix.rounding is Rounding.AdaRound:
        q = adaround(rows, mom.h, s, qmin, qmax)
    after = errors(q * s - rows, mom, has_bias)
    keep = after <= errors(q0 * s0 - rows, mom, has_bias)      # NOTE: per channel, measured
    q, s = np.where(keep[..., None], q, q0), np.where(keep[..., None], s, s0)
    after = np.where(keep, after, errors(q0 * s0 - rows, mom, has_bias))
    shift = None
    if has_bias:
        shift = (-np.einsum("gok,gk->go", q * s - rows, mom.mu)).reshape(-1).astype(np.float32)
    wq = dataclasses.replace(
        rtn, q=_unrows(node, q, arr.shape).astype(rtn.q.dtype),
        scale=s.reshape(-1).astype(np.float32), shift=shift)
    why = "" if has_bias or not fix.bias else "no bias input: bias correction not applied"
    rec = FixRecord(node.input[1], node.name, fix, rtn.qtype, float(before.sum()),
                    float(after.sum()), int(keep.sum()), int(keep.size),
                    time.perf_counter() - t0, why)
    return wq, rec


# ---- what a plan's fixes did ----------------------------------------------------------------
@dataclass(frozen=True)
class FixReport:
    """The measured effect of a plan's weight fixes, one :class:`FixRecord` per weight."""

    records: tuple[FixRecord, ...]
    skipped: Mapping[str, str]

    def line(self) -> str:
        """One line: what ran, on how many weights, the layer errors before -> after, time.

        Example:
            >>> report(wb.plan, wb.stats).line()                       # doctest: +SKIP
            'GPTQ + bias correction on 33 weights (S4): layer output error 4.1e+01 -> ...'
        """
        if not self.records:
            return "no weight fix"
        labels = sorted({r.fix.label for r in self.records})
        types = sorted({r.qtype.value for r in self.records})
        b, a = sum(r.before for r in self.records), sum(r.after for r in self.records)
        kept, ch = sum(r.kept for r in self.records), sum(r.channels for r in self.records)
        sec = sum(r.seconds for r in self.records)
        text = (f"{' / '.join(labels)} on {len(self.records)} weights ({'/'.join(types)}): "
                f"layer output error {b:.3g} -> {a:.3g} ({(a - b) / b:+.0%}), kept on {kept} "
                f"of {ch} channels, {sec:.1f} s" if b > 0 else f"{labels[0]}: no error to fix")
        if self.skipped:
            why = sorted(set(self.skipped.values()))
            text += f"; {len(self.skipped)} weights keep round-to-nearest ({'; '.join(why[:3])})"
        return text

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(r) | {"fix": r.fix.label, "qtype": r.qtype.value}
                             for r in self.records])


def report(plan, stats) -> FixReport:
    """The records of the plan's fixes (computed by the weights the plan was simulated with)."""
    moments = getattr(stats, "moments", None) or {}
    recs, skipped = [], {}
    for w, fix in plan.fixes.items():
        mom = moments.get(w)
        if isinstance(mom, str):
            skipped[w] = mom
            continue
        qt = plan.weights.get(w)
        hit = mom.cache.get((fix, qt)) if mom is not None else None
        if hit is not None:
            recs.append(hit[1])
    return FixReport(tuple(recs), skipped)


# ---- cross-layer equalization ---------------------------------------------------------------
# NOTE: only activations with f(s x) = s f(x) for s > 0 sit between an equalized pair, so the
# rewrite is float-equivalent; ReLU6 / Clip / HardSwish are not (AIMET and Quark replace ReLU6
# by ReLU first, which changes the float model: axnb does not).
HOMOGENEOUS = frozenset({"Relu", "LeakyRelu", "PRelu"})
EQUALIZE_ROUNDS = 20


@dataclass(frozen=True)
class EqualizeResult:
    """The equalized float model and the pairs it equalized (producer, consumer, between)."""

    model: Model
    pairs: tuple[tuple[str, str, str], ...]
    rounds: int

    def line(self) -> str:
        if not self.pairs:
            return ("equalization: no Conv/Gemm pair joined by nothing or by ReLU/LeakyReLU/"
                    "PReLU (other activations are not scale-equivariant)")
        return (f"equalization: {len(self.pairs)} layer pairs, {self.rounds} rounds "
                "(float-equivalent)")


def _one_reader(model: Model, t: str) -> onnx.NodeProto | None:
    users = model.consumers.get(t, [])
    return users[0] if len(users) == 1 and t not in model.outputs else None


def _in_axis(node: onnx.NodeProto, w: np.ndarray) -> int | None:
    """The axis of the consumer's weight that meets its input channels (None: unsupported)."""
    if node.op_type == "Conv":
        g = _attr(node, "group", 1)
        return 1 if g == 1 else (0 if w.shape[1] == 1 and g == w.shape[0] else None)
    if node.op_type == "Gemm" and not _attr(node, "transA", 0):
        return 1 if _attr(node, "transB", 0) else 0
    return 0 if node.op_type == "MatMul" and w.ndim == 2 else None


def _pairs(model: Model) -> list[tuple]:
    """(producer, consumer, activation) triples equalization can rescale."""
    out = []
    for p in weighted_nodes(model):
        if p.op_type not in ("Conv", "Gemm") or unsupported(model, p) or (
                p.op_type == "Gemm" and not _attr(p, "transB", 0)):
            continue
        c, act = _one_reader(model, p.output[0]), None
        if c is not None and c.op_type in HOMOGENEOUS:
            act, c = c, _one_reader(model, c.output[0])
        if c is None or c.op_type not in ("Conv", "Gemm", "MatMul") or len(c.input) < 2 \
                or c.input[1] not in model.initializers or c.input[0] != (act or p).output[0]:
            continue
        if act is not None and act.op_type == "PRelu" and model.spec(act.input[1]).shape \
                and int(np.prod(model.spec(act.input[1]).shape)) != 1:
            continue    # NOTE: a per-channel slope would need scaling along too: not done
        if _in_axis(c, model.weight(c.input[1])) is not None:
            out.append((p, c, act))
    return out


def equalize(model: Model, rounds: int = EQUALIZE_ROUNDS) -> EqualizeResult:
    """Cross-layer equalization (Nagel et al. 2019): for each pair joined by nothing or by a
    ReLU-like activation, scale the producer's output channel i by 1/s_i and the consumer's
    input channel i by s_i, ``s_i = sqrt(r1_i / r2_i)`` of the two weights' channel ranges, so
    both ranges become ``sqrt(r1_i r2_i)``; repeated ``rounds`` times over chains.

    Example:
        >>> res = equalize(wb.model); print(res.line())              # doctest: +SKIP
    """
    from axnb.smooth import Rewrite

    pairs = _pairs(model)
    rw = Rewrite(model)
    for _ in range(rounds if pairs else 0):
        for p, c, _act in pairs:
            w1, w2 = rw.get(p, 1).astype(np.float64), rw.get(c, 1).astype(np.float64)
            ax = _in_axis(c, w2)
            r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(1)
            r2 = np.abs(np.moveaxis(w2, ax, 0).reshape(w2.shape[ax], -1)).max(1)
            if r1.size != r2.size:
                continue
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1)), 1.0)
            rw.set(p, 1, (w1 / s.reshape(-1, *[1] * (w1.ndim - 1))).astype(np.float32))
            if len(p.input) > 2 and p.input[2]:
                rw.set(p, 2, (rw.get(p, 2) / s).astype(np.float32))
            shape = [1] * w2.ndim
            shape[ax] = -1
            rw.set(c, 1, (w2 * s.reshape(shape)).astype(np.float32))
    out = Model(rw.build(), source=model.source, name_map=model.name_map, fusion=model.fusion,
                input_shapes=model.input_shapes) if pairs else model
    return EqualizeResult(out, tuple((p.name, c.name, a.op_type if a else "")
                                     for p, c, a in pairs), rounds if pairs else 0)
