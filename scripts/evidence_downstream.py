"""Issue 9: the downstream tables of docs/evidence.md from ``downstream.cli compare`` outputs.

For each task folder ``SUPERB_OUT/<task>/`` it reads ``compare/results.json`` (the upstreams'
multi-seed aggregates and their paired comparisons) and, when present, ``teacher/results.json``
(the teacher's row, which may have fewer seeds). It prints one markdown table per task (primary
metric per condition: mean over seeds and its 95 % interval, stratified by seed) and the paired
differences that are significant among the pairs asked for, each ending in ``(n left out)``
where the comparison left out test items one side could not score (the row's
``excluded_items``, as ``python -m downstream.report`` shows it), then compare's notes on the
pairs asked for (e.g. a pair compared on the seeds both ran only), as results.md lists them.

Two results of one upstream path (the same model compared twice) are both shown: the label that
``--names`` gives the path is followed by `` #i``, ``i`` the result's 1-based position among
compare's results (results.md names it ``PATH #i``), and the pairs asked for with that label are
reported for each.

Usage (from the repository root):
    python scripts/evidence_downstream.py runs/ev/superb --tasks kws sid sv se \
        --names random=runs/ev/robust/student_init plain=runs/ev/plain/student ... \
        --pairs plain:random robust:random robust:plain > runs/ev/downstream.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from downstream.entries import upstream_labels

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
    """One task's table (``metric``, default the task's primary one), its significant pairs and
    compare's notes on the pairs asked for.

    Args:
        folder: the task's folder (``compare/results.json``, optional ``teacher/results.json``).
        names: ``{label: upstream path}``, the rows in this order; a path with several results
            gives one row per result, labelled ``label #i`` (``i`` as in compare's ``PATH #i``).
        pairs: the ``(a, b)`` labels (as in ``names``) whose significant ``a - b`` are listed.
        metric: the metric shown; compare pairs the primary metric only.

    Returns:
        The markdown lines.
    """
    compare = json.loads((folder / "compare" / "results.json").read_text())
    results = compare["results"]
    metric = metric or results[0]["primary_metric"]
    conditions = results[0]["conditions"]
    compare_labels = upstream_labels(results)  # as compare named the upstreams in its rows
    rows = []  # (label shown, label in --names, index in results), in --names order
    for label, path in names.items():
        hits = [i for i, r in enumerate(results) if r["upstream"] == path]
        rows += [(label if len(hits) == 1 else f"{label} #{i + 1}", label, i) for i in hits]
    label_of = {compare_labels[i]: (shown, label) for shown, label, i in rows}
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
    for shown, _, i in rows:
        r = results[i]
        lines.append(f"| {shown} | " + " | ".join(
            fmt(r["metrics"][c][metric], *r["intervals"][c][metric]) for c in conditions) + " |")
    if metric != results[0]["primary_metric"]:
        return lines + ["", f"Paired differences are not computed for {metric}: "
                        "`downstream.cli compare` pairs the primary metric only."]
    significant, left_out, tested = [], False, False
    for c in compare["comparisons"]:
        if c["metric"] != metric or c["a"] not in label_of or c["b"] not in label_of:
            continue
        (a, asked_a), (b, asked_b) = label_of[c["a"]], label_of[c["b"]]
        for x, y, asked, sign in ((a, b, (asked_a, asked_b), 1), (b, a, (asked_b, asked_a), -1)):
            if asked not in pairs:
                continue
            tested = True
            if c["significant"]:
                d, lo, hi = (sign * c["difference"], *sorted((sign * c["low"], sign * c["high"])))
                excluded = c.get("excluded_items") or 0  # absent in older compare outputs
                left_out |= excluded > 0
                significant.append(f"{x} - {y}, {CONDITION_TITLES.get(c['condition'])}: "
                                   f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                                   + (f" ({excluded} left out)" if excluded else ""))
            break  # one direction per comparison, also for a pair asked both ways
    lines += ["", "Significant paired differences (a - b, same test items): " +
              ("; ".join(significant) if significant else "none") + "." if tested else
              "No paired difference was computed for these pairs."]
    if left_out:
        lines += ["", '"(n left out)": the paired difference leaves out the n test items on which '
                  f"either upstream could not score {metric} (e.g. a failed PESQ); it is over "
                  "the items both scored."]
    asked = {f"{compare_labels[min(i, j)]} vs {compare_labels[max(i, j)]}"  # compare's order
             for _, a, i in rows for _, b, j in rows if (a, b) in pairs and i != j}
    # compare starts each note with its pair: "A vs B: ..." or "A vs B CONDITION: ..."
    suffixes = ["", *(f" {c}" for c in dict.fromkeys(c for r in results for c in r["conditions"]))]
    starts = tuple(f"{p}{suffix}:" for p in asked for suffix in suffixes)
    notes = [n for n in compare.get("comparison_notes") or [] if n.startswith(starts)]
    if notes:
        renamed = ", ".join(f"{shown} = {compare_labels[i]}" for shown, _, i in rows
                            if shown != compare_labels[i])
        lines += ["", "Notes of `downstream.cli compare` on these pairs"
                  + (f" (its names: {renamed})" if renamed else "") + ":", "",
                  *(f"- {n}" for n in notes)]
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
