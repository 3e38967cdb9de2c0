"""Evaluate the issue-10 runs (scripts/literature_table.sh): one Markdown table.

For every student (the shared initial student and each run's exported student):

- distance to the teacher: a ridge map (fitted once per student, on noisy *training* crops
  with runs/data/noise_train at uniform 0-20 dB SNR) from the student's concatenated layers
  to each target teacher layer on the *clean* crop; on test-other (unseen speakers) mixed
  with runs/data/noise_test (unseen noises) at 0, 10 and 20 dB, the mean over utterances of
  the per-utterance mean ``1 - cos`` over frames, with a 95 % bootstrap interval over
  utterances. The same probe for every method, so the heads each objective trained (MLP
  heads, bottlenecks, projections) play no part.
- the same distance *centred*: the teacher layer's mean frame (over the clean training crops)
  is subtracted from the target and from the prediction before the cosine, so a prediction of
  the mean frame scores 1, not about 0 (the uncentred cosine of Whisper's nearly parallel
  frames rewards the mean frame).
- a downstream probe: 10-speaker identification on test-other (100 utterances), mean-pooled
  concatenated layers, multinomial logistic regression, 5-fold cross-validation (2
  utterances per speaker per fold), accuracy with a 95 % Wilson interval.
- paired differences of every method against (a) layer prediction, per test utterance (the
  same noisy audio for every student), with 95 % bootstrap intervals.

Usage: python scripts/literature_table.py [OUT] [--test-seconds 3] [--train-items 40]
       [--runs init a_layerwise ...] [--tag NAME]   (evaluate some students into eval_NAME.json)
       python scripts/literature_table.py [OUT] --table-only   (merge eval_*.json into table.md)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from robustdistill.audio import list_audio_files, load_audio
from robustdistill.augment.noise import mix_at_snr
from robustdistill.upstream import Upstream

RUNS = ["a_layerwise", "b_enhancement", "c_gram", "c2_gram_centred", "d_cosine", "e_tfckd"]
BASELINE = "a_layerwise"
LAYERS = [1, 3, 4]
SNRS = [0, 10, 20]


def pick(folder: Path, n: int | None) -> list[str]:
    """``n`` files of ``folder`` spread evenly over its sorted listing (all with None)."""
    files = sorted(list_audio_files(folder))
    if n is not None:
        step = max(1, len(files) // n)
        files = files[::step][:n]
    return [str(f) for f in files]


def crops(files: list[str], seconds: float) -> tuple[list[np.ndarray], list[str]]:
    """The first ``seconds`` of each file and its speaker (the name's prefix)."""
    waves = [load_audio(f)[: int(seconds * 16000)] for f in files]
    return waves, [Path(f).name.split("-")[0] for f in files]


def trained_frames(out: Path, runs: list[str]) -> str:
    """The Whisper frame grid (``whisper_teacher_frames``) the runs under ``out`` trained on,
    from their ``config.yaml`` (default ``ssl``), so that the ridge maps are fitted on the same
    grid.

    Raises:
        SystemExit: the runs used different grids.
    """
    import yaml

    found = {}
    for name in runs:
        config = out / name / "config.yaml"
        if config.is_file():
            found[name] = (yaml.safe_load(config.read_text()) or {}).get(
                "whisper_teacher_frames", "ssl")
    if len(set(found.values())) > 1:
        raise SystemExit(f"the runs trained on different Whisper frame grids: {found}; give "
                         "--whisper-frames")
    return next(iter(found.values()), "ssl")


def teacher_targets(cache: Path, teacher: Path, seconds: float, train: tuple[list, list],
                    test: tuple[list, list], frames: str = "ssl"):
    """The teacher's ``LAYERS`` on the clean train and test crops (``(files, waves)`` each,
    ``seconds`` long), on the Whisper frame grid ``frames``: read from ``cache`` when it was
    made with the same teacher folder (path, file sizes and times), grid, crop length, layers
    and files, else computed and saved there with those settings (an older cache without them
    is recomputed too)."""
    if not teacher.is_dir():
        raise SystemExit(f"teacher folder {teacher} not found (--shared)")
    key = {"teacher": str(teacher.resolve()), "frames": frames, "seconds": float(seconds),
           "layers": LAYERS,
           "teacher_files": sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns]
                                   for f in teacher.iterdir() if f.is_file()),
           "train": [str(Path(f).resolve()) for f in train[0]],
           "test": [str(Path(f).resolve()) for f in test[0]]}
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["train"], saved["test"]
        print(f"{cache}: made with other settings (teacher, --test-seconds, --shared, "
              "--train-items or files): recomputing", flush=True)
    model = Upstream.from_pretrained(teacher, whisper_frames=frames)
    t_train, t_test = forward(model, train[1], LAYERS), forward(model, test[1], LAYERS)
    torch.save({"key": key, "train": t_train, "test": t_test}, cache)
    return t_train, t_test


@torch.no_grad()
def forward(model: Upstream, waves: list[np.ndarray], layers) -> list[dict[int, torch.Tensor]]:
    out = []
    for w in waves:
        x = torch.from_numpy(np.ascontiguousarray(w)).float()[None]
        res = model(x, torch.tensor([x.shape[1]]))
        n = int(res.frame_lengths[0])
        out.append({layer: res.hidden_states[layer][0, :n].float() for layer in layers})
    return out


def noisy(waves, noises, snr, seed):
    rng = np.random.default_rng(seed)
    return [mix_at_snr(w, noises[i % len(noises)], snr if snr is not None else
                       rng.uniform(0, 20), rng).astype(np.float32) for i, w in enumerate(waves)]


def student_features(h: dict[int, torch.Tensor], n: int) -> torch.Tensor:
    return torch.cat([h[k][:n] for k in sorted(h)], dim=-1)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-3) -> torch.Tensor:
    x = torch.cat([x, torch.ones(len(x), 1)], dim=1).double()
    gram = x.T @ x
    reg = lam * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    return torch.linalg.solve(gram + reg, x.T @ y.double()).float()


def apply(w, x):
    return torch.cat([x, torch.ones(len(x), 1)], dim=1) @ w


def bootstrap(values: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n, len(values)))].mean(axis=1)
    return float(values.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def speaker_probe(feats: torch.Tensor, labels: list[str], folds: int) -> np.ndarray:
    """Per-utterance correctness (0/1) of a cross-validated logistic-regression speaker ID."""
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(s) for s in labels])
    rank = torch.zeros(len(y), dtype=torch.long)  # position of each utterance in its speaker
    for c in range(len(classes)):
        idx = (y == c).nonzero().flatten()
        rank[idx] = torch.arange(len(idx))
    correct = np.zeros(len(y))
    for fold in range(folds):
        test = rank % folds == fold
        xtr, xte = feats[~test], feats[test]
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
        torch.manual_seed(0)
        lin = torch.nn.Linear(xtr.shape[1], len(classes))
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

        def closure(opt=opt, lin=lin, xtr=xtr, ytr=y[~test]):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin(xtr), ytr) \
                + 1e-2 * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            correct[test.numpy()] = (lin(xte).argmax(1) == y[test]).float().numpy()
    return correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="runs/lit10")
    parser.add_argument("--shared", default="../shared")
    parser.add_argument("--test-seconds", type=float, default=3.0)
    parser.add_argument("--train-items", type=int, default=40)
    parser.add_argument("--per-speaker", type=int, default=10,
                        help="test utterances per speaker (first K of each)")
    parser.add_argument("--train-use", type=int, default=None,
                        help="ridge-fit on the first N of the --train-items crops")
    parser.add_argument("--runs", nargs="+", default=["init", *RUNS])
    parser.add_argument("--tag", default="all")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument("--whisper-frames", choices=["ssl", "native"], default=None,
                        help="the teacher's frame grid for the ridge targets (default: the "
                             "runs' whisper_teacher_frames; runs whose teacher cache predates "
                             "2026-12-06 trained on native whatever their config says)")
    args = parser.parse_args()
    torch.manual_seed(0)
    out, shared = Path(args.out), Path(args.shared)
    if args.table_only:
        results = {}
        for path in sorted(out.glob("eval_*.json")):
            results.update(json.loads(path.read_text()))
        order = ["initial student (no training)", *RUNS]
        write_table(out, {k: results[k] for k in order if k in results})
        return
    noise_train = [load_audio(f) for f in sorted(list_audio_files("runs/data/noise_train"))]
    noise_test = [load_audio(f) for f in sorted(list_audio_files("runs/data/noise_test"))]
    train_files = pick(shared / "data/librispeech-mini/train-clean-100", args.train_items)
    test_files = pick(shared / "data/librispeech-mini/test-other", None)
    train_clean, _ = crops(train_files, args.test_seconds)
    test_clean, speakers = crops(test_files, args.test_seconds)
    train_noisy = noisy(train_clean, noise_train, None, seed=1)
    test_noisy = {snr: noisy(test_clean, noise_test, snr, seed=2) for snr in SNRS}
    t_train, t_test = teacher_targets(out / "eval_teacher.pt", shared / "models/whisper-tiny.en",
                                      args.test_seconds, (train_files, train_clean),
                                      (test_files, test_clean),
                                      args.whisper_frames or trained_frames(out, args.runs))
    seen: dict[str, int] = {}
    keep = []
    for i, spk in enumerate(speakers):
        seen[spk] = seen.get(spk, 0) + 1
        if seen[spk] <= args.per_speaker:
            keep.append(i)
    speakers = [speakers[i] for i in keep]
    t_test = [t_test[i] for i in keep]
    test_noisy = {snr: [waves[i] for i in keep] for snr, waves in test_noisy.items()}
    use = args.train_use or len(train_noisy)
    train_noisy, t_train = train_noisy[:use], t_train[:use]
    students = {}
    if "init" in args.runs:
        students["initial student (no training)"] = out / RUNS[0] / "student_init"
    students.update({run: out / run / "student" for run in RUNS if run in args.runs})
    results = {}
    for name, path in students.items():
        model = Upstream.from_pretrained(path)
        layers = list(range(1, model.num_layers + 1))
        s_train = forward(model, train_noisy, layers)
        row = {}
        frames = [min(len(s[layers[0]]), len(t[LAYERS[0]]))
                  for s, t in zip(s_train, t_train, strict=True)]
        x = torch.cat([student_features(s, n) for s, n in zip(s_train, frames, strict=True)])
        targets = {la: torch.cat([t[la][:n] for t, n in zip(t_train, frames, strict=True)])
                   for la in LAYERS}
        maps = {la: ridge(x, targets[la]) for la in LAYERS}
        centre = {la: targets[la].mean(0) for la in LAYERS}
        per_utt_all = {}
        for snr in SNRS:
            s_test = forward(model, test_noisy[snr], layers)
            for la in LAYERS:
                per_utt, per_utt_c = [], []
                for s, t in zip(s_test, t_test, strict=True):
                    n = min(len(s[layers[0]]), len(t[la]))
                    pred = apply(maps[la], student_features(s, n))
                    cos = torch.nn.functional.cosine_similarity(pred, t[la][:n], dim=-1)
                    per_utt.append(float((1 - cos).mean()))
                    cos_c = torch.nn.functional.cosine_similarity(
                        pred - centre[la], t[la][:n] - centre[la], dim=-1)
                    per_utt_c.append(float((1 - cos_c).mean()))
                row[f"L{la}@{snr}dB"] = bootstrap(np.array(per_utt))
                row[f"cL{la}@{snr}dB"] = bootstrap(np.array(per_utt_c))
                per_utt_all[f"L{la}@{snr}dB"] = per_utt
                per_utt_all[f"cL{la}@{snr}dB"] = per_utt_c
            pooled = torch.stack([student_features(s, len(s[layers[0]])).mean(0) for s in s_test])
            folds = min(5, args.per_speaker)
            correct = speaker_probe(pooled, speakers, folds)
            row[f"spk@{snr}dB"] = wilson(int(correct.sum()), len(speakers))
            per_utt_all[f"spk@{snr}dB"] = correct.tolist()
        row["per_utterance"] = per_utt_all
        results[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "per_utterance"}), flush=True)
    (out / f"eval_{args.tag}.json").write_text(json.dumps(results, indent=1))
    write_table(out, results)


def paired(a: list[float], b: list[float], seed: int = 0, n: int = 2000):
    """Mean of ``a - b`` over the same test utterances and its 95 % bootstrap interval."""
    return bootstrap(np.asarray(a) - np.asarray(b), seed=seed, n=n)


def write_table(out: Path, results: dict) -> None:
    """``table.md``: uncentred and centred distances, speaker accuracy, differences to (a)."""
    def cell(v, digits=3):
        return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"

    lines = []
    for prefix, title in (("", "1 - cos (uncentred) of the ridge prediction"),
                          ("c", "1 - cos, centred on the teacher layer's mean frame")):
        cols = [f"{prefix}L{la}@{snr}dB" for la in LAYERS for snr in SNRS]
        if not all(c in row for row in results.values() for c in cols):
            continue
        lines += [f"**{title}** (lower is closer; 95 % bootstrap interval over test utterances)",
                  "", "| student | " + " | ".join(
                      f"L{la} {snr} dB" for la in LAYERS for snr in SNRS) + " |",
                  "|" + "---|" * (1 + len(cols))]
        lines += [f"| {name} | " + " | ".join(cell(row[c]) for c in cols) + " |"
                  for name, row in results.items()]
        lines.append("")
    lines += ["**Speaker identification** (accuracy, 95 % Wilson interval)", "",
              "| student | " + " | ".join(f"{snr} dB" for snr in SNRS) + " |",
              "|" + "---|" * (1 + len(SNRS))]
    lines += [f"| {name} | " + " | ".join(cell(row[f"spk@{s}dB"], 2) for s in SNRS) + " |"
              for name, row in results.items()]
    base = results.get(BASELINE, {}).get("per_utterance")
    if base:
        cols = [f"cL{la}@{snr}dB" for la in LAYERS for snr in SNRS] + \
            [f"spk@{snr}dB" for snr in SNRS]
        lines += ["", f"**Paired differences to {BASELINE}** (method - {BASELINE}, same test "
                  "utterances; centred 1 - cos: negative is closer to the teacher; speaker "
                  "accuracy: positive is better; **bold**: the 95 % interval excludes 0)", "",
                  "| student | " + " | ".join(c.replace("cL", "L").replace("@", " ")
                                              .replace("spk", "spk acc") for c in cols) + " |",
                  "|" + "---|" * (1 + len(cols))]
        for name, row in results.items():
            if name == BASELINE or "per_utterance" not in row:
                continue
            cells = []
            for c in cols:
                d = paired(row["per_utterance"][c], base[c])
                text = f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
                cells.append(f"**{text}**" if d[1] > 0 or d[2] < 0 else text)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
