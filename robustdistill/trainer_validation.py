"""The validation pass of a distillation (:mod:`robustdistill.trainer`): the mean loss terms
over the whole validation set, the same at every step and on any number of processes.

Each item's corruption comes from its own stream (``(seed, VALIDATION_STREAM, index)``); the
term sums and unit counts are reduced over ranks in float64, after every rank has added the
keys the others have (a rank may get one batch fewer, or none). A read failure or a held
SIGTERM stops the pass on every process (:func:`~robustdistill.trainer_stops._agree_on_data`).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import TYPE_CHECKING

import torch
from accelerate.utils import gather_object

from .audio import AudioError
from .interrupts import sigterm_pending
from .random_streams import VALIDATION_STREAM, keyed_rng
from .teacher_cache import MissingEntryError
from .trainer_stops import _agree_on_data

if TYPE_CHECKING:
    from .trainer import _Run

__all__ = ["validate_run"]


@torch.no_grad()
def validate_run(run: _Run) -> dict[str, float]:
    """Mean loss terms over the validation set (the full target distribution of the
    corruption, no curriculum), comparable across steps, process counts and batch sizes.

    Every item is evaluated once, on one rank (none is dropped to even out the ranks). Its
    corruption comes from its own stream ``default_rng([seed, VALIDATION_STREAM, index])``
    (``index``: the item's position in the validation set), so it is the same at every
    step, on any number of processes, in any batch. The sums and unit counts are reduced
    over ranks in float64. What remains of the batching: float32 rounding of the models and
    of each objective's per-batch sum (about 1e-6 relative); a model whose output depends
    on the padding (no attention mask, a group-norm CNN as WavLM/HuBERT Base, or
    data2vec-audio, whose positional convolutions carry the padding into the last real
    frames even with a mask), for items shorter than ``data.max_length_s`` batched with
    longer ones; an objective whose terms couple the utterances of a batch (none of the
    built-in ones: every term is a sum over utterances or frames); and
    ``training.max_eval_batches``, a cap per process (its items then depend on the process
    count and batch size).
    """
    acc = run.accelerator
    model = acc.unwrap_model(run.model)  # no DDP hooks: ranks may run unequal batches
    model.eval()
    sums = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
    counts = defaultdict(lambda: torch.zeros((), dtype=torch.float64))
    limit = run.cfg.training.max_eval_batches
    run.valid_sampler.set_epoch(0)
    batches = iter(run.valid_loader)
    failure = None
    for i in itertools.count():
        if limit is not None and i >= limit:
            break
        if run.watch_sigterm and sigterm_pending():  # the pass stops; the agreement below
            break  # stops every process (the checkpoint's step validates again on resume)
        try:
            batch = next(batches)
            run._check_cache(batch, run.valid_set)
        except StopIteration:
            break
        except (AudioError, MissingEntryError) as err:  # audio read at start-up
            failure = err  # (build_datasets), so changed since; or a cache miss
            break
        run.note_skipped(batch)
        for unit, value in run._unit_counts(batch).items():
            counts[unit] = counts[unit] + value
        rngs = [keyed_rng(run.cfg.seed, VALIDATION_STREAM, int(index))
                for index in batch["indices"]]
        run._add_sums(sums, run._loss(batch, rngs, run.corruptor.target_step,
                                        run.valid_set, model))
    _agree_on_data(run, failure, "validation", validation=True)
    if acc.num_processes > 1:  # a rank with fewer batches (or none) reduces the same keys
        _same_keys_on_all_ranks(sums, counts)
    # ``loss`` with the factors of the step the run is at (phase 1 or 2 of two_step)
    means = run._means(sums, run._reduce_counts(dict(counts)),
                        run._factors(run.progress.step))
    run.model.train()
    return means


def _same_keys_on_all_ranks(sums: defaultdict, counts: defaultdict) -> None:
    """Add, as zeros, the term and unit keys other ranks have and this one lacks (a rank
    that evaluated no item knows no term), so that every rank's reductions stack the same
    keys in the same order (a collective: every process calls it at the same point)."""
    mine = ({k: v for k, v in sums.items() if k.startswith("_unit/")}, sorted(counts))
    for units, unit_names in gather_object([mine]):
        for key, unit in units.items():
            sums.setdefault(key, unit)
            sums.setdefault(key.removeprefix("_unit/"), torch.zeros((), dtype=torch.float64))
        for name in unit_names:
            counts.setdefault(name, torch.zeros((), dtype=torch.float64))
