"""The Results section of a model card: this model's downstream results, the other upstreams
of the same results files as comparison rows, intervals and what they can resolve, and the
``model-index`` entries (``huggingface_hub.EvalResult``) of the card's metadata.

Results files are read by :mod:`robustdistill.publish.results`; :mod:`robustdistill.publish.card`
assembles the card.
"""

from __future__ import annotations

import logging
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from downstream.entries import upstream_labels
from downstream.table import unscored_note

from .provenance import RunSummary
from .results import TaskResult, load_task_results

__all__ = ["TASK_TYPES", "CardError", "TaskView", "chance_notes", "check_eval_results",
           "copy_plot_files", "eval_results_for", "interval_note", "seed_count_text",
           "task_config", "task_views", "unscored_notes"]

logger = logging.getLogger(__name__)


class CardError(ValueError):
    """The card cannot be written honestly from the given inputs (the message says why)."""


#: Downstream task -> Hub ``model-index`` task type.
TASK_TYPES = {
    "utterance_classification": "audio-classification",
    "speaker_verification": "audio-classification",
    "speech_enhancement": "audio-to-audio",
    "asr": "automatic-speech-recognition",
}


def _kept(char: str) -> bool:
    """Whether :func:`_slug` keeps ``char``: a letter or digit of any script (with its
    combining marks: the vowel signs of Devanagari, a decomposed accent), ``-``, ``_`` or
    ``.``."""
    return char.isalnum() or char in "-_." or unicodedata.category(char).startswith("M")


def _slug(text: str) -> str:
    """``text`` lower-case (Unicode NFC), each run of characters other than letters, digits,
    ``-``, ``_`` and ``.`` (whitespace, ``/``, ``:``, ``#``, ``+``...) replaced by one ``_``.

    Letters and digits of every script are kept (``ключевые слова`` gives
    ``ключевые_слова``, ``Wörter`` gives ``wörter``), so two texts give one slug only when
    they differ in case, whitespace or punctuation (or in Unicode normalisation alone)."""
    text = unicodedata.normalize("NFC", text.strip().lower())
    return "".join("".join(run) if kept else "_" for kept, run in groupby(text, key=_kept))


def task_config(task: TaskResult, condition: str) -> str:
    """The ``model-index`` ``dataset.config`` of ``task``'s results under ``condition``:
    ``<label>-<condition>`` as a slug of lower-case letters and digits (of any script), ``-``,
    ``_`` and ``.`` (``ks-clean``, ``sid-snr0``; ``KS v2/fsdd`` under ``reverb+snr5`` gives
    ``ks_v2_fsdd-reverb_snr5``: each run of other characters becomes ``_``; ``ключевые слова``
    gives ``ключевые_слова-clean``). Two labels that differ only in case, whitespace or
    punctuation give one config; :func:`eval_results_for` refuses that within one Hub group.

    The Hub groups ``model-index`` entries by task type, dataset type, config and split and
    names each group after its first entry: two downstream tasks of one task type on one data
    folder (keyword spotting and speaker identification, both ``audio-classification``, on
    FSDD) under one condition would otherwise be merged under the first task's name. The task
    label is what sets them apart (as the Hub's ``superb`` dataset names its configs ``ks``,
    ``si``...); the condition keeps each condition an entry of its own, so a metric type
    appears once per entry."""
    return f"{_slug(task.label)}-{_slug(condition)}"


def _clash(first: tuple[str, str], second: tuple[str, str], config: str, task_type: str,
           dataset: str) -> CardError:
    """The error for two (label, condition) pairs that give one ``config`` in one Hub group,
    saying why they do (case, whitespace or punctuation, or the ``-`` that joins a label to its
    condition)."""
    (label_a, cond_a), (label_b, cond_b) = first, second
    differ = " and ".join(name for name, a, b in (("task labels", label_a, label_b),
                                                  ("conditions", cond_a, cond_b)) if a != b)
    if _slug(label_a) == _slug(label_b) and _slug(cond_a) == _slug(cond_b):
        why = f"their {differ} differ only in case, whitespace or punctuation"
    else:
        why = "the '-' that joins a label to its condition makes them one"
    fix = ("give the results files labels that set them apart" if label_a != label_b
           else "name the conditions apart")
    return CardError(f"task label {label_a!r} under {cond_a!r} and task label {label_b!r} under "
                     f"{cond_b!r} both give the model-index config {config!r} ({task_type} on "
                     f"{dataset!r}, where the Hub would merge them): {why}; {fix}")


def eval_results_for(tasks: Sequence[TaskResult], model_name: str):
    """``huggingface_hub.EvalResult`` per task, condition and metric (test split).

    The task label and the condition are the ``dataset_config`` (:func:`task_config`), so each
    task and condition is its own ``model-index`` entry, named after its task on a read-back;
    the condition is also in ``dataset_name`` and ``metric_name``; values are rounded to 6
    decimals (they come from float32); the interval is in the card's text, not here.

    Raises:
        CardError: two task labels (or conditions) that give one config within one Hub group
            (one task type and dataset type, the split being ``test``): they differ only in
            case, whitespace or punctuation (``ks/a``, ``KS a``, ``ks_a``), or the ``-``
            joining label and condition makes them one (``ks-a`` under ``clean``, ``ks`` under
            ``a-clean``); the Hub would merge their entries. One config in two groups (another
            dataset or task type) is no clash: the Hub keeps those entries apart. Also two
            results of one task label and condition in one group (two results files, or two
            runs in one), which the Hub would merge as well.
    """
    from huggingface_hub import EvalResult

    out = []
    seen: dict[tuple[str, str, str], tuple[str, str, TaskResult]] = {}
    for t in tasks:
        task_type = TASK_TYPES.get(t.task, t.task.replace("_", "-"))
        for cond in t.conditions:
            config = task_config(t, cond)
            # the Hub's group: task type, dataset type, config (and split, always "test")
            *other, first = seen.setdefault((task_type, t.dataset, config), (t.label, cond, t))
            if first is not t and tuple(other) == (t.label, cond):
                raise CardError(
                    f"two results of this model give task label {t.label!r} under {cond!r} "
                    f"({task_type} on {t.dataset!r}; {first.source} and {t.source}): the Hub "
                    "would merge them into one entry with two values of each metric; card one "
                    "of them, or give the results files distinct labels")
            if first is not t:
                raise _clash(tuple(other), (t.label, cond), config, task_type, t.dataset)
            for metric, mv in t.metrics.get(cond, {}).items():
                out.append(EvalResult(
                    task_type=task_type,
                    task_name=f"{t.label} ({t.task})", dataset_type=t.dataset,
                    dataset_name=f"{t.dataset} ({t.label}, {cond})",
                    dataset_config=config,
                    dataset_split="test", metric_type=metric,
                    metric_value=round(mv.value, 6),
                    metric_name=f"{metric} ({cond})"))
    return out


def _eval_key(r) -> tuple[str, ...]:
    """What a ``model-index`` entry says: task, dataset, metric and value."""
    return tuple(str(v) for v in (r.task_type, r.task_name, r.dataset_type, r.dataset_name,
                                  r.dataset_config, r.dataset_split, r.metric_type,
                                  r.metric_name, r.metric_value))


def check_eval_results(expected: Sequence[Any], got: Sequence[Any], where: str) -> None:
    """Raise :class:`CardError` unless ``got`` (``EvalResult`` as read back from a card's
    metadata) says what ``expected`` does, in any order: task type and name, dataset type,
    name, config and split, metric type and name, and value. A merge of entries of two tasks
    into one ``model-index`` group (the Hub names a group after its first entry) changes the
    task name of the others, and is caught."""
    want, have = Counter(map(_eval_key, expected)), Counter(map(_eval_key, got))
    if want == have:
        return

    def first(keys: Counter) -> str:
        if not keys:
            return "none"
        k = min(keys)
        return (f"task {k[1]!r} ({k[0]}), dataset {k[2]!r} config {k[4]!r} split {k[5]!r}, "
                f"metric {k[7]!r} = {k[8]}")

    raise CardError(f"{where}: the model-index does not read back as written "
                    f"({sum(want.values())} entries written, {sum(have.values())} read); "
                    f"written, not read back: {first(want - have)}; read back, not written: "
                    f"{first(have - want)}")


@dataclass
class TaskView:
    """One task as the template shows it."""

    label: str
    task: str
    dataset: str
    primary_metric: str
    higher_is_better: bool
    n_test: Any
    seed: str
    source: str
    sha1: str | None
    table: str
    other_table: str = ""
    plot: str | None = None
    unscored_note: str = ""
    #: the results folder's ``robustness.png``, copied as ``plot`` by :func:`copy_plot_files`
    plot_source: Path | None = None


def _short(upstream: str) -> str:
    return Path(upstream.rstrip("/")).name or upstream


def _role(upstream: str, run: RunSummary | None, label: str | None = None) -> str:
    """``upstream`` (shown as ``label``, default its folder name) with what it is in the run:
    the teacher, or the student before distillation (``student_init``)."""
    name = f"`{label or _short(upstream)}`"
    if run is None:
        return name
    here = Path(upstream)
    teacher = run.teacher_dir or (Path(run.teacher) if run.teacher else None)
    if upstream == run.teacher or (teacher is not None and here.exists() and teacher.exists()
                                   and here.resolve() == teacher.resolve()):
        return name + " (teacher)"
    init = run.run_dir / "student_init"
    if here.exists() and init.exists() and here.resolve() == init.resolve():
        return name + " (this student before distillation)"
    return name


def _cell(result: TaskResult, cond: str, metric: str) -> str:
    """One table cell: the value and interval (``-`` when undefined), then ``(n unscored)``
    when ``n`` test items could not be scored, as results.md's cells
    (:func:`downstream.table.interval_cell`)."""
    mv = result.metrics.get(cond, {}).get(metric)
    text = mv.text() if mv else "-"
    if count := result.unscored.get(cond, {}).get(metric):
        text += f" ({count} unscored)"
    return text


def _unscored_note(mine: TaskResult, others: Sequence[TaskResult]) -> str:
    """results.md's sentence explaining ``(n unscored)``
    (:func:`downstream.table.unscored_note`), when a cell of this model's tables (every
    metric) or of a comparison row (the primary metric) has the mark; else ``""``."""
    primary = mine.primary_metric
    shown = [dict(mine.raw, unscored=mine.unscored)] + [
        dict(o.raw, unscored={c: {primary: per[primary]} for c, per in o.unscored.items()
                              if primary in per}) for o in others]
    return unscored_note(shown) or ""


def _primary_table(mine: TaskResult, others: Sequence[TaskResult],
                   run: RunSummary | None = None, labels: dict[int, str] | None = None) -> str:
    """This model's primary metric per condition, then the other upstreams' rows, named by
    ``labels`` (``id(entry)`` -> the label results.md of their file gives them); every row's
    cells marked ``(n unscored)`` as in results.md (:func:`_cell`)."""
    conditions = list(mine.conditions)
    for o in others:
        conditions += [c for c in o.conditions if c not in conditions]
    lines = ["| upstream | " + " | ".join(f"`{c}`" for c in conditions) + " |",
             "|---|" + "---|" * len(conditions)]
    labels = labels or {}
    for i, r in enumerate([mine, *others]):
        name = "**this model**" if i == 0 else _role(r.upstream, run, labels.get(id(r)))
        cells = [_cell(r, c, mine.primary_metric) for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _other_table(mine: TaskResult) -> str:
    names = [m for m in mine.metric_names() if m != mine.primary_metric]
    if not names:
        return ""
    lines = ["| metric | " + " | ".join(f"`{c}`" for c in mine.conditions) + " |",
             "|---|" + "---|" * len(mine.conditions)]
    for name in names:
        cells = [_cell(mine, c, name) for c in mine.conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _split_results(paths: Sequence[str | Path], model_dir: Path, repo_id: str | None,
                   match_upstream: str | None):
    """Per results file: ``(path, this model's entries, the other upstreams' entries,
    labels)``, ``labels`` mapping ``id(entry)`` to the label results.md and compare's rows give
    it (:func:`downstream.entries.upstream_labels` over the file's entries, in file order)."""
    groups = []
    for path in paths:
        entries = load_task_results(path)
        names = {str(model_dir), str(model_dir.resolve())} | {n for n in (repo_id,
                                                                          match_upstream) if n}

        def is_mine(r: TaskResult, _names=names) -> bool:
            if r.upstream in _names:
                return True
            local = Path(r.upstream)
            return local.exists() and local.resolve() == model_dir.resolve()

        mine = [r for r in entries if is_mine(r)]
        if not mine:
            raise CardError(
                f"{path} holds no result for {model_dir} (its upstreams: "
                f"{sorted({r.upstream for r in entries})}); evaluate this model, or pass "
                "--match-upstream NAME if the model was evaluated under another name")
        labels = upstream_labels([{"upstream": r.upstream} for r in entries])
        groups.append((path, mine, [r for r in entries if not is_mine(r)],
                       {id(r): label for r, label in zip(entries, labels, strict=True)}))
    return groups


def _plot(results_path: Path, label: str, taken: set[str]) -> tuple[str, Path] | None:
    """The name (``robustness_<label>.png``, ``_2``, ``_3``... after it when a task before
    this one has that name, compared without case) and the source of the robustness plot beside ``results_path``,
    or None (with a warning) when there is none. Nothing is copied here
    (:func:`copy_plot_files`)."""
    source = Path(results_path).parent / "robustness.png"
    if not source.is_file():
        logger.warning("no robustness.png beside %s: the card has no plot for %s",
                       results_path, label)
        return None
    stem = f"robustness_{re.sub(r'[^A-Za-z0-9_.-]', '_', label)}"
    name, n = f"{stem}.png", 1
    while name.lower() in taken:  # one file on a case-insensitive file system (or the Hub's)
        n += 1
        name = f"{stem}_{n}.png"
    taken.add(name.lower())
    return name, source


def copy_plot_files(views: Sequence[TaskView], model_dir: str | Path) -> list[Path]:
    """Copy each view's robustness plot into ``model_dir`` under its ``plot`` name; called by
    :func:`~robustdistill.publish.card.build_card` once the card has passed its checks, so that
    a refused card leaves no file in the folder (``push`` uploads all of them).

    Returns:
        The files written.
    """
    written = []
    for view in views:
        if view.plot and view.plot_source is not None:
            written.append(Path(model_dir) / view.plot)
            shutil.copyfile(view.plot_source, written[-1])
    return written


def interval_note(tasks: Sequence[TaskResult]) -> str:
    """Where the intervals of ``tasks`` come from (the results file's own, or Wilson score
    intervals over test items), as one clause for the card's text."""
    sources = sorted({mv.interval_source for t in tasks for per in t.metrics.values()
                      for mv in per.values() if mv.interval and mv.interval_source})
    if not sources:
        return "none were available: the results files give none"
    notes = []
    for source in sources:
        if source.startswith("results file: "):
            notes.append(f"from the results file: {source[len('results file: '):]}")
        elif source.startswith("Wilson"):
            note = ("Wilson score 95 % intervals over the test items where the results file "
                    "gives none; they count test-set sampling only, not training seeds")
            if note not in notes:
                notes.append(note)
        else:
            notes.append(source)
    return "; ".join(notes)


def chance_notes(tasks: Sequence[TaskResult]) -> list[str]:
    """One limitation per accuracy task whose interval reaches chance level (1 / classes) under
    some condition: the model is not shown to beat guessing there."""
    notes = []
    for t in tasks:
        classes = (t.raw.get("task_summary") or {}).get("num_classes")
        if not classes or t.primary_metric not in ("accuracy", "macro_accuracy"):
            continue
        chance = 1.0 / classes
        at_chance = [c for c in t.conditions
                     if (mv := t.metrics.get(c, {}).get(t.primary_metric)) and mv.interval
                     and mv.interval[0] <= chance]
        if at_chance:
            notes.append(f"{t.label}: the {t.primary_metric} interval includes chance level "
                         f"({chance:.2f}, {classes} classes) under "
                         + ", ".join(f"`{c}`" for c in at_chance)
                         + ": the model is not shown to be better than guessing there.")
    return notes


def unscored_notes(tasks: Sequence[TaskResult]) -> list[str]:
    """One limitation per task with test items a metric could not score (the results file's
    ``unscored``: e.g. PESQ failed, or SI-SDR is undefined for a silent output), naming each
    condition, metric and count: its value leaves them out and so flatters the model."""
    notes = []
    for t in tasks:
        if not t.unscored:
            continue
        unit = str(t.raw.get("item_unit") or "item")
        seeds = _seeds(t)
        total = (f" of {t.num_items['test']}" if t.num_items.get("test")
                 and (seeds is None or len(seeds) == 1) else "")
        parts = [f"{metric} under `{cond}` on {count}{total}"
                 for cond in t.conditions for metric, count in t.unscored.get(cond, {}).items()]
        notes.append(f"{t.label}: some test {unit}s could not be scored and are left out of "
                     f"the value shown: " + "; ".join(parts)
                     + (" (summed over seeds)" if seeds and len(seeds) > 1 else "")
                     + ". A model that fails (e.g. outputs silence) on some items gets a "
                     "better mean than it deserves there.")
    return notes


def _seeds(task: TaskResult) -> list[Any] | None:
    """The downstream seeds of a result (``seeds``, else ``seed``), None when unrecorded."""
    seeds = task.raw.get("seeds", task.seed)
    if isinstance(seeds, list):
        return seeds or None
    return None if seeds is None else [seeds]


def _seed_text(task: TaskResult) -> str:
    seeds = _seeds(task)
    if seeds is None:
        return "seed not recorded"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(map(str, seeds))} (values are the mean over seeds)"


def seed_count_text(tasks: Sequence[TaskResult]) -> str:
    """How many downstream training seeds the results hold (``one training seed``...)."""
    counts = sorted({len(seeds) for t in tasks if (seeds := _seeds(t))})
    if not counts:
        return "an unrecorded number of training seeds"
    if counts == [1]:
        return "one training seed"
    return f"{' or '.join(map(str, counts))} training seeds"


def task_views(paths: Sequence[str | Path], model_dir: Path, repo_id: str | None,
               match_upstream: str | None, run: RunSummary | None,
               copy_plots: bool = True) -> tuple[list[TaskResult], list[TaskView]]:
    """This model's results in ``paths`` and their views for the card's template.

    Args:
        paths: downstream ``results.json`` files; each must hold this model (its other
            upstreams become comparison rows of the same task).
        model_dir: the student folder; a result is this model's when its ``upstream`` is this
            folder, ``repo_id`` or ``match_upstream``.
        repo_id: the Hub repository the card is for, or None.
        match_upstream: the name this model was evaluated under, or None.
        run: the training run (names the teacher's and the initial student's rows), or None.
        copy_plots: give each view the results folder's ``robustness.png`` as its plot, named
            ``robustness_<label>.png`` (:func:`_plot`); nothing is copied into ``model_dir``
            here: :func:`copy_plot_files` does it once the card is checked.

    Returns:
        ``(tasks, views)``: this model's results, and one :class:`TaskView` each.

    Raises:
        CardError: a results file without this model.
        ValueError: a malformed results file.
        FileNotFoundError: a missing results file.
    """
    tasks: list[TaskResult] = []
    views: list[TaskView] = []
    taken: set[str] = set()
    for path, mine, others, labels in _split_results(list(paths), model_dir, repo_id,
                                                     match_upstream):
        for r in mine:
            tasks.append(r)
            plot = _plot(Path(path), r.label, taken) if copy_plots else None
            compared = [o for o in others if o.task == r.task]
            views.append(TaskView(
                label=r.label, task=r.task, dataset=r.dataset, primary_metric=r.primary_metric,
                higher_is_better=r.higher_is_better, n_test=r.num_items.get("test", "unknown"),
                seed=_seed_text(r), source=str(path), sha1=r.test_set_sha1,
                table=_primary_table(r, compared, run, labels),
                other_table=_other_table(r), plot=plot[0] if plot else None,
                plot_source=plot[1] if plot else None,
                unscored_note=_unscored_note(r, compared)))
    return tasks, views
