"""A repro bundle: a zip that re-runs this analysis elsewhere (:func:`repro_bundle`,
:func:`rerun_bundle`).

Example:
    >>> rerun_bundle(repro_bundle(wb, "out/b.zip"), "/tmp/rerun")["final_cosine"]  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import platform
import re
import shlex
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import onnx

from axnb import data
from axnb.config import Config, load_config, save_config
from axnb.files import atomic_path, write_text
from axnb.results import plain
from axnb.workbench import Workbench

__all__ = ["repro_bundle", "rerun_bundle"]


def _safe(s: str) -> str:
    return re.sub(r"[^\w.-]", "_", str(s))


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
        calib = list(itertools.islice(wb.calibration, samples))
        for n in inputs:
            data.save_feeds(({n: f[n]} for f in calib), root / "calib" / _safe(n), "Numpy")
        data.save_feeds(wb.samples[:samples], root / "analysis", "Numpy")
        save_config(_bundle_config(wb, model_rel, inputs), root / "config.json")
        n_cal = len(wb.calibration) if hasattr(wb.calibration, "__len__") else len(calib)
        results = {"final_cosine": {m: wb.final_cosine(m) for m in modes},
                   "mode": wb.mode.value, "method": wb.method.value, "plan": wb.plan.summary(),
                   "smooth_quant": wb.smooth is not None,
                   "samples": {"calibration": len(calib), "analysis": len(wb.samples[:samples])},
                   "complete": n_cal <= samples and len(wb.samples) <= samples}
        write_text(root / "results.json", json.dumps(plain(results), indent=1))
        wb.outliers().to_frame(show_all=True).to_csv(root / "outliers.csv", index=False)
        write_text(root / "versions.json", json.dumps(_versions(), indent=1))
        write_text(root / "command.txt", (command or shlex.join(sys.argv)) + "\n")
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
