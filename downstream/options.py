"""The options of one downstream run (:func:`downstream.runner.run_evaluation`): what the
``evaluate`` command's arguments define."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .conditions import DEFAULT_CONDITIONS

__all__ = ["RunOptions"]


@dataclass
class RunOptions:
    """Everything that defines one run (the CLI's arguments).

    Attributes:
        task: task folder name (``utterance_classification``, ``speaker_verification``...).
        upstream: hub id or local folder of the upstream.
        config: the task's YAML config.
        out: output folder (created).
        conditions: test conditions (see :mod:`downstream.conditions`).
        test_noise_dir: noise recordings for ``snr*`` conditions.
        test_rir_dir: RIRs for ``reverb*`` conditions.
        test_rir_channels: ``"mean"`` (default, the published figures) down-mixes a
            multi-channel RIR file; ``"one"`` uses one channel per utterance's room
            (:meth:`~downstream.conditions.TestCorruptor.from_dirs`).
        test_rir_check: skip the ``test_rir_dir`` files that do not look like room impulse
            responses (default); False (``--no-test-rir-check``) keeps every readable file.
        seed: seeds data splits, subsampling, corruption, trials, head initialisation, batches.
        device: torch device for the upstream and the head.
        overrides: nested dict merged over the YAML config (``-o key=value``).
        evaluate_only: a ``head.pt`` written by an earlier run (same task, upstream, config
            and seed): skip training and test it on ``conditions`` (e.g. new ones).
        bootstrap_resamples: resamples of the per-item bootstrap intervals (0: none).
        label: task label used when the config sets none (the SUPERB name given as
            ``--task``, e.g. ``ks``).
    """

    task: str
    upstream: str
    config: str
    out: str
    conditions: list[str] = field(default_factory=lambda: list(DEFAULT_CONDITIONS))
    test_noise_dir: str | None = None
    test_rir_dir: str | None = None
    test_rir_channels: str = "mean"
    test_rir_check: bool = True
    seed: int = 0
    device: str = "cpu"
    overrides: dict[str, Any] | None = None
    evaluate_only: str | None = None
    bootstrap_resamples: int = 1000
    label: str | None = None
