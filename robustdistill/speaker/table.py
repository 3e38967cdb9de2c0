"""``train-speaker table``: the teacher and every ``table.methods`` x ``table.seeds`` run
(:func:`run_table`; a finished run with the same config is reused, not retrained), written to
``results.json`` and ``table.md``: EER (%) and minDCF per set and system, mean ± std over the
seeds (:func:`format_table`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from downstream.config import to_dict
from robustdistill.strict_json import nan_for_null, null_for_nonfinite, strict_dumps

from .config import SpeakerKDConfig
from .data import skipped_counts
from .evaluation import evaluate_teacher
from .inputs import load_run_inputs
from .run_folder import map_targets_predate_rule
from .train import train_system

__all__ = ["finished_run", "format_table", "run_table", "table_runs"]

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


def finished_run(run_cfg: SpeakerKDConfig) -> dict[str, Any] | None:
    """The ``result.json`` of a finished, evaluated run with the same config (:func:`_run_key`)
    in ``run_cfg.training.output_dir``, which the table reuses; else None. Its ``eval``
    scores written ``null`` (non-finite: :mod:`robustdistill.strict_json`) are read as NaN.
    Its config is compared with every non-finite number as ``null`` on both sides: a setting
    of ``.inf`` (``training.max_grad_norm``, say) is written ``null`` there. An IML-KD run
    from before 2026-12-07 (no ``map_frames``) whose map targets the old frame mapping made
    differ (:func:`~robustdistill.speaker.run_folder.map_targets_predate_rule`) is not reused
    (logged)."""
    done = Path(run_cfg.training.output_dir) / "result.json"
    previous = json.loads(done.read_text()) if done.is_file() else {}
    if previous.get("eval") and (_run_key(null_for_nonfinite(previous.get("config")))
                                 == _run_key(null_for_nonfinite(to_dict(run_cfg)))):
        if "map_frames" not in previous and map_targets_predate_rule(run_cfg):
            logger.warning("not reusing %s: trained before 2026-12-07 on IML-KD map targets "
                           "put on other student frames (docs/imlkd.md)", done)
            return None
        return {**previous, "eval": nan_for_null(previous["eval"])}
    return None


def run_table(cfg: SpeakerKDConfig,
              inputs: tuple[Any, list[Any], dict[str, Any], dict[str, dict[str, str]]]
              | None = None) -> dict[str, Any]:
    """Teacher + every ``table.methods`` x ``table.seeds``; writes ``results.json`` and
    ``table.md`` in ``table.output_dir``. A run whose ``result.json`` holds an evaluation and
    the same resolved config is reused, not retrained (a rerun of the table only trains what
    is missing).

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
        result = finished_run(run_cfg)
        if result is not None:
            logger.info("reusing the finished run %s", run_cfg.training.output_dir)
        else:
            result = train_system(run_cfg, teacher, crops, sets, skipped_files=skipped)
        results["systems"].setdefault(method, []).append(result)
        (root / "results.json").write_text(strict_dumps(results, indent=1))
    (root / "table.md").write_text(format_table(results))
    return results
