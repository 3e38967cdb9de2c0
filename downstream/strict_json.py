"""Strict JSON numbers for the results files: NaN and infinities as ``null`` and back.

``results.json`` (:mod:`downstream.results`) and the per-item files (:mod:`downstream.items`) are
strict JSON, which ``jq`` and JavaScript read: a non-finite float (an undefined score, e.g. a
failed PESQ) is written ``null`` (:func:`null_for_nonfinite`) and read back as NaN
(:func:`nan_for_null`); :func:`jsonable` converts numpy values and paths for ``json.dumps``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

__all__ = ["jsonable", "nan_for_null", "null_for_nonfinite"]


def null_for_nonfinite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) replaced by ``None``, so that the file
    is strict JSON (``NaN`` is not JSON; ``jq`` and JavaScript refuse it)."""
    if isinstance(value, dict):
        return {k: null_for_nonfinite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [null_for_nonfinite(v) for v in value]
    if hasattr(value, "tolist"):
        return null_for_nonfinite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def nan_for_null(value: Any) -> Any:
    """Inverse of :func:`null_for_nonfinite` on a numeric subtree: ``None`` leaves become NaN."""
    if isinstance(value, dict):
        return {k: nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_null(v) for v in value]
    return float("nan") if value is None else value


def jsonable(value: Any) -> Any:
    """``json.dumps``' ``default``: a numpy value (or anything with ``tolist``) as a list or
    number, a path as a string.

    Raises:
        TypeError: any other value JSON cannot hold (named by its type).
    """
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
