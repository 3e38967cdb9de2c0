"""Compact markdown of a ``compare`` output for the docs: one table of the primary metric with
intervals (rows: upstreams, columns: conditions) and one table of the paired differences.

::

    python -m downstream.report runs/superb/kws/compare/results.json [--scale 100] [--names a=b]

Percent metrics (accuracy, EER, WER) are shown x``scale``; values and interval bounds have
``--digits`` decimals; ``*`` marks a paired difference whose 95 % interval excludes 0;
``(n unscored)`` follows a value that leaves out ``n`` test items the metric could not score
(results.json ``unscored``, e.g. PESQ failures), with a note under the table; ``(n left out)``
follows a paired difference computed without the ``n`` test items that either upstream could
not score (the comparison's ``excluded_items``), with a note under the table.

Rows are named as in ``results.md`` (``downstream.entries.upstream_labels``): the upstream's
folder name, or its full path where folder names collide (``runs/a/student`` and
``runs/b/student``), with ``#i`` appended where whole paths collide too (``fbank #1``).
``--names FOLDER=NAME`` renames a row given its label, its full upstream path, or its folder
name where that is unambiguous.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .entries import upstream_labels
from .load import load_results_file
from .table import interval_cell, unscored_note

__all__ = ["main", "report"]

_REQUIRED = ("upstream", "primary_metric", "conditions", "metrics")
"""The keys of a result that :func:`report` reads."""


def _num(value: float | None, scale: float, digits: int, sign: str = "") -> str:
    """``value * scale`` with ``digits`` decimals (``sign`` "+" shows it); "-" for an undefined
    value: NaN, or ``null`` as results.json stores it (strict JSON)."""
    return "-" if value is None or value != value else f"{value * scale:{sign}.{digits}f}"


def report(path: str | Path, scale: float = 1.0, digits: int = 1,
           names: dict[str, str] | None = None) -> str:
    """The two markdown tables of one merged ``compare`` results.json (or of one run's).

    A primary-metric cell of a condition with unscored test items (``unscored``) ends in
    ``(n unscored)`` and a note follows the table; results.json files written before
    ``unscored`` existed render as before. A paired difference that left out test items
    either upstream could not score (the row's ``excluded_items`` > 0) ends in
    ``(n left out)``, with a note; comparisons written before ``excluded_items`` existed
    render as before.

    Args:
        path: a results.json.
        scale: factor applied to values, intervals and differences (100: percent).
        digits: decimals of every number.
        names: row renaming ``{key: name}``, the key being a row's label
            (:func:`downstream.entries.upstream_labels`, as in ``results.md``), its full
            ``upstream`` path, or its folder name when no other row shares it; a shared
            folder name renames no row (logged warning).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not JSON, or not a downstream results file (one line naming
            it, as ``compare`` says it: :func:`downstream.load.load_results_file`).
    """
    data, results = load_results_file(path, _REQUIRED)
    names = names or {}
    primary = results[0]["primary_metric"]
    conditions = list(dict.fromkeys(c for r in results for c in r["conditions"]))
    labels = upstream_labels(results)
    shown = upstream_labels(results, names)
    display = dict(zip(labels, shown, strict=True))  # comparison rows name upstreams by label
    lines = ["| upstream | " + " | ".join(conditions) + " |", "|---|" + "---:|" * len(conditions)]
    for r, name in zip(results, shown, strict=True):
        cells = [interval_cell(r, c, primary, lambda v: _num(v, scale, digits))
                 for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if note := unscored_note(results, primary):
        lines += ["", f"Note: {note}"]
    rows = data.get("comparisons") or []
    if rows:
        pairs = list(dict.fromkeys((row["a"], row["b"]) for row in rows))
        lines += ["", f"Paired differences of {primary} (a - b, same test items), 95 % interval; "
                  "`*`: the interval excludes 0" + ("; McNemar p in parentheses"
                                                     if any("mcnemar_p" in r for r in rows)
                                                     else "") + ":", "",
                  "| a - b | " + " | ".join(conditions) + " |",
                  "|---|" + "---:|" * len(conditions)]
        for a, b in pairs:
            cells = []
            for c in conditions:
                row = next((r for r in rows if (r["a"], r["b"], r["condition"]) == (a, b, c)),
                           None)
                if row is None:
                    cells.append("-")
                    continue
                text = (f"{_num(row['difference'], scale, digits, '+')} "
                        f"[{_num(row['low'], scale, digits, '+')}, "
                        f"{_num(row['high'], scale, digits, '+')}]"
                        + ("*" if row["significant"] else ""))
                if row.get("mcnemar_p") is not None:
                    text += f" ({row['mcnemar_p']:.2g})"
                if excluded := row.get("excluded_items"):
                    text += f" ({excluded} left out)"
                cells.append(text)
            lines.append(f"| {display.get(a, names.get(a, a))} - "
                         f"{display.get(b, names.get(b, b))} | " + " | ".join(cells) + " |")
        if any(row.get("excluded_items") for row in rows):
            lines += ["", 'Note: "(n left out)": the paired difference leaves out the n test '
                      f"items on which either upstream could not score {primary} (e.g. a failed "
                      "PESQ); it is over the items both scored."]
    for note in data.get("comparison_notes") or []:
        lines.append(f"\n- {note}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: print :func:`report` of a results.json to stdout.

    Args:
        argv: the arguments (default ``sys.argv[1:]``): ``results`` and the options
            ``--scale``, ``--digits``, ``--names FOLDER=NAME ...`` (FOLDER: any ``names``
            key of :func:`report`).

    Returns:
        0.

    Raises:
        SystemExit: bad arguments (argparse, a ``--names`` entry without ``=`` included), a
            missing or unreadable results file (one line, exit status 2) or ``--help``.
    """
    parser = argparse.ArgumentParser(prog="python -m downstream.report", description=__doc__)
    parser.add_argument("results", help="a compare output's results.json")
    parser.add_argument("--scale", type=float, default=1.0, help="e.g. 100 for percent")
    parser.add_argument("--digits", type=int, default=1)
    parser.add_argument("--names", nargs="*", default=[], metavar="FOLDER=NAME",
                        help="row names: FOLDER is a row's label as printed (the upstream's "
                             "folder name, or its full path where folder names collide), its "
                             "full upstream path, or its folder name where unambiguous")
    args = parser.parse_args(argv)
    if bad := [n for n in args.names if "=" not in n]:
        parser.error(f"--names takes FOLDER=NAME entries, got {bad}")
    names = dict(n.split("=", 1) for n in args.names)
    try:
        text = report(args.results, args.scale, args.digits, names)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
