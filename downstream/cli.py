"""Commands ``robustdistill evaluate`` and ``robustdistill compare``.

::

    robustdistill evaluate --task TASK --upstream ID_OR_DIR|fbank --config FILE --out DIR
        [--conditions clean snr-5 snr0 snr5 snr10 snr20 reverb]
        [--test-noise-dir D] [--test-rir-dir D] [--test-rir-channels {mean,one}]
        [--no-test-rir-check]
        [--seed N | --seeds 0 1 2] [--device cpu]
        [-o section.key=value ...] [--evaluate-only OUT/head.pt]

TASK is a folder under ``downstream/tasks`` or a SUPERB name: ``ks``, ``sid``, ``ic``, ``er``
(utterance classification), ``asv`` (speaker verification), ``se`` (speech enhancement),
``asr``, ``pr`` (CTC over a configurable alphabet).
    robustdistill compare RESULT.json ... --out DIR

Also runnable as ``python -m downstream.cli evaluate ...`` / ``... compare ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .conditions import DEFAULT_CONDITIONS, RIR_CHANNELS

__all__ = ["aggregate_main", "compare_main", "evaluate_main", "main", "parse_overrides",
           "resolve_task"]

logger = logging.getLogger(__name__)


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustdistill evaluate",
        description="SUPERB-style downstream evaluation of a frozen upstream, with a "
        "robustness matrix (the head is trained on clean audio and tested under each condition).",
        epilog="Every key of each task's config, with its type, default and meaning: "
        "docs/config.md (python -m robustdistill.config_reference).",
    )
    parser.add_argument("--task", required=True,
                        help="a SUPERB task name (ks, sid, ic, er, asv or sv, se, asr, pr) or a "
                        "task folder under downstream/tasks (utterance_classification, "
                        "speaker_verification, speech_enhancement, asr)")
    parser.add_argument("--upstream", required=True, help="hub id or local model folder")
    parser.add_argument("--config", required=True,
                        help="the task's YAML config: a path, or the name of one shipped in "
                        "downstream/tasks/<task>/ (e.g. kws_fsdd_cpu)")
    parser.add_argument("--out", required=True,
                        help="output folder: new, or one holding this task and upstream's "
                        "earlier results (replaced); another upstream's is refused")
    parser.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS),
                        help="test conditions: clean, snr<dB>, reverb, reverb+snr<dB> "
                        f"(default: {' '.join(DEFAULT_CONDITIONS)})")
    parser.add_argument("--test-noise-dir", help="noise recordings for the snr conditions")
    parser.add_argument("--test-rir-dir", help="room impulse responses for reverb conditions "
                        "(a file that is not one, such as speech or noise, is skipped with a "
                        "warning)")
    parser.add_argument("--test-rir-channels", choices=RIR_CHANNELS, default="mean",
                        help="multi-channel RIR files: 'mean' down-mixes the channels (default, "
                        "as every published figure; a comb filter for a stereo pair), 'one' "
                        "draws one channel per utterance's room (as the distillation's "
                        "augmentation.rir_channels: one)")
    parser.add_argument("--test-rir-check", action=argparse.BooleanOptionalAction, default=True,
                        help="skip the --test-rir-dir files that do not look like room impulse "
                        "responses (default); --no-test-rir-check keeps every readable file, "
                        "e.g. a hall whose strongest reflection comes more than 50 ms after "
                        "the direct path")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="the run's seed (default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+",
                       help="several seeds: one run per seed into OUT/seed<N>/, and OUT/results.json "
                       "with the mean, the standard deviation and intervals over seeds")
    parser.add_argument("--device", default="cpu",
                        help="torch device (cpu, cuda, cuda:1, mps), checked before any work")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, dotted key, YAML value "
                        "(e.g. -o training.steps=50 -o head.dropout=0.1); a mapping replaces "
                        "the config's, as in a YAML file (-o a.x=1 changes one entry); "
                        "repeatable")
    parser.add_argument("--evaluate-only", metavar="HEAD",
                        help="a head.pt saved by an earlier run: skip training, test it on "
                        "--conditions (with --seeds, '{seed}' in the path is replaced)")
    parser.add_argument("--bootstrap-resamples", type=_resamples(0), default=1000,
                        help="resamples of the per-item bootstrap intervals (0: none)")
    return parser


def _resamples(minimum: int):
    """The argparse ``type`` of ``--bootstrap-resamples``: an integer ``>= minimum`` (0: no
    intervals, where allowed), else argparse's one-line error (``--bootstrap-resamples -5``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be >= {minimum}" + (" (0: no intervals)" if minimum == 0 else "")
                + f", got {value}")
        return value

    return parse


#: SUPERB task names -> (task folder, label).
SUPERB_TASKS = {
    "ks": "utterance_classification",
    "sid": "utterance_classification",
    "ic": "utterance_classification",
    "er": "utterance_classification",
    "asv": "speaker_verification",
    "sv": "speaker_verification",
    "se": "speech_enhancement",
    "asr": "asr",
    "pr": "asr",
}


def resolve_task(name: str) -> tuple[str, str | None]:
    """``--task`` value -> (task folder, label): SUPERB names (``ks``, ``sid``, ``ic``, ``er``,
    ``asv``, ``se``, ``asr``, ``pr``) map to their folder with themselves as label; a folder
    name maps to itself with no label."""
    key = name.strip().lower()
    if key in SUPERB_TASKS:
        return SUPERB_TASKS[key], key
    return name, None


def parse_overrides(pairs: list[str]) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values read as YAML
    the way the config files and distill's overrides are, :func:`robustdistill.config.
    read_yaml`: 1.2 booleans and floats, so ``1e38`` is a number and ``no`` a string; a
    mapping value is a :class:`robustdistill.config.ReplacingMapping`, which replaces the
    config's mapping instead of merging into it, as in a YAML file).

    Raises:
        ValueError: an item without ``=`` or with an empty key; a value that is not valid YAML
            (:class:`robustdistill.config.InvalidYAMLError`, naming the key).
    """
    from robustdistill.config import ReplacingMapping, read_yaml

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
            raise ValueError(f"override {pair!r} must look like section.key=value")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {pair!r} conflicts with an earlier one")
        # read as a YAML file's value (1.2 booleans and floats, as distill's and train-se's
        # --section.key overrides): 1e38 is a number, not the string YAML 1.1 makes of it
        parsed = read_yaml(value, f"override {key.strip()}") if value.strip() else None
        # a mapping replaces the config's, as the key's line in a YAML file would
        node[parts[-1]] = ReplacingMapping(parsed) if isinstance(parsed, dict) else parsed
    return out


def evaluate_main(argv: list[str] | None = None) -> int:
    """``robustdistill evaluate``; returns the exit status (0 on success).

    Bad arguments, configs, conditions or data, an unusable ``--device``, and an ``--out``
    that is a file or holds other results (:func:`downstream.folders.check_evaluation_folder`)
    end with a one-line error (exit status 2) before the upstream runs; so does a launch among
    several processes (``torchrun``, ``accelerate launch``): the evaluation runs in one process.
    A single run into a seed folder that the parent folder's aggregate lists (one seed run
    again) ends with a warning that the aggregate is stale
    (:func:`downstream.folders.aggregate_listing`).
    """
    from robustdistill.cli import hub_error
    from robustdistill.interrupts import note
    from robustdistill.processes import require_single_process

    from .config import ConfigError
    from .folders import aggregate_listing
    from .runner import RunOptions, run_evaluation, run_seeds

    parser = _evaluate_parser()
    args = parser.parse_args(argv)
    task, label = resolve_task(args.task)
    try:
        require_single_process("robustdistill evaluate")
        overrides = parse_overrides(args.override)
        options = RunOptions(
            task=task, upstream=args.upstream, config=args.config, out=args.out,
            conditions=args.conditions, test_noise_dir=args.test_noise_dir,
            test_rir_dir=args.test_rir_dir, test_rir_channels=args.test_rir_channels,
            test_rir_check=args.test_rir_check,
            seed=0 if args.seed is None else args.seed, device=args.device,
            overrides=overrides or None, evaluate_only=args.evaluate_only,
            bootstrap_resamples=args.bootstrap_resamples, label=label,
        )
        with note(lambda: f"; the hidden states cached in {args.out}/cache so far stay (each "
                          "file is written whole): the same command reuses them"):
            results = run_seeds(options, args.seeds) if args.seeds else run_evaluation(options)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    except OSError as err:  # the upstream could not be loaded
        if (message := hub_error(err)) is None:
            raise
        parser.error(message)
    primary = results["primary_metric"]
    summary = ", ".join(f"{c} {m[primary]:.4f}" for c, m in results["metrics"].items())
    logger.info("%s %s: %s", results["task"], primary, summary)
    if not args.seeds and (stale := aggregate_listing(args.out)) is not None:
        parent = stale.parent
        logger.warning("%s aggregates an earlier run of %s: aggregate again before comparing it "
                       "(python -m downstream.cli aggregate %s/seed*/results.json --out %s)",
                       stale, args.out, parent, parent)
    return 0


def compare_main(argv: list[str] | None = None) -> int:
    """``robustdistill compare RESULT.json ... --out DIR``: one table and one plot with a line
    per upstream; returns the exit status. An ``--out`` that is a file or holds an evaluation,
    and unreadable inputs, end with a one-line error (:func:`downstream.compare.compare`)."""
    from .compare import compare

    parser = argparse.ArgumentParser(
        prog="robustdistill compare",
        description="Merge results.json files of one task (one per upstream) into one "
        "results.json, results.md and robustness.png, with paired bootstrap intervals (and "
        "McNemar for accuracy) of every pair of upstreams on the same test items.",
    )
    parser.add_argument("results", nargs="+",
                        help="results.json files (a run given by several, e.g. an evaluation "
                        "and an earlier comparison, is compared once, with a warning)")
    parser.add_argument("--out", required=True,
                        help="output folder of its own (an earlier comparison there is "
                        "replaced; an evaluation's folder is refused)")
    parser.add_argument("--bootstrap-resamples", type=_resamples(1), default=1000,
                        help="resamples of the paired bootstrap (the cells' intervals stay "
                        "each evaluation's own, with its own resamples)")
    args = parser.parse_args(argv)
    try:
        merged = compare(args.results, args.out, args.bootstrap_resamples)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    logger.info("compared %d results into %s", len(merged), args.out)
    return 0


def aggregate_main(argv: list[str] | None = None) -> int:
    """``python -m downstream.cli aggregate OUT/seed0/results.json ... --out OUT``: merge runs of
    one task and upstream made with different ``--seed`` (e.g. run one seed at a time) into the
    multi-seed result ``--seeds`` writes; returns the exit status."""
    from .folders import check_evaluation_folder, check_output_folder
    from .load import load_results
    from .results import write_outputs
    from .seeds import aggregate_seeds

    parser = argparse.ArgumentParser(
        prog="python -m downstream.cli aggregate",
        description="Mean, standard deviation and seed-stratified bootstrap intervals over "
        "runs of one task and upstream with different seeds.")
    parser.add_argument("results", nargs="+", help="results.json of single-seed runs")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--bootstrap-resamples", type=_resamples(0), default=1000,
                        help="resamples of the stratified bootstrap intervals (0: none)")
    args = parser.parse_args(argv)
    try:
        check_output_folder(args.out)
        runs = [r for p in args.results for r in load_results(p)]
        merged = aggregate_seeds(runs, [r["source_dir"] for r in runs], args.bootstrap_resamples)
        check_evaluation_folder(args.out, merged["task"], merged.get("label") or merged["task"],
                                merged["upstream"])
        write_outputs([merged], args.out)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m downstream.cli {evaluate,compare,aggregate} ...``."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"evaluate": evaluate_main, "compare": compare_main, "aggregate": aggregate_main}
    usage = ("usage: python -m downstream.cli {evaluate,compare,aggregate} ...\n"
             "  (python -m downstream.cli COMMAND --help: that command's options)")
    if argv[:1] in (["-h"], ["--help"]):  # asked for: stdout, exit 0, as argparse does
        print(usage)
        return 0
    if not argv or argv[0] not in commands:
        print(usage, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    from robustdistill.interrupts import handled

    with handled(f"python -m downstream.cli {argv[0]}"):  # Ctrl-C, SIGTERM: one line
        return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
