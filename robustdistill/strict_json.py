"""Strict JSON (RFC 8259) for every file and JSON-lines record the library writes.

Python's ``json.dumps`` writes a non-finite float as the bare words ``NaN``, ``Infinity`` or
``-Infinity``, which are not JSON: ``jq``, JavaScript's ``JSON.parse`` and most other readers
refuse the whole file. A run that hit a NaN loss, a validation score that is undefined (STOI of
a crop too short for it, a failed PESQ), an EER of a set with one class, all produce them.

The rule, for ``metrics.jsonl``, ``final_state.json``, ``stopped.json``, checkpoint state files,
``results.json`` and ``result.json``: a non-finite number is written ``null``
(:func:`null_for_nonfinite`, through :func:`strict_dumps`); its key stays, so a record still
says which values were non-finite. Which of NaN, +inf or -inf it was is not kept (the run's
log names it where it matters: the trainers log every skipped non-finite step).

Readers treat ``null`` where a number is expected as NaN (:func:`nan_for_null`, applied to the
numeric parts of a file only: a ``null`` that means "none", such as a run with no best
validation step, stays ``None``). Files written before this rule, with bare ``NaN`` /
``Infinity``, are still read: ``json.loads`` accepts them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["jsonable", "nan_for_null", "null_for_nonfinite", "strict_dumps"]


def null_for_nonfinite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +inf, -inf) replaced by ``None``.

    Dicts, lists and tuples are walked (a tuple becomes a list, as ``json.dumps`` writes it);
    anything with ``tolist`` (a numpy scalar or array, a torch tensor, 0-d included) is
    converted by it first, so ``numpy.float32("nan")`` is ``None`` too. Other values (strings,
    ints, bools, finite floats, ``None``) are returned as they are.
    """
    if isinstance(value, dict):
        return {k: null_for_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [null_for_nonfinite(v) for v in value]
    if hasattr(value, "tolist"):
        return null_for_nonfinite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def nan_for_null(value: Any) -> Any:
    """Inverse of :func:`null_for_nonfinite` on a numeric subtree: every ``None`` leaf of
    ``value`` (dicts and lists walked) becomes NaN; other leaves are returned as they are."""
    if isinstance(value, dict):
        return {k: nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_null(v) for v in value]
    return math.nan if value is None else value


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


def strict_dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)`` as strict JSON: non-finite floats written ``null``
    (:func:`null_for_nonfinite`), and ``allow_nan=False`` so that none can slip through.

    Args:
        value: what to write (dicts, lists, numbers, strings, numpy or torch values).
        kwargs: ``json.dumps``' other arguments (``indent``, ``sort_keys``, ``default``...).

    Raises:
        TypeError: a value JSON cannot hold (as ``json.dumps``), or ``allow_nan`` given.
    """
    if "allow_nan" in kwargs:
        raise TypeError("strict_dumps never allows NaN: do not pass allow_nan")
    return json.dumps(null_for_nonfinite(value), allow_nan=False, **kwargs)
