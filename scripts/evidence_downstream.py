"""Issue 9: the downstream tables of docs/evidence.md from ``downstream.cli compare`` outputs.

For each task folder ``SUPERB_OUT/<task>/`` it reads ``compare/results.json`` (the upstreams'
multi-seed aggregates and their paired comparisons) and, when present, ``teacher/results.json``
(the teacher's row, which may have fewer seeds). It prints one markdown table per task (primary
metric per condition: mean over seeds and its 95 % interval, stratified by seed) and the paired
differences that are significant among the pairs asked for.

Usage (from the repository root):
    python scripts/evidence_downstream.py runs/ev/superb --tasks kws sid sv se \
        --names random=runs/ev/robust/student_init plain=runs/ev/plain/student ... \
        --pairs plain:random robust:random robust:plain > runs/ev/downstream.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from downstream.results import upstream_labels

TASK_TITLES = {"kws": "KWS (FSDD digits)", "sid": "SID (LibriSpeech speakers)",
               "sv": "SV (unseen LibriSpeech speakers)", "se": "SE (BLSTM mask head)",
               "asr": "ASR (linear CTC head, Whisper transcripts)"}
EXTRA_METRICS = {"asr": ["wer", "cer"]}  # tasks shown with more than their primary metric
CONDITION_TITLES = {"clean": "clean", "snr-5": "-5 dB", "snr0": "0 dB", "snr5": "5 dB",
                    "snr10": "10 dB", "snr20": "20 dB", "reverb": "room"}


def fmt(value: float | None, *interval: float | None) -> str:
    """``value`` or ``value [low, high]``; an undefined value (NaN, which results.json stores as
    ``null``) is ``nan``."""
    value, *interval = (float("nan") if v is None else v for v in (value, *interval))
    digits = 3 if abs(value) < 10 else 1
    text = f"{value:.{digits}f}"
    return text if not interval else f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def task_table(folder: Path, names: dict[str, str], pairs: list[tuple[str, str]],
               metric: str | None = None) -> list[str]:
    """One task's table (``metric``, default the task's primary one) and its significant pairs."""
    compare = json.loads((folder / "compare" / "results.json").read_text())
    results = compare["results"]
    metric = metric or results[0]["primary_metric"]
    conditions = results[0]["conditions"]
    by_path = {r["upstream"]: r for r in results}
    compare_label = dict(zip((r["upstream"] for r in results), upstream_labels(results),
                             strict=True))  # as compare named the upstreams in its rows
    label_of = {compare_label[path]: label for label, path in names.items() if path in by_path}
    better = "higher" if results[0]["higher_is_better"] else "lower"
    seeds = sorted({len(r["seeds"]) for r in results})
    lines = [f"{metric}, {better} is better; mean over {'/'.join(map(str, seeds))} seeds "
             "[95 % interval, bootstrap over test items stratified by seed]", "",
             "| upstream | " + " | ".join(CONDITION_TITLES.get(c, c) for c in conditions) + " |",
             "|---|" + "---|" * len(conditions)]
    teacher_file = folder / "teacher" / "results.json"
    if teacher_file.is_file():
        teacher = json.loads(teacher_file.read_text())
        n = len(teacher.get("seeds") or [teacher.get("seed")])
        lines.append(f"| teacher ({n} seed{'s' if n > 1 else ''}) | " + " | ".join(
            fmt(teacher["metrics"][c][metric]) for c in conditions) + " |")
    for label, path in names.items():
        if path not in by_path:
            continue
        r = by_path[path]
        lines.append(f"| {label} | " + " | ".join(
            fmt(r["metrics"][c][metric], *r["intervals"][c][metric]) for c in conditions) + " |")
    significant = []
    for c in compare["comparisons"]:
        if c["metric"] != metric or not c["significant"]:
            continue
        a, b = label_of.get(c["a"]), label_of.get(c["b"])
        for x, y, sign in ((a, b, 1), (b, a, -1)):
            if (x, y) in pairs:
                d, lo, hi = (sign * c["difference"], *sorted((sign * c["low"], sign * c["high"])))
                significant.append(f"{x} - {y}, {CONDITION_TITLES.get(c['condition'])}: "
                                   f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    if not any(c["metric"] == metric for c in compare["comparisons"]):
        return lines + ["", f"Paired differences are not computed for {metric}: "
                        "`downstream.cli compare` pairs the primary metric only."]
    lines += ["", "Significant paired differences (a - b, same test items): " +
              ("; ".join(significant) if significant else "none") + "."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("superb_out", type=Path)
    parser.add_argument("--tasks", nargs="+", default=["kws", "sid", "sv", "se", "asr"])
    parser.add_argument("--names", nargs="+", required=True, help="LABEL=UPSTREAM_PATH")
    parser.add_argument("--pairs", nargs="+", default=[], help="A:B label pairs to report")
    args = parser.parse_args()
    names = dict(item.split("=", 1) for item in args.names)
    pairs = [tuple(item.split(":", 1)) for item in args.pairs]
    for task in args.tasks:
        folder = args.superb_out / task
        if not (folder / "compare" / "results.json").is_file():
            continue
        print(f"### {TASK_TITLES.get(task, task)}\n")
        for metric in EXTRA_METRICS.get(task, [None]):
            print("\n".join(task_table(folder, names, pairs, metric)) + "\n")


if __name__ == "__main__":
    main()
