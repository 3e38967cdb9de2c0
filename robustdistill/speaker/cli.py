"""``robustdistill train-speaker {train,table,cache,gap,export}`` (:func:`main`): the command
line, every check that can be made before any work (a one-line usage error, exit 2), the inputs,
then :func:`.train.train_system`, :func:`.table.run_table`, :func:`.ig.fill_cache`,
:func:`.ig.completeness_by_steps` or :func:`.export.export_checkpoint`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from downstream.config import load_config
from robustdistill.config import check_model_path, parse_overrides
from robustdistill.files import file_blocking_folder
from robustdistill.interrupts import note
from robustdistill.messages import first_line
from robustdistill.processes import print_stop, require_single_process
from robustdistill.strict_json import strict_dumps

from .config import SpeakerKDConfig
from .data import SpeakerDataError
from .ig import (
    GAP_CROPS,
    GAP_STEPS,
    completeness_by_steps,
    fill_cache,
    load_ig_inputs,
    parse_gap_steps,
)
from .inputs import TeacherLoadError, load_run_inputs
from .run_folder import check_run_folder, newest_checkpoint_note
from .table import finished_run, format_table, reuse_awaits_inputs, run_table, table_runs
from .train import NonFiniteLossError, train_system

__all__ = ["main"]

T = TypeVar("T")


def main(argv: list[str]) -> int:
    """``robustdistill train-speaker {train,table,cache,gap} --config FILE [--section.key value]``,
    ``robustdistill train-speaker export --run RUN [--checkpoint NAME] [--out DIR]
    [--overwrite]``.

    ``export`` writes the student of a checkpoint of run folder ``RUN`` (default its newest
    complete one) as the model folder a finished run writes to ``RUN/student``
    (:func:`.export.export_checkpoint`; default ``--out``: ``RUN/exports/NAME/student``), for
    ``card --run RUN --kind speaker`` of a run stopped at a NaN/Inf step or by a SIGTERM; it
    reads ``RUN/config.yaml``, so it takes no ``--config`` or ``--section.key`` overrides, and
    ``--run``, ``--checkpoint``, ``--out`` and ``--overwrite`` are read by it only. Its errors
    (a missing run, config or checkpoint, a checkpoint that is not one of the run's complete
    ones, another method's or shape's checkpoint, weights holding NaN/Inf or of another dtype
    than float32, another trainer's ``config.yaml`` (named), an output folder that holds files, is
    ``RUN/student`` or lies elsewhere in ``RUN``, not under ``RUN/exports/``) are one usage
    line, exit 2, before anything is written.

    ``cache`` computes every training map into ``ig.cache_dir`` once and prints its time and
    completeness gaps; ``gap --steps 4,8,16,32 --crops 4`` prints the completeness gap of a few
    crops' maps at each ``n_steps`` (defaults :data:`GAP_STEPS`, :data:`GAP_CROPS`; all the
    crops when there are fewer). ``--steps`` and ``--crops`` are read by ``gap`` only: the other
    actions refuse them rather than ignore them.

    Start-up problems end in a one-line parser error (exit 2), before any training or
    attribution, in every action: a config that is missing, empty, not valid YAML or holds a
    bad value; ``--steps`` or ``--crops`` given to an action other than ``gap``; ``gap``'s
    ``--steps`` not integers ``>= 2`` or ``--crops`` below 1; ``cache``
    with ``ig.use_cache false``; an output or cache folder that is a file; a missing or foreign
    teacher file (or no resemblyzer package); a missing ``student.upstream`` folder, or one that
    is not a model folder (no readable ``config.json``); a missing
    data folder; a set unusable once its bad files are skipped; a verification speaker seen in
    training; a fresh run into a run folder with an earlier run's checkpoints, or a resume of
    one trained with other settings (:func:`check_run_folder`). An error once the work has
    started (a ``FileNotFoundError`` hours in) keeps its traceback. Unusable audio files are skipped with
    a warning naming each (counted in ``result.json``'s ``skipped_files``). What depends on
    those skips (a checkpoint or finished table run from before ``data.min_length_s`` /
    ``data.min_test_length_s``) is checked once the inputs are loaded, before any training
    (:func:`_check_run_folders_with_inputs`). A ``train`` or ``table`` run that diverges (a
    NaN/Inf loss, gradient or weights: :class:`.train.NonFiniteLossError`) ends in one line
    naming the step and the newest checkpoint, exit status 1, recorded in the run's
    ``stopped.json`` (:func:`.train._stop_nonfinite`)."""
    from robustdistill.config_reference import config_reference

    parser = argparse.ArgumentParser(
        prog="robustdistill train-speaker", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="IML-KD speaker students. Every key of the recipe can be overridden as "
                    "--section.key value; the keys, their types and defaults:",
        epilog=config_reference(SpeakerKDConfig))
    parser.add_argument("action", choices=["train", "table", "cache", "gap", "export"])
    parser.add_argument("--config",
                        help="YAML recipe (configs/imlkd_speaker.yaml); other --section.key "
                             "value pairs override it (all actions but export)")
    parser.add_argument("--steps", help="gap only: the IG n_steps values (each >= 2), "
                        f"comma-separated (default {GAP_STEPS})")
    parser.add_argument("--crops", type=int, help=f"gap only: number of crops (>= 1, default "
                        f"{GAP_CROPS}; all of them when there are fewer)")
    parser.add_argument("--run", help="export only: the run folder (training.output_dir)")
    parser.add_argument("--checkpoint", help="export only: the checkpoint (epoch_N, "
                        "epoch_N_batch_B, or its folder; default: the newest complete one)")
    parser.add_argument("--out", help="export only: a new or empty folder (default "
                        "RUN/exports/CHECKPOINT/student)")
    parser.add_argument("--overwrite", action="store_true",
                        help="export only: remove what --out holds before writing")
    args, rest = parser.parse_known_args(argv)
    # None: not given. Only gap reads them; elsewhere they would be ignored, silently.
    if args.action != "gap" and (given := [f"--{k}" for k in ("steps", "crops")
                                           if getattr(args, k) is not None]):
        parser.error(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} read by gap "
                     f"only, not by {args.action}")
    if args.action == "export":
        return _export(parser, args, rest)
    if given := [f"--{k}" for k in ("run", "checkpoint", "out", "overwrite")
                 if getattr(args, k) not in (None, False)]:
        parser.error(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} read by "
                     f"export only, not by {args.action}")
    if args.config is None:
        parser.error("the following arguments are required: --config")
    try:
        require_single_process("robustdistill train-speaker")
        cfg = load_config(args.config, SpeakerKDConfig, parse_overrides(rest))
        if cfg.student.kind == "upstream":
            check_model_path(cfg.student.upstream, "student.upstream",
                             "robustdistill create-student --teacher ID_OR_DIR --out DIR")
            _check_model_folder(cfg.student.upstream, "student.upstream")
        steps: list[int] = []
        num_crops = GAP_CROPS if args.crops is None else args.crops
        if args.action == "gap":
            steps = parse_gap_steps(GAP_STEPS if args.steps is None else args.steps)
            if num_crops < 1:
                raise ValueError(f"--crops must be >= 1, got {num_crops}")
        if args.action == "cache" and not cfg.ig.use_cache:
            raise ValueError("cache fills ig.cache_dir, but ig.use_cache is false")
        for key, folder in _folders_written(cfg, args.action):
            _check_folder(key, folder)
        # a run folder holding another run: refused now, not after the inputs are loaded
        if args.action == "train":  # log=False: the run's own check logs (train_system)
            check_run_folder(cfg, log=False)
        if args.action == "table":  # a run from before data.min_length_s: once inputs load
            for _, run_cfg in table_runs(cfg):
                if finished_run(run_cfg, log=False) is not None:
                    continue  # reused: the table logs why where that is not plain
                finished_run(run_cfg)  # logs why a finished run is not reused
                if not reuse_awaits_inputs(run_cfg):
                    check_run_folder(run_cfg, "table.output_dir", log=False)
    except (ValueError, FileNotFoundError) as err:  # ConfigError is a ValueError
        parser.error(str(err))
    # Inputs are loaded first: an input error ends in one line, not a traceback. The work runs
    # outside that handler, so an error hours in (a cache folder deleted) keeps its traceback.
    # A Ctrl-C or SIGTERM: one line naming where the work is (robustdistill.interrupts).
    with note(lambda: _interrupt_note(cfg, args.action)):
        if args.action == "gap":
            inputs = _load_or_exit(parser, lambda: load_ig_inputs(cfg, 1))
            print(strict_dumps(completeness_by_steps(cfg, steps, num_crops, inputs), indent=1))
            return 0
        if args.action == "cache":
            inputs = _load_or_exit(parser, lambda: load_ig_inputs(cfg))
            print(strict_dumps(fill_cache(cfg, inputs=inputs), indent=1))
            return 0
        run_inputs = _load_or_exit(parser, lambda: load_run_inputs(cfg))
        _check_run_folders_with_inputs(parser, cfg, args.action, run_inputs[3])
        try:
            if args.action == "table":
                print(format_table(run_table(cfg, run_inputs)))
                return 0
            teacher, crops, sets, skipped = run_inputs
            result = train_system(cfg, teacher, crops, sets, skipped_files=skipped)
        except NonFiniteLossError as err:  # a run that diverged: one line, its checkpoints kept
            print_stop(parser.prog, str(err))
            return 1
        print(strict_dumps(result.get("eval", {}), indent=1))
        return 0


def _export(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str]) -> int:
    """``train-speaker export``: :func:`.export.export_checkpoint` of ``--run``; prints what
    it wrote as JSON. Every refusal is one usage line (exit 2), before anything is written."""
    from robustdistill.files import OutputFolderError

    from .export import export_checkpoint

    if args.config is not None:
        parser.error("export reads RUN/config.yaml, the run's own: --config is not read by "
                     "export")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)} (export builds the student as "
                     "RUN/config.yaml describes it: no --section.key overrides)")
    if args.run is None:
        parser.error("export needs --run RUN, the run folder (training.output_dir)")
    try:
        require_single_process("robustdistill train-speaker")
        done = export_checkpoint(args.run, args.checkpoint, args.out, args.overwrite)
    except (ValueError, FileNotFoundError, OutputFolderError) as err:
        parser.error(first_line(err))
    print(strict_dumps(done, indent=1))
    return 0


def _check_run_folders_with_inputs(parser: argparse.ArgumentParser, cfg: SpeakerKDConfig,
                                   action: str, skipped: dict[str, dict[str, str]]) -> None:
    """The run-folder checks that need the loaded inputs' skipped files (``too short`` ones:
    a run or checkpoint from before ``data.min_length_s`` / ``data.min_test_length_s``):
    ``train``'s resume (:func:`check_run_folder`), and ``table``'s runs of before those keys
    (reused only when unchanged, :func:`.table.finished_run`; else checked as a run to train);
    a refusal ends in one usage line (exit 2), before any training."""
    try:
        if action == "train":
            check_run_folder(cfg, skipped=skipped, log=False)
        for _, run_cfg in table_runs(cfg) if action == "table" else []:
            if reuse_awaits_inputs(run_cfg) and finished_run(run_cfg, skipped, log=False) is None:
                try:
                    check_run_folder(run_cfg, "table.output_dir", skipped, log=False)
                except ValueError:
                    finished_run(run_cfg, skipped)  # logs why it is not reused (else: the table)
                    raise
    except ValueError as err:
        parser.error(str(err))


def _interrupt_note(cfg: SpeakerKDConfig, action: str) -> str:
    """The note of an interrupted ``train-speaker ACTION`` (:func:`robustdistill.interrupts.
    note`): ``train``: the run's newest complete checkpoint (``checkpoints/epoch_N``, or
    ``epoch_N_batch_B`` saved inside an epoch for a SIGTERM) and ``--training.resume true``
    (a SIGTERM that :func:`.train.train_system` saved a checkpoint for gives its own note);
    ``table``: the finished runs of ``table.output_dir`` stay, and the same command with
    ``--training.resume true`` reuses them and resumes the one interrupted; ``cache``: the maps
    complete in ``ig.cache_dir`` stay (each is written whole), the same command computes the
    rest; ``gap`` writes nothing. Reads the disk only."""
    if action == "train":
        return "; " + newest_checkpoint_note(Path(cfg.training.output_dir),
                                             "resume with --training.resume true")
    if action == "table":
        return (f"; the finished runs in {cfg.table.output_dir} stay: the same command with "
                "--training.resume true reuses them and resumes the interrupted one from its "
                "newest checkpoint")
    if action == "cache":
        return (f"; the maps complete in {cfg.ig.cache_dir} stay (each is written whole): the "
                "same command computes the rest")
    return ""


def _folders_written(cfg: SpeakerKDConfig, action: str) -> list[tuple[str, str]]:
    """``(key, folder)`` of each folder ``action`` creates (``gap`` creates none; every run
    of ``train`` and ``table`` opens the map cache, whatever its method)."""
    if action == "gap":
        return []
    out = [("ig.cache_dir", cfg.ig.cache_dir)] if cfg.ig.use_cache else []
    if action == "train":
        out.append(("training.output_dir", cfg.training.output_dir))
    if action == "table":
        out.append(("table.output_dir", cfg.table.output_dir))
    return out


def _check_folder(key: str, folder: str) -> None:
    """Raise ValueError naming ``key`` when ``folder`` or the nearest of its existing parents
    is not a folder (``mkdir`` would fail with a traceback once the work starts)."""
    if (blocking := file_blocking_folder(folder)) is not None:
        raise ValueError(f"{key} {folder!r}: {blocking} is a file, not a folder")


def _check_model_folder(name: str, key: str) -> None:
    """Raise ValueError naming ``key`` when ``name`` is a local folder whose ``config.json``
    ``transformers`` cannot read as a model's (no config, no ``model_type``, an architecture it
    does not know, such as a train-se student; one that needs code of its own is said to:
    :func:`~robustdistill.upstream.custom_code_problem`): found at start-up, not once the
    teacher's targets are computed and the student is built; likewise a ``*.safetensors`` file whose
    header cannot be read (weights cut short by an interrupted copy: a traceback once the IG
    maps were computed)."""
    if not Path(name).expanduser().is_dir():
        return  # a hub id: resolved when the student is built
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig

    from robustdistill.upstream import custom_code_problem

    try:
        AutoConfig.from_pretrained(name, trust_remote_code=False)  # None: transformers asks y/N
        for weights in sorted(Path(name).expanduser().glob("*.safetensors")):
            with safe_open(weights, "pt"):  # the header only: its sizes against the file's
                pass
    except (OSError, ValueError, SafetensorError) as err:
        if (problem := custom_code_problem(name)) is not None:
            raise ValueError(f"{key} {name!r} {problem[0]}") from err
        raise ValueError(f"{key} {name!r} is not a model folder: "
                         f"{first_line(err) or type(err).__name__}") from err


def _load_or_exit(parser: argparse.ArgumentParser, load: Callable[[], T]) -> T:
    """``load()``; an input error (a missing folder or teacher, no usable audio, resemblyzer
    not installed) ends the command in one usage line (exit 2) instead of a traceback."""
    try:
        return load()
    except (FileNotFoundError, TeacherLoadError, SpeakerDataError) as err:
        parser.error(str(err))
