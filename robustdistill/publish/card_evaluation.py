"""The Evaluation section of a speaker card: the speaker verification that ``robustdistill
train-speaker`` runs on a finished student (:func:`robustdistill.speaker.train.train_system`,
:func:`robustdistill.speaker.evaluation.evaluate_student`), its protocol as the code runs it, its EER and minDCF per set from the
run's ``result.json``, and their ``model-index`` entries.

This is not the SUPERB protocol of the Results section (:mod:`.card_results`: a frozen upstream,
a learned weighted sum of its layers and a downstream head trained per task): the student's own
embeddings are scored directly, with nothing trained on or for the test sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .card_results import TASK_TYPES
from .provenance import (
    NOT_RECORDED,
    SPEAKER_SETS,
    RunSummary,
    config_section,
    evaluated_sets,
    read_run_result,
)

__all__ = ["VerificationResult", "verification_eval_results", "verification_results",
           "verification_view"]

#: The ``model-index`` dataset config of the verification results: their trial list. The Hub
#: groups ``model-index`` entries by task type, dataset type, config and split, and speaker
#: verification has no task type of its own (``audio-classification``, as downstream results):
#: the config keeps these apart from downstream results on the same folder (whose configs are
#: ``<task label>-<condition>``, :func:`~.card_results.task_config`). The trial list is what
#: sets a verification benchmark apart (as VoxCeleb1-O, -E and -H on one corpus); the
#: condition, clean, is in the name.
TRIALS_CONFIG = "train-speaker-trials"


@dataclass
class VerificationResult:
    """One verification set of a ``train-speaker`` run's ``result.json``.

    Attributes:
        name: the set's key (``test_other``, ``fsdd``).
        dataset: the set's folder name (``test-other``), else ``name``.
        eer: equal error rate, a fraction.
        min_dcf: normalised minimum detection cost.
        target_trials, nontarget_trials: trial counts, None when not recorded.
    """

    name: str
    dataset: str
    eer: float
    min_dcf: float
    target_trials: int | None = None
    nontarget_trials: int | None = None


def _read_result(run: RunSummary) -> dict[str, Any]:
    return read_run_result(run.run_dir) or {}


def _set_dir(name: str, data: dict[str, Any]) -> str | None:
    value = data.get(SPEAKER_SETS.get(name, ("", ""))[0])
    return str(value) if value else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def verification_results(run: RunSummary) -> list[VerificationResult]:
    """The complete entries (``eer`` and ``min_dcf``) of ``result.json``'s ``eval``; ``[]``
    when the run has none (not finished, or no verification set).

    Raises:
        ValueError: an unreadable ``result.json`` (:func:`read_run_result`)."""
    result = _read_result(run)
    data = config_section(run.config, "data")
    out = []
    for name in evaluated_sets(result):
        m = result["eval"][name]
        folder = _set_dir(name, data)
        counts = [m.get(k) if isinstance(m.get(k), int) else None
                  for k in ("target_trials", "nontarget_trials")]
        out.append(VerificationResult(name, Path(folder.rstrip("/")).name if folder
                                      else name, float(m["eer"]), float(m["min_dcf"]),
                                      *counts))
    return out


def _data_text(name: str, data: dict[str, Any]) -> str:
    folder = _set_dir(name, data)
    where = f"`{folder}`" if folder else f"a folder {NOT_RECORDED}"
    if name == "test_other":
        return (f"`{name}`: {where}, every usable utterance of its `<speaker>/<file>` folders "
                "(the LibriSpeech test-other layout), whole")
    if name == "fsdd":
        per = data.get("fsdd_per_speaker")
        per = per if isinstance(per, int) else NOT_RECORDED
        return (f"`{name}`: {where} (FSDD, spoken digits, 8 kHz resampled to 16 kHz), the first "
                f"{per} usable recordings of each speaker in (take, digit) order, whole")
    return f"`{name}`: a set this card does not know"


def _skipped_text(result: dict[str, Any], names: list[str]) -> str:
    skipped = result.get("skipped_files")
    if not isinstance(skipped, dict):
        return ""
    parts = []
    for name in names:
        counts = skipped.get(name)
        if isinstance(counts, dict) and counts:
            total = sum(v for v in counts.values() if isinstance(v, int))
            parts.append(f"`{name}` {total} (" + ", ".join(
                f"{reason}: {count}" for reason, count in counts.items()) + ")")
    return ("; files skipped as unusable: " + "; ".join(parts)) if parts else ""


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else NOT_RECORDED


def _table(rows: list[VerificationResult]) -> str:
    lines = ["| set | EER | minDCF | target trials | non-target trials |",
             "|---|---|---|---|---|"]
    lines += [f"| `{r.name}` | {_percent(r.eer)} | {r.min_dcf:.3f} | {_count(r.target_trials)} "
              f"| {_count(r.nontarget_trials)} |" for r in rows]
    return "\n".join(lines)


def verification_view(run: RunSummary | None) -> dict[str, Any]:
    """What the template's Evaluation section shows of a ``train-speaker`` run.

    Returns:
        ``{"rows", "intro", "lines", "table", "missing"}``: ``rows`` the
        :class:`VerificationResult` of each set; ``intro`` one paragraph; ``lines`` ``(label,
        text)`` pairs (testing data, trials, scoring, metrics); ``table`` the results in
        Markdown; ``missing`` the sentence shown instead when there are no rows (always for
        a card of a checkpoint's student, ``final_state["checkpoint"]``: the run evaluated
        its final student, not those weights).
    """
    if run is None:
        return {"rows": [], "intro": "", "lines": [], "table": "",
                "missing": "No training run was given to the card: its speaker verification "
                           "results are not known here."}
    checkpoint = run.final_state.get("checkpoint")
    if run.recipe == "speaker" and isinstance(checkpoint, str):  # a checkpoint's student
        return {"rows": [], "intro": "", "lines": [], "table": "",
                "missing": f"Speaker verification: not run on these weights, the student of "
                           f"the checkpoint `{checkpoint}` of the run `{run.run_dir}`: "
                           "`robustdistill train-speaker` evaluates a run's student once "
                           "training finishes (`result.json`), and this run exported none"
                           + (" since it was resumed (its `student/` and `result.json` are "
                              "those of an earlier finish)."
                              if (run.run_dir / "student").is_dir() else ".")}
    rows = verification_results(run)
    if not rows:
        return {"rows": [], "intro": "", "lines": [], "table": "",
                "missing": f"Speaker verification: {NOT_RECORDED}. `result.json` of the run "
                           f"`{run.run_dir}` holds no evaluation (the run was not finished, or "
                           "had no verification sets)."}
    data = config_section(run.config, "data")
    result = _read_result(run)
    names = [r.name for r in rows]
    nontarget = data.get("max_nontarget")
    nontarget = f"{nontarget:,}" if isinstance(nontarget, int) else NOT_RECORDED
    seed = data.get("trials_seed")
    p_target = data.get("p_target")
    p_text = f"{p_target:g}" if _number(p_target) else NOT_RECORDED
    weights = "this model's weights, as the run exported them"  # card --step: refused
    intro = ("Speaker verification on speakers unseen in training, run by `robustdistill "
             f"train-speaker` once training finished, on {weights}. The student's own "
             "embeddings are scored directly: no downstream head is trained and nothing is "
             "fitted on the test sets (this is not the SUPERB protocol of downstream results).")
    lines = [
        ("Testing data", "; ".join(_data_text(n, data) for n in names)
         + ". Every waveform below -30 dBFS is raised to it, as in training; no noise or "
           "reverberation is added. The sets' speakers are disjoint from the training speakers "
           "(checked before training)" + _skipped_text(result, names)),
        ("Trials", "per set, every pair of utterances of one speaker (target trials) and "
                   f"{nontarget} pairs of different speakers drawn without replacement (all of "
                   f"them when there are fewer), seeded by `data.trials_seed` "
                   f"({seed if isinstance(seed, int) else NOT_RECORDED}) and the set's speaker "
                   "list: every system of the recipe gets the same trials"),
        ("Scoring", "each whole utterance goes through the student once (batched with "
                    "utterances of similar length, zero-padded, its true length given to the "
                    "model, when the student's output ignores the padding; alone otherwise, "
                    "as for an upstream with a group-norm CNN: its embedding is the one it "
                    "gets on its own), its embedding is L2-normalised, and a trial's score is "
                    "the cosine of its two embeddings; no score normalisation, no trained back "
                    "end"),
        ("Metrics", "EER, the rate at which misses equal false alarms (interpolated between "
                    "thresholds); minDCF, the minimum over thresholds of the detection cost "
                    f"with p_target {p_text} and C_miss = C_fa = 1, normalised by that of the "
                    "better trivial system (1: no better than always accepting or always "
                    "rejecting). Lower is better for both; no interval is computed, so read "
                    "them with the trial counts"),
    ]
    return {"rows": rows, "intro": intro, "lines": lines, "table": _table(rows),
            "missing": ""}


def verification_eval_results(run: RunSummary | None):
    """``huggingface_hub.EvalResult`` per verification set and metric (``eer``, ``min_dcf``,
    the task type and metric names of the downstream speaker verification results; dataset
    config :data:`TRIALS_CONFIG`, so the Hub never merges the two); ``[]`` without a run,
    without results, or when the card is for a checkpoint (the run evaluated its final
    weights, not these)."""
    from huggingface_hub import EvalResult

    if run is None or run.final_state.get("checkpoint"):
        return []
    out = []
    for r in verification_results(run):
        for metric, value in (("eer", r.eer), ("min_dcf", r.min_dcf)):
            out.append(EvalResult(
                task_type=TASK_TYPES["speaker_verification"],
                task_name="Speaker verification (train-speaker, cosine scoring)",
                dataset_type=r.dataset, dataset_name=f"{r.dataset} (clean, train-speaker trials)",
                dataset_config=TRIALS_CONFIG, dataset_split="test", metric_type=metric,
                metric_value=round(value, 6), metric_name=f"{metric} ({r.name})"))
    return out
