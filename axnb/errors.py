"""Errors that say what was wrong, where, and what would be valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AxnbError(Exception):
    """Base class of every error axnb raises on bad input; its message is one line."""


class ConfigError(AxnbError, ValueError):
    """A build config (file, dict or CLI override) has a bad key, type or value."""


class ModelError(AxnbError, ValueError):
    """An ONNX model cannot be loaded, checked or prepared."""


class DataError(AxnbError, ValueError):
    """Calibration or analysis data cannot be read or does not fit the model."""


class ZooError(AxnbError, LookupError):
    """A zoo model's package is not installed or lacks the expected file."""


class NonFiniteWarning(UserWarning):
    """A final metric or a search score is NaN/Inf; the message names the first tensor (graph
    order) where the quantized (or the float) model turns non-finite."""


def nearest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The up-to-``n`` choices closest to ``name`` (difflib ratio >= 0.5).

    Example:
        >>> nearest("calibraton_method", ["calibration_method", "calibration_size"])
        ['calibration_method', 'calibration_size']
    """
    choices = list(choices)
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not hits:
        low = {c.lower(): c for c in choices}
        hits = [low[h] for h in difflib.get_close_matches(name.lower(), list(low), n=n, cutoff=0.5)]
    return hits


def did_you_mean(name: str, choices: Iterable[str], limit: int = 12) -> str:
    """A message tail: '; did you mean X?' if something is close, else '; valid: a, b, c'.

    Example:
        >>> did_you_mean("MinMx", ["MinMax", "MSE"])
        "; did you mean 'MinMax'?"
    """
    choices = list(choices)
    hits = nearest(name, choices)
    if hits:
        return "; did you mean " + " or ".join(repr(h) for h in hits) + "?"
    shown = ", ".join(choices[:limit]) + (", ..." if len(choices) > limit else "")
    return f"; valid: {shown}"
