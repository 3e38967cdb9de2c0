"""Strict JSON numbers for the results files: NaN and infinities as ``null`` and back.

``results.json`` (:mod:`downstream.results`) and the per-item files (:mod:`downstream.items`) are
strict JSON, which ``jq`` and JavaScript read: a non-finite float (an undefined score, e.g. a
failed PESQ) is written ``null`` (:func:`null_for_nonfinite`) and read back as NaN
(:func:`nan_for_null`); :func:`jsonable` converts numpy values and paths for ``json.dumps``.
The functions are the library's (:mod:`robustdistill.strict_json`), which writes its own files
(``metrics.jsonl``, ``final_state.json``, ...) by the same rule.
"""

from __future__ import annotations

from robustdistill.strict_json import jsonable, nan_for_null, null_for_nonfinite

__all__ = ["jsonable", "nan_for_null", "null_for_nonfinite"]
