"""``train-speaker table``: the teacher and every ``table.methods`` x ``table.seeds`` run
(:func:`run_table`; a finished run with the same config is reused, not retrained), written to
``results.json`` and ``table.md``: EER (%) and minDCF per set and system, mean ± std over the
seeds (:func:`format_table`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from downstream.config import to_dict
from robustdistill.strict_json import nan_for_null, null_for_nonfinite, strict_dumps

from .added_keys import (
    MIN_LENGTH_KEYS,
    AddedKeys,
    awaits_inputs,
    old_run_verdict,
    predated,
    result_settings,
    run_record,
    same_effect,
    too_short_under,
)
from .config import SpeakerKDConfig
from .data import skipped_counts
from .evaluation import evaluate_teacher
from .inputs import load_run_inputs
from .run_folder import RESULT, read_result
from .train import train_system

__all__ = ["MIN_LENGTH_KEYS", "finished_run", "format_table", "reuse_awaits_inputs", "run_table",
           "table_runs", "too_short_under"]

logger = logging.getLogger("robustdistill.speaker")


def _mean_std(values: list[float]) -> str:
    a = 100.0 * np.asarray(values)
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def _dcf(values: list[float]) -> str:
    a = np.asarray(values)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: EER (%) and minDCF, mean ± std over seeds, per set and system."""
    sets = list(results["teacher"]["eval"])
    names = {"teacher": "GE2E teacher (Resemblyzer)", "none": "student, no KD",
             "logit_kd": "student, vanilla logit KD", "embedding_kd": "student, embedding KD",
             "imlkd": "student, IML-KD"}
    head = "| system | params | seeds | " + " | ".join(
        f"{s} EER % | {s} minDCF" for s in sets) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(sets))]
    t = results["teacher"]
    lines.append(f"| {names['teacher']} | {t['params']:,} | - | " + " | ".join(
        f"{100 * t['eval'][s]['eer']:.2f} | {t['eval'][s]['min_dcf']:.3f}" for s in sets) + " |")
    for method, runs in results["systems"].items():
        cells = []
        for s in sets:
            cells.append(_mean_std([r["eval"][s]["eer"] for r in runs]))
            cells.append(_dcf([r["eval"][s]["min_dcf"] for r in runs]))
        lines.append(f"| {names.get(method, method)} | {runs[0]['params']:,} | {len(runs)} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _run_key(config: dict | None) -> dict | None:
    """What identifies a run: its config without the ``table`` section, the output folder (the
    run is found there), ``training.resume`` (how the run got to its end, not what it trained:
    a table continued with ``--training.resume true`` reuses the runs it had finished, and
    they are reused again without it), ``training.keep_checkpoints`` and
    ``training.save_on_sigterm`` (what stays on disk and how a run stops, not what was trained;
    runs written before they existed are reused) and ``ig`` for the systems that use no
    maps."""
    if config is None:
        return None
    drop = {"table"} if config["loss"]["method"] == "imlkd" else {"table", "ig"}
    key = {k: v for k, v in config.items() if k not in drop}
    key["training"] = {k: v for k, v in key.get("training", {}).items()
                       if k not in ("output_dir", "resume", "keep_checkpoints",
                                    "save_on_sigterm")}
    return key


def table_runs(cfg: SpeakerKDConfig) -> list[tuple[str, SpeakerKDConfig]]:
    """``(method, run config)`` of every run of the table, seed-major; each run's folder is
    ``table.output_dir/<method>_seed<seed>``."""
    import copy

    runs = []
    for seed in cfg.table.seeds:
        for method in cfg.table.methods:
            run_cfg = copy.deepcopy(cfg)
            run_cfg.loss.method = method
            run_cfg.training.seed = seed
            run_cfg.training.output_dir = str(Path(cfg.table.output_dir) / f"{method}_seed{seed}")
            runs.append((method, run_cfg))
    return runs


class _Match(NamedTuple):
    """A finished run that matches but for settings added later or compared by effect."""

    previous: dict[str, Any]  # its result.json
    lacking: list[tuple[AddedKeys, list[str]]]  # added_keys.predated
    same_effect: list[tuple[str, str]]  # added_keys.same_effect


def _without(config: dict[str, Any], dotted: str) -> None:
    """Remove the dotted key ``dotted`` (``data.min_length_s``) from the nested ``config``,
    if it is there."""
    *sections, last = dotted.split(".")
    for section in sections:
        config = config.get(section) if isinstance(config, dict) else None
    if isinstance(config, dict):
        config.pop(last, None)


#: What the table's refusal of a damaged ``result.json`` advises (:func:`.run_folder.read_result`).
REUSE_ADVICE = "move it away to train that run again"

#: Each verification set a run evaluates and the ``data`` folder that names it
#: (:func:`~robustdistill.speaker.inputs.load_eval_sets`): the teacher's row has a column for
#: each, which a reused run's ``eval`` must fill (:func:`format_table`).
_SET_DIRS = {"test_other": "test_other_dir", "fsdd": "fsdd_dir"}


def _matching_run(run_cfg: SpeakerKDConfig) -> _Match | None:
    """The finished, evaluated run in ``run_cfg.training.output_dir`` (its ``result.json``)
    whose config equals ``run_cfg``'s (:func:`_run_key`; non-finite numbers as ``null`` on both
    sides) once the keys added later that it lacks
    (:func:`~robustdistill.speaker.added_keys.predated`) and the settings whose change does
    nothing (:func:`~robustdistill.speaker.added_keys.same_effect`) are left out; else None.

    Raises:
        ValueError: (one line) as :func:`~robustdistill.speaker.run_folder.read_result`; or
            the run matches but its ``eval`` lacks a set its config names (``fsdd`` with
            ``data.fsdd_dir``: an edited file), which :func:`format_table` could not fill.
    """
    previous = read_result(run_cfg.training.output_dir, REUSE_ADVICE, needs=("params",)) or {}
    if not previous.get("eval"):
        return None
    old = _run_key(null_for_nonfinite(previous.get("config")))
    new = _run_key(null_for_nonfinite(to_dict(run_cfg)))
    if old is None:
        return None
    saved, now = result_settings(null_for_nonfinite(previous)), run_record(run_cfg)
    lacking = predated(saved, now)
    unchanged = same_effect(saved, now)
    for key in [k for _, keys in lacking for k in keys] + [k for k, _ in unchanged]:
        _without(old, key)
        _without(new, key)
    if old != new:
        return None
    for name, key in _SET_DIRS.items():
        if getattr(run_cfg.data, key) and name not in previous["eval"]:
            raise ValueError(f"{Path(run_cfg.training.output_dir) / RESULT} is not a {RESULT} as "
                             f"train-speaker writes it: eval has no {name}, a set its config "
                             f"names (data.{key}); {REUSE_ADVICE}")
    return _Match(previous, lacking, unchanged)


def reuse_awaits_inputs(run_cfg: SpeakerKDConfig) -> bool:
    """Whether ``run_cfg``'s folder holds a finished run from before a setting added later
    (:data:`~robustdistill.speaker.added_keys.ADDED_KEYS`: ``data.min_length_s`` /
    ``data.min_test_length_s``) that matches otherwise and whose reuse depends on the loaded
    inputs (their ``too short`` files; :func:`~robustdistill.speaker.added_keys.awaits_inputs`):
    a check made before they are loaded leaves it."""
    match = _matching_run(run_cfg)
    return match is not None and awaits_inputs(run_cfg, match.lacking)


def finished_run(run_cfg: SpeakerKDConfig, skipped: dict[str, dict[str, str]] | None = None,
                 log: bool = True) -> dict[str, Any] | None:
    """The ``result.json`` of a finished, evaluated run with the same config (:func:`_run_key`)
    in ``run_cfg.training.output_dir``, which the table reuses; else None. Its ``eval``
    scores written ``null`` (non-finite: :mod:`robustdistill.strict_json`) are read as NaN.
    Its config is compared with every non-finite number as ``null`` on both sides: a setting
    of ``.inf`` (``training.max_grad_norm``, say) is written ``null`` there.

    A run from before a setting added later (its record lacks it:
    :data:`~robustdistill.speaker.added_keys.ADDED_KEYS`) is reused when the entry's test says
    that it would be unchanged, else not: an IML-KD run from before 2026-12-07 (no
    ``map_frames``) whose map targets the old frame mapping made differ
    (:func:`~robustdistill.speaker.added_keys.map_targets_predate_rule`) is not reused; a run
    from before ``data.min_length_s`` / ``data.min_test_length_s`` (2026-12-07) is reused when
    no file of the inputs falls under the minimums it lacks (``skipped`` has no ``too short``
    file in the sets they apply to: :data:`MIN_LENGTH_KEYS`; it trained and was evaluated on
    the files a run now uses), else not (it used those files, zero-padded). A run whose
    ``data.min_length_s`` differs without changing the training minimum
    (:data:`~robustdistill.speaker.added_keys.SAME_EFFECT`: 3 -> 4 with 2 s crops) is reused.
    Each is logged with the reason (``log``).

    Args:
        run_cfg: one run of the table (:func:`table_runs`).
        skipped: the loaded inputs' skipped files, ``{set name: {path: reason}}``
            (:func:`~robustdistill.speaker.inputs.load_run_inputs`); None (not loaded yet):
            a run from before the minimums is not reused (:func:`reuse_awaits_inputs` says
            which runs wait for them).
        log: log why a run is, or is not, reused where that is not plain (the cases above).

    Raises:
        ValueError: (one line naming the file and, for a structure fault, the field) its
            ``result.json`` cannot be read, is not a JSON object, lacks ``params`` or holds
            a field the table reads in another structure
            (:func:`~robustdistill.speaker.run_folder.read_result`), or matches but lacks
            an ``eval`` set its config names: the table cannot tell whether the run is
            finished, or could not fill that set's columns; the line says to move it away
            to train it again.
    """
    match = _matching_run(run_cfg)
    if match is None:
        return None
    done = Path(run_cfg.training.output_dir) / "result.json"
    verdict = old_run_verdict(run_cfg, match.lacking, skipped, resume=False)
    if verdict.reuse is False and log:
        logger.warning("not reusing %s: %s", done, verdict.reason)
    if not verdict.reuse:
        return None
    if log and verdict.reason:
        logger.info("reusing %s, %s", done, verdict.reason)
    for _, why in match.same_effect if log else []:
        logger.info("reusing %s although %s, so it is unchanged", done, why)
    return {**match.previous, "eval": nan_for_null(match.previous["eval"])}


def run_table(cfg: SpeakerKDConfig,
              inputs: tuple[Any, list[Any], dict[str, Any], dict[str, dict[str, str]]]
              | None = None) -> dict[str, Any]:
    """Teacher + every ``table.methods`` x ``table.seeds``; writes ``results.json`` and
    ``table.md`` in ``table.output_dir``. A run whose ``result.json`` holds an evaluation and
    the same resolved config is reused, not retrained (a rerun of the table only trains what
    is missing; a run from before ``data.min_length_s`` / ``data.min_test_length_s`` when
    none of the inputs' files is shorter than them: :func:`finished_run`).

    Args:
        inputs: ``(teacher, crops, sets, skipped)`` already loaded (:func:`load_run_inputs`),
            so that a caller can report input errors before any training; ``None`` loads them
            here.

    Raises:
        FileNotFoundError / TeacherLoadError / SpeakerDataError: while loading ``inputs``.
    """
    root = Path(cfg.table.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    teacher, crops, sets, skipped = load_run_inputs(cfg) if inputs is None else inputs
    results: dict[str, Any] = {
        "teacher": {"params": sum(p.numel() for p in teacher.parameters()),
                    "eval": evaluate_teacher(teacher, sets, cfg.data)},
        "systems": {}, "train_crops": len(crops),
        "eval_items": {k: len(v) for k, v in sets.items()}}
    if any(skipped.values()):
        results["skipped_files"] = {k: skipped_counts(v) for k, v in skipped.items() if v}
    logger.info("teacher %s", results["teacher"])
    for method, run_cfg in table_runs(cfg):  # seed-major: an interrupted table has every system
        result = finished_run(run_cfg, skipped)
        if result is not None:
            logger.info("reusing the finished run %s", run_cfg.training.output_dir)
        else:
            result = train_system(run_cfg, teacher, crops, sets, skipped_files=skipped,
                                  folder_key="table.output_dir")
        results["systems"].setdefault(method, []).append(result)
        (root / "results.json").write_text(strict_dumps(results, indent=1))
    (root / "table.md").write_text(format_table(results))
    return results
