"""How a run's settings changed since its ``config.yaml`` was written (a resume with other
options, or a table asked to reuse a run trained otherwise).

Every trainer writes its resolved config to ``<output_dir>/config.yaml`` at each start, so a
resume with other settings would replace the record of the ones its first steps used. The
trainers compare first (:func:`saved_config_changes`): ``distill``, ``train-se`` and
``train-speaker`` log the changes and keep them in ``environment.json``'s record of the resume
(``train-speaker``: those its resume accepts, :func:`robustdistill.speaker.run_folder.
resume_changes`); ``train-se`` refuses a
change of what its batches are drawn from (seed, batch size, data settings) and a student or loss
heads of another shape; the SE table refuses to show a run trained otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .strict_json import null_for_nonfinite

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
                   ignore: Iterable[str] = (), old_folder: str | None = None) -> list[str]:
    """``["section.key OLD -> NEW", ...]`` for every dotted key whose value differs (a key
    missing on one side counts as ``None``), sorted, leaving out ``ignore`` (dotted keys, or
    section prefixes ending in ``.``).

    Both sides go through JSON first, so a tuple equals the list YAML wrote for it, and two
    strings naming one existing file or folder (``runs/x``, ``./runs/x``, its absolute path or a
    link to it) are no change. Relative paths in ``new`` are from the current folder, those in
    ``old`` from ``old_folder`` (the folder the run was started in; None: the current folder,
    as for runs before 2026-12-07). So the same relative spelling naming another existing file
    or folder from here is a change, written ``key data (in /old) -> data (in /new)``, for
    a key that names a path (:func:`_names_a_path`: not ``data.target_column: clean`` because
    both folders hold a ``clean/``). A folder setting (:data:`_FOLDER_KEY`: ``ig.cache_dir``,
    ``data.train_dir``, ...) is always a path, existing or not yet created (a cache folder
    made later in the run): its two values are a change exactly when their absolute paths
    (links in the existing part resolved) differ; one that names nothing from the current
    folder says so, ``data.train_dir data (in /old) -> data (in /new, not there at this
    start)`` (a data folder left behind, or a cache folder the run makes later), unless the
    folder the run started in is gone (the project moved or was renamed: :func:`_gone`). A name that
    may be no path (``teacher: org/model``, a hub id) counts only as existing files or
    folders, as above. A non-finite number and ``null`` are no change: a setting
    of ``.inf`` (``train-speaker``'s ``training.max_grad_norm``, say) is ``null`` in the strict
    JSON a checkpoint stores its settings in (:mod:`robustdistill.strict_json`).
    """
    ignore = tuple(ignore)
    sections = tuple(k for k in ignore if k.endswith("."))
    a = flatten(json.loads(json.dumps(dict(old), default=str)))
    b = flatten(json.loads(json.dumps(dict(new), default=str)))
    here = os.getcwd()
    changes = []
    for key in sorted(a.keys() | b.keys()):
        if key in ignore or key.startswith(sections):
            continue
        before, now = a.get(key), b.get(key)
        if before != now and null_for_nonfinite(before) != null_for_nonfinite(now):
            if not _same_path(before, now, old_folder, key):
                changes.append(f"{key} {before} -> {now}")
        elif old_folder is not None and _names_a_path(key, before) \
                and _other_place(before, old_folder, key):
            missing = "" if os.path.exists(_from(now, None)) else ", not there at this start"
            changes.append(f"{key} {before} (in {old_folder}) -> {now} (in {here}{missing})")
    return changes


def _from(value: str, folder: str | None) -> str:
    """``value`` (a path, ``~`` expanded) as seen from ``folder`` (None: the current one)."""
    path = os.path.expanduser(value)
    return os.path.join(folder, path) if folder is not None else path


def _same_path(a: Any, b: Any, folder_a: str | None = None, key: str = "") -> bool:
    """Whether ``a`` (a path from ``folder_a``) and ``b`` (from the current folder) are both
    strings naming the same existing file or folder, or, for a folder setting ``key``
    (:data:`_FOLDER_KEY`), the same absolute path (:func:`_place`) whether or not it exists."""
    if not (isinstance(a, str) and isinstance(b, str) and a and b):
        return False
    try:
        if os.path.samefile(_from(a, folder_a), _from(b, None)):
            return True
    except (OSError, ValueError):  # either does not exist (a hub id, a name), or a bad path
        pass
    if not _is_folder_key(key) or _gone(folder_a):
        return False
    there = _place(a, folder_a)
    return there is not None and there == _place(b, None)


#: The last part of a dotted key that holds a path (``data.train_dir``, ``teacher_cache.dir``,
#: ``teacher``, ``student.upstream``, ``data.train_dataset``, ``output_dir``, ...).
_PATH_KEY = re.compile(r"(^|_)(dir|path|file|dataset|teacher|upstream|model)$")

#: The last part of a dotted key whose value is always a file or folder of the file system,
#: never a name (``ig.cache_dir``, ``teacher_cache.dir``, ``data.noise_dir``, ...; not
#: ``teacher``, ``student.upstream``, ``data.train_dataset``: hub ids or built-in names).
_FOLDER_KEY = re.compile(r"(^|_)(dir|path|file)$")


def _is_folder_key(key: str) -> bool:
    """Whether the dotted ``key`` is a file or folder setting (:data:`_FOLDER_KEY`)."""
    return bool(key) and bool(_FOLDER_KEY.search(key.rsplit(".", 1)[-1]))


def _place(value: str, folder: str | None) -> str | None:
    """The absolute path ``value`` names from ``folder`` (None: the current one), links in
    its existing part resolved (``os.path.realpath``); None for a path that cannot be one
    (a NUL byte)."""
    try:
        return os.path.realpath(_from(value, folder))
    except (OSError, ValueError):
        return None


def _names_a_path(key: str, value: Any) -> bool:
    """Whether ``key``'s value is a path: a key named like one (:data:`_PATH_KEY`), or a value
    holding a folder separator."""
    return bool(_PATH_KEY.search(key.rsplit(".", 1)[-1])) or (
        isinstance(value, str) and os.sep in value)


def _other_place(value: Any, folder: str, key: str = "") -> bool:
    """Whether ``value``, a relative path, names an existing file or folder from ``folder``
    and another existing one from the current folder (a name that exists on one side only,
    such as a hub id, is no change), or, for a folder setting ``key`` (:data:`_FOLDER_KEY`),
    another absolute path (:func:`_place`) whether or not either exists yet."""
    if not (isinstance(value, str) and value) or os.path.isabs(os.path.expanduser(value)):
        return False
    there, here = _from(value, folder), _from(value, None)
    try:
        if os.path.exists(there) and os.path.exists(here):
            return not os.path.samefile(there, here)
    except (OSError, ValueError):
        return False
    if not _is_folder_key(key) or _gone(folder):
        return False
    places = _place(value, folder), _place(value, None)
    return None not in places and places[0] != places[1]


def _gone(folder: str | None) -> bool:
    """Whether the folder a run started in is no longer there (the project moved or was
    renamed): where a relative path pointed from it cannot be told, so a folder setting
    counts, as any path, only through files or folders that exist on both sides."""
    return folder is not None and not os.path.isdir(folder)


def saved_config_changes(output_dir: str | Path, new: Mapping[str, Any],
                         ignore: Iterable[str] = ()) -> list[str]:
    """:func:`config_changes` from ``output_dir/config.yaml`` (the settings the run was last
    started with; its relative paths from the folder that start ran in, ``cwd`` of the last
    record of ``environment.json``, when there is one) to ``new``; ``[]`` when there is no
    such file or it is not a YAML mapping (nothing to compare with)."""
    path = Path(output_dir) / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(old, dict):
        return []
    return config_changes(old, new, ignore, old_folder=_started_in(output_dir))


def _started_in(output_dir: str | Path) -> str | None:
    """The folder the run's last start ran in (its last ``environment.json`` record's
    ``cwd``), or None: no record, an unreadable file, or a run before 2026-12-07."""
    from .environment import read_environment

    try:
        records = read_environment(output_dir)
    except (OSError, ValueError):  # json.JSONDecodeError is a ValueError
        return None
    cwd = records[-1].get("cwd") if records and isinstance(records[-1], dict) else None
    return cwd if isinstance(cwd, str) and os.path.isabs(cwd) else None
