"""Issue 9: follow distillation runs over their checkpoints on held-out speech, noise and rooms.

For each run folder and each of its checkpoints (plus step 0, rebuilt from the run's config and
seed, so it is exactly the run's starting point), on ``--items`` held-out utterances (the first
``--seconds`` of LibriSpeech test-other, speakers never seen in training):

* the student's hidden-state statistics on clean audio, per layer (std over time,
  utterance-mean spread, RMS; :func:`robustdistill.diagnostics.hidden_state_stats`), next to
  the teacher's;
* per condition (clean, held-out noise at each SNR, held-out room) and per target layer, the
  distance of the student's prediction from the corrupted audio to the teacher's layer on the
  clean audio (L1 and cosine: the distillation loss's two parts), and the linear CKA of the
  student's last layer (corrupted) with that teacher layer (clean): a head-free measure.

The corruption is the downstream matrix's (:class:`downstream.conditions.TestCorruptor`, seed 0):
the noise segment and room of an utterance are the same under every condition, and both runs
see identical audio.

Usage (from the repository root; ``docs/evidence.md``):
    python scripts/evidence_probe.py runs/ev/robust runs/ev/plain --out runs/ev/probe.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from downstream.conditions import TestCorruptor, parse_conditions
from robustdistill.audio import load_audio
from robustdistill.checkpoints import TRAINING_STATE, checkpoint_index, list_checkpoints
from robustdistill.config import load_config
from robustdistill.diagnostics import hidden_state_stats, linear_cka, prediction_distance
from robustdistill.trainer import _Run
from robustdistill.trainer_checkpoints import CROP_GRID

logger = logging.getLogger("evidence_probe")
SR = 16000


def held_out_items(folder: Path, count: int, seconds: float) -> list[tuple[str, np.ndarray]]:
    """``count`` utterances at least ``seconds`` long, spread over the sorted list, cut."""
    files = sorted(folder.rglob("*.flac"))
    items = []
    for path in files:
        wave = load_audio(path)
        if wave.shape[0] >= seconds * SR:
            items.append((path.stem, wave[: int(seconds * SR)]))
    if len(items) < count:
        raise SystemExit(f"only {len(items)} utterances of {seconds} s in {folder}")
    pick = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in pick]


def batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-length utterances -> ``(B, S)`` and lengths ``(B,)``."""
    return torch.from_numpy(np.stack(waves)), torch.full((len(waves),), waves[0].shape[0])


def resume_weights(run: _Run, checkpoint: Path) -> None:
    """Load ``checkpoint`` into ``run``, the trained run rebuilt with its teacher cache off
    (the probe runs the teacher itself, wherever the run was trained).

    A cache with ``crop_starts: chunks`` put the training crops on a grid of whole chunks,
    which the rebuilt run does not have; resume refuses a checkpoint of another crop grid
    (it fixes the data order, which the probe never reads), so the rebuilt run takes the
    checkpoint's grid first.

    Raises:
        ConfigError: the checkpoint differs from the run in anything else resume checks.
    """
    state = json.loads((checkpoint / TRAINING_STATE).read_text())
    grid = state.get("trajectory", {}).get(CROP_GRID)
    if grid is not None:
        run.train_set.crop_grid = grid
    run.resume(str(checkpoint))


@torch.no_grad()
def probe_state(run: _Run, utterances, noisy: dict, teacher_targets, layers) -> dict:
    """Statistics and distances of the run's current weights (overall and per utterance)."""
    student = run.model.student
    layerwise = run.objectives["layerwise"]
    run.model.eval()
    out = {"conditions": {}}
    clean, lengths = batch([w for _, w in utterances])
    # one batch: every utterance is cut to the same length, so there is no padding for the
    # group-norm CNN (which has no attention mask) to see
    s = student(clean, lengths)
    out["student_clean"] = [x.as_dict() for x in hidden_state_stats(s.hidden_states,
                                                                     s.frame_lengths)]
    for name, waves in noisy.items():
        wave, lens = batch(waves)
        s = student(wave, lens)
        source = s.hidden_states[layerwise.student_layer]
        frames = min(source.shape[1], teacher_targets[layers[0]].shape[1])
        mask = torch.ones(source.shape[0], frames, dtype=torch.bool)
        predictions = layerwise.predict(source[:, :frames])
        last = source[:, :frames].reshape(-1, source.shape[-1])
        per_layer = {}
        for layer, prediction in zip(layers, predictions, strict=True):
            target = teacher_targets[layer][:, :frames]
            per_item = [prediction_distance(prediction[b : b + 1], target[b : b + 1],
                                            mask[b : b + 1]) for b in range(len(utterances))]
            per_layer[str(layer)] = {
                **prediction_distance(prediction, target, mask).as_dict(),
                "l1_items": [d.l1 for d in per_item],  # per utterance, for paired intervals
                "cosine_items": [d.cosine for d in per_item],
                "cka_last_layer": linear_cka(last, target.reshape(-1, target.shape[-1])),
            }
        out["conditions"][name] = per_layer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path,
                        default=Path("../shared/data/librispeech-mini/test-other"))
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--noise-dir", default="runs/data/noise_test")
    parser.add_argument("--rir-dir", default="runs/data/rir_test")
    parser.add_argument("--conditions", nargs="+",
                        default=["clean", "snr-5", "snr0", "snr5", "snr10", "snr20", "reverb"])
    parser.add_argument("--seed", type=int, default=0, help="seeds the noise segments / rooms")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.manual_seed(0)

    items = held_out_items(args.data, args.items, args.seconds)
    corruptor = TestCorruptor.from_dirs(args.noise_dir, args.rir_dir, seed=args.seed)
    conditions = parse_conditions(args.conditions)
    noisy = {c.name: [corruptor.apply(w, c, key) for key, w in items] for c in conditions}
    result = {"items": [k for k, _ in items], "seconds": args.seconds,
              "noise_dir": args.noise_dir, "rir_dir": args.rir_dir,
              "test_audio_fingerprint": corruptor.fingerprint(), "runs": {}}
    teacher_targets = None
    for run_dir in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(run_dir / "config.yaml", [
                "--output_dir", tmp, "--teacher_cache.dir", "null",
                "--training.report_to", "[]", "--training.resume_from", "null",
                "--training.cpu", "true"])  # on the CPU wherever the run was trained
            run = _Run(cfg)  # same seed and config: the run's exact step-0 state
            layers = list(run.objectives["layerwise"].teacher_layers)
            if teacher_targets is None:  # the teacher is the same for every run
                clean, lengths = batch([w for _, w in items])
                with torch.no_grad():
                    t = run.teacher(clean, lengths)
                teacher_targets = {layer: t.hidden_states[layer].float() for layer in layers}
                result["teacher"] = {
                    "layers": layers,
                    "stats": [x.as_dict() for x in hidden_state_stats(t.hidden_states,
                                                                      t.frame_lengths)]}
            states = {"0": probe_state(run, items, noisy, teacher_targets, layers)}
            logger.info("%s step 0 done", run_dir)
            for path in sorted(list_checkpoints(run_dir / "checkpoints"), key=checkpoint_index):
                resume_weights(run, path)
                step = run.progress.step
                states[str(step)] = probe_state(run, items, noisy, teacher_targets, layers)
                logger.info("%s step %d done", run_dir, step)
            result["runs"][str(run_dir)] = states
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
