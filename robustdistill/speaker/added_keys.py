"""What a speaker run made by older code lacks, and whether that changed it: the declared
settings added later (:data:`ADDED_KEYS`: each entry's keys, the date they were added and the
test of whether a run from before them would differ from one made now), and the setting compared
by what it does rather than its value (:data:`SAME_EFFECT`). Read by ``table``'s reuse of a
finished run (:func:`~robustdistill.speaker.table.finished_run`, on its ``result.json``) and by
a resume (:func:`~robustdistill.speaker.run_folder.check_run_folder`, on its checkpoint's
settings), so a third key added later is one entry here.

A run's record is flattened ``{"section.key": value}``: a checkpoint's settings
(:func:`~robustdistill.speaker.run_folder.weight_settings`) or a ``result.json``'s
(:func:`result_settings`). A run predates an entry when the record this code makes of the same
run holds some of the entry's keys and the run's own record lacks them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from downstream.config import to_dict
from robustdistill.run_settings import flatten

from .config import SpeakerKDConfig
from .ge2e import SAMPLE_RATE
from .targets import MAP_FRAMES_RULE, floor_rule_targets_differ

__all__ = ["ADDED_KEYS", "MAP_FRAMES_KEY", "MIN_LENGTH_KEYS", "SAME_EFFECT", "AddedKeys",
           "OldRun", "SameEffect", "Verdict", "awaits_inputs", "map_targets_predate_rule",
           "old_run_verdict", "predated", "result_settings", "run_record", "same_effect",
           "too_short_under"]

#: The key, in a checkpoint's settings, of the rule IML-KD's maps were moved onto the student's
#: frames with (:data:`~robustdistill.speaker.targets.MAP_FRAMES_RULE`; none before
#: 2026-12-07); ``result.json`` holds it as ``map_frames`` (:func:`result_settings`).
MAP_FRAMES_KEY = "ig.map_frames"

#: The ``data`` minimum durations added on 2026-12-07 and the sets each applies to: shorter
#: files are skipped as ``too short``; before, they were zero-padded and used.
MIN_LENGTH_KEYS = {"min_length_s": ("train",), "min_test_length_s": ("test_other", "fsdd")}

Skipped = dict[str, dict[str, str]]


@dataclass(frozen=True)
class Verdict:
    """Whether a run from before some keys is the run this code would make.

    Attributes:
        reuse: True: unchanged (a table reuses it, a resume goes on); False: changed
            (``reason`` says how); None: undecided until the inputs are loaded.
        reason: why, phrased for the caller (:class:`OldRun`'s ``resume``): after ``not
            reusing RESULT: `` or ``reusing RESULT, `` for the table, after ``CHECKPOINT `` for
            a refused resume; empty where there is nothing to say (the plain case).
    """

    reuse: bool | None
    reason: str = ""


@dataclass(frozen=True)
class OldRun:
    """A run from before an entry's keys, as its test sees it.

    Attributes:
        missing: the entry's keys the run's record lacks (dotted, ``data.min_length_s``).
        added: the date they were added (``2026-12-07``).
        skipped: the loaded inputs' skipped files, ``{set name: {path: reason}}``
            (:func:`~robustdistill.speaker.inputs.load_run_inputs`); None: not loaded yet.
        resume: a checkpoint to resume from (True) or a finished run to reuse (False).
    """

    missing: list[str]
    added: str
    skipped: Skipped | None
    resume: bool


@dataclass(frozen=True)
class AddedKeys:
    """Settings added later (:data:`ADDED_KEYS`).

    Attributes:
        keys: their dotted names, as a run's record holds them (:func:`result_settings`,
            :func:`~robustdistill.speaker.run_folder.weight_settings`).
        added: the date they were added; runs before it lack them.
        test: ``test(cfg, old_run)``: whether a run of ``cfg`` lacking ``old_run.missing``
            differs from one made now (:class:`Verdict`).
    """

    keys: tuple[str, ...]
    added: str
    test: Callable[[SpeakerKDConfig, OldRun], Verdict]


def map_targets_predate_rule(cfg: SpeakerKDConfig) -> bool:
    """Whether an IML-KD run of ``cfg`` made before 2026-12-07 (no :data:`MAP_FRAMES_KEY`)
    was trained on other map targets than this code's
    (:func:`~robustdistill.speaker.targets.floor_rule_targets_differ` for its student, crop
    length and ``ig.durations``)."""
    return cfg.loss.method == "imlkd" and floor_rule_targets_differ(
        cfg.student.kind, int(round(cfg.data.crop_seconds * SAMPLE_RATE)), cfg.ig.durations)


def _map_frames_changed(cfg: SpeakerKDConfig, run: OldRun) -> Verdict:
    """An IML-KD run from before :data:`MAP_FRAMES_KEY`: changed where the old frame mapping
    gave other map targets (:func:`map_targets_predate_rule`); the inputs play no part."""
    if not map_targets_predate_rule(cfg):
        return Verdict(True)
    if run.resume:
        return Verdict(False, f"was trained before {run.added} on IML-KD map targets put on "
                              "other student frames (docs/imlkd.md, \"Teacher maps on the "
                              "student's frames\"); resuming would train on two kinds of map "
                              "targets as one run")
    return Verdict(False, f"trained before {run.added} on IML-KD map targets put on other "
                          "student frames (docs/imlkd.md)")


def too_short_under(skipped: Skipped, keys: list[str]) -> dict[str, int]:
    """``{set name: number of files skipped as too short}`` of the sets that ``keys`` (of
    :data:`MIN_LENGTH_KEYS`) apply to, those with any: the files a run from before those keys
    used (zero-padded) and a run now skips."""
    counts = {}
    for key in keys:
        for name in MIN_LENGTH_KEYS[key]:
            if n := sum(r == "too short" for r in skipped.get(name, {}).values()):
                counts[name] = n
    return counts


def _min_lengths_changed(cfg: SpeakerKDConfig, run: OldRun) -> Verdict:
    """A run from before ``data.min_length_s`` / ``data.min_test_length_s``: unchanged when
    no input file of the sets the minimums it lacks apply to is ``too short`` (it trained and
    was evaluated on the files a run now uses); else changed (it used them, zero-padded);
    undecided while the inputs are not loaded."""
    if run.skipped is None:
        return Verdict(None)
    keys = " and ".join(run.missing)
    short = too_short_under(run.skipped, [k.removeprefix("data.") for k in run.missing])
    n = sum(short.values())
    if run.resume:  # a checkpoint's settings hold data.min_length_s only (the training files)
        return Verdict(True) if not n else Verdict(
            False, f"was trained before {keys} ({run.added}) on {n} training file(s) now "
                   f"skipped as shorter than {cfg.data.min_train_seconds:g} s (it used them "
                   "zero-padded); a resume would report it as a run without them")
    if not n:
        return Verdict(True, f"made before {keys} ({run.added}): none of its input files is "
                             "shorter than that now, so it is unchanged")
    return Verdict(False, f"it was made before {keys} ({run.added}), and {n} of its input "
                          f"files {'is' if n == 1 else 'are'} now shorter than that ("
                          + ", ".join(f"{name} {k}" for name, k in short.items())
                          + "), which it used and a run now skips")


#: The settings added later, in the order their tests run (the first refusal is the one
#: reported). A run whose record lacks some of an entry's keys is judged by the entry's test.
ADDED_KEYS: tuple[AddedKeys, ...] = (
    AddedKeys((MAP_FRAMES_KEY,), "2026-12-07", _map_frames_changed),
    AddedKeys(tuple(f"data.{k}" for k in MIN_LENGTH_KEYS), "2026-12-07", _min_lengths_changed),
)


def result_settings(result: Mapping[str, Any]) -> dict[str, Any]:
    """A ``result.json``'s record, flattened as :data:`ADDED_KEYS` names its keys: its
    ``config`` (``{"data.min_length_s": 1.0, ...}``; none when it holds no dict) and, for an
    IML-KD run, :data:`MAP_FRAMES_KEY` from its ``map_frames``."""
    config = result.get("config")
    flat = flatten(config) if isinstance(config, Mapping) else {}
    if "map_frames" in result:
        flat[MAP_FRAMES_KEY] = result["map_frames"]
    return flat


def run_record(cfg: SpeakerKDConfig) -> dict[str, Any]:
    """:func:`result_settings` of the ``result.json`` this code writes for a run of ``cfg``
    (:func:`~robustdistill.speaker.train.train_system`)."""
    result: dict[str, Any] = {"config": to_dict(cfg)}
    if cfg.loss.method == "imlkd":
        result["map_frames"] = MAP_FRAMES_RULE
    return result_settings(result)


def predated(saved: Mapping[str, Any], now: Mapping[str, Any]
             ) -> list[tuple[AddedKeys, list[str]]]:
    """The entries of :data:`ADDED_KEYS` a run predates, with the keys it lacks: those ``now``
    (this code's record of the run) holds and ``saved`` (the run's own) does not."""
    found = []
    for entry in ADDED_KEYS:
        if missing := [k for k in entry.keys if k in now and k not in saved]:
            found.append((entry, missing))
    return found


def old_run_verdict(cfg: SpeakerKDConfig, lacking: list[tuple[AddedKeys, list[str]]],
                    skipped: Skipped | None, resume: bool) -> Verdict:
    """The tests of the entries a run predates (:func:`predated`), together: the first
    refusal (``reuse`` False, its reason); else undecided (None) when any test needs the
    inputs; else unchanged, with the reasons that say why (``"; "``-joined; empty: nothing to
    say)."""
    waits, notes = False, []
    for entry, missing in lacking:
        verdict = entry.test(cfg, OldRun(missing, entry.added, skipped, resume))
        if verdict.reuse is False:
            return verdict
        waits |= verdict.reuse is None
        if verdict.reuse and verdict.reason:
            notes.append(verdict.reason)
    return Verdict(None) if waits else Verdict(True, "; ".join(notes))


def awaits_inputs(cfg: SpeakerKDConfig, lacking: list[tuple[AddedKeys, list[str]]]) -> bool:
    """Whether the test of an entry a run predates (:func:`predated`) needs the loaded inputs
    to decide (its verdict is None without them), whatever the other entries say."""
    return any(entry.test(cfg, OldRun(missing, entry.added, None, False)).reuse is None
               for entry, missing in lacking)


@dataclass(frozen=True)
class SameEffect:
    """A setting compared by what it does (:data:`SAME_EFFECT`).

    Attributes:
        key: its dotted name.
        effect: ``effect(record)``: what it does in a flattened record; None where that cannot
            be told (a value missing or not a number): then its value is compared.
        why: ``why(record)``: why two values with that effect are one run (a log line's end).
    """

    key: str
    effect: Callable[[Mapping[str, Any]], Any]
    why: Callable[[Mapping[str, Any]], str]


def _number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (a bool, None, a string, NaN)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _min_train_seconds(record: Mapping[str, Any]) -> float | None:
    """:attr:`~robustdistill.speaker.config.DataConfig.min_train_seconds` of a record: the
    smaller of ``data.min_length_s`` and ``data.crop_seconds`` (seconds)."""
    low, crop = _number(record.get("data.min_length_s")), _number(record.get("data.crop_seconds"))
    return None if low is None or crop is None else min(low, crop)


#: Settings whose change is no change when what they do is the same: ``data.min_length_s``
#: skips the training files shorter than the smaller of it and ``data.crop_seconds``
#: (``DataConfig.min_train_seconds``), so with 2 s crops, 3 s and 4 s train on the same files.
SAME_EFFECT: tuple[SameEffect, ...] = (
    SameEffect("data.min_length_s", _min_train_seconds,
               lambda r: f"with data.crop_seconds {r['data.crop_seconds']:g}, training files "
                         f"shorter than {_min_train_seconds(r):g} s are skipped either way "
                         "(the smaller of the two: DataConfig.min_train_seconds)"),
)


def same_effect(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(key, what a log line says), ...]`` of the :data:`SAME_EFFECT` settings whose value
    differs between a run's record ``saved`` and this code's ``now`` (flattened) while what they
    do is the same: ``("data.min_length_s", "data.min_length_s 3 -> 4: with
    data.crop_seconds 2, training files shorter than 2 s are skipped either way (...)")``.
    The callers leave those keys out of their comparison."""
    found = []
    for entry in SAME_EFFECT:
        if entry.key not in saved or entry.key not in now or saved[entry.key] == now[entry.key]:
            continue
        effect = entry.effect(now)
        if effect is not None and entry.effect(saved) == effect:
            found.append((entry.key, f"{entry.key} {saved[entry.key]} -> {now[entry.key]}: "
                                     f"{entry.why(now)}"))
    return found
