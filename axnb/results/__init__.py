"""Every saveable result, frozen: to_frame() / save() / load() / _repr_html_.

:class:`CalibStats`, :class:`OutlierReport` (calibration), :class:`LayerReport` (the precision
table), :class:`Evaluation` / :class:`SearchResult` / :class:`Applied` (the mixed-precision
search), :class:`Check` / :class:`Diagnosis` (the troubleshooting checks), :class:`Advice` (the
next steps) and :class:`Analysis` (the snapshot the report, the Explorer and the CLI render).
Rendering (rich, mermaid, HTML pages) lives in :mod:`axnb.view`; pandas is imported on first use.
"""

from axnb.results.analysis import Advice, Analysis
from axnb.results.calib import DEFAULT_PERCENTILE, OUTLIER_LEVELS, CalibStats, OCol, OutlierReport
from axnb.results.checks import VERDICTS, Check, Diagnosis
from axnb.results.layers import LayerReport
from axnb.results.plain import plain
from axnb.results.search import Applied, Evaluation, SearchResult

__all__ = ["DEFAULT_PERCENTILE", "OUTLIER_LEVELS", "VERDICTS", "Advice", "Analysis", "Applied",
           "CalibStats", "Check", "Diagnosis", "Evaluation", "LayerReport", "OCol",
           "OutlierReport", "SearchResult", "plain"]
