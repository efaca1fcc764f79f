"""Every saveable result, frozen: to_frame() / save() / load() / _repr_html_.

:class:`CalibStats`, :class:`OutlierReport` (calibration), :class:`LayerReport` (the precision
table), :class:`Evaluation` / :class:`SearchResult` / :class:`Applied` (the mixed-precision
search), :class:`Check` / :class:`Diagnosis` (the troubleshooting checks), :class:`TaskReport`
(a task metric and its one verdict), :class:`Trial` (a measured next step), :class:`Advice` (the
next steps) and :class:`Analysis` (the snapshot the report, the Explorer and the CLI render).
This package imports no stage module (tests/test_layering.py): stages produce results, results
never run anything. Rendering (rich, mermaid, HTML pages) lives in :mod:`axnb.view`; pandas is
imported on first use.
"""

from axnb.results.analysis import Advice, Analysis
from axnb.results.calib import DEFAULT_PERCENTILE, OUTLIER_LEVELS, CalibStats, OCol, OutlierReport
from axnb.results.checks import VERDICTS, Check, Diagnosis
from axnb.results.layers import LayerReport
from axnb.results.search import Applied, Evaluation, SearchResult
from axnb.results.serialize import plain
from axnb.results.task import TaskReport
from axnb.results.trial import TaskDelta, Trial, TrialKind

__all__ = ["DEFAULT_PERCENTILE", "OUTLIER_LEVELS", "VERDICTS", "Advice", "Analysis", "Applied",
           "CalibStats", "Check", "Diagnosis", "Evaluation", "LayerReport", "OCol",
           "OutlierReport", "SearchResult", "TaskDelta", "TaskReport", "Trial", "TrialKind",
           "plain"]
