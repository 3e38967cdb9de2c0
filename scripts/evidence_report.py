"""Issue 9: plots and tables of docs/evidence.md from the runs and the checkpoint probe.

Reads ``RUN/metrics.jsonl`` of each run and the JSON written by ``scripts/evidence_probe.py``;
writes ``OUT/validation_loss.png``, ``OUT/hidden_stats.png``, ``OUT/distance.png`` and
``OUT/tables.md`` (per-layer distance of student(corrupted) to teacher(clean) at the last probed
step, each run's mean and the paired robust - plain difference with a percentile bootstrap
interval over the held-out utterances).

Usage (from the repository root):
    python scripts/evidence_report.py --probe runs/ev/probe.json --runs robust=runs/ev/robust \
        plain=runs/ev/plain --out docs/evidence
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from robustdistill.metrics_log import read_records  # noqa: E402

RESAMPLES = 2000


def paired_interval(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its 95 % percentile bootstrap interval over items."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (RESAMPLES, diff.size))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def validation_curve(run: Path) -> tuple[list[int], list[float], dict[str, list[float]]]:
    steps, losses, parts = [], [], {}
    # a non-finite loss is written null (strict JSON): read_records gives it back as NaN
    for record in read_records(run / "metrics.jsonl"):
        if record.get("split") != "validation":
            continue
        steps.append(record["step"])
        losses.append(record["loss"])
        for key, value in record.items():
            if "/" in key:
                parts.setdefault(key, []).append(value)
    return steps, losses, parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", type=Path, required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=RUN_DIR, as probed")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    probe = json.loads(args.probe.read_text())
    runs = dict(item.split("=", 1) for item in args.runs)
    states = {name: probe["runs"][path] for name, path in runs.items()}
    layers = [str(x) for x in probe["teacher"]["layers"]]
    lines = [f"Held-out items: {len(probe['items'])} test-other utterances x "
             f"{probe['seconds']:g} s; noise `{probe['noise_dir']}`, rooms `{probe['rir_dir']}`.",
             ""]

    # 1. validation loss (each run's own validation: robust on training-noise crops, plain clean)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, path in runs.items():
        steps, losses, _ = validation_curve(Path(path))
        ax.plot(steps, losses, marker="o", label=name)
        lines.append(f"- validation loss, {name}: " + ", ".join(
            f"{s}: {v:.4f}" for s, v in zip(steps, losses, strict=True)))
    ax.set(xlabel="step", ylabel="validation loss (mean over layers)",
           title="Validation loss (each run's own validation set)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "validation_loss.png", dpi=110)
    plt.close(fig)

    # 2. hidden-state statistics of the student on clean held-out audio, against the teacher
    teacher = probe["teacher"]["stats"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, ax in zip(("std_over_time", "utterance_mean_spread"), axes, strict=True):
        for name, by_step in states.items():
            steps = sorted(int(s) for s in by_step)
            n_layers = len(by_step[str(steps[0])]["student_clean"])
            for layer in range(n_layers):
                ax.plot(steps, [by_step[str(s)]["student_clean"][layer][key] /
                                by_step[str(s)]["student_clean"][layer]["rms"] for s in steps],
                        marker=".", label=f"{name} L{layer}")
        for i, stat in enumerate(teacher):
            ax.axhline(stat[key] / stat["rms"], color="grey", lw=0.8,
                       ls=":" if i in (0, len(teacher) - 1) else "--")
        ax.set(xlabel="step", ylabel=f"{key} / rms", title=key.replace("_", " ") +
               " (grey: teacher layers)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "hidden_stats.png", dpi=110)
    plt.close(fig)
    lines += ["", "Teacher (clean): " + "; ".join(
        f"L{i} std/rms {s['std_over_time'] / s['rms']:.3f}, spread/rms "
        f"{s['utterance_mean_spread'] / s['rms']:.3f}" for i, s in enumerate(teacher))]
    for name, by_step in states.items():
        for step in sorted(by_step, key=int):
            stats = by_step[step]["student_clean"]
            lines.append(f"- {name} step {step}: " + "; ".join(
                f"L{i} std/rms {s['std_over_time'] / s['rms']:.3f}, spread/rms "
                f"{s['utterance_mean_spread'] / s['rms']:.3f}" for i, s in enumerate(stats)))

    # 3. distance to teacher(clean) per condition, against steps, and the final table
    conditions = list(next(iter(states.values()))["0"]["conditions"])
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.5), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for name, by_step in states.items():
            steps = sorted(int(s) for s in by_step)
            for condition, style in (("clean", "-"), ("snr0", "--"), ("reverb", ":")):
                if condition in conditions:
                    ax.plot(steps, [by_step[str(s)]["conditions"][condition][layer]["l1"]
                                    for s in steps], style, label=f"{name} {condition}")
        ax.set(xlabel="step", ylabel="L1 to teacher(clean)", title=f"teacher layer {layer}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "distance.png", dpi=110)
    plt.close(fig)

    names = list(states)
    final = {name: states[name][max(states[name], key=int)] for name in names}
    lines += ["", f"Distance at the last probed step ({', '.join(f'{n}: {max(states[n], key=int)}' for n in names)}); "
              "L1 (lower is closer) and cosine (higher is closer) of the student's prediction "
              "from the corrupted audio to the teacher's layer on the clean audio, mean over "
              "utterances; CKA: linear CKA of the student's last layer with the teacher layer.",
              ""]
    header = "| condition | layer | " + " | ".join(
        f"{n} L1 | {n} cos | {n} CKA" for n in names) + " |"
    if len(names) == 2:
        header += f" {names[0]} - {names[1]} L1 [95 % CI] | {names[0]} - {names[1]} cos [95 % CI] |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for condition in conditions:
        for layer in layers:
            cells = [final[n]["conditions"][condition][layer] for n in names]
            row = f"| {condition} | {layer} | " + " | ".join(
                f"{c['l1']:.4f} | {c['cosine']:.4f} | {c['cka_last_layer']:.3f}" for c in cells) + " |"
            if len(names) == 2:
                d_l1 = paired_interval(cells[0]["l1_items"], cells[1]["l1_items"])
                d_cos = paired_interval(cells[0]["cosine_items"], cells[1]["cosine_items"])
                row += (f" {d_l1[0]:+.4f} [{d_l1[1]:+.4f}, {d_l1[2]:+.4f}]"
                        f" | {d_cos[0]:+.4f} [{d_cos[1]:+.4f}, {d_cos[2]:+.4f}] |")
            lines.append(row)
    (args.out / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
