"""Validate every run of scripts/whisper_frames_check.sh against the teacher on both frame
grids: one table (per-layer L1 and the validation loss), then the ssl - native differences
paired by seed. Usage: python scripts/whisper_frames_probe.py runs/frames"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

from robustdistill.checkpoints import latest_checkpoint
from robustdistill.config import load_config
from robustdistill.trainer import _Run


def validate(run_dir: Path, grid: str) -> dict[str, float]:
    """The run's final student against the teacher's frames placed on ``grid``."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(run_dir / "config.yaml", [
            "--output_dir", tmp, "--whisper_teacher_frames", grid,
            "--training.resume_from", "null", "--training.report_to", "[]"])
        run = _Run(cfg)
        run.resume(str(latest_checkpoint(run_dir / "checkpoints")))
        return run.validate()


def main(out: Path) -> None:
    results = {}
    for run_dir in sorted(p for p in out.iterdir() if (p / "final_state.json").is_file()):
        results[run_dir.name] = {grid: validate(run_dir, grid) for grid in ("ssl", "native")}
    (out / "probe.json").write_text(json.dumps(results, indent=1))
    layers = sorted({k.split("/")[1][:-3] for r in results.values() for k in r["ssl"]
                     if k.endswith("_l1")})
    print("| trained on | seed | evaluated on | loss | " + " | ".join(f"{x} L1" for x in layers)
          + " |\n|---|---|---|---|" + "---|" * len(layers))
    for name, by_grid in results.items():
        seed, trained = name[1:].split("_")
        for grid, values in by_grid.items():
            cells = " | ".join(f"{values[f'layerwise/{x}_l1']:.4f}" for x in layers)
            print(f"| {trained} | {seed} | {grid} | {values['loss']:.4f} | {cells} |")
    for grid in ("ssl", "native"):  # on each grid: the ssl-trained minus the native-trained
        diffs = [results[f"s{s}_ssl"][grid]["loss"] - results[f"s{s}_native"][grid]["loss"]
                 for s in sorted({n[1:].split("_")[0] for n in results})
                 if f"s{s}_ssl" in results and f"s{s}_native" in results]
        if len(diffs) >= 2:
            half = stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
            print(f"evaluated on {grid}: ssl-trained - native-trained loss {np.mean(diffs):+.4f} "
                  f"[{np.mean(diffs) - half:+.4f}, {np.mean(diffs) + half:+.4f}] "
                  f"({len(diffs)} seeds)")
        elif diffs:
            print(f"evaluated on {grid}: ssl-trained - native-trained loss {diffs[0]:+.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    main(Path(sys.argv[1]))
