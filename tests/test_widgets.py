"""widgets/: the Explorer driven headlessly (widget values set from code) and its pure logic."""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape

import numpy as np
import pandas as pd
import pytest
from evalsubset import FLIPS, small_eval_config

from axnb.results.task import task_line
from axnb.types import Col
from axnb.widgets.status import dashboard_link, status_line, summary, task_short
from axnb.widgets.table import rows_for_page

pytest.importorskip("ipywidgets")


# ---- pure logic ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    n = 1500
    return pd.DataFrame({"Operator": [f"layer_{i}" for i in range(n)],
                         "Type": np.where(np.arange(n) % 3 == 0, "Conv", "Relu"),
                         "Output Tensor": [f"t{i}" for i in range(n)],
                         "Cosin": 1 - rng.random(n) / 50})


def test_rows_for_page_pages_a_1500_row_frame(big):
    p = rows_for_page(big, page=0, size=25)
    assert (p.page, p.pages, p.total, len(p.rows)) == (0, 60, 1500, 25)
    assert p.rows["Operator"].tolist()[:2] == ["layer_0", "layer_1"]
    last = rows_for_page(big, page=59, size=25)
    assert last.rows["Operator"].iloc[-1] == "layer_1499"
    clamped = rows_for_page(big, page=1000, size=40)
    assert (clamped.page, clamped.pages, len(clamped.rows)) == (37, 38, 20)
    assert rows_for_page(big, page=-3).page == 0


def test_rows_for_page_search_worst_and_sort(big):
    conv = rows_for_page(big, size=50, query="CONV")
    assert conv.total == 500 and set(conv.rows["Type"]) == {"Conv"}
    assert rows_for_page(big, query="layer_149").total == 11       # 149, 1490..1499
    worst = rows_for_page(big, size=25, worst=10)
    assert worst.total == 10 and worst.rows.index.is_monotonic_increasing  # depth order kept
    assert set(worst.rows["Cosin"]) == set(big["Cosin"].nsmallest(10))
    up = rows_for_page(big, sort="cosine").rows["Cosin"].to_numpy()
    down = rows_for_page(big, sort="cosine desc").rows["Cosin"].to_numpy()
    assert up[0] == big["Cosin"].min() and down[0] == big["Cosin"].max()
    assert (np.diff(up) >= 0).all() and (np.diff(down) <= 0).all()
    assert rows_for_page(big, query="nothing-matches").total == 0


def test_import_axnb_and_the_logic_stay_ui_free():
    code = ("import sys, axnb, axnb.widgets, axnb.widgets.table, axnb.widgets.status, "
            "axnb.widgets.export; "
            "print(sorted(m for m in ('ipywidgets', 'matplotlib', 'netron', 'jinja2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# ---- on a real Workbench ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def wb4(zoo_ready, zoo_workbench, lend, tmp_path_factory):
    """The run's zoo Workbench (tests/conftest.py) on 4 of its analysis samples, with the task
    metric on 6 labelled samples (evalsubset): the Explorer re-measures it after every
    action."""
    cfg = small_eval_config(zoo_ready, tmp_path_factory.mktemp("labelled"))
    with lend(zoo_workbench, samples=zoo_workbench.samples[:4], config=cfg) as w:
        yield w


@pytest.fixture
def wb(wb4, lend):
    with lend(wb4) as w:
        yield w


@pytest.fixture
def ex(wb):
    from axnb.widgets import Explorer

    wb.reset_plan().set_method("MinMax").set_mode("Reference")
    e = Explorer(wb, background=False)     # NOTE: synchronous: each click computes at once
    assert e.last_error is None
    yield e
    e.close()


def _first_toggle(ex) -> int:
    return next(i for i, layer in enumerate(ex._row_layers) if layer is not None)


def apply_toggle(wb, layer, on):
    return wb.set_plan(wb.plan.toggle(layer, on))        # NOTE: what the Explorer's toggle does


def test_toggle_off_restores_the_config_type_or_forces_u8(wb):
    wb.reset_plan()
    layer = sorted(wb.plan.candidates())[0]
    assert apply_toggle(wb, layer, True).plan.layers("U16") == [layer]
    assert apply_toggle(wb, layer, False).plan.layers("U16") == [] and not wb.plan.overrides
    from axnb import QuantPlan

    hs = QuantPlan.from_config(wb.model, [{"op_type": "HardSwish", "data_type": "U16"}])
    wb.set_plan(hs)
    one = hs.layers("U16")[0]
    apply_toggle(wb, one, False)  # NOTE: layer_configs say U16; off must still mean U8
    assert one not in wb.plan.layers("U16") and len(wb.plan.layers("U16")) == len(
        hs.layers("U16")) - 1
    wb.reset_plan()


def test_summary_and_status_line(wb):
    from axnb import advice

    an = wb.reset_plan().snapshot(methods=["PerLayer"])
    out = next(iter(an.final[an.mode]))
    fake = an.replace(final={an.mode: {"out": {**an.final[an.mode][out], "Cosin": 0.95}}})
    fake = fake.replace(advice=advice.for_analysis(fake))
    s = summary(fake, "PerLayer")
    assert not s["ok"] and s["u16"] == 0 and s["analysis"] == "PerLayer"
    assert status_line(s).startswith("U16 layers: 0 | final cosine 95.0000% < 98%")


def test_explorer_advice_is_the_reports_advice(ex, wb):
    """Same inputs everywhere: the Explorer's advice reads the outlier table too."""
    from axnb.advice import for_analysis

    an = ex.snapshot
    assert an.outliers is not None and an.final_cosine() == ex.final
    assert an.advice == for_analysis(an)
    # NOTE: the Explorer's snapshot: per click, the other calibration methods are not measured
    assert an is wb.snapshot([ex.analysis], task=True, by_method=False)
    assert an.reports[ex.analysis] is ex.report
    assert not any("compute the outlier table" in x for x in an.advice.steps)


def test_explorer_renders_one_page_of_the_table(ex, wb):
    assert [t for t in ex.tabs.titles] == ["Summary", "Layers", "Outliers", "Graph", "Export",
                                         "Diagnosis"]
    assert "U16 layers: 0" in ex.status.value and "98%" in ex.summary_html.value
    assert len(ex.toggles) == 25 and ex.pages.value == f"of 3 ({len(ex.df)} rows)"
    assert ex._row_layers[0] is None and ex.toggles[0].disabled  # the graph input row
    assert ex.plot.value[:4] == b"\x89PNG"
    assert "fetch_name_0" in ex.summary_html.value and "MinMax" in ex.summary_html.value
    # NOTE: the deployed-input line (issue 30): the zoo config changes the input type
    assert "Deployed input: fail" in ex.summary_html.value and ex.deployed.verdict == "fail"
    assert unescape(ex.deployed.summary) in unescape(ex.summary_html.value)


def test_toggle_reruns_and_refreshes_table_plot_and_summary(ex, wb):
    i = _first_toggle(ex)
    layer, plot, final = ex._row_layers[i], ex.plot.value, dict(ex.final)
    ex.toggles[i].value = True
    assert ex.last_error is None and wb.plan.layers("U16") == [layer]
    assert "U16 layers: 1" in ex.status.value and "U16 layers: 1" in ex.summary_html.value
    assert ">U16<" in ex.cells[i].value and ex.plot.value != plot and ex.final != final
    assert ex.last_seconds > 0 and ex.timing.value.endswith(" s")
    ex.toggles[i].value = False
    assert wb.plan.layers("U16") == [] and "U16 layers: 0" in ex.status.value


def test_dropdowns_and_buttons_call_the_workbench(ex, wb, monkeypatch):
    calls = []
    real = wb.set_method
    monkeypatch.setattr(wb, "set_method", lambda m: calls.append(m) or real(m))
    ex.calib.value = "MSE"
    assert calls == ["MSE"] and wb.method.value == "MSE" and "MSE" in ex.status.value
    ex.method.value = "PerLayer"
    assert ex.report.meta["method"] == "PerLayer" and "PerLayer" in ex.status.value
    ex.mode.value = "NPUBackend"
    assert wb.mode.value == "NPUBackend" and ex.report.meta["mode"] == "NPUBackend"
    ex.all_u16.click()
    assert len(wb.plan.layers("U16")) == len(wb.plan.layers()) and ex.last_error is None
    assert f"U16 layers: {len(wb.plan.layers())}" in ex.status.value
    assert all(t.value for t, layer in zip(ex.toggles, ex._row_layers) if layer)
    ex.all_u8.click()
    assert wb.plan.layers("U16") == [] and "U16 layers: 0" in ex.status.value


def test_search_worst_sort_and_page_refresh_only_the_table(ex, wb):
    report = ex.report
    ex.search.value = "hardswish"
    shown = [c.value for c, layer in zip(ex.cells, ex._row_layers) if layer]
    assert shown and all("HardSwish" in v for v in shown) and "(28 rows)" in ex.pages.value
    ex.page.value = 2
    assert ex._row_layers[0] == "HardSwish.25" and ex._rows[5].layout.display == "none"
    ex.search.value = ""
    assert ex.page.value == 1
    ex.worst.value, ex.sort.value = 5, "cosine"
    visible = [r for r in ex._rows if r.layout.display != "none"]
    assert len(visible) == 5 and ex.report is report  # NOTE: no re-analysis for a filter
    worst = ex.df.sort_values("Cosin").iloc[0]
    assert f'title="{worst["Output Tensor"]}"' in ex.cells[0].value


def test_a_1500_row_table_renders_one_page_quickly(ex, big):
    import time

    ex.df = big  # NOTE: a stand-in for a 1500-layer model's report
    t = time.perf_counter()
    ex.page.value = 60
    ex.search.value = "layer_14"
    ex.page.value = 3
    assert time.perf_counter() - t < 2.0  # NOTE: 14, 140..149, 1400..1499; page 3 from 1439
    assert ex.pages.value == "of 5 (111 rows)" and len(ex.table.children) == 26
    assert 'title="layer_1439"' in ex.cells[0].value and ex._row_layers[0] is None


def test_smooth_quant_checkbox(ex, wb):
    ex.smooth.value = True
    assert ex.last_error is None and wb.smooth is not None and "SmoothQuant" in ex.status.value
    ex.smooth.value = False
    assert wb.smooth is None


def test_outliers_tab(ex, wb):
    ex.tabs.selected_index = 2
    assert "<table" in ex.outlier_html.value and ex.tensor.value == ex.tensor.options[0]
    # NOTE: the plot comes first, then the 10 worst rows; the full table behind a toggle
    tab = ex.tabs.children[2].children
    assert tab.index(ex.absmax) < tab.index(ex.outlier_html)
    n = len(wb.outliers().to_frame())
    shown, _, rest = ex.outlier_html.value.partition("<details")
    assert n > 10 and shown.count("<tr") == 11 and f"all {n} tensors</summary>" in rest
    assert rest.count("<tr") == n + 1 and f"{n} tensors with level" in ex.outlier_head.value
    first = ex.absmax.value
    assert first[:4] == b"\x89PNG"
    ex.tensor.value = ex.tensor.options[1]
    assert ex.absmax.value != first and ex.absmax_msg.value == ""


def test_graph_tab_serves_both_models_and_close_stops_them(ex, wb):
    ex.tabs.selected_index = 3
    assert ex.last_error is None and len(ex._servers) == 2
    assert all(s.running for s in ex._servers) and ex.graph_html.value.count("<iframe") == 2
    fl, qu = (s.path for s in ex._servers)
    assert fl != qu and fl.read_bytes() != qu.read_bytes() and b"QuantizeLinear" in \
        qu.read_bytes() and b"QuantizeLinear" not in fl.read_bytes()
    assert "pass" in ex.io_html.value and "Quantized dtype" in ex.io_html.value
    servers = list(ex._servers)
    ex.close()
    assert not any(s.running for s in servers)


def test_graph_tab_says_when_netron_cannot_start(ex, monkeypatch):
    import axnb.view.netron_view as nv
    from axnb.errors import AxnbError

    def boom(*a, **k):
        raise AxnbError("netron: port taken")

    monkeypatch.setattr(nv, "serve", boom)
    ex.tabs.selected_index = 3
    assert ex.graph_html.value.count("netron could not start") == 2
    assert "port taken" in ex.graph_html.value and "<table" in ex.io_html.value


def test_export_tab_writes_report_config_and_quantized(ex, wb, tmp_path):
    ex.toggles[_first_toggle(ex)].value = True
    ex.folder.value = str(tmp_path / "exp")
    paths = ex.export()
    assert {p.name for p in paths.values()} == {"report.html", "config.json", "quantized.onnx"}
    assert all(p.is_file() for p in paths.values())
    assert "U16" in paths["config"].read_text() and "report.html" in ex.export_html.value
    assert all(str(p.resolve()) in ex.export_html.value for p in paths.values())  # absolute
    # NOTE: one Analysis: the exported report shows the Summary's numbers and advice.
    page = unescape(paths["report"].read_text())
    assert ex.snapshot.advice.headline in page and all(x in page for x in ex.snapshot.steps())
    assert all(x in unescape(ex.summary_html.value) for x in ex.snapshot.steps())
    assert ex.snapshot.task_verdict()[1] in page and ex.snapshot.task
    assert f"Deployed input ({ex.deployed.verdict}): {ex.deployed.summary}" in re.sub(
        r"<[^>]+>", "", page)


def test_diagnosis_tab_runs_the_checks_and_the_search_button(ex, wb):
    ex.show_diagnosis()
    text = ex.diagnosis_html.value
    assert "input types" in text.lower() or "verdict" in text
    # NOTE: styled like the other tables (the report's Styler): verdicts tinted, worst first
    assert "<style" in text and "background-color: #d4edda" in text
    verdicts = re.findall(r'class="data row\d+ col1" >(\w+)</td>', text)
    assert verdicts and verdicts == sorted(verdicts, key=["fail", "warn", "pass"].index)
    assert ex.tabs.titles[-1] == "Diagnosis"
    wb.reset_plan()
    base = min(ex.final.values())
    # NOTE: a target just above the current score, so the search must promote something.
    ex.target.value = min(0.99999, base + 1e-4)
    ex.run("search", ex._search)
    assert ex.last_error is None, ex.last_error
    assert "evaluations" in ex.search_html.value and "layers to U16" in ex.search_html.value
    wb.reset_plan()
    ex.run("reset", wb.reset_plan)
    ex.run("tune", ex._tune)
    assert ex.last_error is None, ex.last_error
    assert ex.search_html.value.startswith("<p>tuned: ") and "met" in ex.search_html.value
    assert min(ex.final.values()) >= base
    assert ex.calib.value == wb.method.value
    wb.reset_plan().set_method("MinMax")


def test_the_measure_button_is_on_when_only_the_task_metric_fails(ex):
    from axnb import advice

    assert ex.snapshot.task_verdict()[0] and ex.measure_btn.disabled   # nothing to fix
    an = ex.snapshot.replace(max_drop=-1.0)           # NOTE: a drop no plan can meet
    ex.snapshot = an.replace(advice=advice.for_analysis(an))
    ex.show_summary()
    assert ex.snapshot.advice.ok and not ex.measure_btn.disabled


def test_a_toggle_shows_the_change_of_the_final_cosine(ex):
    before = min(ex.final.values())
    ex.toggles[_first_toggle(ex)].value = True
    after = min(ex.final.values())
    assert after != before            # NOTE: a change in the 6th digit must show (issue 30)
    assert ex.change.startswith(f"cosine {before:.6f} -> {after:.6f} (1-cos "
                                f"{(1 - before) * 100:#.3g}% -> {(1 - after) * 100:#.3g}%")
    assert ("lowers it" in ex.change) == (after < before) and ex.change in ex.timing.value


def test_a_task_metric_drop_is_flagged_like_a_cosine_drop(ex, wb):
    """The status line names each metric's samples; a lower task score after a click is
    flagged (the previous score is raised here: 6 labelled samples rarely flip)."""
    import dataclasses

    now = next(iter(ex.snapshot.task.values()))
    assert f"({now.samples} samples)" in ex.status.value
    assert f"({len(wb.samples)} samples)" in ex.status.value
    ex._last_task = dataclasses.replace(now, quant_score=now.quant_score + 0.25)
    ex.toggles[_first_toggle(ex)].value = True
    after = next(iter(ex.snapshot.task.values())).quant_score
    assert ex.task_change.startswith(f"top-1 {now.quant_score + 0.25:.3f} -> {after:.3f}")
    assert "lowers it" in ex.task_change and ex.task_change in ex.timing.value
    assert "axnb-drop" in ex.timing._dom_classes and ex.timing.style.text_color == "#c62828"


@pytest.mark.slow                 # NOTE: MiniLM
def test_measure_then_apply_the_best_step_in_the_explorer(zoo_ready):
    """On MiniLM (it misses 98% by far): the Summary lists measured steps only, and applying
    the first gives the final cosine it said."""
    from axnb import Workbench
    from axnb.widgets import Explorer

    w = Workbench("zoo:minilm", progress=False)
    w.set_samples(w.samples[:2])
    e = Explorer(w, analysis="EndToEnd", task=False, background=False)  # task: another test
    try:
        assert "Not measured yet" in e.summary_html.value   # NOTE: SmoothQuant, U16
        e.measure(top=3, budget=5, rank_samples=1)    # NOTE: a small search keeps it quick
        trials = e.snapshot.advice.trials
        assert e.last_error is None and trials and not e.apply_btn.disabled
        assert "(tried)" in e.summary_html.value and "Not measured yet" not in \
            e.summary_html.value
        e.apply_best()
        assert min(e.final.values()) == pytest.approx(trials[0].after, abs=1e-9)
        assert e.calib.value == w.method.value and e.smooth.value == (w.smooth is not None)
        assert "lowers it" not in e.change and e.change.endswith(", ")
    finally:
        e.close()


def test_explorer_task_line_follows_every_toggle_and_method_change(ex, wb):
    """The Summary's task-metric line is the evaluation of the plan on screen: re-measured
    after a U16 toggle and after a calibration-method change."""
    def shown():
        r = ex.snapshot.task[wb.mode.value]
        assert r == wb.evaluate(), "the Summary's task metric is not the current plan's"
        assert task_short(r) in unescape(ex.status.value)
        assert task_short(r) in unescape(ex.summary_html.value)
        assert unescape(task_line(r)) in unescape(ex.summary_html.value)
        return r

    first = shown()
    assert first.samples == len(FLIPS) + 4 and set(first.flips) == set(FLIPS)
    assert all(f"{n} (cosine " in ex.summary_html.value for n in FLIPS)
    assert ex.snapshot.task_verdict()[1] in unescape(ex.summary_html.value)
    ex.toggles[_first_toggle(ex)].value = True
    toggled = shown()
    assert toggled.cosine != first.cosine       # NOTE: a new measurement, not the old one
    ex.calib.value = "Percentile"
    assert shown().cosine not in (first.cosine, toggled.cosine)
    from axnb.widgets import Explorer

    off = Explorer(wb, task=False, background=False)
    assert off.snapshot.task == {} and "Task metric" not in off.summary_html.value
    off.close()


def test_dask_dashboard_link_in_the_summary(ex, monkeypatch):
    from types import SimpleNamespace as NS

    url = "http://127.0.0.1:8787/status"
    assert dashboard_link(NS(dashboard_link=url)) == url
    assert dashboard_link(NS(client=NS(dashboard_link=url))) == url
    assert dashboard_link(None) is None and dashboard_link(object()) is None
    assert "Dask dashboard" not in ex.summary_html.value        # no cluster, no link
    seen = []
    monkeypatch.setattr("axnb.widgets.status.dashboard_link",
                        lambda c: seen.append(c) or url)
    ex.show_summary()
    assert seen == [ex.wb.cluster] and f'href="{url}"' in ex.summary_html.value


def test_a_task_metric_that_cannot_be_measured_is_said_and_the_rest_shows(ex, wb, tmp_path,
                                                                          monkeypatch):
    import dataclasses

    bad = dataclasses.replace(wb.config.evaluation, labels=str(tmp_path / "no_labels.json"))
    monkeypatch.setattr(wb, "config", dataclasses.replace(wb.config, evaluation=bad))
    ex.toggles[_first_toggle(ex)].value = True
    assert ex.last_error is None and "U16 layers: 1" in ex.status.value
    assert "Task metric not measured" in ex.summary_html.value and ex.snapshot.task == {}
    assert "no_labels.json" in ex.task_error and "no_labels.json" in ex.summary_html.value


# ---- a click in the background (issue 30): one computation for the latest state ----------------
@pytest.fixture
def bg(wb):
    """The default Explorer (work in a worker thread, task metric on), first analysis done."""
    from axnb.widgets import Explorer

    wb.reset_plan().set_method("MinMax").set_mode("Reference")
    e = Explorer(wb)
    assert e.wait(300) and e.last_error is None
    yield e
    e.wait(300)
    e.close()


def _toggle_rows(ex, n: int) -> list[int]:
    return [i for i, layer in enumerate(ex._row_layers) if layer is not None][:n]


def test_two_quick_clicks_compute_one_final_state_the_latest(bg, wb):
    drawn = []
    show = bg.show_table
    bg.show_table = lambda: (drawn.append(sorted(wb.plan.layers("U16"))), show())[1]
    i, j = _toggle_rows(bg, 2)
    a, b = bg._row_layers[i], bg._row_layers[j]
    # NOTE: no cached result of an earlier test: the first state costs a real pass
    wb.set_samples(wb.samples, wb.sample_names, wb.sample_origin)
    bg.toggles[i].value = True                   # NOTE: returns at once; the worker computes
    bg.toggles[j].value = True                   # queued behind the first: coalesced
    assert bg.busy and "running" in bg.timing.value
    assert bg.wait(300) and bg.last_error is None and not bg.busy
    assert sorted(wb.plan.layers("U16")) == sorted([a, b])
    assert drawn == [sorted([a, b])]             # the table of the first state never drawn
    assert bg.final == wb.final_cosine() and "U16 layers: 2" in bg.status.value
    assert bg.toggles[i].value and bg.toggles[j].value
    assert list(bg.stages) == ["final", "table", "task"]           # in the order they show
    assert bg.stages["final"] < bg.stages["table"] < bg.stages["task"]
    assert bg.snapshot.task and bg.snapshot.reports[bg.analysis] is bg.report


def test_the_controls_show_work_running_and_no_bars_reach_stderr(bg, wb, capfd):
    import threading

    gate = threading.Event()
    wb.progress = True                            # NOTE: a Workbench made with bars on
    try:
        bg.run("blocked", gate.wait)
        assert bg.busy and "axnb-busy" in bg._dom_classes and bg.progress.value == 0
        i, j = _toggle_rows(bg, 2)
        bg.toggles[i].value = True                # NOTE: both wait behind the blocked action,
        bg.toggles[j].value = True                # then are applied in order, computed once
        assert not bg.wait(0.2) and bg.busy
        gate.set()
        assert bg.wait(300) and bg.last_error is None
        assert bg.coalesced == 2 and "(with 1 earlier clicks)" in bg.timing.value
        assert len(wb.plan.layers("U16")) == 2
        assert "axnb-busy" not in bg._dom_classes and bg.progress.value == 3
        assert wb.progress is True                # restored after the widget's work
    finally:
        gate.set()
        wb.progress = False
    err = capfd.readouterr().err
    assert "compare" not in err and "sample/s" not in err, err[-400:]


def test_a_toggled_row_stays_under_the_pointer_in_a_table_sorted_by_cosine(ex, wb):
    from axnb.widgets import table as T

    ex.method.value = "PerLayer"                  # NOTE: a U16 layer's own row improves most
    ex.sort.value = "cosine"
    i = _first_toggle(ex)                         # the worst layer that can be toggled
    layer = ex._row_layers[i]
    ex.toggles[i].value = True
    assert ex.last_error is None and wb.plan.layers("U16") == [layer]
    fresh = list(T.rows_for_page(ex.df, 0, len(ex.df), sort="cosine").rows[Col.OPERATOR])
    assert fresh.index(layer) != i                # NOTE: unpinned, the row would have moved
    assert ex._row_layers[i] == layer and ex.toggles[i].value
    ex.sort.value = "depth"
    ex.sort.value = "cosine"                      # sorting again releases the pin
    assert ex._page_index == list(T.rows_for_page(ex.df, 0, ex.page_size, sort="cosine")
                                  .rows.index)


def test_a_click_during_the_task_metric_stops_it_for_the_latest_state(bg, wb, monkeypatch):
    """The task metric of a state a newer click replaced stops between chunks of samples:
    only the latest state's is completed and shown."""
    import time

    from axnb.widgets import explorer

    completed, evaluate, outputs = [], wb.evaluate, wb.executor.outputs

    def recorded(*a, **k):
        r = evaluate(*a, **k)
        completed.append(sorted(wb.plan.layers("U16")))
        return r

    def slow(*a, **k):                            # NOTE: a big labelled set, in miniature
        time.sleep(0.3)
        return outputs(*a, **k)

    monkeypatch.setattr(wb, "evaluate", recorded)
    monkeypatch.setattr(wb.executor, "outputs", slow)
    monkeypatch.setattr(explorer, "TASK_CHUNK", 2)
    wb.set_samples(wb.samples, wb.sample_names, wb.sample_origin)   # NOTE: no cached task
    i, j = _toggle_rows(bg, 2)
    bg.toggles[i].value = True
    end = time.monotonic() + 120
    while "computing the task metric" not in bg.timing.value and time.monotonic() < end:
        time.sleep(0.005)
    assert "computing the task metric" in bg.timing.value
    bg.toggles[j].value = True                    # NOTE: during the first state's task metric
    assert bg.wait(300) and bg.last_error is None
    latest = sorted([bg._row_layers[i], bg._row_layers[j]])
    assert completed == [latest] and sorted(wb.plan.layers("U16")) == latest
    assert bg.snapshot.task and bg.stages.keys() == {"final", "table", "task"}


@pytest.mark.timeout(300)         # NOTE: a tab that waited for the work would hang here
def test_opening_a_tab_during_work_does_not_wait_for_it(bg, wb):
    """The Outliers tab opened while a click is computed returns at once (a wait would block
    the kernel and every later click) and is drawn when the work is done."""
    import threading
    import time

    gate = threading.Event()
    try:
        bg.run("blocked", gate.wait)
        bg._stale.add(2)
        t = time.perf_counter()
        bg.tabs.selected_index = 2
        assert time.perf_counter() - t < 0.5 and bg.busy and 2 in bg._stale
    finally:
        gate.set()
    assert bg.wait(300) and bg.last_error is None
    assert 2 not in bg._stale and "tensors with level" in bg.outlier_head.value
    bg.tabs.selected_index = 0


def test_two_explorers_on_one_workbench_take_turns_and_export_what_it_holds(bg, wb, tmp_path):
    """Issue 30: a second Explorer's click changed the Workbench, the first then exported a
    report and a config that disagreed. Now an export is of the Workbench as it is (and the
    two never compute at once: one lock per Workbench)."""
    import json

    from axnb.widgets import Explorer

    other = Explorer(wb, task=False)
    try:
        assert other.wait(300)
        i = _toggle_rows(other, 1)[0]
        layer = other._row_layers[i]
        other.toggles[i].value = True                 # NOTE: bg's snapshot is now stale
        assert other.wait(300) and other.last_error is None
        assert layer not in bg.snapshot.plan["layers"].get("U16", [])
        bg.folder.value = str(tmp_path / "exp")
        paths = bg.export()
    finally:
        other.close()
    cfg = json.loads(paths["config"].read_text())["quant"]["layer_configs"]
    named = {n for e in cfg if e.get("data_type") == "U16" for n in e.get("layer_names", [])}
    page = unescape(paths["report"].read_text())
    assert named == set(wb.plan.layers("U16")) and layer in named
    assert wb.plan.summary() in page


def test_history_and_undo_restore_the_state_before_each_action(ex, wb):
    """Each action is remembered with the state before it; undo restores it, in order."""
    first = (wb.plan, wb.method, wb.mode, ex.final)
    i, j = _toggle_rows(ex, 2)
    ex.toggles[i].value = True
    ex.calib.value = "MSE"
    assert [label for label, _ in ex.history][-2:] == [f"{ex._row_layers[i]} -> U16",
                                                         "calibration MSE"]
    assert "calibration MSE" in ex.history_html.value and not ex.undo_btn.disabled
    ex.undo()
    assert wb.method.value == "MinMax" and ex.calib.value == "MinMax"
    assert len(wb.plan.layers("U16")) == 1
    ex.undo()
    assert (wb.plan, wb.method, wb.mode) == first[:3] and ex.final == first[3]
    assert ex.history == [] and ex.undo_btn.disabled and ex.toggles[i].value is False


def test_close_during_work_drops_the_rest_of_it(wb):
    """Closing an Explorer while it computes drops what is queued and the stages left."""
    import threading

    from axnb.widgets import Explorer

    wb.reset_plan()
    e = Explorer(wb, task=False)
    assert e.wait(300)
    gate, drawn = threading.Event(), []
    e.show_table = lambda: drawn.append(1)
    e.run("blocked", gate.wait)
    e.toggles[_toggle_rows(e, 1)[0]].value = True          # NOTE: queued behind the block
    threading.Timer(0.3, gate.set).start()
    e.close()
    assert not e.busy and drawn == [] and wb.plan.layers("U16") == []


def test_measure_is_queued_behind_the_clicks_and_runs_in_the_worker(bg, wb, monkeypatch):
    """Issue 30: the measure button returns at once (the kernel stays free); the worker runs
    it after the stages of the state the clicks before it leave, and it is not undoable."""
    import threading

    seen, gate = [], threading.Event()
    monkeypatch.setattr(bg, "measure", lambda: seen.append(
        (threading.current_thread().name, sorted(wb.plan.layers("U16")), bg.snapshot.plan)))
    try:
        bg.run("blocked", gate.wait)
        i = _toggle_rows(bg, 1)[0]
        bg.toggles[i].value = True
        bg.measure_btn.click()
        assert not seen and bg.busy               # NOTE: queued behind the toggle
        gate.set()
        assert bg.wait(300) and bg.last_error is None
    finally:
        gate.set()
    assert [s[:2] for s in seen] == [("axnb-explorer", [bg._row_layers[i]])]
    assert seen[0][2] == bg.snapshot.plan         # NOTE: it saw the toggled state's snapshot
    assert [label for label, _ in bg.history][-1] != "measure"


def test_a_newer_click_stops_the_compare_pass_between_samples(ex, wb):
    """Issue 30: the final metrics' pass and the table's compare pass check for a newer click
    before each sample; a stopped pass caches nothing, and the next one completes."""
    calls = []

    def stale():
        calls.append(1)
        return len(calls) > 2                     # NOTE: a click arrives after 2 samples

    wb.set_samples(wb.samples, wb.sample_names, wb.sample_origin)   # NOTE: no cached table
    wb.set_plan(wb.plan.toggle(ex._row_layers[_first_toggle(ex)], True))
    assert ex._stage_final(stale) is False and len(calls) == 3
    assert not wb._finals
    assert ex._stage_final(lambda: False) is True and ex.final == wb.final_cosine()
    calls.clear()
    assert ex._stage_table(stale) is False and len(calls) == 3
    assert wb.plan not in {k[2] for k in wb._reports}
    assert ex._stage_table(lambda: False) is True and wb.plan in {k[2] for k in wb._reports}
    wb.reset_plan()
