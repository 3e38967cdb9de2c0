"""The downstream task interface and the pieces every task shares.

SUPERB protocol ("SUPERB: Speech processing Universal PERformance Benchmark", Yang et al.,
arXiv:2105.01051): a frozen upstream, a learned weighted sum of its hidden states
(:class:`downstream.featurizer.Featurizer`), a light head trained on the train split, the head
with the best dev metric selected, the test split evaluated once with it, here under several
test conditions (clean, noise at fixed SNRs, reverberation: the robustness matrix).

Adding a task is one folder ``downstream/tasks/<name>/`` whose ``__init__.py`` exposes
``TASK = <Task subclass>`` and which holds its config YAML(s). :func:`get_task` finds it by
folder name, so ``--task <name>`` works with no registry to edit. A task implements:

* ``config_class``: a dataclass subclassing :class:`TaskConfig` (task settings get defaults);
* :meth:`Task.setup`: look at the splits once (label vocabulary, checks);
* :meth:`Task.make_example`: one decoded utterance -> :class:`Example` (what the upstream hears
  and the target). The default applies the test condition with the given
  :class:`~downstream.conditions.TestCorruptor`; a task that makes its own inputs (speech
  enhancement: noisy/clean pairs) overrides it;
* :meth:`Task.build_head`, :meth:`Task.training_loss`, :meth:`Task.evaluate`.

The runner (:mod:`downstream.runner`) does the rest: encode each (utterance, condition) once with
the frozen upstream and keep the selected hidden states (:func:`encode_examples`, in memory and
optionally on disk: :mod:`downstream.encoding`), batch them (:meth:`Task.collate`), train
featurizer + head with AdamW for ``training.steps`` steps, select on dev
(:mod:`downstream.training`), evaluate every test condition, write the results.

Tensor legend: ``B`` batch, ``N`` selected hidden states, ``T`` frames, ``D`` hidden width,
``S`` samples at 16 kHz.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustdistill.nonfinite import largest_adam_learning_rate
from robustdistill.upstream import Upstream, has_layer_norm_cnn

from .conditions import Condition, TestCorruptor
from .data import DataConfig, Utterance
from .featurizer import Featurizer, FeaturizerConfig

logger = logging.getLogger(__name__)

__all__ = [
    "Batch",
    "EncodedExample",
    "Example",
    "Task",
    "TaskConfig",
    "TrainingConfig",
    "encode_examples",
    "get_task",
    "iterate_batches",
    "pad_hidden",
    "padding_independent",
]


# ---------------------------------------------------------------------------- configs
@dataclass
class TrainingConfig:
    """Head training (featurizer weights + head), the same for every task.

    Attributes:
        steps: optimiser steps (the SUPERB protocol fixes the budget, not convergence).
        batch_size: utterances per step.
        learning_rate: AdamW learning rate of the head.
        featurizer_learning_rate: AdamW learning rate of the layer weights, >= 0 (None: the
            head's; 0: the layer weights keep their initial values).
        weight_decay: AdamW weight decay, on head parameters with two or more dimensions only.
        eval_every: evaluate on dev every this many steps (and after the last step); the head
            with the best dev metric is kept.
        grad_clip: clip the global gradient norm to this (None: no clipping).
        eval_batch_size: utterances per batch when evaluating.

    Raises:
        ValueError: (on construction) ``steps``, ``batch_size``, ``eval_every`` or
            ``eval_batch_size`` below 1, ``learning_rate <= 0``, a negative
            ``featurizer_learning_rate``, or either above 3.4e37 (AdamW's first step overflows
            float32: :func:`robustdistill.nonfinite.largest_adam_learning_rate`).
    """

    steps: int = 500
    batch_size: int = 16
    learning_rate: float = 1e-3
    featurizer_learning_rate: float | None = None
    weight_decay: float = 1e-2
    eval_every: int = 100
    grad_clip: float | None = 5.0
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"training.learning_rate must be > 0, got {self.learning_rate}")
        lr = self.featurizer_learning_rate
        if lr is not None and not lr >= 0:
            raise ValueError(f"training.featurizer_learning_rate must be >= 0 (or null), got {lr}")
        most = largest_adam_learning_rate(0.9)  # torch.optim.AdamW's default betas
        for name in ("learning_rate", "featurizer_learning_rate"):
            if (value := getattr(self, name)) is not None and value > most:
                raise ValueError(f"training.{name} must be at most {most:.4g}, the largest whose "
                                 f"first AdamW step ({name} / (1 - beta1), beta1 = 0.9) fits "
                                 f"in float32; got {value:g}")


@dataclass
class TaskConfig:
    """Settings every task has; a task's own config subclasses this and adds its fields
    (with defaults), e.g. ``head: MyHeadConfig = field(default_factory=MyHeadConfig)``.

    Attributes:
        data: see :class:`downstream.data.DataConfig`.
        featurizer: see :class:`downstream.featurizer.FeaturizerConfig`.
        training: see :class:`TrainingConfig`.
        encode_batch_size: utterances per upstream forward pass when extracting hidden states.
        cache_dtype: storage type of the kept hidden states (float16 halves the memory).
        disk_cache: also save the extracted hidden states under ``OUT/cache/`` and reuse them
            when the same upstream, data, condition and seed come again.
        label: what the run measures (``ks``, ``sid``, ``ic``...): several SUPERB tasks share
            one task folder and metric (keyword spotting and speaker identification are both
            accuracy), so ``compare`` refuses to mix labels and plot titles use it. None: the
            task folder name.
        encode_padding: how utterances are batched for the upstream. ``"auto"``: batches
            (sorted by length) when the upstream's features do not depend on padding (a
            layer-norm CNN with an attention mask, Whisper, which pads every window to 30 s
            anyway, or FBANK), one utterance per forward pass otherwise (group-norm CNN
            upstreams normalise over the padded length, attention mask or not, so a test
            utterance's features would depend on its batch neighbours); ``"single"``: always
            one at a time; ``"batch"``: always batch (faster, padding-dependent for such
            upstreams).
    """

    data: DataConfig
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    encode_batch_size: int = 8
    cache_dtype: Literal["float16", "float32"] = "float16"
    disk_cache: bool = True
    label: str | None = None
    encode_padding: Literal["auto", "single", "batch"] = "auto"


# ---------------------------------------------------------------------------- examples
@dataclass
class Example:
    """One utterance as a task sees it.

    Attributes:
        key: the utterance's stable id (:attr:`downstream.data.Utterance.key`).
        waveform: ``(S,)`` float32, 16 kHz: what the upstream hears (possibly corrupted).
        target: whatever the task trains / scores against (class index, speaker index,
            clean waveform, transcript...).
        speaker: speaker id or None.
        extras: anything else the task wants to keep (e.g. the clean reference for SE).
    """

    key: str
    waveform: np.ndarray
    target: Any
    speaker: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncodedExample:
    """An :class:`Example` with its upstream hidden states, kept so training epochs never
    rerun the upstream.

    Attributes:
        example: the example.
        hidden: ``(N, T, D)`` selected hidden states over the ``T`` real frames only.
    """

    example: Example
    hidden: torch.Tensor

    @property
    def num_frames(self) -> int:
        """``T``, the real frames of :attr:`hidden` (its axis 1)."""
        return int(self.hidden.shape[1])


@dataclass
class Batch:
    """A padded batch of encoded examples.

    Attributes:
        hidden: ``(B, N, T, D)`` hidden states, zero after each ``frame_lengths``.
        frame_lengths: ``(B,)`` long, real frames.
        examples: the ``B`` examples (targets, keys, waveforms).
    """

    hidden: torch.Tensor
    frame_lengths: torch.Tensor
    examples: list[Example]

    @property
    def frame_mask(self) -> torch.Tensor:
        """``(B, T)`` bool, True on real frames."""
        positions = torch.arange(self.hidden.shape[2], device=self.frame_lengths.device)
        return positions.unsqueeze(0) < self.frame_lengths.unsqueeze(1)


def pad_hidden(hidden: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``(N, T_i, D)`` tensors to ``(B, N, max T_i, D)`` with zeros; also ``(B,)`` lengths."""
    lengths = torch.tensor([h.shape[1] for h in hidden], dtype=torch.long)
    n, _, d = hidden[0].shape
    out = hidden[0].new_zeros(len(hidden), n, int(lengths.max()), d)
    for i, h in enumerate(hidden):
        out[i, :, : h.shape[1]] = h
    return out, lengths


# ---------------------------------------------------------------------------- the interface
class Task(ABC):
    """A downstream task. Subclass it in ``downstream/tasks/<name>/`` (see module docstring).

    Class attributes:
        name: the folder name (``--task`` value).
        config_class: the task's config dataclass.
        primary_metric: the metric used for model selection and plots (a key of
            :meth:`evaluate`'s result).
        higher_is_better: direction of ``primary_metric`` (False for EER, WER).
        frames_per_second: upstream frame rate, set by the runner before training (50 for
            every supported upstream: 20 ms frames).

    Args:
        config: the task config.
        seed: the run's seed.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[TaskConfig]]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    frames_per_second: float = 50.0

    def __init__(self, config: TaskConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed

    # ---- data -------------------------------------------------------------------------------
    def setup(self, splits: dict[str, list[Utterance]]) -> None:  # noqa: B027 (optional hook)
        """Inspect the splits once before any example is made (build the label vocabulary,
        check speaker-disjointness...). Default: nothing.

        Raises:
            ValueError: splits unusable for this task.
        """

    def make_example(
        self,
        utterance: Utterance,
        waveform: np.ndarray,
        split: str,
        condition: Condition,
        corruptor: TestCorruptor,
    ) -> Example:
        """Turn a decoded utterance into an :class:`Example`.

        The default corrupts ``waveform`` with ``corruptor.apply(waveform, condition,
        utterance.key)`` (one noise/room draw per seed and utterance, the condition sets the
        gain; identical across upstreams; the clean condition returns the waveform) and uses :meth:`target` as the target.

        Args:
            utterance: the item.
            waveform: ``(S,)`` float32 clean audio at 16 kHz (cropped to ``data.max_seconds``).
            split: ``train``, ``dev`` or ``test``.
            condition: the test condition (always clean for train and dev).
            corruptor: applies conditions with the test noise / RIR banks.
        """
        audio = corruptor.apply(waveform, condition, utterance.key)
        return Example(utterance.key, audio, self.target(utterance), utterance.speaker)

    def target(self, utterance: Utterance) -> Any:
        """The training target of an utterance (used by the default :meth:`make_example`).

        Raises:
            NotImplementedError: the task overrides :meth:`make_example` instead.
        """
        raise NotImplementedError(f"{type(self).__name__} must define target() or make_example()")

    def collate(self, encoded: Sequence[EncodedExample], train: bool, rng: np.random.Generator
                ) -> Batch:
        """Make a :class:`Batch`. Default: pad the full utterances. Override to crop frames at
        training time (``rng`` is the run's seeded training generator).
        """
        hidden, lengths = pad_hidden([e.hidden for e in encoded])
        return Batch(hidden, lengths, [e.example for e in encoded])

    # ---- model ------------------------------------------------------------------------------
    @abstractmethod
    def build_head(self, input_size: int) -> nn.Module:
        """The light head on ``(B, T, input_size)`` featurizer output (including any loss
        parameters, such as an AM-softmax weight matrix)."""

    @abstractmethod
    def training_loss(
        self, head: nn.Module, features: torch.Tensor, frame_lengths: torch.Tensor,
        examples: list[Example],
    ) -> torch.Tensor:
        """Scalar training loss of one batch.

        Args:
            head: the head from :meth:`build_head`, in train mode.
            features: ``(B, T, D)`` featurizer output (zero-padded after ``frame_lengths``).
            frame_lengths: ``(B,)`` long.
            examples: the batch's examples (targets).
        """

    @abstractmethod
    def evaluate(
        self, head: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, list[Example]]]
    ) -> dict[str, float]:
        """Metrics of a whole split.

        Args:
            head: the head in eval mode (called under ``torch.no_grad``).
            batches: ``(features (B, T, D), frame_lengths (B,), examples)`` covering the
                split once, in a fixed order.

        Returns:
            ``{metric name: value}``, including :attr:`primary_metric`.
        """

    def summary(self) -> dict[str, Any]:
        """Task facts for results.json (number of classes, trials...). Default: empty."""
        return {}

    # ---- per-item results -------------------------------------------------------------------
    #: What one per-item record is: ``"utterance"`` or ``"trial"`` (speaker verification).
    item_unit: ClassVar[str] = "utterance"
    #: What the bootstrap intervals and paired comparisons resample: the independent unit.
    #: The items themselves for most tasks; ``"speaker"`` for speaker verification, whose
    #: trials share utterances and speakers (speakers, then utterances within each drawn
    #: speaker: :meth:`resample_units`).
    resample_unit: ClassVar[str] = "utterance"

    def items(self) -> list[dict[str, Any]]:
        """The per-item records of the last :meth:`evaluate` call (JSON-serialisable dicts,
        one per utterance or trial, in evaluation order), written by the runner to
        ``OUT/items/<condition>.jsonl`` like s3prl's predict / score files. Tasks set
        ``self.last_items`` in :meth:`evaluate`; default: none."""
        return list(getattr(self, "last_items", []))

    @classmethod
    def resample_units(cls, items: Sequence[dict[str, Any]]) -> list[tuple[str, ...]] | None:
        """The clusters a two-stage bootstrap draws from ``items`` when it does not draw the
        items themselves: one tuple of member ids per cluster (speaker verification: a
        speaker's utterance keys); the statistic of :meth:`item_statistic` then takes the
        ``(copy, member)`` rows of :func:`downstream.stats.resample_indices`, members numbered
        in this order. Two upstreams' records with equal clusters are resampled alike.
        Default: None, the items themselves."""
        return None

    @classmethod
    def item_statistic(cls, items: Sequence[dict[str, Any]], metric: str
                       ) -> Callable[[np.ndarray], float] | None:
        """``f(indices) -> metric`` over the records ``items[indices]`` (indices may repeat:
        bootstrap resamples), or None when ``metric`` cannot be computed from the records.
        ``f(arange(len(items)))`` equals the metric :meth:`evaluate` reported. A task with
        :meth:`resample_units` takes their ``(copy, member)`` rows instead
        (:func:`downstream.stats.full_indices` gives the reported metric). Default: None."""
        return None


def get_task(name: str) -> type[Task]:
    """The task class of folder ``downstream/tasks/<name>/`` (its ``TASK`` attribute).

    Raises:
        ValueError: no such task folder, or it exposes no ``TASK``.
    """
    if not name.isidentifier():
        raise ValueError(f"invalid task name {name!r}")
    try:
        module = importlib.import_module(f"downstream.tasks.{name}")
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith(f"downstream.tasks.{name}"):
            raise ValueError(f"unknown task {name!r}: no folder downstream/tasks/{name}/") from err
        raise
    task = getattr(module, "TASK", None)
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise ValueError(f"downstream/tasks/{name}/__init__.py must define TASK = <Task subclass>")
    return task


def task_config_path(task: str, config: str | Path) -> Path:
    """The YAML file ``--config`` names: a path as given, or, when no such file exists and the
    value is a bare file name, the config of that name shipped with the task
    (``downstream/tasks/<task>/<name>``, ``.yaml`` optional), so that an installed package's
    configs can be named without their path (``--task ks --config kws_fsdd_cpu``).

    Raises:
        FileNotFoundError: neither exists (the task's shipped configs are listed).
    """
    path = Path(config)
    if path.is_file() or path.parent != Path("."):
        return path
    folder = Path(__file__).resolve().parent / "tasks" / task
    for name in (path.name, f"{path.name}.yaml"):
        if (folder / name).is_file():
            return folder / name
    shipped = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
    raise FileNotFoundError(f"config file not found: {config} (neither a file here nor one of "
                            f"task {task}'s configs: {', '.join(shipped) or 'none'})")


# ---------------------------------------------------------------------------- shared runner pieces
def padding_independent(upstream: Upstream) -> bool:
    """Whether a batched forward pass gives every utterance the features it gets alone.

    An upstream's own ``padding_independent`` attribute decides when it has one (FBANK: each
    utterance is computed on its real samples). Otherwise True for Whisper (each 30 s window
    is padded to 3000 log-mel frames whatever the batch) and for layer-norm CNN upstreams that
    pass an attention mask (layer norm per frame, attention ignores padded frames). False for
    group-norm CNN upstreams (HuBERT / WavLM / wav2vec 2.0 Base style, DistilHuBERT students),
    with or without attention mask: group norm normalises each channel over all time steps
    including the padding."""
    own = getattr(upstream, "padding_independent", None)
    if own is not None:
        return bool(own)
    if getattr(upstream, "is_whisper", False):
        return True
    return bool(upstream.use_attention_mask and has_layer_norm_cnn(upstream.config))


def encode_examples(
    upstream: Upstream,
    featurizer: Featurizer,
    examples: Sequence[Example],
    batch_size: int = 8,
    dtype: torch.dtype = torch.float16,
    device: str | torch.device = "cpu",
    desc: str = "encode",
) -> list[EncodedExample]:
    """Run the frozen upstream once over ``examples`` and keep the featurizer's layers.

    Utterances are batched in order of length (less padding) and returned in input order.

    Args:
        upstream: frozen upstream.
        featurizer: gives the layer selection (:meth:`Featurizer.select`).
        examples: the examples; their ``waveform`` is what is encoded.
        batch_size: utterances per forward pass.
        dtype: storage type of the kept ``(N, T, D)`` hidden states.
        device: where the upstream runs.
        desc: progress bar label.

    Returns:
        One :class:`EncodedExample` per example (hidden states on CPU).
    """
    order = sorted(range(len(examples)), key=lambda i: examples[i].waveform.shape[0])
    out: list[EncodedExample | None] = [None] * len(examples)
    with torch.no_grad(), tqdm(total=len(examples), desc=desc, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            waves = [torch.from_numpy(np.ascontiguousarray(examples[i].waveform)) for i in idx]
            lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)
            padded = torch.zeros(len(waves), int(lengths.max()))
            for j, w in enumerate(waves):
                padded[j, : w.shape[0]] = w
            output = upstream(padded.to(device), lengths.to(device))
            stacked = featurizer.select(output.hidden_states)  # (B, N, T, D)
            for j, i in enumerate(idx):
                frames = max(1, int(output.frame_lengths[j]))
                hidden = stacked[j, :, :frames].to("cpu", dtype).clone()
                out[i] = EncodedExample(examples[i], hidden)
            bar.update(len(idx))
    return out  # type: ignore[return-value]


def iterate_batches(
    task: Task,
    encoded: Sequence[EncodedExample],
    batch_size: int,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """Batches over ``encoded``: shuffled by ``rng`` when ``train``, else in order.

    Each batch is ``task.collate`` of up to ``batch_size`` examples (``hidden`` of shape
    ``(B, N, T, D)``).

    Raises:
        ValueError: (on the first ``next``; this is a generator) ``train`` without ``rng``.
    """
    order = np.arange(len(encoded))
    if train:
        if rng is None:
            raise ValueError("training batches need the run's rng")
        order = rng.permutation(len(encoded))
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start : start + batch_size]]
        yield task.collate(chunk, train, rng if rng is not None else np.random.default_rng(0))
