"""How a run's settings changed since its ``config.yaml`` was written (a resume with other
options, or a table asked to reuse a run trained otherwise).

Every trainer writes its resolved config to ``<output_dir>/config.yaml`` at each start, so a
resume with other settings would replace the record of the ones its first steps used. The
trainers compare first (:func:`saved_config_changes`): ``distill`` and ``train-se`` log the
changes and keep them in ``environment.json``'s record of the resume; ``train-se`` refuses a
student of another shape; the SE table refuses to show a run trained otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["config_changes", "flatten", "saved_config_changes"]


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"section": {"key": v}}`` -> ``{"section.key": v}`` (lists and scalars are leaves)."""
    items: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            items.update(flatten(value, f"{prefix}{key}."))
        else:
            items[f"{prefix}{key}"] = value
    return items


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any],
                   ignore: Iterable[str] = ()) -> list[str]:
    """``["section.key OLD -> NEW", ...]`` for every dotted key whose value differs (a key
    missing on one side counts as ``None``), sorted, leaving out ``ignore`` (dotted keys, or
    section prefixes ending in ``.``).

    Both sides go through JSON first, so a tuple equals the list YAML wrote for it, and two
    strings naming one existing file or folder (``runs/x``, ``./runs/x``, its absolute path or a
    link to it; relative paths from the current folder) are no change.
    """
    ignore = tuple(ignore)
    sections = tuple(k for k in ignore if k.endswith("."))
    a = flatten(json.loads(json.dumps(dict(old), default=str)))
    b = flatten(json.loads(json.dumps(dict(new), default=str)))
    return [f"{key} {a.get(key)} -> {b.get(key)}" for key in sorted(a.keys() | b.keys())
            if key not in ignore and not key.startswith(sections) and a.get(key) != b.get(key)
            and not _same_path(a.get(key), b.get(key))]


def _same_path(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are both strings naming the same existing file or folder."""
    if not (isinstance(a, str) and isinstance(b, str) and a and b):
        return False
    try:
        return os.path.samefile(os.path.expanduser(a), os.path.expanduser(b))
    except (OSError, ValueError):  # either does not exist (a hub id, a name), or a bad path
        return False


def saved_config_changes(output_dir: str | Path, new: Mapping[str, Any],
                         ignore: Iterable[str] = ()) -> list[str]:
    """:func:`config_changes` from ``output_dir/config.yaml`` (the settings the run was last
    started with) to ``new``; ``[]`` when there is no such file or it is not a YAML mapping
    (nothing to compare with)."""
    path = Path(output_dir) / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return config_changes(old, new, ignore) if isinstance(old, dict) else []
