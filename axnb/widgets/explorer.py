"""`Explorer`: the notebook UI over a Workbench (Summary, Layers, Outliers, Graph, Export).

Thin: controls call the Workbench and the pure functions of ``widgets/table.py``,
``status.py`` and ``export.py``; pictures come from
:mod:`axnb.view`. Only one page of the layer table exists as widgets, reused from page to page,
so a model with thousands of layers renders as fast as a small one.
"""

from __future__ import annotations

import base64
import contextlib
import html
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path

import ipywidgets as W

from axnb.advice import FINAL
from axnb.results import OCol
from axnb.types import CalibMethod, Col, Method, Mode
from axnb.widgets import export as X
from axnb.widgets import status as S
from axnb.widgets import table as T

TITLES = ("Summary", "Layers", "Outliers", "Graph", "Export", "Diagnosis")
COLUMNS = (("#", 44), (Col.OPERATOR, 230), (Col.TYPE, 110), (Col.OUTPUT, 250),
           (Col.QDTYPE, 56), (Col.COSINE, 96), (Col.MSE, 76), (Col.SQNR, 56), (Col.SOURCE, 190))
WIDTHS = tuple(w for _, w in COLUMNS)


def _png(fig) -> bytes:
    from axnb.view.plots import fig_to_png_b64

    return base64.b64decode(fig_to_png_b64(fig))


def _box(*children, cls=W.HBox, **layout):
    return cls(list(children), layout=W.Layout(**layout))


def _task_html(s: dict, error: str = "") -> str:
    """The Summary's task-metric lines (one per mode measured) and their verdict, or why it
    could not be measured."""
    if error:
        return (f'<p class="axnb-task" style="color:#c62828"><b>Task metric not measured</b>: '
                f"{html.escape(error)}</p>")
    if not s["task"]:
        return ""
    colour = "#2e7d32" if s["task_ok"] else "#c62828"
    lines = "".join(f"<li>{html.escape(line)}{'<br>' if f else ''}{html.escape(f)}</li>"
                    for (_, line, _), f in zip(s["task"], s["flipped"]))
    return (f'<p class="axnb-task"><b>Task metric</b>: '
            f"{html.escape(' | '.join(short for *_, short in s['task']))}</p><ul>{lines}</ul>"
            f'<p style="color:{colour}">{html.escape(s["task_verdict"])}</p>')


def _word(v) -> str:
    """A control's new value in words ("SmoothQuant on", not "SmoothQuant True")."""
    return ("on" if v else "off") if isinstance(v, bool) else str(v)


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _lock_of(wb) -> threading.RLock:
    """One lock per Workbench: two Explorers on one Workbench take turns, never run at once."""
    return _LOCKS.setdefault(wb, threading.RLock())


TASK_CHUNK = 8
"""Samples between two checks for a newer click while the task metric runs."""


class _Stale(Exception):
    """A newer click arrived: the running stage is dropped."""


class _Interruptible:
    """The Workbench's executor, its ``outputs`` run in chunks of ``chunk`` samples with a
    check between them: a stage on many samples (the task metric on 128 labelled images)
    stops for a newer click instead of making it wait. Every other method is the executor's.
    """

    def __init__(self, inner, stale, chunk: int | None = None) -> None:
        self.inner, self.stale, self.chunk = inner, stale, chunk or TASK_CHUNK

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def outputs(self, model, qmodel, feeds, progress: bool = False) -> list[dict]:
        feeds, out = list(feeds), []
        for i in range(0, len(feeds), self.chunk):
            if self.stale():
                raise _Stale
            out += self.inner.outputs(model, qmodel, feeds[i:i + self.chunk], progress)
        return out

    def output_metrics(self, model, qmodel, feeds, progress: bool = False, float_outputs=None):
        """The final metrics' pass, checked before each sample (nothing half-done cached)."""
        from axnb.evaluators import LocalExecutor

        # NOTE: lazily in this process (checked between runs); a cluster takes a list
        lazy = isinstance(self.inner, LocalExecutor)
        feeds = self._checked(feeds) if lazy else list(self._checked(feeds))
        return self.inner.output_metrics(model, qmodel, feeds, progress, float_outputs)

    def compare_final(self, model, qmodel, feeds, methods, progress: bool = True,
                      float_outputs=None):
        """The compare pass, checked before each sample (the table stage stops for a newer
        click; nothing half-done is cached)."""
        return self.inner.compare_final(model, qmodel, self._checked(feeds), methods, progress,
                                        float_outputs)

    def _checked(self, feeds):
        for f in feeds:
            if self.stale():
                raise _Stale
            yield f


class _Request:
    """An on-request action queued behind the clicks (the "measure" button): it changes no
    state, so it is not remembered for undo and runs after the stages of the state it sees."""

    def __init__(self, fn) -> None:
        self.fn = fn


def _dashboard_html(link: str | None) -> str:
    if not link:
        return ""
    a = html.escape(link, quote=True)
    return (f'<p class="axnb-dashboard">Dask dashboard: <a href="{a}" target="_blank">{a}</a>'
            "</p>")


class Explorer(W.VBox):
    """Interactive accuracy explorer of one Workbench; display it as a cell's result.

    Args:
        workbench: an :class:`axnb.Workbench` (its plan, method and mode change in place).
        page_size: rows of the layer table per page.
        analysis: "EndToEnd" or "PerLayer" (default: the config's precision_analysis_method).
        task: measure the task metric (the config's ``evaluation`` block) after every action,
            in the Workbench's mode, on all its labelled samples (default: when the config
            has the block); the Summary shows "top-1 float 0.906 -> quantized 0.914".
        background: do the work of a click in a worker thread (default), so that the widget
            shows at once and a click never waits for the one before: the final metrics show
            first (one quantized pass over the outputs), then the table, then the task
            metric; clicks made meanwhile are applied in order and computed once, for the
            latest state (a stage of an older state is dropped). False: each click computes
            before it returns. :meth:`wait` waits for the work.

    Attributes:
        report, df, final: the current LayerReport, its frame, output -> final cosine.
        stages: seconds from the start of the last computation to each stage shown
            (``final``, ``table``, ``task``); ``coalesced``: how many clicks it applied.
        history: (label, state before it) of each action applied, oldest first; :meth:`undo`
            (the "undo" button) restores the last one's state.
        snapshot: the current :class:`~axnb.results.Analysis` (what the Summary shows and
            the Export tab's report renders).
        last_seconds, last_error: time and exception (or None) of the last action.
        task_error: why the task metric could not be measured after the last action, or "".

    Example:
        >>> ex = Explorer(wb); ex                                   # doctest: +SKIP
        >>> ex.toggles[3].value = True     # as clicking row 3's U16 toggle  # doctest: +SKIP
        >>> ex.wait(); ex.final            # the work runs in a thread       # doctest: +SKIP
        >>> ex.close()                     # also stops the netron servers   # doctest: +SKIP
    """

    def __init__(self, workbench, page_size: int = 25, analysis: str | None = None,
                 task: bool | None = None, background: bool = True) -> None:
        super().__init__()
        self.wb, self.page_size, self.background = workbench, page_size, background
        self._local, self._lock = threading.local(), threading.Lock()
        self._queue: list[tuple[str, object]] = []
        self._worker: threading.Thread | None = None
        self._gen, self.stages, self.coalesced = 0, {}, 0
        self.history: list[tuple[str, tuple]] = []
        self.task = workbench.config.evaluation is not None if task is None else bool(task)
        self.analysis = analysis or workbench.config.quant.precision_analysis_method.value
        self.report = self.df = self.last_seconds = self.last_error = self.snapshot = None
        self.change = self.task_error = self.task_change = ""
        self._last_task = None
        self.final: dict[str, float] = {}
        self._servers, self._stale = [], {2, 3}
        self._tmp = Path(tempfile.mkdtemp(prefix="axnb-explorer-"))
        self.status = W.HTML().add_class("axnb-status")
        self.progress = W.IntProgress(min=0, max=3, layout=W.Layout(width="160px"))
        self.timing = W.Label().add_class("axnb-timing")
        self.summary_html = W.HTML().add_class("axnb-summary")
        self.deployed = self._deployed_check()
        self.tabs = W.Tab([self._summary_tab(), self._layers_tab(), self._outliers_tab(),
                           self._graph_tab(), self._export_tab(), self._diagnosis_tab()],
                          titles=TITLES)
        self.tabs.observe(self._on_tab, "selected_index")
        self.children = [self.status, W.HBox([self.progress, self.timing]), self.tabs]
        self.run("analysis")

    # ---- building ------------------------------------------------------------------------
    def _summary_tab(self) -> W.Widget:
        self.measure_btn = W.Button(description="try the next steps (measure each)",
                                    layout=W.Layout(width="280px")).add_class("axnb-measure")
        self.apply_btn = W.Button(description="apply the best measured step", disabled=True,
                                  layout=W.Layout(width="260px")).add_class("axnb-apply")
        # NOTE: queued like a click (the worker runs it; the kernel stays free), after the
        # state the clicks before it leave
        self.measure_btn.on_click(lambda _: self.run("measure", _Request(self.measure)))
        self.apply_btn.on_click(lambda _: self.apply_best())
        return _box(self.summary_html, _box(self.measure_btn, self.apply_btn), cls=W.VBox)

    def measure(self, **kw) -> None:
        """Try every next step on the workbench (:func:`axnb.trials.measured`, ``kw`` passed to
        :func:`axnb.trials.measure`; its state is restored) and show them in the Summary."""
        from axnb import trials as steps

        self.timing.value, t = "measuring the next steps...", time.perf_counter()
        self.snapshot = steps.measured(self.wb, self.snapshot, **kw)
        self.show_summary()
        self.timing.value = f"next steps measured: {time.perf_counter() - t:.1f} s"

    def apply_best(self) -> None:
        """Apply the first measured step (what the Summary lists first) and re-analyse."""
        from axnb import trials as steps

        trials = self.snapshot.advice.trials if self.snapshot is not None else ()
        if trials:
            self.run(trials[0].label, lambda: steps.apply(self.wb, trials[0]))

    def _layers_tab(self) -> W.Widget:
        wb, lay = self.wb, W.Layout(width="230px")
        self.calib = W.Dropdown(options=[m.value for m in CalibMethod], value=wb.method.value,
                                description="Calibration", layout=lay)
        self.method = W.Dropdown(options=[Method.EndToEnd.value, Method.PerLayer.value],
                                 value=self.analysis, description="Analysis", layout=lay)
        self.mode = W.Dropdown(options=[m.value for m in Mode], value=wb.mode.value,
                               description="Mode", layout=lay)
        self.smooth = W.Checkbox(value=wb.smooth is not None, description="SmoothQuant")
        for w, label, fn in ((self.calib, "calibration", lambda v: wb.set_method(v)),
                             (self.method, "analysis", lambda v: setattr(self, "analysis", v)),
                             (self.mode, "mode", lambda v: wb.set_mode(v)),
                             (self.smooth, "SmoothQuant", self._set_smooth)):
            # NOTE: a value set by the code itself (quiet: following the Workbench) is no click
            w.observe(lambda c, label=label, fn=fn: self._sync or self.run(
                f"{label} {_word(c.new)}", lambda: fn(c.new)), "value")
        buttons = []
        for label, fn in (("all U8", lambda: wb.set_all("U8")),
                          ("all U16", lambda: wb.set_all("U16")),
                          ("reset to config", lambda: wb.reset_plan())):
            buttons.append(W.Button(description=label))
            buttons[-1].on_click(lambda _, label=label, fn=fn: self.run(label, fn))
        self.all_u8, self.all_u16, self.reset = buttons
        self.undo_btn = W.Button(description="undo", disabled=True,
                                 layout=W.Layout(width="80px")).add_class("axnb-undo")
        self.undo_btn.on_click(lambda _: self.undo())
        self.history_html = W.HTML().add_class("axnb-history")
        buttons += [self.undo_btn, self.history_html]
        # NOTE: filters as one types (only one page of rows is rendered, so it stays cheap)
        self.search = W.Text(placeholder="search name / type", continuous_update=True,
                             layout=W.Layout(width="200px")).add_class("axnb-search")
        self.worst = W.BoundedIntText(0, min=0, max=10**6, description="worst N",
                                      layout=W.Layout(width="150px"))
        self.sort = W.Dropdown(options=T.SORTS, value="depth", description="Sort", layout=lay)
        self.page = W.BoundedIntText(1, min=1, max=1, description="page",
                                     layout=W.Layout(width="140px"))
        self.pages = W.Label().add_class("axnb-pages")
        prev, nxt = (W.Button(description=d, layout=W.Layout(width="36px")) for d in "<>")
        prev.on_click(lambda _: setattr(self.page, "value", max(1, self.page.value - 1)))
        nxt.on_click(lambda _: setattr(self.page, "value", min(self.page.max,
                                                               self.page.value + 1)))
        for w in (self.search, self.worst, self.sort):
            w.observe(self._on_filter, "value")
        self.page.observe(lambda _: self._sync or self._unpin() or self.show_table(), "value")
        self._pin: list | None = None
        self._page_index: list = []
        size = {"width": "64px", "min_width": "64px", "padding": "0"}
        self.toggles = [W.ToggleButton(description="U16", layout=W.Layout(**size))
                        for _ in range(self.page_size)]
        self.cells = [W.HTML() for _ in range(self.page_size)]
        self._rows = [_box(t, c, align_items="center") for t, c in zip(self.toggles, self.cells)]
        self._row_layers: list[str | None] = [None] * self.page_size
        for i, tb in enumerate(self.toggles):
            tb.add_class("axnb-u16-toggle")
            tb.observe(lambda c, i=i: self._on_toggle(i, c.new), "value")
        head = "".join(f'<div style="flex:none;width:{w}px;padding:0 4px"><b>{h}</b></div>'
                       for h, w in COLUMNS)
        head = W.HTML(f'<div style="display:flex;font:12px monospace;margin-left:70px">'
                      f"{head}</div>")
        self.table = _box(head, *self._rows, cls=W.VBox).add_class("axnb-table")
        self.plot = W.Image(format="png", layout=W.Layout(max_width="900px"))
        return _box(_box(self.calib, self.method, self.mode, self.smooth), _box(*buttons),
                    _box(self.search, self.worst, self.sort, prev, self.page, nxt, self.pages),
                    self.table, self.plot, cls=W.VBox)

    def _outliers_tab(self) -> W.Widget:
        self.outlier_html, self.absmax_msg = W.HTML(), W.HTML()
        self.tensor = W.Dropdown(description="tensor", layout=W.Layout(width="480px"))
        self.absmax = W.Image(format="png", layout=W.Layout(max_width="900px"))
        self.tensor.observe(lambda _: self._sync or self.show_absmax(), "value")
        # NOTE: the plot first, then the worst rows (the rest behind a toggle): it sat below a
        # 60-row table (issue 15)
        self.outlier_head = W.HTML()
        return _box(self.outlier_head, self.tensor, self.absmax_msg, self.absmax,
                    self.outlier_html, cls=W.VBox)

    def _graph_tab(self) -> W.Widget:
        self.graph_html, self.io_html = W.HTML(), W.HTML()
        reload = W.Button(description="re-export and reload", layout=W.Layout(width="200px"))
        reload.on_click(lambda _: self._guard("graph", self.show_graph))
        return _box(reload, self.graph_html, self.io_html, cls=W.VBox).add_class("axnb-graph")

    def _export_tab(self) -> W.Widget:
        self.folder = W.Text(str(Path(self.wb.config.output_dir or "out/axnb") / "explorer"),
                             description="folder", layout=W.Layout(width="480px"))
        go = W.Button(description="write report, config, quantized.onnx",
                      layout=W.Layout(width="300px"))
        go.on_click(lambda _: self._guard("export", self.export))
        self.export_html = W.HTML()
        return _box(self.folder, go, self.export_html, cls=W.VBox)

    def _diagnosis_tab(self) -> W.Widget:
        self.target = W.BoundedFloatText(FINAL, min=0.0, max=1.0, step=0.001,
                                         description="target", layout=W.Layout(width="180px"))
        find = W.Button(description="search: fewest U16 layers", layout=W.Layout(width="220px"))
        find.on_click(lambda _: self.run("search", self._search))
        tune = W.Button(description="tune: combined fixes", layout=W.Layout(width="200px"),
                        tooltip="calibration method, SmoothQuant, U16 / FP32 groups together, "
                                "at the least cost (axnb.tune; up to 15 minutes)")
        tune.on_click(lambda _: self.run("tune", self._tune))
        checks = W.Button(description="run the troubleshooting checks",
                          layout=W.Layout(width="260px"))
        checks.on_click(lambda _: self._guard("diagnosis", self.show_diagnosis))
        self.search_html, self.diagnosis_html = W.HTML(), W.HTML()
        return _box(_box(self.target, find, tune), self.search_html, checks,
                    self.diagnosis_html, cls=W.VBox)

    def _tune(self) -> None:
        """The tuner to the target box's value; its answer is adopted (never below the start)
        and its one line shown."""
        res = self.wb.tune(target=self.target.value, progress=False)
        res.apply(self.wb)
        self.search_html.value = f"<p>{html.escape(res.line())}</p>"

    def _deployed_check(self):
        """:func:`axnb.checks.deployed_input` of the Workbench (config only, one calibration
        sample read), or a failed Check saying why it could not run."""
        from axnb.checks.inputs import deployed_input
        from axnb.results import Check

        try:
            return deployed_input(self.wb)
        except Exception as e:  # noqa: BLE001 - shown in the Summary, the rest still works
            return Check("deployed input", "warn", f"could not be checked: "
                         f"{type(e).__name__}: {e}")

    def _report_snapshot(self):
        """The snapshot the Export tab writes, of the Workbench as it is now (another Explorer
        on it may have changed it: then the report and the config would disagree), with the
        deployed-input check as its diagnosis when the troubleshooting checks were not run."""
        from axnb.results import Diagnosis

        snap = self.snapshot
        if snap is None or not self._current(snap):
            snap = self.wb.snapshot([self.analysis], by_method=False)
        if snap.diagnosis is None:
            snap = snap.replace(diagnosis=Diagnosis((self.deployed,)))
        return snap

    def _current(self, an) -> bool:
        """Whether ``an`` is of the Workbench's plan, method, mode and SmoothQuant now."""
        from axnb.results import plain

        wb = self.wb
        return (an.method == wb.method.value and an.mode == wb.mode.value
                and (an.smoothing is None) == (wb.smooth is None)
                and an.plan.get("layer_configs") == plain(wb.plan.to_layer_configs()))

    def _search(self) -> None:
        from axnb.search import search

        # NOTE: rank by the analysis table already on screen (worst cosine first): no extra
        # evaluation per layer, unlike search's default ranker.
        layers = set(self.wb.plan.candidates())
        ranking = [op for op in self.df.sort_values(Col.COSINE)[Col.OPERATOR] if op in layers] \
            if self.df is not None else None
        res = search(self.wb.evaluator(), self.wb.plan, target=self.target.value,
                     ranking=ranking or None, progress=False)
        if res.improves:  # NOTE: a plan that lowers the score is never adopted
            res.apply(self.wb)
        layers = ", ".join(html.escape(x) for x in res.promoted) or "none"
        self.search_html.value = (f"<p>{'met' if res.met else 'NOT met'} after "
                                  f"{res.evaluations} evaluations ({res.seconds:.1f} s): "
                                  f"{len(res.promoted)} layer{'s' * (len(res.promoted) != 1)}"
                                  f" to {res.qtype.value}: "
                                  f"{layers}</p>")

    def show_diagnosis(self) -> None:
        """Run :func:`axnb.checks.diagnose` and show its checks (verdict, summary, fix); its
        next step is the Summary's advice (the same snapshot)."""
        from axnb.checks import diagnose
        from axnb.view.tables import diagnosis_table, to_html

        snap = self.snapshot if self.snapshot is not None else self.wb.snapshot([])
        d = diagnose(self.wb, analysis=snap)
        self.snapshot = snap.replace(diagnosis=d)
        self.diagnosis_html.value = to_html(diagnosis_table(d))

    # ---- actions: a worker applies clicks in order and computes once for the latest state ----
    def run(self, label: str, action=None, pin: bool = False) -> None:
        """Do ``action`` (a Workbench call), then re-analyse and refresh every view: in the
        worker thread when ``background`` (this returns at once; clicks made while it works
        are applied in order and computed once), else before returning. ``pin``: the rows on
        screen keep their places (a toggle)."""
        # NOTE: a sorted table would move the toggled row from under the pointer; pinned rows
        # stay until the table is sorted, filtered or paged again, or another action runs.
        self._pin = (self._pin or list(self._page_index)) if pin else None
        with self._lock:
            self._queue.append((label, action))
            self._gen += 1
            start = self._worker is None
            if start and self.background:
                self._worker = threading.Thread(target=self._drain, daemon=True,
                                                name="axnb-explorer")
        self.progress.value, self.progress.bar_style = 0, "info"
        self.add_class("axnb-busy")
        self.timing.value = f"{label}: running..."
        if not self.background:
            self._drain()
        elif start:
            self._worker.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the clicks queued so far to be computed; False if still working after
        ``timeout`` seconds.

        Example:
            >>> ex.toggles[3].value = True; ex.wait(); ex.final      # doctest: +SKIP
        """
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                worker = self._worker
            if worker is None or worker is threading.current_thread():
                return True
            worker.join(None if end is None else max(0.0, end - time.monotonic()))
            if end is not None and time.monotonic() >= end and worker.is_alive():
                return False

    @property
    def busy(self) -> bool:
        """Whether clicks are being computed (the controls show it: ``axnb-busy``)."""
        with self._lock:
            return self._worker is not None or bool(self._queue)

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue, gen = self._queue, [], self._gen
                if not batch:
                    self._worker = None
                    self.remove_class("axnb-busy")
                    return
            with _lock_of(self.wb), self._no_bars():
                self._process(batch, gen)

    def _stale_gen(self, gen: int) -> bool:
        """A newer click arrived: the rest of this computation is dropped (coalesced)."""
        with self._lock:
            return gen != self._gen

    @contextlib.contextmanager
    def _no_bars(self):
        """No tqdm bars from widget actions (they land in JupyterLab's Log Console as frozen
        warnings); the progress shows in the widget."""
        was, self.wb.progress = self.wb.progress, False
        try:
            yield
        finally:
            self.wb.progress = was

    def _process(self, batch: list, gen: int) -> None:
        """Apply ``batch``'s actions in order, then show the final metrics, the table and the
        task metric as each is ready; each stage is skipped once a newer click is queued."""
        t, before = time.perf_counter(), min(self.final.values(), default=None)
        self.task_change = ""
        label = batch[-1][0] + (f" (with {len(batch) - 1} earlier clicks)" if len(batch) > 1
                                else "")
        self.coalesced, self.stages = len(batch), {}
        requests = [(name, a.fn) for name, a in batch if isinstance(a, _Request)]
        try:
            for name, action in batch:
                if action is None or isinstance(action, _Request):
                    continue
                if action != self._undo_last:
                    self._remember(name)
                action()
            for stage in ("final", "table", "task"):
                if stage == "task" and not self.task:
                    break
                if not getattr(self, f"_stage_{stage}")(lambda: self._stale_gen(gen)):
                    return                        # NOTE: dropped for a newer click
                self.stages[stage] = time.perf_counter() - t
                if stage == "final":
                    self.change = S.change(before, min(self.final.values(), default=None))
                self._show_stage(label, stage)
                if self._stale_gen(gen):
                    return
        except Exception as e:  # NOTE: a widget callback's exception would be invisible
            self.last_error, self.progress.bar_style = e, "danger"
            self.timing.value = f"{label} failed: {type(e).__name__}: {e}"
            return
        self._done(label, t)
        for name, fn in requests:
            if not self._stale_gen(gen):
                self._request(name, fn)

    # ---- history: each applied action with the state before it; undo restores it ----------
    HISTORY = 50

    def undo(self) -> None:
        """Back to the plan, calibration method, mode, SmoothQuant and analysis method before the
        last action
        (queued behind the clicks made before it, so it undoes the last one of them)."""
        self.run("undo", self._undo_last)

    def _state(self) -> tuple:
        wb = self.wb
        return wb.plan, wb.method, wb.mode, wb.smooth is not None, self.analysis

    def _remember(self, label: str) -> None:
        self.history = [*self.history, (label, self._state())][-self.HISTORY:]
        self._show_history()

    def _undo_last(self) -> None:
        if not self.history:
            return
        *self.history, (_, (plan, method, mode, smooth, self.analysis)) = self.history
        if smooth != (self.wb.smooth is not None):
            self.wb.set_smooth_quant(smooth)   # NOTE: first: it rebuilds the plan of its model
        self.wb.set_plan(plan).set_method(method).set_mode(mode)
        self._show_history()

    def _show_history(self) -> None:
        last = [html.escape(label) for label, _ in self.history[-5:]]
        self.undo_btn.disabled = not self.history
        self.history_html.value = ("" if not last else
                                   f'<span style="font:12px sans-serif;color:#555">history: '
                                   f"{' &rarr; '.join(last)}</span>")

    def _show_stage(self, label: str, stage: str) -> None:
        n = {"final": 1, "table": 2, "task": 3}[stage]
        self.progress.value = n
        nxt = {"final": "the table", "table": "the task metric" if self.task else ""}.get(stage)
        self.timing.value = (f"{label}: {self.change}{self.stages[stage]:.2f} s"
                             + (f"; computing {nxt}..." if nxt else ""))

    def _done(self, label: str, t: float) -> None:
        self.progress.value, self.progress.bar_style = 3, "success"
        self.last_error, self._stale = None, self._stale | {3}
        self.last_seconds = time.perf_counter() - t
        self._show_tab(self.tabs.selected_index)  # NOTE: a tab opened while this ran
        when = ", ".join(f"{k} {v:.2f} s" for k, v in self.stages.items())
        self.timing.value = f"{label}: {self.change}{self.task_change}{when}"
        # NOTE: a task-metric drop is flagged like a cosine drop: red, class axnb-drop
        drop = "lowers" in self.change + self.task_change
        self.timing.add_class("axnb-drop") if drop else self.timing.remove_class("axnb-drop")
        self.timing.style.text_color = "#c62828" if drop else None

    def _stage_final(self, stale) -> bool:
        """The final metrics of the new state, shown with the advice of a snapshot without the
        table (False: dropped for a newer click, checked before each sample).

        NOTE: from a plain quantized pass, then the table's compare pass: taking them from the
        compare pass alone (one pass per click) showed the number 2-3x later (CNN 3.4 s vs a
        plain pass 1.6 s, PP-OCR det 12.3 s vs 4.0 s, load 4-5.5), against the issue's 2x;
        the CLI's snapshot still takes them from its compare pass (Workbench.report)."""
        try:
            with self._interruptible(stale):
                self.wb.final_metrics()
        except _Stale:
            return False
        self.snapshot = self.wb.snapshot([], by_method=False)
        self.final = self.snapshot.final_cosine()
        self._sync_controls()
        self.show_summary()
        return True

    @contextlib.contextmanager
    def _interruptible(self, stale):
        """The Workbench's executor wrapped in :class:`_Interruptible` (the engine's calls run
        unchanged; only their sample loops can stop)."""
        executor = self.wb.executor
        self.wb.executor = _Interruptible(executor, stale)
        try:
            yield
        finally:
            self.wb.executor = executor

    def _stage_table(self, stale=None) -> bool:
        """The layer table of the new state (False: its compare pass stopped for a newer
        click, checked before each sample; nothing half-done is cached)."""
        from axnb.view.plots import cosine_along_depth

        try:
            with self._interruptible(stale or (lambda: False)):
                self.wb.report([self.analysis])
        except _Stale:
            return False
        self.snapshot = self.wb.snapshot([self.analysis], by_method=False)
        self.report = self.snapshot.reports[self.analysis]
        self.df = self.report.to_frame()
        self.show_summary()
        self.show_table()
        u16 = {n for n, q in self.wb.plan.layer_types.items() if q.bits == 16}
        self.plot.value = _png(cosine_along_depth(self.df, S.THRESHOLD, u16=u16))
        return True

    def _stage_task(self, stale) -> bool:
        """The task metric (False: dropped for a newer click, checked every 8 samples); one
        that cannot be measured (labels missing...) is said in the Summary and the rest still
        shows."""
        from axnb.errors import AxnbError

        self.task_error = ""
        try:
            # NOTE: the engine's one evaluator runs unchanged; only its sample loop can stop
            with self._interruptible(stale):
                self.snapshot = self.wb.snapshot([self.analysis], task=True, by_method=False)
        except _Stale:
            return False
        except (AxnbError, OSError) as e:
            self.task_error = f"{type(e).__name__}: {e}"
        now = next(iter(self.snapshot.task.values()), None)
        self.task_change, self._last_task = S.task_change(self._last_task, now), now
        self.show_summary()
        return True

    def _sync_controls(self) -> None:
        """The dropdowns and checkbox follow the Workbench (an applied step may change them)."""
        with self._quiet():
            self.calib.value, self.mode.value = self.wb.method.value, self.wb.mode.value
            self.method.value = self.analysis
            self.smooth.value = self.wb.smooth is not None

    def _set_smooth(self, on: bool) -> None:
        self.wb.set_smooth_quant(on)
        self._stale.add(2)

    def _request(self, label: str, fn) -> None:
        """An on-request action in the worker (which holds the Workbench's lock), its error
        shown instead of raised."""
        try:
            fn()
            self.last_error = None
        except Exception as e:  # NOTE: a widget callback's exception would be invisible
            self.last_error = e
            self.timing.value = f"{label} failed: {type(e).__name__}: {e}"

    def _guard(self, label: str, fn) -> None:
        """Run ``fn`` (an on-request action: measure, graph, export, checks) once the queued
        clicks are computed, showing an error instead of raising it."""
        self.wait()
        try:
            with _lock_of(self.wb), self._no_bars():
                fn()
            self.last_error = None
        except Exception as e:
            self.last_error = e
            self.timing.value = f"{label} failed: {type(e).__name__}: {e}"

    @property
    def _sync(self) -> bool:
        """True while this thread sets controls itself (their observers then do nothing); per
        thread, so that a click during the worker's refresh is not taken for the refresh."""
        return getattr(self._local, "quiet", False)

    @contextlib.contextmanager
    def _quiet(self):
        was, self._local.quiet = self._sync, True
        try:
            yield
        finally:
            self._local.quiet = was

    def _on_toggle(self, i: int, on: bool) -> None:
        layer = self._row_layers[i]
        if not self._sync and layer is not None:
            self.run(f"{layer} -> {'U16' if on else 'U8'}",
                     lambda: self.wb.set_plan(self.wb.plan.toggle(layer, on)), pin=True)

    def _on_filter(self, _) -> None:
        self._pin = None
        with self._quiet():
            self.page.value = 1
        self.show_table()

    def _unpin(self) -> None:
        self._pin = None

    def _on_tab(self, c) -> None:
        # NOTE: while clicks are computed the tab stays stale and is drawn when they are done:
        # waiting here would block the kernel, and every later click with it.
        if not self.busy:
            self._show_tab(c.new)

    def _show_tab(self, i: int) -> None:
        """Draw tab ``i`` (Outliers, Graph) if what it shows changed since it was drawn."""
        if i in self._stale:
            self._stale.discard(i)
            self._guard(TITLES[i], self.show_outliers if i == 2 else self.show_graph)

    # ---- views ---------------------------------------------------------------------------
    def show_summary(self) -> None:
        s = S.summary(self.snapshot, self.analysis, S.dashboard_link(self.wb.cluster))
        colour = "#2e7d32" if s["ok"] else "#c62828"
        self.status.value = (f'<div style="font:13px sans-serif;color:{colour}">'
                             f"<b>{html.escape(S.status_line(s))}</b></div>")
        outs = "".join(f"<tr><td>{html.escape(o)}</td><td>{c:.6f}</td><td>"
                       f"{'&#10004; >=' if ok else '&#10008; <'} {S.THRESHOLD:.0%}</td>"
                       f"<td>{html.escape(sp)}</td></tr>" for o, c, ok, sp in s["outputs"])
        steps = "".join(f"<li>{html.escape(x)}</li>" for x in s["steps"])
        where = "".join(f"<li>{html.escape(x)}</li>" for x in s["where"])
        rejected = "".join(f"<li>{html.escape(x)}</li>" for x in s["rejected"])
        self.apply_btn.disabled = not (self.snapshot and self.snapshot.advice.trials)
        self.measure_btn.disabled = s["ok"] and s["task_ok"] is not False  # NOTE: or the task
        self.summary_html.value = (
            f'<p style="color:{colour}"><b>{html.escape(s["verdict"])}</b></p>'
            f"<table><tr><th>output</th><th>final cosine</th><th></th><th>spread</th></tr>"
            f"{outs}</table>"
            + _task_html(s, self.task_error) + S.deployed_html(self.deployed) +
            f"<p>U16 layers: {s['u16']} &mdash; plan: {html.escape(s['plan'])}<br>"
            f"calibration {s['calibration']}, analysis {s['analysis']}, mode {s['mode']}, "
            f"SmoothQuant {'on' if s['smooth'] else 'off'}</p>"
            + (f"<ul>{where}</ul>" if where else "") + f"<p>Next:</p><ol>{steps}</ol>"
            + (f"<p>Tried, not recommended:</p><ul>{rejected}</ul>" if rejected else "")
            + _dashboard_html(s["dashboard"]))

    def show_table(self) -> None:
        if self.df is None:  # NOTE: the first analysis failed; its error is shown
            return
        p = T.rows_for_page(self.df, self.page.value - 1, self.page_size, self.search.value,
                            self.worst.value, self.sort.value, pinned=self._pin)
        self._page_index = list(p.rows.index)
        ok, plan = set(self.wb.plan.candidates()), self.wb.plan
        with self._quiet():
            self.page.max, self.page.value = p.pages, p.page + 1
            self.pages.value = f"of {p.pages} ({p.total} rows)"
            for i, (row, tb, cell) in enumerate(zip(self._rows, self.toggles, self.cells)):
                r = p.rows.iloc[i] if i < len(p.rows) else None
                can = r is not None and r.get(Col.OPERATOR) in ok
                self._row_layers[i] = r[Col.OPERATOR] if can else None
                row.layout.display = "none" if r is None else ""
                high = can and plan.layer_types[r[Col.OPERATOR]].bits == 16
                tb.value, tb.disabled = high, not can
                tb.button_style, tb.layout.visibility = ("info" if tb.value else "",
                                                         "visible" if can else "hidden")
                cell.value = "" if r is None else T.row_html(r, can, WIDTHS)

    def show_outliers(self) -> None:
        from axnb.view.tables import OUTLIER_ALL, OUTLIER_SHOWN, outlier_html

        rep = self.snapshot.outliers if self.snapshot is not None else self.wb.outliers()
        df = rep.to_frame()
        self.outlier_head.value = (
            f"<p>{len(df)} tensors with level&ge;3 or sparse channels, worst first; the plot "
            f"shows the one picked below, the table its {min(len(df), OUTLIER_SHOWN)} worst"
            + (" (the others behind the toggle)" if len(df) > OUTLIER_SHOWN else "") + ".</p>"
            if len(df) else "<p>No tensor has channels at level&ge;3 or sparse channels.</p>")
        self.outlier_html.value = outlier_html(df)
        opts = list(df[OCol.TENSOR].head(OUTLIER_ALL)) if len(df) else []
        with self._quiet():
            self.tensor.options, self.tensor.value = opts, opts[0] if opts else None
        self.show_absmax()

    def show_absmax(self) -> None:
        from axnb.view.plots import channel_absmax

        try:
            if self.tensor.value:
                self.absmax.value = _png(channel_absmax(self.wb.stats, self.tensor.value))
            self.absmax_msg.value = ""
        except Exception as e:
            self.absmax_msg.value = f"<i>{html.escape(str(e))}</i>"

    def show_graph(self) -> None:
        """Export quantized.onnx, show it and the float graph in netron (offline, through the
        Jupyter server), refresh the I/O type check."""
        from axnb.view.netron_view import serve

        self.stop_servers()
        qpath = self.wb.export_quantized(self._tmp / "quantized.onnx")
        m = self.wb.model  # NOTE: with SmoothQuant on, the smoothed float graph
        fpath = Path(m.path) if getattr(m, "path", None) and Path(m.path).is_file() else \
            m.save(self._tmp / "optimized.onnx")
        cols = []
        for title, src in (("float (optimized)", fpath), ("quantized.onnx", qpath)):
            try:
                self._servers.append(serve(src))
                body = self._servers[-1].iframe_html(height=580)
            except Exception as e:
                body = (f'<p style="color:#c62828">netron could not start: {html.escape(str(e))}'
                        f". Open <code>{html.escape(str(qpath))}</code> in netron yourself.</p>")
            cols.append(f'<div style="flex:1;min-width:0"><b>{title}</b><br>{body}</div>')
        self.graph_html.value = f'<div style="display:flex;gap:8px">{"".join(cols)}</div>'
        check, table = X.io_check(self.wb, qpath)
        colour = "#2e7d32" if check.verdict == "pass" else "#c62828"
        self.io_html.value = (f'<p><b>Input/output types:</b> <span style="color:{colour}">'
                              f"{check.verdict}</span> &mdash; {html.escape(check.summary)}</p>"
                              + table)

    def export(self) -> dict:
        """Write report.html, config.json and quantized.onnx to the folder box; their paths."""
        t = time.perf_counter()
        paths = X.export_all(self.wb, self.folder.value, self._report_snapshot())
        items = "".join(f"<li>{k}: <code>{html.escape(str(Path(p).resolve()))}</code></li>"
                        for k, p in paths.items())
        self.export_html.value = (f"<p>Written in {time.perf_counter() - t:.2f} s:</p>"
                                  f"<ul>{items}</ul>")
        return paths

    def stop_servers(self) -> None:
        for srv in self._servers:
            with contextlib.suppress(Exception):
                srv.stop()
        self._servers = []

    def close(self) -> None:
        """Drop the queued clicks and the rest of the running computation (waiting for its
        current stage), stop the netron servers, remove temp files, close the widget."""
        with self._lock:
            self._queue.clear()
            self._gen += 1                # NOTE: the running computation is now stale
        self.wait(120)
        self.stop_servers()
        shutil.rmtree(self._tmp, ignore_errors=True)
        super().close()
