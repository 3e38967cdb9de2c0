"""The ``robustdistill`` command.

Subcommands::

    robustdistill distill --config configs/demo.yaml [--resume] [--section.key value ...]
    robustdistill create-student --teacher ID_OR_DIR --out DIR [--num-layers 2 ...] [--overwrite]
    robustdistill make-teacher --family wavlm --preset small --out DIR [--overwrite]
    robustdistill export --run OUTPUT_DIR [--checkpoint DIR] [--out DIR] [--overwrite] [--onnx]
    robustdistill evaluate --task TASK --upstream ID_OR_DIR --config FILE --out DIR
    robustdistill compare RESULT.json ... --out DIR
    robustdistill export-s3prl --student DIR --out OUT.ckpt [--overwrite]  (s3prl's distiller)
    robustdistill cache-teacher --config RECIPE --teacher_cache.dir DIR
    robustdistill card --model DIR --results R.json ... --run RUN --license L
    robustdistill push --model DIR --repo-id ORG/NAME [--dry-run]
    robustdistill enhance IN OUT --model DIR
    robustdistill train-se --config configs/se_*.yaml
    robustdistill train-speaker {train,table,cache,gap} --config configs/imlkd_speaker.yaml
    robustdistill train-speaker export --run RUN [--checkpoint epoch_N] [--out DIR] [--overwrite]

For several processes use ``accelerate launch distill.py --config ...`` (``distill.py`` is
``robustdistill distill``), or, from an installed package (no checkout, no ``distill.py``),
``accelerate launch -m robustdistill distill --config ...``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .messages import first_line

__all__ = ["main"]

logger = logging.getLogger("robustdistill")


def _setup_logging() -> None:
    """Log to stderr (INFO on the first process, WARNING on the others), redacting tokens.

    A stop the run logs and the command then prints (``PROG: error: ...``,
    :func:`~robustdistill.processes.print_stop`) is left out of the stderr log, so a terminal
    shows it once; a handler to anything else (a log file) still records it."""
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    import transformers

    transformers.logging.set_verbosity_error()
    from .processes import PrintedStopFilter
    from .redact import install

    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is sys.stderr and not any(
                isinstance(f, PrintedStopFilter) for f in handler.filters):
            handler.addFilter(PrintedStopFilter())
    install()  # tokens never reach the logs or a traceback


def hub_error(err: OSError) -> str | None:
    """One line for ``transformers``' failure to reach the Hugging Face Hub (offline, a typo in
    an id), with what to do; None for any other ``OSError`` (re-raised by the caller)."""
    text = str(err)
    if "huggingface.co" not in text:
        return None
    first = first_line(err) or type(err).__name__
    return (f"{first} A hub id needs the network, or a copy in the Hugging Face cache "
            "(HF_HUB_OFFLINE=1 reads only the cache); or give a local folder written by "
            "save_pretrained.")


def distill_main(argv: list[str]) -> int:
    """``robustdistill distill --config FILE [--section.key value ...]``.

    A bad config, argument or start-up check ends in a one-line parser error (exit 2); a run
    stopped with a checkpoint (unreadable data, too many non-finite steps in a row; see
    ``stopped.json``) in one line on stderr and exit status 1.
    """
    from .config import ConfigError, DistillConfig, load_config
    from .config_reference import config_reference

    parser = argparse.ArgumentParser(
        prog="robustdistill distill", add_help=True,
        description="Run a distillation (see configs/). Every key of the recipe can be "
                    "overridden as --section.key value; the keys, their types and defaults:",
        epilog=config_reference(DistillConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe; other --section.key value pairs override it")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint of output_dir, or start "
                             "fresh when there is none (training.resume_from auto)")
    args, overrides = parser.parse_known_args(argv)
    if args.resume:
        if any(o.split("=", 1)[0] == "--training.resume_from" for o in overrides):
            parser.error("--resume and --training.resume_from both say where to resume from: "
                         "give one")
        overrides = [*overrides, "--training.resume_from", "auto"]
    from .redact import redact

    try:
        cfg = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError) as err:
        parser.error(redact(str(err)))
    from .processes import print_stop
    from .trainer import DataReadError, NonFiniteTrainingError, train

    try:
        out = train(cfg)
    except (ConfigError, FileNotFoundError) as err:  # found at start-up: a message, no traceback
        parser.error(redact(str(err)))
    except (DataReadError, NonFiniteTrainingError) as err:  # stopped with a checkpoint
        print_stop(parser.prog, redact(str(err)))
        return 1
    except OSError as err:  # a teacher or student hub id that cannot be reached
        if (message := hub_error(err)) is None:
            raise
        parser.error(redact(message))
    logger.info("done: %s", out)
    return 0


def create_student_main(argv: list[str]) -> int:
    """``robustdistill create-student``: write an initialised student folder.

    A bad shape value, a local-looking ``--teacher`` that is not a folder, an ``--out`` that
    is an existing file or a folder that holds files (without ``--overwrite``, which empties it
    first, never when it holds the teacher), or an unreachable hub id end in a one-line parser
    error (exit 2), before anything is written."""
    from .config import check_model_path
    from .files import OutputFolderError, check_output_folder, empty_folder, name_list
    from .student import (
        NARROW_CNN_INITS,
        STUDENT_CONFIG_HELP,
        STUDENT_FAMILIES,
        STUDENT_PRESETS,
        StudentConfig,
        create_student,
        save_student,
        student_feature_extractor,
    )
    from .upstream import CustomCodeError, Upstream

    parser = argparse.ArgumentParser(prog="robustdistill create-student")
    parser.add_argument("--teacher", required=True, help="hub id or local folder")
    parser.add_argument("--out", required=True,
                        help="folder to write the student to: new or empty (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    parser.add_argument("--preset", default="default", choices=list(STUDENT_PRESETS),
                        help="student shape (docs/performance.md, section 2)")
    described = STUDENT_CONFIG_HELP.get  # each option's StudentConfig help
    parser.add_argument("--family", default=None, choices=list(STUDENT_FAMILIES),
                        help="student model type; default: the preset's (fast: hubert), else "
                             "the teacher's when it is one of these, else hubert")
    parser.add_argument("--num-layers", type=int, default=2, help=described("num_layers"))
    parser.add_argument("--hidden-size", type=int, default=None, help=described("hidden_size"))
    parser.add_argument("--num-attention-heads", type=int, default=None,
                        help=described("num_attention_heads"))
    parser.add_argument("--intermediate-size", type=int, default=None,
                        help=described("intermediate_size"))
    parser.add_argument("--conv-dim", type=int, nargs="+", default=None,
                        help="CNN channels, one per teacher CNN layer")
    parser.add_argument("--init-layers", type=int, nargs="+", default=None,
                        help=described("init_layers"))
    parser.add_argument("--narrow-cnn-init", choices=NARROW_CNN_INITS, default=None,
                        help="a CNN narrower than the teacher's: random, or pruned from it "
                             "(default: the preset's, else random)")
    parser.add_argument("--random-init", action="store_true", help="do not copy teacher weights")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a hub teacher's own modelling code (transformers' "
                             "trust_remote_code)")
    args = parser.parse_args(argv)
    try:
        cfg = StudentConfig(preset=args.preset, family=args.family, num_layers=args.num_layers,
                            hidden_size=args.hidden_size,
                            num_attention_heads=args.num_attention_heads,
                            intermediate_size=args.intermediate_size, conv_dim=args.conv_dim,
                            init_from_teacher=not args.random_init, init_layers=args.init_layers,
                            narrow_cnn_init=args.narrow_cnn_init)
    except ValueError as err:
        parser.error(str(err))
    try:
        out_path = check_output_folder(args.out, "--out", overwrite=args.overwrite,
                                       inputs=_local(args.teacher))
    except OutputFolderError as err:
        parser.error(str(err))
    try:
        check_model_path(args.teacher, "--teacher",
                         "robustdistill make-teacher --out DIR, or a hub id such as "
                         "microsoft/wavlm-base-plus")
        teacher = Upstream.from_pretrained(args.teacher, trust_remote_code=args.trust_remote_code)
    except FileNotFoundError as err:
        parser.error(str(err))
    except (OSError, ValueError) as err:  # transformers: OSError, or ValueError (no model_type)
        from .redact import redact

        if isinstance(err, CustomCodeError):  # a model folder, of a model of its own code
            allow = ("; --trust-remote-code runs that code, if you trust it" if err.has_code
                     else "")
            parser.error(redact(f"--teacher {err}{allow}"))
        if Path(args.teacher).expanduser().is_dir():  # a folder, but no model in it
            first = first_line(err) or type(err).__name__
            parser.error(redact(f"--teacher {args.teacher!r} is not a model folder: {first}"))
        if not isinstance(err, OSError) or (message := hub_error(err)) is None:
            raise
        parser.error(redact(message))
    try:
        student = create_student(teacher, cfg)
    except ValueError as err:  # e.g. a CNN wider than the teacher's cannot be pruned from it
        parser.error(str(err))
    if args.overwrite and (removed := empty_folder(out_path)):
        logger.info("--overwrite: removed %s from %s", name_list(removed), out_path)
    out = save_student(student, student_feature_extractor(teacher, student.config), out_path)
    params = sum(p.numel() for p in student.parameters()) / 1e6
    logger.info("student (%s, %d layers, %.1f M params) written to %s",
                student.config.model_type, student.config.num_hidden_layers, params, out)
    return 0


def make_teacher_main(argv: list[str]) -> int:
    """``robustdistill make-teacher``: a randomly initialised encoder of a given shape,
    for offline demos, tests and benchmarks.

    An ``--out`` that is an existing file, or a folder that holds files (without
    ``--overwrite``, which empties it first), is a one-line parser error (exit 2)."""
    from .files import OutputFolderError, check_output_folder, empty_folder, name_list
    from .teachers import PRESETS, make_random_teacher

    parser = argparse.ArgumentParser(
        prog="robustdistill make-teacher",
        description="Write a randomly initialised encoder of a real shape (save_pretrained), for "
                    "offline demos, tests and speed benchmarks: it has learned nothing.")
    parser.add_argument("--family", default="wavlm",
                        choices=["wavlm", "hubert", "wav2vec2", "data2vec-audio"],
                        help="transformers model family")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS),
                        help="shape: 'base' is WavLM Base+ / HuBERT Base (12 x 768); the others "
                             "are smaller, for quick runs")
    parser.add_argument("--out", required=True,
                        help="folder to write the model to: new or empty (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    try:
        out_path = check_output_folder(args.out, "--out", overwrite=args.overwrite)
    except OutputFolderError as err:
        parser.error(str(err))
    if args.overwrite and (removed := empty_folder(out_path)):
        logger.info("--overwrite: removed %s from %s", name_list(removed), out_path)
    out = make_random_teacher(args.family, args.preset, out_path, seed=args.seed)
    logger.info("random %s-%s teacher written to %s", args.family, args.preset, out)
    return 0


def export_main(argv: list[str]) -> int:
    """``robustdistill export``: the student of a run's checkpoint as a stock checkpoint.

    A missing run or checkpoint, a damaged checkpoint (``CheckpointError``, named), an output
    folder that is a file or holds files (without ``--overwrite``), lies inside the run other
    than ``RUN/student`` or under ``RUN/exports/``, or, with ``--overwrite``, is or holds one
    of the command's inputs (the run, its ``student_init``, the checkpoint, the ONNX check audio;
    ``OutputFolderError``), an ONNX check folder that is missing or holds no audio file (all
    found before anything is written) or no usable one (``OnnxCheckError``), a
    ``student_init`` that is not a stock model folder (one with code of its own is said to
    hold it, and none of it runs: ``ModelFolderError``), and an ONNX parity
    failure exit 2 with one line; any other error from the ONNX export keeps its traceback.
    """
    from .checkpoints import CheckpointError
    from .export import export_from_checkpoint
    from .files import OutputFolderError
    from .upstream import ModelFolderError

    parser = argparse.ArgumentParser(prog="robustdistill export")
    parser.add_argument("--run", required=True, help="the run's output_dir")
    parser.add_argument("--checkpoint", default=None, help="default: the newest checkpoint")
    parser.add_argument("--out", default=None,
                        help="a new or empty folder (see --overwrite); default: the run's own "
                             "RUN/student for the newest checkpoint, RUN/exports/CHECKPOINT/"
                             "student for --checkpoint, written again (what other weights left "
                             "there, such as a card, is removed with a warning). Inside the run "
                             "only RUN/student or a folder under RUN/exports/. The heads go "
                             "beside a folder named student (../heads), else inside it (heads/)")
    parser.add_argument("--overwrite", action="store_true", help=_OVERWRITE_HELP)
    parser.add_argument("--onnx", action="store_true",
                        help="also write OUT/onnx/model.onnx, checked with onnxruntime")
    parser.add_argument("--onnx-check-audio", default=None,
                        help="audio folder for the ONNX parity check (default: generated noise)")
    args = parser.parse_args(argv)
    if args.onnx_check_audio is not None and not args.onnx:
        parser.error("--onnx-check-audio is for the ONNX parity check: add --onnx")
    if args.onnx_check_audio is not None:
        from .audio import list_audio_files

        try:  # a missing or audio-less folder is found before anything is written
            list_audio_files(args.onnx_check_audio)
        except FileNotFoundError as err:
            parser.error(f"--onnx-check-audio: {err}")
    try:
        out = export_from_checkpoint(args.run, args.checkpoint, args.out, args.overwrite,
                                     inputs=[args.onnx_check_audio] if args.onnx_check_audio else [])
    except (FileNotFoundError, OutputFolderError, CheckpointError, ModelFolderError) as err:
        parser.error(str(err))
    logger.info("student written to %s", out)
    if args.onnx:
        from .publish.onnx import OnnxCheckError, export_and_check

        try:
            export_and_check(out, args.onnx_check_audio)
        except (FileNotFoundError, OnnxCheckError) as err:
            parser.error(f"{err} (the student is exported in {out})")
        except AssertionError as err:  # parity outside the tolerance; the graph stays
            parser.error(f"ONNX check failed: {err}")
    return 0


_OVERWRITE_HELP = ("replace what --out holds: remove everything in it (a card, plots, heads, other "
                   "files) before writing, instead of refusing a folder that holds files")


def _local(name: str) -> list[str]:
    """``[name]`` when it is an existing local path (an input ``--overwrite`` must not delete)."""
    return [name] if Path(name).expanduser().exists() else []


def _lazy(target: str):
    """``"package.module:function"`` -> a subcommand that imports its module only when run."""

    def run(argv: list[str]) -> int:
        import importlib

        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(argv)

    return run


#: Subcommand name -> ``main(argv) -> int``. A subcommand defined in its own module is one
#: ``_lazy("module:function")`` line here, so importing the CLI stays cheap.
COMMANDS = {
    "distill": distill_main,
    "create-student": create_student_main,
    "make-teacher": make_teacher_main,
    "export": export_main,
    "evaluate": _lazy("downstream.cli:evaluate_main"),
    "compare": _lazy("downstream.cli:compare_main"),
    "export-s3prl": _lazy("robustdistill.s3prl_export:main"),
    "train-speaker": _lazy("robustdistill.speaker.cli:main"),
    "cache-teacher": _lazy("robustdistill.teacher_cache:main"),
    "card": _lazy("robustdistill.publish.card:card_main"),
    "push": _lazy("robustdistill.publish.push:push_main"),
    "enhance": _lazy("robustdistill.se.enhance:main"),
    "train-se": _lazy("robustdistill.se.train:main"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``robustdistill`` console script.

    A Ctrl-C (SIGINT) or SIGTERM during a command ends it with one line naming where it stopped
    (its newest checkpoint, for a trainer) and the signal's status, 130 or 143, instead of a
    traceback (:func:`robustdistill.interrupts.handled`)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"robustdistill: unknown command {argv[0]!r}", file=sys.stderr)
        print(__doc__.strip(), file=sys.stderr)
        return 2
    from .interrupts import handled

    with handled(f"robustdistill {argv[0]}"):  # Ctrl-C, SIGTERM: one line, status 130 / 143
        _setup_logging()
        return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
