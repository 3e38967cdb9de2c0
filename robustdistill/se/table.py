"""The SE comparison table of ``docs/se.md`` from one command.

    python -m robustdistill.se.table --out runs/se_table [--steps 200 --seeds 0 1 2 ...]

Trains every (method, size, seed) from its recipe ``configs/se_<method>.yaml`` with the
sizes, steps, batch and crop given here (overriding the recipe's), on a shared pool of
training pairs (``data.pool_size``; the teacher's outputs on it are computed once), evaluates
every student and the NSNet2 and DTLN teachers on the held-out pairs of
:mod:`robustdistill.se.evaluate`, and writes ``results.json`` (every run, per SNR) and
``table.md`` (mean and standard deviation over seeds, and the paired check of the two-step
paper's claim). Runs whose ``results`` are already in ``results.json`` are skipped, so an
interrupted table resumes.

Every entry records the test set it was scored on (``test_set_sha1``, :meth:`~robustdistill.
se.evaluate.TestPairs.sha1`). A resume on another test set (other ``--snrs``, ``--test-speech``,
``--test-noise``, ``--per-speaker`` or ``--max-seconds``, or changed files) drops the entries
scored on the old one, with a warning, and scores the models again when they are asked for (a
trained student is loaded from its run folder, not trained again; its training time is kept
in ``<out>/runs/<entry>/train_seconds.json``), so one table never mixes test sets. A
``results.json`` written before the hash was recorded is scored again in full, teachers
included, once. ``--merge`` refuses folders scored on different test sets.

The runs share one speech scan cache, ``<out>/scan_cache`` (:class:`~robustdistill.se.data.
SpeechScanCache`), so only the table's first run decodes the speech folder; a recipe that sets
``data.scan_cache_dir`` (a folder, or ``off``) keeps its own setting.

A student already in ``<out>/runs/`` is used only when its ``config.yaml`` is the training
config asked for now (other ``--steps``, ``--batch-size``, ``--crop-seconds``,
``--pool-size``, ``--kd-fraction`` or recipe are refused before any work, with the keys that
differ: its results would otherwise be shown as trained with the new settings).

An unusable test speech file (unreadable, silent, NaN/Inf, too short) is skipped with a warning
and its speaker's next file taken (:func:`~robustdistill.se.evaluate.make_test_pairs`); a
recipe's speech, noise or RIR folder that is missing or holds no audio (for a student still to
train) is a one-line error before the teachers are scored or any student trained.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..interrupts import note as interrupt_note
from ..run_settings import saved_config_changes
from ..strict_json import nan_for_null, strict_dumps
from .evaluate import evaluate_model, make_test_pairs, noisy_summary
from .losses import METHODS

__all__ = ["main", "render_table", "shown_entries"]

logger = logging.getLogger(__name__)


def _fmt(values: list[float], digits: int) -> str:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v, ddof=1):.{digits}f}"


TRAIN_SECONDS = "train_seconds.json"  # in a student's run folder: its training time


def _read_results(path: Path) -> object:
    """``results.json`` as written (strict JSON: an undefined score is ``null``,
    :mod:`robustdistill.strict_json`), with every entry's per-SNR scores' ``null`` read as
    NaN, as a file written before that rule (bare ``NaN``) gives them; a file that is not a
    table's mapping is returned as it is, for the caller to refuse.

    Raises:
        OSError, ValueError: as ``Path.read_text`` and ``json.loads``.
    """
    entries = json.loads(path.read_text())
    if isinstance(entries, dict):
        for entry in entries.values():
            if isinstance(entry, dict) and isinstance(entry.get("results"), dict):
                entry["results"] = nan_for_null(entry["results"])
    return entries


def shown_entries(results: dict, methods: list[str], sizes: list[int]) -> list[str]:
    """The entries of ``results`` that :func:`render_table` shows: ``noisy``, ``nsnet2`` and
    ``dtln`` when present, then every seed's ``<method>_<size>x_s<seed>`` in the order of
    ``sizes`` and ``methods``."""
    return [name for name in ("noisy", "nsnet2", "dtln") if name in results] + [
        k for size in sizes for method in methods for k in results
        if k.startswith(f"{method}_{size}x_s")]


def _record_train_seconds(run_dir: Path, seconds: float | None) -> None:
    """Keep a dropped entry's training time beside its student, unless unknown, the student's
    folder is gone, or a time is already kept there."""
    path = run_dir / TRAIN_SECONDS
    if seconds is not None and run_dir.is_dir() and not path.is_file():
        atomic_write_text(path, json.dumps({"train_seconds": seconds}))


def _recorded_train_seconds(run_dir: Path) -> float | None:
    """The training time :func:`_record_train_seconds` kept, or None."""
    path = run_dir / TRAIN_SECONDS
    return json.loads(path.read_text())["train_seconds"] if path.is_file() else None


#: Keys of a run's config that do not change what it trains: where it lives, the speech scan
#: cache, the CPU threads, the trackers and the validation (its pairs, cadence and baseline:
#: a run trains the same weights with it on or off; runs before it have none of these keys).
_NOT_TRAINING = ("output_dir", "data.scan_cache_dir", "training.threads", "training.report_to",
                 "validation.", "training.eval_every", "training.eval_at_start")


def _changed_training(run_dir: Path, cfg) -> list[str]:
    """``["section.key OLD -> NEW", ...]``: how the training config ``cfg`` the table asks for
    now differs from the ``config.yaml`` of the run already in ``run_dir`` (apart from
    :data:`_NOT_TRAINING`); empty when there is no such run or nothing differs."""
    return saved_config_changes(run_dir, cfg.to_dict(), _NOT_TRAINING)


def render_table(results: dict, snrs: list[str], methods: list[str], sizes: list[int]) -> str:
    """Markdown: one table per SNR (mean ± sample std over seeds), then the claim check.

    Args:
        results: ``results.json``'s mapping, entry name -> ``{"results": {snr: scores}, ...}``.
        snrs: the input SNRs shown, as the results' keys (e.g. ``"-5"``).
        methods / sizes: the student rows shown (entries ``<method>_<size>x_s<seed>``).

    Raises:
        ValueError: a shown entry has no results at one of ``snrs``.
    """
    shown = shown_entries(results, methods, sizes)
    for name in shown:
        missing = [snr for snr in snrs if snr not in results[name]["results"]]
        if missing:
            raise ValueError(f"{name} has no results at input SNR {', '.join(missing)} dB")
    lines = []
    cols = [("si_sdr", 2), ("si_sdr_i", 2), ("pesq", 2), ("pesq_i", 2), ("stoi", 3),
            ("stoi_i", 3)]
    head = "| model | params | seeds | SI-SDR (dB) | SI-SDRi (dB) | PESQ | PESQi | STOI | STOIi |"
    for snr in snrs:
        lines += [f"\n**Input SNR {snr} dB**\n", head, "|---" * 9 + "|"]
        for name in ("noisy", "nsnet2", "dtln"):
            if name in results:
                r = results[name]
                row = [f"{r['results'][snr][c]:.{d}f}" for c, d in cols]
                lines.append(f"| {name} | {r.get('parameters', '-')} | - | " + " | ".join(row)
                             + " |")
        for size in sizes:
            for method in methods:
                runs = [v for k, v in results.items() if k.startswith(f"{method}_{size}x_s")]
                if not runs:
                    continue
                row = [_fmt([r["results"][snr][c] for r in runs], d) for c, d in cols]
                lines.append(f"| {method} {size}x | {runs[0]['parameters']} | {len(runs)} | "
                             + " | ".join(row) + " |")
    unscored = [f"{name} at {snr} dB: " + ", ".join(f"{m} {n} of {scores['n']}"
                                                   for m, n in scores["unscored"].items())
                for name in shown for snr in snrs
                if (scores := results[name]["results"].get(snr, {})).get("unscored")]
    if unscored:
        lines += ["", "Unscored utterances, left out of the means above (a PESQ failure, or "
                      "SI-SDR of a silent output; an improvement is also unscored where the "
                      "noisy input's score failed, as the noisy row shows; leaving them out "
                      "favours the model): " + "; ".join(unscored) + "."]
    # the two-step paper's claim: at -5 dB and 63x, two-step + Gram beats the mixture by ~1 dB
    a = {k.split("_s")[-1]: v for k, v in results.items() if k.startswith("two_step_gram_63x_s")}
    b = {k.split("_s")[-1]: v for k, v in results.items() if k.startswith("mixture_63x_s")}
    seeds = sorted(set(a) & set(b))
    if seeds and "-5" in snrs:
        d = [a[s]["results"]["-5"]["si_sdr"] - b[s]["results"]["-5"]["si_sdr"] for s in seeds]
        mean = float(np.mean(d))
        if len(d) > 1:
            from scipy.stats import t as student_t

            half = (float(student_t.ppf(0.975, len(d) - 1)) * float(np.std(d, ddof=1))
                    / math.sqrt(len(d)))
            ci = f"95% t-interval [{mean - half:.2f}, {mean + half:.2f}] dB"
        else:
            ci = "one seed: no interval"
        lines += ["", f"Claim check (arXiv 2309.08144: about +1 dB): SI-SDR of two-step + Gram "
                      f"minus weighted mixture at -5 dB, 63x, paired by seed: "
                      f"{', '.join(f'{x:+.2f}' for x in d)} dB; mean {mean:+.2f} dB, {ci}."]
    return "\n".join(lines) + "\n"


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends in ``(default: X)``, except an option whose default is None:
    its help says what it does when not given (``--snrs``: -5 0 5, or the merged results')."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    """Build (or resume) the table."""
    parser = argparse.ArgumentParser(prog="python -m robustdistill.se.table",
                                     formatter_class=_DefaultsHelp)
    parser.add_argument("--out", default="runs/se_table",
                        help="table folder: results.json, table.md, runs/<entry>/ (resumable)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="recipes, configs/se_<method>.yaml")
    parser.add_argument("--sizes", nargs="+", type=int, default=[63, 32, 16],
                        help="student compression ratios against NSNet2")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                        help="training seeds (one student per method, size and seed)")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per student")
    parser.add_argument("--kd-fraction", type=float, default=0.5,
                        help="share of the steps in two-step phase 1")
    parser.add_argument("--batch-size", type=int, default=8, help="training batch size")
    parser.add_argument("--crop-seconds", type=float, default=1.0,
                        help="training crop length (s)")
    parser.add_argument("--pool-size", type=int, default=1024,
                        help="noisy/clean training pairs made once and drawn from "
                             "(data.pool_size)")
    parser.add_argument("--per-speaker", type=int, default=2,
                        help="test utterances per test speaker")
    parser.add_argument("--max-seconds", type=float, default=6.0,
                        help="test utterances cut to this length (s)")
    parser.add_argument("--snrs", nargs="+", type=float, default=None,
                        help="input SNRs in dB (default -5 0 5; with --merge: those of the "
                             "merged results)")
    parser.add_argument("--test-speech", default="../shared/data/librispeech-mini/test-other",
                        help="test speech, one subfolder per speaker")
    parser.add_argument("--test-noise", default="runs/data/noise_test",
                        help="test noise (held out from training: scripts/split_shared_data.sh)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per training run")
    parser.add_argument("--configs", default="configs", help="folder of the se_*.yaml recipes")
    parser.add_argument("--skip-teachers", action="store_true",
                        help="do not evaluate NSNet2 and DTLN (another table folder does)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                        help="only merge the results.json of these table folders (e.g. one "
                             "per seed, run in parallel) into --out and render the table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.merge:
        merged: dict = {}
        test_sets: dict[str, list[str]] = {}  # test_set_sha1 -> folders
        unhashed = []
        for folder in args.merge:
            path = Path(folder) / "results.json"
            try:
                entries = _read_results(path)
            except FileNotFoundError:
                parser.error(f"--merge: {path} does not exist (not a table folder?)")
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                parser.error(f"--merge: {path} is not valid JSON ({err})")
            if not isinstance(entries, dict) or not all(
                    isinstance(e, dict) and isinstance(e.get("results"), dict)
                    for e in entries.values()):
                parser.error(f"--merge: {path} is not a table's results.json (a mapping of "
                             "entry to {'results': {snr: scores}, ...})")
            for name, entry in entries.items():
                if entry.get("test_set_sha1"):
                    test_sets.setdefault(entry["test_set_sha1"], []).append(f"{folder}:{name}")
                else:
                    unhashed.append(f"{folder}:{name}")
            merged.update(entries)
        if not merged:
            parser.error(f"nothing to merge: the results.json of {args.merge} are empty")
        if len(test_sets) > 1:
            parser.error("the folders were scored on different test sets; merge only folders "
                         "built with the same --test-speech, --test-noise, --snrs, "
                         "--per-speaker and --max-seconds: " + "; ".join(
                             f"{', '.join(names)} on {sha[:10]}"
                             for sha, names in test_sets.items()))
        if unhashed:
            logger.warning("%s predate test-set hashes: that they share one test set is not "
                           "checked", ", ".join(unhashed))
        per_entry = [set(r["results"]) for r in merged.values()]
        snrs = ([f"{s:g}" for s in args.snrs] if args.snrs else
                sorted(set.intersection(*per_entry), key=float))
        if not snrs:
            parser.error("the merged results share no input SNR; give --snrs")
        lacking = [f"{name} ({', '.join(s for s in snrs if s not in merged[name]['results'])}"
                   " dB)" for name in shown_entries(merged, args.methods, args.sizes)
                   if not set(snrs) <= set(merged[name]["results"])]
        if lacking:
            parser.error("--snrs asks for input SNRs some merged results lack: "
                         + "; ".join(lacking))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out) / "results.json", strict_dumps(merged, indent=1))
        dropped = sorted(set.union(*per_entry) - set(snrs), key=float)
        if dropped:
            logging.getLogger(__name__).warning(
                "SNRs %s dB are not in every merged result: left out of the table",
                ", ".join(dropped))
        text = render_table(merged, snrs, args.methods, args.sizes)
        atomic_write_text(Path(args.out) / "table.md", text)
        print(text)
        return 0
    args.snrs = args.snrs or [-5.0, 0.0, 5.0]
    with interrupt_note(lambda: f"; {Path(args.out) / 'results.json'} keeps the entries "
                                "finished so far: the same command goes on from there"):
        return _build(parser, args)


def _build(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Train, score and tabulate what ``results.json`` lacks (:func:`main` without
    ``--merge``)."""
    import torch

    torch.set_num_threads(args.threads)
    from ..audio import list_audio_files
    from ..config import ConfigError
    from .students import GRUMaskStudent, count_parameters
    from .teacher_pool import shared_pools
    from .teachers import load_teacher
    from .train import SCAN_CACHE_FOLDER, load_se_config, train_se

    out = Path(args.out)
    planned = []  # (key, run folder, training config, (method, size, seed)), checked first
    for size in args.sizes:
        for method in args.methods:
            for seed in args.seeds:
                key = f"{method}_{size}x_s{seed}"
                run_dir = out / "runs" / key
                overrides = ["--output_dir", str(run_dir), "--seed", str(seed),
                             "--student.ratio", str(size),
                             "--training.max_steps", str(args.steps),
                             "--training.batch_size", str(args.batch_size),
                             "--training.save_every", "0", "--training.log_every", "20",
                             "--training.threads", str(args.threads),
                             "--data.crop_seconds", str(args.crop_seconds),
                             "--data.pool_size", str(args.pool_size)]
                if method == "two_step_gram":
                    overrides += ["--loss.kd_steps", str(int(args.steps * args.kd_fraction))]
                try:
                    cfg = load_se_config(Path(args.configs) / f"se_{method}.yaml", overrides)
                    cfg.student.build()  # e.g. --sizes 1
                except (ConfigError, FileNotFoundError, ValueError) as err:  # e.g. --steps 0
                    parser.error(f"{key} (--steps {args.steps}, --kd-fraction "
                                 f"{args.kd_fraction:g}): {err}")
                if cfg.data.scan_cache_dir is None:  # not the run's own <run_dir>/scan_cache
                    cfg.data.scan_cache_dir = str(out / SCAN_CACHE_FOLDER)
                changed = _changed_training(run_dir, cfg)
                if changed:
                    parser.error(f"{run_dir} was trained with other settings ("
                                 f"{'; '.join(changed)}): its results would be shown as "
                                 "trained with these; give another --out, or the same "
                                 "settings")
                planned.append((key, run_dir, cfg, (method, size, seed)))
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = _read_results(res_path) if res_path.is_file() else {}

    def save() -> None:  # whole files: a Ctrl-C or a kill while saving keeps the last ones
        atomic_write_text(res_path, strict_dumps(results, indent=1))
        snrs = [f"{s:g}" for s in args.snrs]
        atomic_write_text(out / "table.md", render_table(results, snrs, args.methods, args.sizes))

    try:
        pairs = make_test_pairs(args.test_speech, args.test_noise, tuple(args.snrs),
                                args.per_speaker, args.max_seconds)
    except FileNotFoundError as err:  # a test folder missing or without audio: one line
        hint = ("; runs/data/* is made once by `bash scripts/split_shared_data.sh`"
                if "runs/data/" in str(err) else "")
        parser.error(f"test set: {err}{hint}")
    checked: set[str] = set()  # the recipes' data folders: missing or audio-less is one line
    for key, run_dir, cfg, _ in planned:  # before the teachers are scored or a student trained
        if (run_dir / "student" / "model.safetensors").is_file():
            continue  # trained by an earlier call: its data is not read again
        for folder in (cfg.data.speech_dir, cfg.data.noise_dir, cfg.data.rir_dir):
            if folder is not None and folder not in checked:
                checked.add(folder)
                try:
                    list_audio_files(folder)
                except FileNotFoundError as err:
                    hint = ("; runs/data/* is made once by `bash scripts/split_shared_data.sh`"
                            if "runs/data/" in str(err) else "")
                    parser.error(f"{key}: {err}{hint}")
    test_set = pairs.sha1()
    stale = sorted(k for k, r in results.items()
                   if k != "noisy" and r.get("test_set_sha1") != test_set)
    if stale:
        logger.warning("entries of %s scored on another test set (or before the table "
                       "recorded one), dropped and scored again when asked for: %s",
                       res_path, ", ".join(stale))
        for k in stale:  # the time is known only from the entry: keep it beside the student
            _record_train_seconds(out / "runs" / k, results[k].get("train_seconds"))
        results = {k: r for k, r in results.items() if k not in stale}
    results["noisy"] = {"test_set_sha1": test_set, "results": noisy_summary(pairs)}
    for name in () if args.skip_teachers else ("nsnet2", "dtln"):
        if name not in results:
            model = load_teacher(name)
            results[name] = {"parameters": count_parameters(model), "test_set_sha1": test_set,
                             "results": evaluate_model(model, pairs)}
            save()
    for key, run_dir, cfg, (method, size, seed) in planned:
        if key in results:
            continue
        t0 = time.perf_counter()
        trained = (run_dir / "student" / "model.safetensors").is_file()
        if not trained:
            with shared_pools():  # the later runs of the same recipe read the same outputs
                train_se(cfg)
        if trained:  # by an earlier call
            train_s = _recorded_train_seconds(run_dir)
        else:
            train_s = round(time.perf_counter() - t0, 1)
            atomic_write_text(run_dir / TRAIN_SECONDS, json.dumps({"train_seconds": train_s}))
        student = GRUMaskStudent.from_pretrained(run_dir / "student")
        results[key] = {"method": method, "size": size, "seed": seed,
                        "parameters": count_parameters(student),
                        "train_seconds": train_s, "test_set_sha1": test_set,
                        "results": evaluate_model(student, pairs)}
        lowest = min(results[key]["results"], key=float)  # the hardest input SNR
        logger.info("%s: SI-SDR at %s dB %.2f (%.0f s)", key, lowest,
                    results[key]["results"][lowest]["si_sdr"], time.perf_counter() - t0)
        save()
    save()
    print((out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    from robustdistill.interrupts import handled

    with handled("python -m robustdistill.se.table"):  # Ctrl-C, SIGTERM: one line, 130 / 143
        raise SystemExit(main())
