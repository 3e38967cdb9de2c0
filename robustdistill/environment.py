"""The software a run used: package versions and the library's git commit.

Every trainer (distillation, SE, speaker) appends one record to ``OUTPUT_DIR/environment.json``
each time it starts or resumes, so that a published student says which code made it (the model
card's Training section, :mod:`robustdistill.publish.card`), and a run resumed under other
versions shows it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .strict_json import strict_dumps

__all__ = ["ENVIRONMENT_FILE", "PACKAGES", "describe_software", "git_state",
           "read_environment", "record_environment", "software_environment",
           "describe_config_changes", "since_last_fresh_start"]

logger = logging.getLogger(__name__)

#: The file a run's records are appended to, in its ``output_dir``.
ENVIRONMENT_FILE = "environment.json"

#: The distributions whose versions are recorded (None when one is not installed).
PACKAGES = ("robustdistill", "torch", "transformers", "accelerate", "datasets",
            "huggingface_hub", "numpy")

#: Where this package's sources are (the git checkout, for an editable install).
_PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(package_dir: str | Path = _PACKAGE_DIR) -> dict[str, Any] | None:
    """The commit of the checkout that holds ``package_dir``, when it is one.

    Only a checkout whose top level holds the package directly counts (``TOP/robustdistill``),
    so a package installed into a virtual environment inside some other repository does not
    report that repository's commit.

    Returns:
        ``{"commit": 40 hex digits, "dirty": bool}`` (``dirty``: tracked files changed since
        the commit), or None (not a git checkout, or git is not installed).
    """
    package_dir = Path(package_dir).resolve()
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if top is None or Path(top).resolve() / package_dir.name != package_dir:
        return None
    commit = _git(["rev-parse", "HEAD"], package_dir)
    status = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    if commit is None or status is None:
        return None
    return {"commit": commit, "dirty": bool(status)}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def software_environment() -> dict[str, Any]:
    """``{"python", "platform", "packages": {name: version or None}, "git": git_state()}``."""
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": {name: _version(name) for name in PACKAGES}, "git": git_state()}


def read_environment(output_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``output_dir``'s :data:`ENVIRONMENT_FILE`, oldest first (``[]`` if the
    run predates it).

    Raises:
        ValueError: the file is not a JSON list.
    """
    path = Path(output_dir) / ENVIRONMENT_FILE
    if not path.is_file():
        return []
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path} is not a JSON list of records")
    return records


def record_environment(output_dir: str | Path, start: int, unit: str = "step",
                       config_changes: list[str] | None = None,
                       batch: int | None = None,
                       from_another_run: bool = False) -> dict[str, Any]:
    """Append this process's :func:`software_environment` to ``output_dir``'s
    :data:`ENVIRONMENT_FILE`, with where the run (re)started.

    Args:
        output_dir: the run's folder (created if missing).
        start: the step (or epoch) the run starts from: 0, or the resumed checkpoint's.
        unit: ``"step"`` or ``"epoch"``.
        config_changes: for a resume, how its settings differ from those the run was started
            (or last resumed) with (:func:`robustdistill.run_settings.config_changes`); written
            as ``config_changes`` when there are any.
        batch: for a resume from a mid-epoch checkpoint (``train-speaker``'s
            ``epoch_N_batch_B``): the B batches of epoch N + 1 already done (``start`` is N
            epochs), written as ``"start": {"epoch": N, "batch": B}``; None (default): the run
            starts at a step or at an epoch's start, and the record has no ``batch``.
        from_another_run: the start loaded another run's checkpoint (``distill``'s
            ``resume_from`` a folder), written as ``"from_another_run": true``: the run the
            folder holds begins there (:func:`since_last_fresh_start`).

    Returns:
        The record written: ``{"start": {unit: start}, "time": ISO 8601 UTC, "cwd": the
        folder the command ran in (relative paths of ``config.yaml`` are from there:
        :func:`robustdistill.run_settings.saved_config_changes`), ...}``. An unreadable
        earlier file is moved to ``environment.json.unreadable`` with a warning.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / ENVIRONMENT_FILE
    record = {"start": {unit: int(start), **({} if batch is None else {"batch": int(batch)})},
              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cwd": os.getcwd(), **software_environment()}
    if config_changes:
        record["config_changes"] = list(config_changes)
    if from_another_run:
        record["from_another_run"] = True
    try:
        records = read_environment(output_dir)
    except ValueError as err:  # not JSON, or not a list: keep it aside, never stop the run
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        logger.warning("%s is unreadable (%s): moved to %s, starting a new record", path, err,
                       aside.name)
        records = []
    # atomic: a kill mid-write leaves the previous file whole
    atomic_write_text(path, strict_dumps(records + [record], indent=1) + "\n")
    return record


def _software_text(record: dict[str, Any]) -> str:
    packages = record.get("packages") or {}
    parts = []
    for name in ("robustdistill", "torch", "transformers", "accelerate"):
        if packages.get(name):
            text = f"{name} {packages[name]}"
            git = record.get("git") if name == "robustdistill" else None
            if git:
                text += (f" (git {git['commit'][:10]}"
                         + (", with uncommitted changes" if git.get("dirty") else "") + ")")
            parts.append(text)
    return ", ".join(parts) or "no versions recorded"


def since_last_fresh_start(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the run its folder holds: from the last start at step (or epoch) 0
    with no batch done on, or from another run's checkpoint (``from_another_run``). An earlier
    start saved no checkpoint this run went on from (a run killed, or stopped on a NaN/Inf
    step, before its first checkpoint, then started again in the same folder), so it is not a
    segment of this run, and a later start is no resume."""
    fresh = [i for i, r in enumerate(records)
             if r.get("from_another_run") is True
             or (isinstance(r.get("start"), dict) and "batch" not in r["start"]
                 and r["start"] and all(v == 0 for v in r["start"].values()))]
    return records[fresh[-1]:] if fresh else records


def describe_software(records: list[dict[str, Any]]) -> str:
    """One line for a model card: the first start's versions, and whether a resume used others
    (the starts of the run the folder holds: :func:`since_last_fresh_start`).

    Returns:
        ``""`` when there is no record (a run older than :data:`ENVIRONMENT_FILE`).
    """
    records = since_last_fresh_start(records)
    if not records:
        return ""
    first = _software_text(records[0])
    others = sorted({_software_text(r) for r in records[1:]} - {first})
    if not others:
        resumed = len(records) - 1
        return first + (f"; resumed {resumed} time{'s' * (resumed != 1)} with the same software"
                        if resumed else "")
    return first + "; resumed with other software: " + "; ".join(others)


def describe_config_changes(records: list[dict[str, Any]]) -> str:
    """One line for a model card: the settings each resume changed (``config_changes`` of
    :func:`record_environment`), e.g. ``"at step 2: training.learning_rate 0.001 -> 0.0005"``
    (a mid-epoch resume, ``{"epoch": 2, "batch": 5}``: ``"after batch 5 of epoch 3: ..."``);
    ``""`` when no resume changed any (the card's config is then the whole run's). Starts
    before the last fresh one (:func:`since_last_fresh_start`) are not the run's."""
    parts = []
    for record in since_last_fresh_start(records):
        changes = record.get("config_changes")
        if changes:
            start = record.get("start") or {}
            if isinstance(start.get("epoch"), int) and start.get("batch"):  # N epochs, B batches
                where = f"after batch {start['batch']} of epoch {start['epoch'] + 1}"
            else:
                where = "at " + (", ".join(f"{unit} {value}" for unit, value in start.items())
                                 or "a resume")
            parts.append(f"{where}: " + "; ".join(str(c) for c in changes))
    return "; ".join(parts)
