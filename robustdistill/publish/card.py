"""Model cards for students, from real results: ``huggingface_hub.ModelCard`` + a template.

``robustdistill card --model DIR --results R.json [R2.json ...] --run RUN_DIR --license L``
writes ``DIR/README.md``: YAML metadata (``ModelCardData``: licence, a Hub licence id or
``other`` with ``--license-name`` and ``--license-link``, see
:func:`~robustdistill.publish.licenses.hub_license`; ``library_name``,
``base_model``, datasets, language, tags, metrics and a ``model-index`` with one ``EvalResult``
per task, condition and metric, and per speaker verification set and metric) and a Markdown
body rendered from a template in ``robustdistill/publish/templates`` (the repository's
``hub_cards/`` is the same folder):
``ssl_student.md``, ``se_student.md``, ``speaker_student.md``. The body gives the results
with intervals, the robustness plot (copied beside the card), size and measured speed, the
training recipe and data provenance, how to load the model, its limits and the papers
(DistilHuBERT, arXiv:2110.01900; RobustDistiller, arXiv:2302.09437; SUPERB, arXiv:2105.01051).

Templates are rendered with ``jinja2.StrictUndefined`` and the result is checked for leftover
template syntax or placeholder text, so a card never ships with a hole in it.

The ``language`` metadata comes from the run unless given
(:func:`~robustdistill.publish.provenance.training_language`): none for generated audio or for
speech whose language the run does not record, ``en`` for a known English corpus (LibriSpeech,
FSDD...); no run, no language. The ``noise-robust`` tag, likewise, only when the run gave the
student corrupted input (:func:`~robustdistill.publish.provenance.student_input_corrupted`):
never without a run.

This module assembles the card; each section's text comes from its own module:
:mod:`~robustdistill.publish.card_results` (Results and the ``model-index``),
:mod:`~robustdistill.publish.card_evaluation` (a speaker card's Evaluation: its verification
results and their ``model-index`` entries), :mod:`~robustdistill.publish.card_training` (the
teacher and the Training section) and :mod:`~robustdistill.publish.card_usage` (How to use).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..environment import ENVIRONMENT_FILE
from ..strict_json import nan_for_null
from .card_evaluation import VerificationResult, verification_eval_results, verification_view
from .card_results import (
    CardError,
    chance_notes,
    check_eval_results,
    copy_plot_files,
    eval_results_for,
    interval_note,
    seed_count_text,
    task_views,
    unscored_notes,
)
from .card_training import (
    early_stop,
    heads_dir_for,
    is_hub_id,
    parameter_count,
    run_view,
    teacher_text,
)
from .card_usage import load_snippets, onnx_inputs
from .licenses import hub_license
from .provenance import (
    DataLanguage,
    ModelFacts,
    RunSummary,
    config_recipe,
    config_section,
    is_synthetic_data,
    is_transformers_config,
    measure_speed,
    model_facts,
    ssl_corruption_kinds,
    student_input_corrupted,
    student_recipe,
    summarise_run,
    training_language,
)
from .results import TaskResult
from .run_weights import (
    best_validation_record,
    check_run_weights,
    is_best_student,
    speaker_checkpoint_weights,
)

__all__ = ["KINDS", "CardError", "build_card", "card_main", "check_no_placeholders",
           "copy_run_files", "eval_results_for", "heads_dir_for", "templates_dir",
           "write_card"]

logger = logging.getLogger(__name__)

#: Card kind -> (template file, pipeline tag, extra tags).
KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ssl": ("ssl_student.md", "feature-extraction", ("self-supervised-learning",)),
    "se": ("se_student.md", "audio-to-audio", ("speech-enhancement",)),
    "speaker": ("speaker_student.md", "feature-extraction", ("speaker-verification",)),
}

_PLACEHOLDERS = re.compile(
    r"\{\{|\}\}|\{%|%\}|\{#|\[More Information Needed\]|\bTODO\b|\bTBD\b|\bFIXME\b|"
    r"\bPLACEHOLDER\b|\bXXX\b|<REPLACE|lorem ipsum", re.IGNORECASE)


def templates_dir() -> Path:
    """The card templates shipped in the package (the repository's ``hub_cards/`` links here)."""
    return Path(__file__).resolve().parent / "templates"


def check_no_placeholders(text: str) -> None:
    """Raise :class:`CardError` naming the first leftover template syntax or placeholder text
    (``{{``, ``{%``, ``[More Information Needed]``, ``TODO``...) in a rendered card."""
    match = _PLACEHOLDERS.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise CardError(f"rendered card still holds placeholder text {match.group(0)!r} "
                        f"on line {line}")


def _abbreviate_home(text: str) -> str:
    """Local paths under the user's home folder written as ``~/...`` in the card's prose: a
    card is published, and ``/home/<user>`` names the person who wrote it. Code blocks keep
    their paths, since ``from_pretrained`` does not expand ``~`` (a card made for a Hub repo
    has its id there, not a local path)."""
    pattern = _home_pattern()
    if pattern is None:
        return text
    parts = re.split(r"(```.*?```)", text, flags=re.DOTALL)  # odd items: fenced code blocks
    return "".join(part if i % 2 else pattern.sub("~", part) for i, part in enumerate(parts))


def _home_pattern() -> re.Pattern | None:
    """The user's home folder as a whole path component (``/home/alice`` in
    ``/home/alice/data``, not in ``/home/alicex``), or None for a home of ``/``."""
    home = str(Path.home()).rstrip("/")
    if len(home) <= 1:
        return None
    return re.compile(r"(?<![\w./-])" + re.escape(home) + r"(?=[/`'\")\s]|$)", re.MULTILINE)


def _tilde(match: re.Match) -> str:
    """``~`` for the home folder in a path (``~/data``), ``~/`` for the home folder itself: a
    bare ``~`` is YAML's null (``output_dir: ~`` would load as None)."""
    rest = match.string[match.end():match.end() + 1]
    return "~" if rest == "/" else "~/"


def _language(language: Sequence[str] | str | None, run: RunSummary | None
              ) -> tuple[list[str], DataLanguage | None]:
    """The card's ``language`` metadata, and the run's :class:`DataLanguage` when the
    metadata comes from it (``language`` None); an explicit ``language`` always wins."""
    derived = training_language(run) if run is not None else None
    if language is None:
        return list(derived.languages) if derived else [], derived
    given = [language] if isinstance(language, str) else list(language)
    if given and derived is not None and derived.synthetic:
        logger.warning("language %s given for a run trained on generated audio, not speech",
                       given)
    return given, None


def _limitations(run: RunSummary | None, tasks: Sequence[TaskResult], student: ModelFacts,
                 notes: Sequence[str], language: DataLanguage | None = None,
                 verification: Sequence[VerificationResult] = (), kind: str = "ssl"
                 ) -> list[str]:
    items = list(notes)
    if run is not None:
        # the checkpoint's step; the step a run that stopped early stopped at; else max_steps
        # (none for train-speaker, which counts epochs: its stop's step is not its weights')
        steps = run.final_state.get("step") if run.final_state.get("checkpoint") else None \
            if run.recipe == "speaker" else (
                run.stopped.get("step", (run.config.get("training") or {}).get("max_steps")))
        if is_synthetic_data(run.config):
            items.append("It was distilled on generated speech-like signals, not on speech: "
                         "its features are not expected to be useful for real speech tasks.")
        if language is not None and not language.languages:
            items.append(f"No language is tagged: {language.reason}.")
        stop = early_stop(run)  # skipped non-finite steps change no weight: not training
        weights_of = stop[1] if stop is not None else None
        if isinstance(steps, int) and weights_of is not None and weights_of < steps <= stop[0]:
            skipped = (f"step {steps} was" if steps == weights_of + 1
                       else f"steps {weights_of + 1}-{steps} were")
            size = (f"a CPU-sized run; {skipped} skipped for a NaN/Inf loss or gradient, and "
                    f"the run stopped at step {stop[0]}")
            steps = weights_of
        else:
            size = "a CPU-sized run"
        if isinstance(steps, int) and steps < 10000:
            items.append(f"It was trained for only {steps} steps ({size})"
                         + ("; the papers' recipes train for about 200k steps."
                            if run.recipe == "ssl" else "."))
    else:
        items.append("The training run was not given to the card: its recipe and data are not "
                     "documented here.")
    if tasks:
        sizes = sorted({t.num_items.get("test") for t in tasks if t.num_items.get("test")})
        if sizes:
            items.append(f"Downstream results come from {', '.join(map(str, sizes))} test items "
                         f"per condition and {seed_count_text(tasks)} of the downstream head: "
                         "the intervals are wide, and differences inside them are not "
                         "resolved.")
        items.append("Robustness was measured only under the conditions listed, with the test "
                     "noises and rooms of those runs; other noises, rooms, microphones, "
                     "languages and accents are untested.")
        items += chance_notes(tasks)
        items += unscored_notes(tasks)
    elif kind == "speaker" and verification:
        items.append("No downstream (SUPERB) results were given: it is measured only by the "
                     "speaker verification of the Evaluation section.")
    else:
        items.append("No downstream results were given: its usefulness is not measured here.")
    if verification:
        items.append("Speaker verification was measured on clean recordings only (no noise or "
                     "reverberation), on " + ", ".join(f"`{r.name}`" for r in verification)
                     + ", with one set of trials and no interval: small sets resolve only "
                     "large differences in EER and minDCF.")
    if student.receptive_field:
        items.append(f"It expects 16 kHz mono audio; its CNN front end gives no frame for inputs "
                     f"shorter than its receptive field ({student.receptive_field} samples, "
                     f"{student.receptive_field / 16:.0f} ms).")
    else:
        items.append("It expects 16 kHz mono audio.")
    return items


def build_card(model_dir: str | Path, results: Sequence[str | Path] = (),
               run_dir: str | Path | None = None, *, license: str,
               license_name: str | None = None, license_link: str | None = None,
               kind: str | None = None,
               repo_id: str | None = None, base_model: str | None = None,
               datasets: Sequence[str] = (), language: Sequence[str] | str | None = None,
               tags: Sequence[str] = (), notes: Sequence[str] = (),
               speed: bool | Sequence[dict[str, float]] = True,
               match_upstream: str | None = None, copy_plots: bool = True,
               step: int | None = None):
    """Build the ``huggingface_hub.ModelCard`` of a student folder (not yet written).

    Args:
        model_dir: the student folder (``config.json``, weights, ``preprocessor_config.json``).
        results: downstream ``results.json`` files (one run each, or ``compare`` output); the
            entries of other upstreams in them become comparison rows.
        run_dir: the training run's ``output_dir`` (``config.yaml``, ``final_state.json``,
            ``metrics.jsonl``, ``heads/``) of ``robustdistill distill``, ``train-se`` or
            ``train-speaker`` (told apart by the config's keys, else taken from ``kind``); None
            to leave the recipe out (the card says so).
        license: Hub licence id (``apache-2.0``, ``mit``... or ``other``; case is ignored and
            the card writes it lower-case, :func:`~robustdistill.publish.licenses.hub_license`);
            a student distilled from a teacher is bound by the teacher's licence.
        license_name: with ``license="other"`` (and only then, required): the licence's name,
            the card's ``license_name``.
        license_link: with ``license="other"`` (and only then, required): an ``http(s)`` URL
            of the licence's text or the path of its file in ``model_dir`` (one that ``push``
            uploads), the card's ``license_link``.
        kind: a key of :data:`KINDS` (template and pipeline tag); None (the default): the
            trainer of ``run_dir`` (:func:`~robustdistill.publish.provenance.run_recipe`:
            ``ssl`` for ``distill``, ``se`` for ``train-se``, ``speaker`` for
            ``train-speaker``); without a run, or one whose ``config.yaml`` does not show its
            trainer, the student's ``model_type``
            (:func:`~robustdistill.publish.provenance.student_recipe`: a ``train-se`` or
            ``train-speaker`` student's own); else ``ssl``.
        repo_id: the Hub repository the card is for (names it in the loading code).
        base_model: Hub id of the teacher; default the run's teacher when it is a hub id.
        datasets: Hub dataset ids for the metadata (the text always gives the data paths).
        language: ISO 639-1 codes for the metadata; None (the default) takes them from the
            run (:func:`~robustdistill.publish.provenance.training_language`: none for
            generated audio or speech of unrecorded language, ``en`` for a known English
            corpus such as LibriSpeech or FSDD; none without a run); ``()`` for no language.
        tags: metadata; adds to the defaults.
        notes: extra limitations, one sentence each.
        speed: True to time the model here (:func:`measure_speed`; skipped, with a warning,
            for a folder ``transformers`` cannot load such as an SE student), False for none,
            or rows as :func:`measure_speed` returns (e.g. from an idle benchmark machine).
        match_upstream: the ``upstream`` string this model was evaluated under, when it is
            neither ``model_dir`` nor ``repo_id``.
        copy_plots: copy each results folder's ``robustness.png`` into ``model_dir`` (as
            ``robustness_<label>.png``), once the card has passed every check: a refused card
            writes nothing into ``model_dir``.
        step: the training step of the weights when they are a checkpoint of ``run_dir``,
            not its end (see :func:`~robustdistill.publish.provenance.summarise_run`).

    Returns:
        A ``ModelCard`` whose ``data.eval_results`` holds one ``EvalResult`` per task,
        condition and metric of this model (dataset config ``<task label>-<condition>``,
        :func:`~robustdistill.publish.card_results.task_config`), and (``kind="speaker"``) per
        verification set and metric of the run's ``result.json``. Its tags hold
        ``noise-robust`` only when the run corrupted the student's input
        (:func:`~robustdistill.publish.provenance.student_input_corrupted`).

    Raises:
        CardError: unknown kind, a ``run_dir`` written by another trainer than ``kind``'s
            (:func:`~robustdistill.publish.provenance.run_recipe`), or a ``train-se`` /
            ``train-speaker`` student (its ``model_type``) with another ``kind``; ``step``
            with a ``train-speaker`` run (it counts epochs); a licence
            that is not a Hub id, ``other`` without a name and a link, or a link to a file
            ``push`` does not upload (:func:`~robustdistill.publish.licenses.hub_license`); weights that are not the
            student ``run_dir`` trained (at ``step``;
            :func:`~robustdistill.publish.run_weights.check_run_weights`); a results file
            without this model; two task labels or conditions that give one ``model-index`` config in one
            Hub group (:func:`~robustdistill.publish.card_results.eval_results_for`);
            placeholder text left; or ``model-index`` entries that do not read back from the
            card's metadata as built (two of them merged into one Hub group). Nothing is
            written into ``model_dir`` then.
        ValueError: a malformed results file, run config or model ``config.json``.
        FileNotFoundError: no model folder, results file or run config.
    """
    import jinja2
    from huggingface_hub import ModelCard, ModelCardData

    if kind is not None and kind not in KINDS:
        raise CardError(f"unknown card kind {kind!r}; known: {sorted(KINDS)}")
    model_dir = Path(model_dir)
    license = hub_license(license, license_name, license_link, model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved student folder")
    student = model_facts(model_dir)
    library_transformers = is_transformers_config(model_dir)
    trainers = {"ssl": "distill", "se": "train-se", "speaker": "train-speaker"}
    saved = student_recipe(model_dir)  # a train-se / train-speaker student says so itself
    given = kind
    run = (summarise_run(run_dir, step=step, kind=kind or saved or "ssl")
           if run_dir is not None else None)
    if kind is None:  # the run's trainer, else the student's model_type, says which card
        shown = config_recipe(run.config) if run is not None else None
        kind = shown or saved or "ssl"
        logger.info("card kind %s (%s)", kind, "the run's trainer" if shown else
                    f"the student's model_type {student.model_type}" if saved else
                    "neither a run nor the student's model_type shows a trainer: assumed")
    if run is not None and run.recipe != kind:  # the template would describe another model
        raise CardError(f"{run_dir} is a `{trainers[run.recipe]}` run: its student's card is "
                        f"--kind {run.recipe}, not --kind {kind}")
    if saved in ("se", "speaker") and saved != kind:  # an SSL card of an SE student, say
        raise CardError(f"{model_dir} holds a `{trainers[saved]}` student: its card is --kind "
                        f"{saved}, not --kind {kind}"
                        + ("" if given else f" (--run {run_dir} is a "
                                              f"`{trainers[kind]}` run)"))
    if run is not None and run.recipe == "speaker" and step is not None:
        raise CardError(f"--step {step}: a `train-speaker` run counts epochs, not steps; card "
                        f"its student ({run_dir}/student) without --step (a run that did not "
                        f"finish is carded from a checkpoint's student: robustdistill "
                        f"train-speaker export --run {run_dir} --checkpoint NAME)")
    if run is not None:  # refuses another run's training (a mistyped --run)
        if (found := speaker_checkpoint_weights(model_dir, run)) is not None:
            # a train-speaker run that exported no student: the card says which checkpoint
            from ..speaker.run_folder import checkpoint_progress

            checkpoint, checked = found
            epochs, batches = checkpoint_progress(checkpoint)
            run = dataclasses.replace(run, final_state={
                **run.final_state, "checkpoint": checkpoint.name, "epochs_done": epochs,
                "batches_done": batches})
        else:
            checked = check_run_weights(model_dir, run, step)
        logger.info("%s", checked)
        if step is None and is_best_student(model_dir, run):  # the card says which step
            run = dataclasses.replace(run, final_state={
                **run.final_state, "card_weights": "best_student",
                "best_validation": best_validation_record(run)})
    if base_model is None and run is not None and run.teacher_dir is None \
            and is_hub_id(run.teacher):
        base_model = run.teacher
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name

    tasks, views = task_views(results, model_dir, repo_id, match_upstream, run, copy_plots)
    task_results = eval_results_for(tasks, model_name)  # before timing: refuses config clashes

    if speed is True and not library_transformers:
        logger.warning("%s is not a transformers model: its speed is not measured for the card "
                       "(pass rows with --speed-json)", model_dir)
        speed = False
    if speed is True:
        rows = measure_speed(model_dir)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        speed_source = (f"measured when this card was written ({platform.machine()} CPU, "
                        f"{os.cpu_count()} cores, 1-minute load average {load:.1f}, "
                        f"{rows[0]['threads']} torch thread(s), random audio)")
    else:
        rows = list(speed) if speed else []
        speed_source = "as supplied to `robustdistill card --speed-json`"
    ref = repo_id or str(model_dir)
    onnx_file = model_dir / "onnx" / "model.onnx"
    load, onnx = load_snippets(ref, library_transformers,
                                onnx_inputs(onnx_file, model_dir) if onnx_file.is_file()
                                else None, kind)
    parity_file = model_dir / "onnx" / "parity.json"
    onnx_parity = ""
    if onnx and parity_file.is_file():
        report = nan_for_null(json.loads(parity_file.read_text()))  # null: non-finite
        onnx_parity = (f"Its hidden states were checked against PyTorch with onnxruntime on "
                       f"{report['num_waveforms']} waveforms ({report['audio']}): largest "
                       f"difference {report['max_abs_diff']:.2g} for values up to "
                       f"{report['max_abs_value']:.2g} (tolerance {report['atol']:g} + "
                       f"{report['rtol']:g} x |value|, elementwise, every layer).")
    languages, derived_language = _language(language, run)
    verification = verification_view(run) if kind == "speaker" else None
    eval_results = task_results + (verification_eval_results(run) if verification else [])
    metric_names = sorted({m for t in tasks for per in t.metrics.values() for m in per}
                          | {r.metric_type for r in eval_results})
    # the tag and the intro's robustness claim: only for a run that corrupted the student's input
    noise_robust = run is not None and student_input_corrupted(run)
    # what the intro says the student is robust to: the kinds a distill run corrupted with
    robust_to = (" and ".join(ssl_corruption_kinds(config_section(run.config, "augmentation")))
                 if noise_robust and kind == "ssl" else "")
    card_data = ModelCardData(
        license=license, license_name=license_name, license_link=license_link,
        library_name="transformers" if library_transformers else None,
        base_model=base_model, datasets=list(datasets) or None, language=languages or None,
        metrics=metric_names or None, pipeline_tag=KINDS[kind][1], model_name=model_name,
        tags=list(dict.fromkeys(["audio", "speech", "knowledge-distillation", "robustdistill",
                                 *(["noise-robust"] if noise_robust else []),
                                 student.model_type, *KINDS[kind][2], *tags])),
        eval_results=eval_results or None)
    training = run_view(run, heads_dir_for(model_dir, run.run_dir)) if run else None
    context = {
        "card_data": card_data.to_yaml(), "model_name": model_name, "student": student,
        "kind": kind,
        "teacher_text": teacher_text(run, base_model), "noise_robust": noise_robust, "robust_to": robust_to,
        "distilled": run is None or training["distilled"],
        "teacher_params": run.teacher_facts.parameters if run and run.teacher_facts else None,
        "load_snippet": load, "onnx_snippet": onnx, "onnx_parity": onnx_parity,
        "tasks": views, "verification": verification,
        "results_title": "Downstream results" if kind == "speaker" else "Results",
        "interval_note": interval_note(tasks), "speed": rows, "speed_source": speed_source,
        "run": training,
        "limitations": _limitations(run, tasks, student, notes, derived_language,
                                    verification["rows"] if verification else (), kind),
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    env.filters["parameter_count"] = parameter_count
    try:
        text = env.get_template(KINDS[kind][0]).render(**context)
    except jinja2.UndefinedError as err:
        raise CardError(f"template {KINDS[kind][0]} uses an unknown field: {err}") from err
    text = re.sub(r"\n{3,}", "\n\n", text)
    text = _abbreviate_home(text)
    check_no_placeholders(text)
    card = ModelCard(text, ignore_metadata_errors=False)
    # the metadata as the Hub reads it: model-index entries merged into another's group would
    # come back under that entry's task name
    check_eval_results(eval_results, card.data.eval_results or [], "the card's metadata")
    copy_plot_files(views, model_dir)  # only now: a refused card leaves the folder as it was
    return card


def copy_run_files(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Copy the run's resolved config (as ``training_config.yaml``), its software record
    (``environment.json``, as ``training_environment.json``, when the run has one) and the
    heads saved with these weights (:func:`heads_dir_for`) into the model folder, so that the
    folder is exactly what is published. In both files, paths under the user's home folder
    are written ``~/...``, as in the card's prose (the run's own files keep them whole).

    Returns:
        The files written.

    Raises:
        FileNotFoundError: no ``config.yaml`` in ``run_dir``.
    """
    run_dir, model_dir = Path(run_dir), Path(model_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir / 'config.yaml'} not found")
    pattern = _home_pattern()  # published: /home/<user> names its author, as in the card
    written = []
    for source, name in (("config.yaml", "training_config.yaml"),
                         (ENVIRONMENT_FILE, "training_environment.json")):
        if (run_dir / source).is_file():  # the environment (with any config_changes): if any
            text = (run_dir / source).read_text()
            written.append(model_dir / name)
            written[-1].write_text(text if pattern is None else pattern.sub(_tilde, text))
    heads = heads_dir_for(model_dir, run_dir)
    if heads is not None and heads.resolve() != (model_dir / "heads").resolve():
        (model_dir / "heads").mkdir(exist_ok=True)
        for head in sorted(heads.iterdir()):
            if head.is_file() and head.suffix in (".safetensors", ".json"):
                shutil.copyfile(head, model_dir / "heads" / head.name)
                written.append(model_dir / "heads" / head.name)
    return written


def write_card(model_dir: str | Path, results: Sequence[str | Path] = (),
               run_dir: str | Path | None = None, **kwargs) -> Path:
    """:func:`build_card`, then save it as ``MODEL_DIR/README.md`` (with the run's
    ``training_config.yaml`` and ``heads/`` copied beside it, :func:`copy_run_files`) and check
    that ``ModelCard.load`` reads the same ``model-index`` back: every entry's task type and
    name, dataset type, name, config and split, metric type and name, and value
    (:func:`~robustdistill.publish.card_results.check_eval_results`).

    Returns:
        The README path.

    Raises:
        As :func:`build_card`; :class:`CardError` when the saved card does not read back.
    """
    from huggingface_hub import ModelCard

    card = build_card(model_dir, results, run_dir, **kwargs)
    if run_dir is not None:
        copy_run_files(run_dir, model_dir)
    path = Path(model_dir) / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    got = loaded.data.eval_results or []
    check_eval_results(card.data.eval_results or [], got, str(path))
    logger.info("model card written to %s (%d eval results)", path, len(got))
    return path


#: The numbers each ``--speed-json`` row needs (what :func:`measure_speed` writes), all > 0.
SPEED_KEYS = ("seconds", "median_s", "real_time_factor")


def read_speed_rows(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``--speed-json`` file, checked before they are published in a card.

    Returns:
        A non-empty list of ``{"seconds", "median_s", "real_time_factor", ...}`` dicts as
        :func:`measure_speed` returns them (``threads``, when given, an integer >= 1).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not a non-empty list of objects, or a row whose ``seconds``,
            ``median_s`` or ``real_time_factor`` is missing or not a finite number > 0
            (a NaN or negative timing was printed into the card as it was), or whose
            ``threads`` is not an integer >= 1; the file and the row named.
    """
    import math

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--speed-json file not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--speed-json {path}: not valid JSON ({err})") from err
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"--speed-json {path}: expected a non-empty JSON list of "
                         "{seconds, median_s, real_time_factor, threads} objects")
    for i, row in enumerate(rows):
        for key in SPEED_KEYS:
            value = row.get(key)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value <= 0):
                raise ValueError(f"--speed-json {path}: row {i}: {key} must be a finite number "
                                 f"> 0, got {value!r}")
        threads = row.get("threads", 1)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"--speed-json {path}: row {i}: threads must be an integer >= 1, "
                             f"got {threads!r}")
    return rows


def card_main(argv: list[str]) -> int:
    """``robustdistill card --model DIR --results R.json ... --run RUN_DIR --license L``."""
    parser = argparse.ArgumentParser(prog="robustdistill card",
                                     description="Write DIR/README.md, a Hub model card built "
                                                 "from real results.")
    parser.add_argument("--model", required=True, help="the student folder")
    parser.add_argument("--results", nargs="*", default=[], help="downstream results.json files")
    parser.add_argument("--run", default=None, help="the distillation run's output_dir")
    parser.add_argument("--license", required=True,
                        help="Hub licence id, e.g. apache-2.0 (case is ignored), or other with "
                             "--license-name and --license-link")
    parser.add_argument("--license-name", default=None,
                        help="with --license other: the licence's short name")
    parser.add_argument("--license-link", default=None,
                        help="with --license other: a URL of the licence's text, or its file "
                             "in the model folder that push uploads (e.g. LICENSE)")
    parser.add_argument("--kind", default=None, choices=sorted(KINDS),
                        help="the card's template: ssl (a distill student), se (a train-se "
                             "student) or speaker (a train-speaker student); default: the "
                             "trainer of --run, else the student's own (a train-se or "
                             "train-speaker student's model_type), else ssl")
    parser.add_argument("--repo-id", default=None, help="ORG/NAME the card is for")
    parser.add_argument("--base-model", default=None, help="the teacher's Hub id")
    parser.add_argument("--dataset", action="append", default=[], help="Hub dataset id (repeat)")
    parser.add_argument("--language", nargs="*", default=None,
                        help="ISO 639-1 code(s) for the metadata; default from the run: none "
                             "for generated audio or speech of unrecorded language, en for a "
                             "known English corpus (LibriSpeech, FSDD); --language with no "
                             "code: none")
    parser.add_argument("--tag", action="append", default=[], help="extra tag (repeat)")
    parser.add_argument("--note", action="append", default=[], help="extra limitation (repeat)")
    parser.add_argument("--match-upstream", default=None,
                        help="the upstream name this model has in the results files")
    parser.add_argument("--step", type=int, default=None,
                        help="training step of the weights when they are a checkpoint of --run")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--no-speed", action="store_true", help="do not time the model")
    speed.add_argument("--speed-json", default=None,
                       help="JSON list of {seconds, median_s, real_time_factor, threads}")
    args = parser.parse_args(argv)
    rows: bool | list = not args.no_speed
    try:
        if args.speed_json:
            rows = read_speed_rows(args.speed_json)
        path = write_card(args.model, args.results, args.run, license=args.license,
                          license_name=args.license_name, license_link=args.license_link,
                          kind=args.kind, repo_id=args.repo_id, base_model=args.base_model,
                          datasets=args.dataset, language=args.language, tags=args.tag,
                          notes=args.note, speed=rows, match_upstream=args.match_upstream,
                          step=args.step)
    except (ValueError, FileNotFoundError) as err:  # CardError, malformed results or config
        parser.error(str(err))
    print(path)
    return 0
