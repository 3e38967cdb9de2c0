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
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import list_audio_files
from ..config import ConfigError
from ..random_streams import VALIDATION_STREAM
from .data import PairConfig, PairMaker
from .evaluate import scored_means

__all__ = ["SCORES", "ValidationOptions", "ValidationPairs", "make_validation_pairs",
           "validate"]

logger = logging.getLogger(__name__)

#: The speech scores of every validation (each also as an improvement over the noisy input,
#: ``<score>_i``): SI-SDR in dB and STOI (PESQ, about 0.13 s a 2 s item, is left to
#: ``robustdistill.se.table``).
SCORES = ("si_sdr", "stoi")


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
            took 0.9 s a validation without a teacher and 4.3 s with NSNet2 (docs/se.md).

    Raises:
        ValueError: (on construction) ``items`` below 1.
    """

    speech_dir: str | None = None
    noise_dir: str = "runs/data/noise_test"
    rir_dir: str | None = "runs/data/rir_test"
    items: int = 32

    def __post_init__(self) -> None:
        if self.items < 1:
            raise ValueError(f"items must be >= 1, got {self.items}")

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
            (:data:`SCORES`; NaN where undefined).
    """

    noisy: torch.Tensor
    clean: torch.Tensor
    noisy_scores: list[dict[str, float]]

    def __len__(self) -> int:
        return self.noisy.shape[0]


def _shared_files(a: str | Path, b: str | Path | None) -> list[Path]:
    """The audio files below ``a`` that are (resolved) also below ``b``; [] when ``b`` is
    None or either folder is missing."""
    if b is None or not Path(a).is_dir() or not Path(b).is_dir():
        return []
    other = {f.resolve() for f in list_audio_files(b)}
    return [f for f in list_audio_files(a) if f.resolve() in other]


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
    scores = [speech_metrics(n, c, f"validation item {i} (noisy)", metrics=SCORES)
              for i, (n, c) in enumerate(zip(noisy, clean, strict=True))]
    logger.info("validation: %d pairs of %.2f s from %s, noise %s, rooms %s", len(items),
                data.crop_seconds, options.speech_dir, options.noise_dir,
                held_out.rir_dir or "none")
    return ValidationPairs(torch.from_numpy(noisy), torch.from_numpy(clean), scores)


@torch.no_grad()
def validate(acc, student, loss_fn, teacher, pairs: ValidationPairs, step: int,
             teacher_input: str = "noisy") -> dict | None:
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

    Returns:
        On the main process, each value's mean over the items where it is finite: ``loss``
        and the loss's parts (the names ``train`` rows use), ``si_sdr``, ``stoi`` and their
        improvements ``si_sdr_i``, ``stoi_i``; ``n`` items and ``unscored`` (``{value:
        items where it is NaN/Inf}``, only counts above 0). None on the other processes.
    """
    from accelerate.utils import gather_object

    from downstream.tasks.speech_enhancement.task import speech_metrics

    model, heads = acc.unwrap_model(student), acc.unwrap_model(loss_fn)
    was_training = model.training
    model.eval()
    rows = []
    for i in range(acc.process_index, len(pairs), acc.num_processes):
        noisy = pairs.noisy[i:i + 1].to(acc.device)
        clean = pairs.clean[i:i + 1].to(acc.device)
        teacher_out = None
        if heads.needs_teacher(step):
            teacher_out = teacher(clean if teacher_input == "clean" else noisy,
                                  return_activations=True)
        _, layers = heads.student_needs(step)
        s_out = model(noisy, return_activations=layers)
        total, parts = heads(step, s_out, clean, teacher_out)
        row = {"loss": float(total), **{k: float(v) for k, v in parts.items()}}
        # a score the noisy input has not is undefined for any output, since the target
        # decides it (silent, or under STOI's 30 frames of speech): NaN, said once at start-up
        base = pairs.noisy_scores[i]
        scores = speech_metrics(s_out.enhanced[0].float().cpu().numpy(),
                                pairs.clean[i].numpy(), f"validation item {i}",
                                metrics=tuple(k for k in SCORES if np.isfinite(base[k])))
        row.update({k: scores.get(k, float("nan")) for k in SCORES})
        row.update({f"{k}_i": scores.get(k, float("nan")) - base[k] for k in SCORES})
        rows.append((i, row))
    model.train(was_training)
    rows = gather_object(rows) if acc.num_processes > 1 else rows
    if not acc.is_main_process:
        return None
    return scored_means([row for _, row in sorted(rows, key=lambda r: r[0])])
