"""Commands ``robustdistill evaluate`` and ``robustdistill compare``.

::

    robustdistill evaluate --task TASK --upstream ID_OR_DIR --config FILE --out DIR
        [--conditions clean snr-5 snr0 snr5 snr10 snr20 reverb]
        [--test-noise-dir D] [--test-rir-dir D] [--seed N] [--device cpu]
    robustdistill compare RESULT.json ... --out DIR

Also runnable as ``python -m downstream.cli evaluate ...`` / ``... compare ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .conditions import DEFAULT_CONDITIONS

__all__ = ["compare_main", "evaluate_main", "main"]

logger = logging.getLogger(__name__)


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustdistill evaluate",
        description="SUPERB-style downstream evaluation of a frozen upstream, with a "
        "robustness matrix (the head is trained on clean audio and tested under each condition).",
    )
    parser.add_argument("--task", required=True,
                        help="task folder under downstream/tasks (e.g. utterance_classification, "
                        "speaker_verification, speech_enhancement, asr)")
    parser.add_argument("--upstream", required=True, help="hub id or local model folder")
    parser.add_argument("--config", required=True, help="the task's YAML config")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS),
                        help="test conditions: clean, snr<dB>, reverb, reverb+snr<dB> "
                        f"(default: {' '.join(DEFAULT_CONDITIONS)})")
    parser.add_argument("--test-noise-dir", help="noise recordings for the snr conditions")
    parser.add_argument("--test-rir-dir", help="room impulse responses for reverb conditions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    return parser


def evaluate_main(argv: list[str] | None = None) -> int:
    """``robustdistill evaluate``; returns the exit status (0 on success).

    Bad arguments, configs, conditions or data end with a one-line error (exit status 2)
    before the upstream runs.
    """
    from .config import ConfigError
    from .runner import RunOptions, run_evaluation

    parser = _evaluate_parser()
    args = parser.parse_args(argv)
    options = RunOptions(
        task=args.task, upstream=args.upstream, config=args.config, out=args.out,
        conditions=args.conditions, test_noise_dir=args.test_noise_dir,
        test_rir_dir=args.test_rir_dir, seed=args.seed, device=args.device,
    )
    try:
        results = run_evaluation(options)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    primary = results["primary_metric"]
    summary = ", ".join(f"{c} {m[primary]:.4f}" for c, m in results["metrics"].items())
    logger.info("%s %s: %s", results["task"], primary, summary)
    return 0


def compare_main(argv: list[str] | None = None) -> int:
    """``robustdistill compare RESULT.json ... --out DIR``: one table and one plot with a line
    per upstream; returns the exit status."""
    from .results import compare

    parser = argparse.ArgumentParser(
        prog="robustdistill compare",
        description="Merge results.json files of one task (one per upstream) into one "
        "results.json, results.md and robustness.png.",
    )
    parser.add_argument("results", nargs="+", help="results.json files")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    try:
        merged = compare(args.results, args.out)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    logger.info("compared %d results into %s", len(merged), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m downstream.cli {evaluate,compare} ...``."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"evaluate": evaluate_main, "compare": compare_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m downstream.cli {evaluate,compare} ...", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
