"""``train-se``'s periodic validation on held-out (noisy, clean) pairs.

The pairs are made once, at start-up, by the training data's own pair maker
(:meth:`~robustdistill.se.data.PairMaker.item`: a crop of ``data.crop_seconds``, reverberated
with probability ``data.reverb_prob`` into a reverberant or dry target as ``data.target`` says,
mixed at an SNR drawn from ``data.snr_range``), but from held-out audio: the validation speech
(``validation.speech_dir``; its files may not be training files), the held-out noises
(``validation.noise_dir``) and rooms (``validation.rir_dir``; none: no reverberation). Item ``i``
is drawn from ``numpy.random.default_rng([seed, VALIDATION_STREAM, i])``
(:data:`robustdistill.random_streams.VALIDATION_STREAM`, the stream key of ``distill``'s validation),
so the set is a function of the run's seed and settings alone: the same at every step, after a
resume and on any number of processes, and its first ``k`` items are the same for any
``validation.items >= k``.

Every ``training.eval_every`` steps (and at the last step; at step 0 too with
``training.eval_at_start``) each item is enhanced alone (batch of one, so no score depends on
the batching or the process count), the training loss terms of that step's schedule are
computed on it (:class:`~robustdistill.se.losses.SELoss`, the teacher on the item when the
step's loss reads it) with SI-SDR (dB) and STOI of the enhanced output against the target and
their improvements over the noisy input
(:func:`downstream.tasks.speech_enhancement.task.speech_metrics`, the project's one
implementation; a score the noisy input cannot have, because the target is silent or holds
under STOI's 30 frames (about 0.4 s) of speech, is NaN for the output too, counted in
``unscored``). Items are spread over the processes (item ``i`` on rank ``i mod world``, each
once, as ``distill`` does), gathered, and averaged in item order on the main process.
Validation reads no random generator and changes no weight: a run trains the same weights with
it on or off.

Tensor legend: ``N`` items, ``S`` samples (``data.crop_seconds`` at 16 kHz).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from downstream.config import INFINITE_OK

from ..audio import list_audio_files
from ..config import ConfigError
from ..random_streams import VALIDATION_STREAM
from .data import PairConfig, PairMaker
from .evaluate import scored_means

__all__ = ["BEST_METRICS", "BEST_STUDENT", "SCORES", "BestValidation", "TeacherOutputs",
           "ValidationOptions", "ValidationPairs", "make_validation_pairs", "validate"]

logger = logging.getLogger(__name__)

#: The speech scores of every validation (each also as an improvement over the noisy input,
#: ``<score>_i``): SI-SDR in dB and STOI; ``validation.pesq`` adds wide-band PESQ
#: (:attr:`ValidationOptions.scores`).
SCORES = ("si_sdr", "stoi")

#: The values ``validation.best_metric`` may select the best validation by, and which way is
#: better: the mean SI-SDR (dB), STOI or PESQ of the enhanced items (higher), or the mean
#: validation loss (lower).
BEST_METRICS = {"si_sdr": "max", "stoi": "max", "pesq": "max", "loss": "min"}

#: The folder of ``output_dir`` that ``validation.keep_best`` exports the best student to.
BEST_STUDENT = "best_student"


@dataclass
class ValidationOptions:
    """The held-out pairs of ``train-se``'s validation (the module docstring says how they are
    made and scored; ``training.eval_every`` and ``training.eval_at_start`` say when).

    Attributes:
        speech_dir: folder of validation speech (searched recursively), none of whose files
            is a training file (speakers outside ``data.speech_dir``, e.g. LibriSpeech
            dev-clean). None (default): no validation.
        noise_dir: the held-out noises (default ``runs/data/noise_test``, the noises
            ``scripts/split_shared_data.sh`` keeps out of training).
        rir_dir: the held-out rooms (default ``runs/data/rir_test``), used with
            ``data.reverb_prob``; None: the validation pairs are not reverberated.
        items: pairs made (>= 1; default 32). At 2 s crops on one busy CPU thread, 32 items
            took 0.9 s a validation without a teacher and 4.3 s with NSNet2, 1.2 s once its
            outputs are kept (:class:`TeacherOutputs`; docs/se.md).
        pesq: also score wide-band PESQ (P.862.2) and its improvement ``pesq_i`` (default
            False: 0.12 s an item of 2 s on one CPU thread, 3.9 s a validation of 32; docs/se.md). An item PESQ
            cannot score (shorter than 0.25 s, no utterance found) is unscored and counted.
        best_metric: the validation value that selects the best step: ``si_sdr``, ``stoi``,
            ``pesq`` (higher is better; ``pesq`` needs ``pesq: true``) or ``loss`` (lower;
            not with the ``two_step`` schedule, whose loss changes terms at ``kd_steps``).
            Default ``si_sdr``. A tie keeps the earlier step; a validation whose value is NaN
            (no item scored) is never the best.
        keep_best: export the student of the best validation step to
            ``<output_dir>/best_student`` (the same export as ``student/``), replaced at each
            new best (default False).
        teacher_cache_mb: the most megabytes (10^6 bytes) of the teacher's validation outputs
            kept in CPU memory between validations, per process (:class:`TeacherOutputs`;
            default 1024). Items are kept in order while they fit; the teacher runs again at
            each validation on the others (the scores are the same, bit for bit). 0: keep
            none; ``.inf``: no cap. About 1.1 MB an item of 2 s with ``se_two_step_gram``'s
            NSNet2 layers, 0.13 MB with output KD alone (``se_mixture``).

    Raises:
        ValueError: (on construction) ``items`` below 1, a negative or NaN
            ``teacher_cache_mb``, an unknown ``best_metric``, ``best_metric: pesq`` without
            ``pesq: true``, or ``keep_best``, ``pesq`` or a ``best_metric`` other than
            ``si_sdr`` without ``speech_dir`` (no validation: the setting would do nothing).
    """

    speech_dir: str | None = None
    noise_dir: str = "runs/data/noise_test"
    rir_dir: str | None = "runs/data/rir_test"
    items: int = 32
    pesq: bool = False
    best_metric: str = "si_sdr"
    keep_best: bool = False
    teacher_cache_mb: float = field(default=1024.0, metadata={INFINITE_OK: "no cap"})

    def __post_init__(self) -> None:
        if self.items < 1:
            raise ValueError(f"items must be >= 1, got {self.items}")
        if not self.teacher_cache_mb >= 0:  # NaN too
            raise ValueError(f"teacher_cache_mb must be >= 0 (0: keep no teacher output), got "
                             f"{self.teacher_cache_mb}")
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {list(BEST_METRICS)}, got "
                             f"{self.best_metric!r}")
        if self.best_metric == "pesq" and not self.pesq:
            raise ValueError("best_metric pesq needs pesq: true (validation.pesq)")
        if self.speech_dir is None:
            unused = [name for name, on in (("keep_best", self.keep_best), ("pesq", self.pesq),
                                            ("best_metric", self.best_metric != "si_sdr"))
                      if on]
            if unused:
                raise ValueError(f"{', '.join(unused)} set without speech_dir: there is no "
                                 "validation (set validation.speech_dir, or drop them)")

    @property
    def scores(self) -> tuple[str, ...]:
        """The speech scores of each validation: :data:`SCORES`, and ``pesq`` with
        :attr:`pesq`."""
        return (*SCORES, "pesq") if self.pesq else SCORES

    @property
    def enabled(self) -> bool:
        """Whether the run validates (a ``speech_dir`` is set)."""
        return self.speech_dir is not None


@dataclass
class ValidationPairs:
    """The held-out pairs and the noisy input's scores.

    Attributes:
        noisy: ``(N, S)`` float32 student inputs.
        clean: ``(N, S)`` float32 targets.
        noisy_scores: per item, ``{score: value}`` of the noisy input against the target
            (:attr:`ValidationOptions.scores`; NaN where undefined).
    """

    noisy: torch.Tensor
    clean: torch.Tensor
    noisy_scores: list[dict[str, float]]

    def __len__(self) -> int:
        return self.noisy.shape[0]

    @property
    def scores(self) -> tuple[str, ...]:
        """The speech scores the pairs were made for (those of :attr:`noisy_scores`)."""
        return tuple(self.noisy_scores[0])

    @property
    def set_sha1(self) -> str:
        """SHA-1 of the pairs' samples (noisy and clean): the set a best validation was
        chosen on (:class:`BestValidation`)."""
        h = hashlib.sha1()
        for x in (self.noisy, self.clean):
            h.update(x.contiguous().numpy().tobytes())
        return h.hexdigest()


def _shared_files(a: str | Path, b: str | Path | None) -> list[Path]:
    """The audio files below ``a`` that are also below ``b``: the same file (device, inode:
    through a symbolic link or a hard link, ``os.link``) or, for a link that cannot be
    followed, the same resolved path; [] when ``b`` is None or either folder is missing.
    ``os.path.realpath``: ``Path.resolve`` raises on a listed loop of links."""
    if b is None or not Path(a).is_dir() or not Path(b).is_dir():
        return []
    other = {_file_identity(f) for f in list_audio_files(b)}
    return [f for f in list_audio_files(a) if _file_identity(f) in other]


def _file_identity(path: Path) -> tuple[int, int] | str:
    """``(st_dev, st_ino)`` of the file ``path`` names (the same for each of its hard links);
    its resolved path where it cannot be followed (a dangling link, a loop of links)."""
    try:
        st = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (st.st_dev, st.st_ino)


def make_validation_pairs(data: PairConfig, options: ValidationOptions, seed: int
                          ) -> ValidationPairs:
    """The held-out pairs of a run (see the module docstring), and their noisy scores.

    Args:
        data: the run's ``data`` section as its pair maker uses it (crop length, SNR range,
            reverberation, target, scan cache; its folders are replaced by ``options``').
        options: the ``validation`` section (``speech_dir`` set).
        seed: the run's seed.

    Returns:
        :class:`ValidationPairs` of ``options.items`` pairs.

    Raises:
        FileNotFoundError: a validation folder is missing or holds no audio file.
        AudioError: no usable validation speech, noise or room file (each unusable one is
            logged by name and skipped, as for training).
        ConfigError: (a ``ValueError``) a validation speech file is also a training speech
            file (named).
    """
    from downstream.tasks.speech_enhancement.task import speech_metrics

    shared = _shared_files(options.speech_dir, data.speech_dir)
    if shared:
        raise ConfigError(f"validation.speech_dir {options.speech_dir} shares {len(shared)} "
                         f"file(s) with data.speech_dir, e.g. {shared[0]}: validate on speech "
                         "no training item uses")
    for key, mine, theirs in (("noise_dir", options.noise_dir, data.noise_dir),
                              ("rir_dir", options.rir_dir, data.rir_dir)):
        both = _shared_files(mine, theirs) if mine else []
        if both:
            logger.warning("validation.%s %s shares %d file(s) with data.%s (e.g. %s): those "
                           "validation pairs are not held out", key, mine, len(both), key,
                           both[0])
    reverb = data.reverb_prob if options.rir_dir else 0.0
    held_out = dataclasses.replace(data, speech_dir=options.speech_dir,
                                   noise_dir=options.noise_dir,
                                   rir_dir=options.rir_dir if reverb > 0 else None,
                                   reverb_prob=reverb, pool_size=0)
    maker = PairMaker(held_out, seed=seed)
    items = [maker.item(np.random.default_rng([seed, VALIDATION_STREAM, i]))
             for i in range(options.items)]
    noisy = np.stack([noisy for noisy, _ in items])
    clean = np.stack([clean for _, clean in items])
    scores = [speech_metrics(n, c, f"validation item {i} (noisy)", metrics=options.scores)
              for i, (n, c) in enumerate(zip(noisy, clean, strict=True))]
    logger.info("validation: %d pairs of %.2f s from %s, noise %s, rooms %s", len(items),
                data.crop_seconds, options.speech_dir, options.noise_dir,
                held_out.rir_dir or "none")
    return ValidationPairs(torch.from_numpy(noisy), torch.from_numpy(clean), scores)


class TeacherOutputs:
    """The frozen teacher's outputs on the validation items, computed at the first validation
    that reads them and reused by the later ones (the teacher and the items never change, so
    the losses are those of a teacher run at each validation, bit for bit: tested).

    Only what the loss reads is kept, float32 copies in CPU memory (moved to the run's device
    item by item when read, so a GPU run gives them none of its memory): the enhanced waveform
    when ``loss.output_kd_weight > 0`` (4 bytes a sample: 128 KB a 2 s item) and the distilled
    activations (4 ``K D`` bytes each: NSNet2's fc_in, gru1 and gru2 over 201 frames, 965 KB a
    2 s item). For 32 items of 2 s: 4.1 MB (output KD alone, ``se_mixture``), 35 MB (output KD
    and Gram KD on three NSNet2 layers, ``se_two_step_gram``).

    At most ``cap_mb`` megabytes are kept (``validation.teacher_cache_mb``): items are kept in
    the order they are first computed while the total fits; from the first item that would pass
    the cap on, none is kept (the items of a run have one length, so all that fit are kept: a
    cap of ``c`` bytes keeps ``floor(c / b)`` items of ``b`` bytes) and the teacher runs on the
    others at each validation. :meth:`log_kept` says once what is kept. Under DDP each process
    keeps its own items (``i mod world``) under its own cap. ``train-se`` frees them
    (:meth:`release`) once no later validation reads the teacher (from ``loss.kd_steps`` on
    with the ``two_step`` schedule, whose phase 2 has no KD term), and makes none in a run
    resumed past that step.

    Args:
        layers: the teacher activation names the loss distils.
        keep_enhanced: keep the enhanced waveforms (output KD).
        cap_mb: the most megabytes (10^6 bytes) kept, >= 0 (0: none; ``inf``: no cap).

    Raises:
        ValueError: ``cap_mb`` negative (or NaN).
    """

    def __init__(self, layers: tuple[str, ...], keep_enhanced: bool, cap_mb: float = 1024.0):
        if not cap_mb >= 0:
            raise ValueError(f"teacher_cache_mb must be >= 0, got {cap_mb}")
        self.layers, self.keep_enhanced = tuple(layers), keep_enhanced
        self.cap_mb = cap_mb  # inf: no cap (round() of it would raise OverflowError)
        self.cap_bytes = round(cap_mb * 1e6) if math.isfinite(cap_mb) else math.inf
        self._items: dict[int, object] = {}
        self._not_kept: set[int] = set()  # computed, but past the cap: run at each validation
        self._kept_bytes = 0  # of the kept copies (each its own storage: what nbytes counts)
        self._item_bytes = 0  # of one item's outputs (the last one computed)
        self._logged = False

    def __call__(self, i: int, teacher, waveform: torch.Tensor):
        """The teacher's :class:`~robustdistill.se.teachers.base.SEOutput` on item ``i``
        (``waveform``: its ``(1, S)`` input) on ``waveform``'s device, trimmed to what the loss
        reads: kept from an earlier call, or run now (and kept while the cap allows).

        Raises:
            KeyError: a name of ``layers`` is not among the teacher's activations.
        """
        from .teachers.base import SEOutput

        kept = self._items.get(i)
        if kept is None:
            out = teacher(waveform, return_activations=True)
            missing = [k for k in self.layers if k not in out.activations]
            if missing:
                raise KeyError(f"teacher has no activation(s) {missing}; it has "
                               f"{sorted(out.activations)}")
            read = SEOutput(out.enhanced if self.keep_enhanced else None,
                            {k: out.activations[k] for k in self.layers}, None)
            self._item_bytes = sum(t.numel() * t.element_size() for t in _tensors(read))
            if self._not_kept or self._kept_bytes + self._item_bytes > self.cap_bytes:
                self._not_kept.add(i)  # this one, and every item computed after it
                return read
            # copies: a teacher's tensor may be a view of a larger buffer (NSNet2's and
            # DTLN's enhanced waveforms are slices of their padded overlap-add output, 2x and
            # 4x the bytes), which a kept view would hold whole; copy=True: a CPU run's too
            kept = self._items[i] = SEOutput(
                None if read.enhanced is None else read.enhanced.to("cpu", copy=True),
                {k: t.to("cpu", copy=True) for k, t in read.activations.items()}, None)
            self._kept_bytes += self._item_bytes
        if waveform.device.type == "cpu":
            return kept
        return SEOutput(None if kept.enhanced is None else kept.enhanced.to(waveform.device),
                        {k: t.to(waveform.device) for k, t in kept.activations.items()}, None)

    def release(self, step: int, process_index: int = 0, num_processes: int = 1,
                items: int | None = None) -> None:
        """Drop every kept output (the validations from ``step`` on read no teacher) and log
        the megabytes dropped once any were kept; later calls run the teacher again (and keep
        again under the cap). The caller gives the freed pages back to the system
        (:func:`robustdistill.memory.release_free_heap`, as ``train-se`` does once it has
        dropped the teacher too).

        Args:
            step: the step from which no validation reads the teacher (for the line).
            process_index / num_processes: this process and the run's process count; with
                several, the line says that its counts are this process's share (its items
                ``i mod num_processes``; each process frees its own).
            items: the validation items of all processes (said with several processes).
        """
        if self._items and num_processes == 1:
            logger.info("validation: the teacher's outputs on %d items (%.1f MB) freed at "
                        "step %d: the validations from this step on read no teacher "
                        "(two_step's phase 2)", len(self._items), self.nbytes / 1e6, step)
        elif self._items:
            logger.info("validation: process %d's share of the teacher's outputs, on %d of the "
                        "%s items (%.1f MB; each of the %d processes frees its own), freed at "
                        "step %d: the validations from this step on read no teacher "
                        "(two_step's phase 2)", process_index, len(self._items),
                        "?" if items is None else items, self.nbytes / 1e6, num_processes,
                        step)
        self._items.clear()
        self._not_kept.clear()
        self._kept_bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held: the storage of the kept tensors (a view would hold its whole
        buffer)."""
        return sum(t.untyped_storage().nbytes() for o in self._items.values()
                   for t in _tensors(o))

    @property
    def kept_items(self) -> list[int]:
        """The items whose outputs are kept, in order."""
        return sorted(self._items)

    def log_kept(self, process_index: int = 0, num_processes: int = 1,
                 items: int | None = None) -> None:
        """Log, once (after the first validation that ran the teacher), how many items' outputs
        are kept and their megabytes, and how many are recomputed at each validation.

        Args:
            process_index / num_processes: this process and the run's process count; with
                several, the line says that its counts are this process's share (its items
                ``i mod num_processes``, each process capped alone).
            items: the validation items of all processes (said with several processes).
        """
        if self._logged or not (self._items or self._not_kept):
            return
        self._logged = True
        kept, others = len(self._items), len(self._not_kept)
        mine = "" if num_processes == 1 else (
            f" of process {process_index} (of {num_processes} processes, "
            f"{'?' if items is None else items} items in all; each process keeps its own "
            "under the cap)")
        if not kept:
            logger.info("validation: no teacher output kept (validation.teacher_cache_mb %g, "
                        "%.2f MB an item): the teacher runs on the %d items%s at each "
                        "validation", self.cap_mb, self._item_bytes / 1e6, others, mine)
        elif not others:
            logger.info("validation: the teacher's outputs on all %d items%s kept in CPU "
                        "memory (%.1f MB; validation.teacher_cache_mb %g)", kept, mine,
                        self.nbytes / 1e6, self.cap_mb)
        else:
            logger.info("validation: the teacher's outputs on %d of %d items%s kept in CPU "
                        "memory (%.1f MB, %.2f MB an item; validation.teacher_cache_mb %g); "
                        "the teacher runs on the other %d at each validation", kept,
                        kept + others, mine, self.nbytes / 1e6, self._item_bytes / 1e6,
                        self.cap_mb, others)


def _tensors(output) -> list[torch.Tensor]:
    """The tensors of a trimmed :class:`~robustdistill.se.teachers.base.SEOutput`: its
    enhanced waveform (when kept) and activations."""
    return [*([output.enhanced] if output.enhanced is not None else []),
            *output.activations.values()]


@torch.no_grad()
def validate(acc, student, loss_fn, teacher, pairs: ValidationPairs, step: int,
             teacher_input: str = "noisy", teacher_outputs: TeacherOutputs | None = None
             ) -> dict | None:
    """Score the student on the held-out pairs (a collective: every process calls it at the
    same step).

    Args:
        acc: the run's ``Accelerator``.
        student: the student (as prepared by ``acc``; unwrapped here, so no DDP hook runs).
        loss_fn: the run's :class:`~robustdistill.se.losses.SELoss` (prepared or not).
        teacher: the frozen teacher, or None when the loss reads none.
        pairs: :func:`make_validation_pairs`.
        step: the optimizer steps done; the loss terms are those of the schedule at ``step``
            (the next step's, as ``distill``'s validation: phase 2 of ``two_step`` from
            ``kd_steps`` on).
        teacher_input: ``"noisy"`` or ``"clean"``: what the teacher hears (``loss.teacher_input``).
        teacher_outputs: the teacher's outputs kept from an earlier validation of the same
            pairs and teacher input (:class:`TeacherOutputs`; filled here, up to its cap, and
            its :meth:`~TeacherOutputs.log_kept` called); None: the teacher runs on each item
            at each validation.

    Returns:
        On the main process, each value's mean over the items where it is finite: ``loss``
        and the loss's parts (the names ``train`` rows use), the speech scores
        (:attr:`ValidationPairs.scores`: ``si_sdr``, ``stoi``, with ``validation.pesq``
        ``pesq``) and their improvements ``si_sdr_i``, ``stoi_i``, ``pesq_i``; ``n`` items and
        ``unscored`` (``{value: items where it is NaN/Inf}``, only counts above 0). None on
        the other processes.
    """
    from accelerate.utils import gather_object

    from downstream.tasks.speech_enhancement.task import speech_metrics

    model, heads = acc.unwrap_model(student), acc.unwrap_model(loss_fn)
    was_training = model.training
    model.eval()
    rows, names = [], pairs.scores
    for i in range(acc.process_index, len(pairs), acc.num_processes):
        noisy = pairs.noisy[i:i + 1].to(acc.device)
        clean = pairs.clean[i:i + 1].to(acc.device)
        teacher_out = None
        if heads.needs_teacher(step):
            t_in = clean if teacher_input == "clean" else noisy
            teacher_out = (teacher_outputs(i, teacher, t_in) if teacher_outputs is not None
                           else teacher(t_in, return_activations=True))
        _, layers = heads.student_needs(step)
        s_out = model(noisy, return_activations=layers)
        total, parts = heads(step, s_out, clean, teacher_out)
        row = {"loss": float(total), **{k: float(v) for k, v in parts.items()}}
        # a score the noisy input has not is undefined for any output, since the target
        # decides it (silent, or under STOI's 30 frames of speech): NaN, said once at start-up
        base = pairs.noisy_scores[i]
        scores = speech_metrics(s_out.enhanced[0].float().cpu().numpy(),
                                pairs.clean[i].numpy(), f"validation item {i}",
                                metrics=tuple(k for k in names if np.isfinite(base[k])))
        row.update({k: scores.get(k, float("nan")) for k in names})
        row.update({f"{k}_i": scores.get(k, float("nan")) - base[k] for k in names})
        rows.append((i, row))
    model.train(was_training)
    if teacher_outputs is not None:
        teacher_outputs.log_kept(acc.process_index, acc.num_processes, len(pairs))
    rows = gather_object(rows) if acc.num_processes > 1 else rows
    if not acc.is_main_process:
        return None
    return scored_means([row for _, row in sorted(rows, key=lambda r: r[0])])


#: The files of the best validation in every checkpoint of a validating run: the record
#: (JSON) and the best student's weights (safetensors, the state dict of ``student/``).
BEST_RECORD_FILE, BEST_WEIGHTS_FILE = "best_validation.json", "best_student.safetensors"

#: The same two files for the best before the validation of a run's last step, in the
#: checkpoint of that step when that validation was a new best
#: (:attr:`BestValidation.before_last`): what a run extended past that step takes when the
#: step is off its ``training.eval_every`` schedule.
BEFORE_LAST_RECORD_FILE = "best_validation_before_last_step.json"
BEFORE_LAST_WEIGHTS_FILE = "best_student_before_last_step.safetensors"


def _same_weights(folder: Path, weights: dict[str, torch.Tensor]) -> bool:
    """Whether ``folder/model.safetensors`` holds exactly ``weights`` (names and bytes)."""
    from safetensors.torch import load_file

    try:
        saved = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError, RuntimeError):  # missing, truncated, not safetensors
        return False
    return saved.keys() == weights.keys() and all(
        saved[k].dtype == weights[k].dtype and torch.equal(saved[k], weights[k]) for k in saved)


class BestValidation:
    """The best validation of a run by ``validation.best_metric``, and that step's student.

    The record (:attr:`state`: ``metric``, ``mode`` ``max``/``min``, ``step``, ``value``, the
    validation's values ``scores``, the pairs' ``set_sha1`` and the student's
    ``parameter_sha256``) and the weights go into every checkpoint
    (:meth:`checkpoint_files`), so a resumed run continues the selection where the
    checkpoint left it and picks what an uninterrupted run picks. With
    ``validation.keep_best`` the weights are exported to ``<output_dir>/best_student`` at each
    new best (:meth:`export`, written whole in a temporary folder, then swapped in), and a
    resume puts back the checkpoint's best there when the folder holds another student (a
    later best of the killed run, or a half-done swap).

    The validation of a run's last step (``training.max_steps``) is made whether or not the
    step is on the ``training.eval_every`` schedule. When it is a new best, the best before it
    is kept too (:attr:`before_last`, in that step's checkpoint), so a run extended to more
    steps, whose schedule skips that step, takes that one instead (:meth:`resume` with
    ``before_last``) and picks what an uninterrupted run to the new ``max_steps`` picks.

    Args:
        options: the ``validation`` section (``best_metric``, ``keep_best``).
        student_config: the student's config (to export the weights as ``student/`` is).
        output_dir: the run's folder.
        set_sha1: :attr:`ValidationPairs.set_sha1` of this run's pairs.
    """

    def __init__(self, options: ValidationOptions, student_config, output_dir: str | Path,
                 set_sha1: str):
        self.metric, self.keep = options.best_metric, options.keep_best
        self.mode = BEST_METRICS[self.metric]
        self.student_config, self.out, self.set_sha1 = student_config, Path(output_dir), set_sha1
        self.step: int | None = None
        self.value: float | None = None
        self.scores: dict = {}
        self.parameter_sha256: str | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        #: ``(record, weights)`` of the best before the validation of the run's last step,
        #: when that validation was a new best (:meth:`update` with ``last_step``); else None.
        self.before_last: tuple[dict, dict[str, torch.Tensor] | None] | None = None

    @property
    def folder(self) -> Path:
        """``<output_dir>/best_student``."""
        return self.out / BEST_STUDENT

    def better(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (strictly: a tie keeps the earlier step;
        NaN/Inf never does)."""
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(self, step: int, values: dict, model: torch.nn.Module,
               last_step: bool = False) -> bool:
        """Record the validation at ``step`` (its values, :func:`validate`'s) if it is the new
        best, keeping ``model``'s weights (and exporting them with ``keep_best``); returns
        whether it was. ``last_step``: ``step`` is the run's ``training.max_steps`` (a new
        best then keeps the one before it in :attr:`before_last`). Call on the main
        process."""
        from .train import parameter_hash

        value = values.get(self.metric, float("nan"))
        self.before_last = None
        if not self.better(value):
            return False
        if last_step:
            self.before_last = (self.state, self.weights)
        self.step, self.value = step, float(value)
        self.scores = {k: v if not isinstance(v, float) or math.isfinite(v) else None
                       for k, v in values.items() if isinstance(v, int | float | dict)}
        self.weights = {k: v.detach().cpu().clone().contiguous()
                        for k, v in model.state_dict().items()}
        self.parameter_sha256 = parameter_hash(model)
        if self.keep:
            self.export()
        return True

    @property
    def state(self) -> dict:
        """The record (JSON): ``metric``, ``mode``, ``step`` (None before any scored
        validation), ``value``, ``scores`` (that validation's values, :func:`validate`'s, NaN
        as None, with ``n`` and ``unscored``), ``set_sha1``, ``parameter_sha256``; with
        ``keep_best`` also ``folder`` (``best_student``)."""
        out = {"metric": self.metric, "mode": self.mode, "step": self.step, "value": self.value,
               "scores": self.scores, "set_sha1": self.set_sha1,
               "parameter_sha256": self.parameter_sha256}
        if self.keep:
            out["folder"] = BEST_STUDENT
        return out

    def checkpoint_files(self) -> dict[str, object]:
        """The checkpoint's files of the best validation: the record, and (once there is a
        best) the weights as safetensors bytes."""
        from safetensors.torch import save

        files: dict[str, object] = {BEST_RECORD_FILE: self.state}
        if self.weights is not None:
            files[BEST_WEIGHTS_FILE] = save(self.weights, metadata={"format": "pt"})
        if self.before_last is not None:
            record, weights = self.before_last
            files[BEFORE_LAST_RECORD_FILE] = record
            if weights is not None:
                files[BEFORE_LAST_WEIGHTS_FILE] = save(weights, metadata={"format": "pt"})
        return files

    def end_note(self) -> str | None:
        """The warning for the end of a run whose best is no trained student: no validation
        scored by the metric (no best; no ``best_student/``), or the best is step 0's
        validation, before any update (``best_student/`` is the untrained student); None
        otherwise."""
        if self.step is None:
            return (f"no validation scored {self.metric} (every mean NaN): no best step"
                    + (f", no {BEST_STUDENT}/ written" if self.keep else ""))
        if self.step == 0:
            return (f"the best validation by {self.metric} is step 0, before any training "
                    f"({self.metric} {self.value:.4g}): no trained student beat the untrained "
                    "one" + (f"; {BEST_STUDENT}/ holds the untrained student" if self.keep
                             else ""))
        return None

    def export(self) -> Path:
        """Write the best weights to ``best_student/`` (``config.json`` +
        ``model.safetensors``, as ``student/``): into ``.tmp-best_student``, then swapped
        with the old folder by two renames (a kill between them leaves no ``best_student``,
        put back by the next start)."""
        from .students import GRUMaskStudent

        model = GRUMaskStudent(self.student_config)
        model.load_state_dict(self.weights)
        tmp = self.out / f".tmp-{BEST_STUDENT}"
        old = self.out / f".old-{BEST_STUDENT}"
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)
        model.save_pretrained(tmp)
        for name in ("config.json", "model.safetensors"):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(tmp, self.folder)
        shutil.rmtree(old, ignore_errors=True)
        return self.folder

    def resume(self, checkpoint: Path | None, before_last: bool = False) -> None:
        """Take the best validation of ``checkpoint`` (None: a fresh start; a checkpoint of
        a run without it, or of another ``best_metric`` or validation set: the selection
        starts again, said in a warning), and with ``keep_best`` make ``best_student/`` hold
        its weights (re-exported when the folder holds another student; removed, with a
        warning, when there is no best yet); without ``keep_best`` a ``best_student/`` left
        by an earlier start is removed, with a warning (it would not follow the best). Call
        on the main process.

        ``before_last``: the checkpoint's step is its run's last, and this run, extended past
        it, does not validate that step: take the best before that step's validation (its
        :data:`BEFORE_LAST_RECORD_FILE`, written when that validation was a new best; else
        the checkpoint's best, which that validation did not change)."""
        from safetensors.torch import load_file

        for leftover in (f".tmp-{BEST_STUDENT}", f".old-{BEST_STUDENT}"):
            shutil.rmtree(self.out / leftover, ignore_errors=True)
        record_file, weights_file = BEST_RECORD_FILE, BEST_WEIGHTS_FILE
        if (before_last and checkpoint is not None
                and (checkpoint / BEFORE_LAST_RECORD_FILE).is_file()):
            record_file, weights_file = BEFORE_LAST_RECORD_FILE, BEFORE_LAST_WEIGHTS_FILE
        record = None
        if checkpoint is not None and (checkpoint / record_file).is_file():
            record = json.loads((checkpoint / record_file).read_text())
        elif checkpoint is not None:  # saved without validation, or before best_validation
            logger.warning("%s has no %s: the best validation is chosen from this resume on "
                           "(the validations logged before it are not compared)", checkpoint,
                           BEST_RECORD_FILE)
        if record is not None and record.get("step") is not None:
            why = None
            if record.get("metric") != self.metric:
                why = f"validation.best_metric {record.get('metric')} -> {self.metric}"
            elif record.get("set_sha1") != self.set_sha1:
                why = "another validation set"
            if why is not None:
                logger.warning("%s: the best validation (step %s, %s %s) is not carried over "
                               "(%s); the best is chosen again from this resume on",
                               checkpoint, record["step"], record.get("metric"),
                               record.get("value"), why)
            else:
                self.step, self.value = int(record["step"]), float(record["value"])
                self.scores, self.parameter_sha256 = record["scores"], record["parameter_sha256"]
                self.weights = load_file(str(checkpoint / weights_file))
        if not self.keep:
            if self.folder.exists():  # it would no longer follow the best: a stale student
                logger.warning("%s removed: validation.keep_best is off, so it would no longer "
                               "hold the best validation's student (the checkpoints keep the "
                               "best's weights: turn keep_best on to export them again)",
                               self.folder)
                shutil.rmtree(self.folder)
            return
        if self.weights is None:
            if self.folder.exists():  # a killed run's best after this checkpoint, or another
                logger.warning("%s holds a student chosen after %s (or by other settings): "
                               "removed; the best is exported again when found",
                               self.folder, checkpoint or "the start")
                shutil.rmtree(self.folder)
        elif not _same_weights(self.folder, self.weights):
            logger.info("%s: putting back the best validation's student (step %d) from %s",
                        self.folder, self.step, checkpoint)
            self.export()
