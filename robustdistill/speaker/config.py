"""The ``train-speaker`` recipe (``configs/imlkd_speaker.yaml``): one dataclass per section,
each checking its values on construction (a ``ValueError`` naming ``section.key``), and the
whole recipe, :class:`SpeakerKDConfig`, which :func:`downstream.config.load_config` reads from
YAML plus ``--section.key value`` overrides (unknown keys are errors). ``docs/config.md`` is
generated from these docstrings (:mod:`robustdistill.config_reference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from downstream.config import INFINITE_OK
from robustdistill.nonfinite import largest_adam_learning_rate

from .attribution import IGSettings

__all__ = ["ADAM_BETA1", "METHODS", "MIN_CROP_SECONDS", "DataConfig", "IGConfig", "LossConfig",
           "SpeakerKDConfig", "StudentConfig", "TableConfig", "TrainConfig"]

METHODS = ("none", "logit_kd", "embedding_kd", "imlkd")

#: The first-moment decay of train-speaker's optimizer (``torch.optim.AdamW``'s default betas).
ADAM_BETA1 = 0.9


def _at_least(section: str, cfg: Any, **minimums: int) -> None:
    """Raise ValueError naming ``section.key`` for the first field below its minimum."""
    for name, minimum in minimums.items():
        if getattr(cfg, name) < minimum:
            raise ValueError(f"{section}.{name} must be >= {minimum}, got {getattr(cfg, name)}")


#: The shortest training crop (s): one 25 ms window, the GE2E teacher's mel frame and an
#: upstream student's first CNN frame (400 samples at 16 kHz).
MIN_CROP_SECONDS = 0.025


@dataclass
class DataConfig:
    """Training crops and verification sets (:mod:`.data`); audio is 16 kHz.

    Attributes:
        train_dir: LibriSpeech-style training folder, flat or nested, files
            ``<speaker>-<chapter>-<utt>.<ext>`` (speaker = first field of the file name).
        crop_seconds: training crop length in seconds (at least :data:`MIN_CROP_SECONDS`, one
            25 ms window); a shorter utterance is zero-padded (if not shorter than
            ``min_length_s``).
        min_length_s: training utterances shorter than this (seconds) are skipped with a
            warning and counted as ``too short`` in ``result.json``'s ``skipped_files``, not
            zero-padded to a crop of mostly zeros (a 10 ms file was a 2 s crop of zeros).
            Default 1.0: ``distill``'s ``data.min_length_s``, and the IML-KD paper's shortest
            map segment (``ig.durations``' 1 s), so a kept utterance fills at least that
            segment of its crop (LibriSpeech train-clean-100's shortest in
            ``librispeech-mini`` is 1.6 s). At least :data:`MIN_CROP_SECONDS`; with crops
            shorter than it, ``crop_seconds`` is the minimum (an utterance that fills a crop is
            never too short: :attr:`min_train_seconds`).
        crops_per_utterance: at most this many fixed, evenly spaced, non-overlapping crops per
            training utterance (>= 1; fewer when the utterance is short).
        test_other_dir: ``<speaker>/<file>`` verification set (LibriSpeech test-other); its
            speakers must not be training speakers. None: skipped.
        fsdd_dir: FSDD folder (``{digit}_{speaker}_{take}.wav``, 8 kHz, resampled to 16 kHz);
            None: skipped.
        fsdd_per_speaker: FSDD utterances per speaker, the first in (take, digit) order (>= 2).
        min_test_length_s: verification utterances (``test_other_dir``, ``fsdd_dir``) shorter
            than this (seconds) are skipped with a warning and counted as ``too short`` in
            ``skipped_files`` (an FSDD speaker's next file is taken instead); they were scored
            on a frame or two (the teacher's on a 1.6 s partial of zeros). Default 0.1: ten of
            the student's 10 ms frames; FSDD's shortest digit is 0.144 s, LibriSpeech
            test-other's 2 s. At least :data:`MIN_CROP_SECONDS`.
        max_nontarget: non-target trials sampled per set, without replacement (all target
            trials are kept).
        trials_seed: seed of the non-target sample (the same trials for every system).
        p_target: prior of a target trial for minDCF (costs 1 and 1; default 0.01, SUPERB's).

    Raises:
        ValueError: (on construction) an empty ``train_dir``, ``crop_seconds`` below
            :data:`MIN_CROP_SECONDS`, ``min_length_s`` or ``min_test_length_s`` below
            :data:`MIN_CROP_SECONDS`,
            ``crops_per_utterance < 1``, ``fsdd_per_speaker < 2``, ``max_nontarget < 1``, a
            negative ``trials_seed`` or ``p_target`` outside ``(0, 1)``; the message names the
            key.
    """

    train_dir: str = "../shared/data/librispeech-mini/train-clean-100"
    crop_seconds: float = 2.0
    crops_per_utterance: int = 2
    min_length_s: float = 1.0
    test_other_dir: str | None = "../shared/data/librispeech-mini/test-other"
    fsdd_dir: str | None = "../shared/data/fsdd"
    fsdd_per_speaker: int = 20
    min_test_length_s: float = 0.1
    max_nontarget: int = 5000
    trials_seed: int = 0
    p_target: float = 0.01

    def __post_init__(self) -> None:
        if not self.train_dir:
            raise ValueError("data.train_dir must name the training folder")
        if not self.crop_seconds >= MIN_CROP_SECONDS:
            raise ValueError(f"data.crop_seconds must be at least {MIN_CROP_SECONDS} s (one "
                             "25 ms analysis window: the teacher's mel frame, an upstream "
                             f"student's first frame), got {self.crop_seconds}")
        if not self.min_length_s >= MIN_CROP_SECONDS:
            raise ValueError(f"data.min_length_s must be at least {MIN_CROP_SECONDS} s "
                             f"(one 25 ms analysis window), got {self.min_length_s}")
        if not self.min_test_length_s >= MIN_CROP_SECONDS:
            raise ValueError(f"data.min_test_length_s must be at least {MIN_CROP_SECONDS} s "
                             f"(one 25 ms analysis window), got {self.min_test_length_s}")
        _at_least("data", self, crops_per_utterance=1, fsdd_per_speaker=2, max_nontarget=1,
                  trials_seed=0)
        if not 0 < self.p_target < 1:
            raise ValueError(f"data.p_target must lie in (0, 1), got {self.p_target}")

    @property
    def min_train_seconds(self) -> float:
        """Training utterances shorter than this (seconds) are skipped: ``min_length_s``, or
        ``crop_seconds`` when the crop is shorter (an utterance that fills a crop is kept)."""
        return min(self.min_length_s, self.crop_seconds)

    @property
    def min_train_key(self) -> str:
        """The setting that is :attr:`min_train_seconds`, as the too-short warning names it:
        ``data.min_length_s``, or ``data.crop_seconds`` when the crop is shorter (the warning
        said ``data.min_length_s=0.2 s`` for a recipe whose ``min_length_s`` was 1)."""
        return ("data.min_length_s" if self.min_length_s <= self.crop_seconds
                else "data.crop_seconds")


@dataclass
class StudentConfig:
    """The student: encoder -> attentive statistics pooling -> embedding -> AM-softmax.

    Attributes:
        kind: ``"lstm"`` (default: :class:`MelLSTMEncoder`, an LSTM over 40 log-mel bands,
            10 ms frames) or ``"upstream"`` (:class:`UpstreamEncoder`, needs ``upstream``).
        hidden_size: LSTM width (``kind: lstm`` only; GE2E's is 256).
        num_layers: stacked LSTM layers (``kind: lstm`` only; GE2E has 3).
        upstream: local folder (or hub id; ``HF_HUB_OFFLINE=1``: local only) of a
            :class:`~robustdistill.upstream.Upstream`; required by ``kind: upstream``.
        upstream_frozen: freeze the upstream's weights; only its layer weights and the head
            train (``kind: upstream`` only).
        embedding_dim: width ``E`` of the speaker embedding.
        margin: AM-softmax additive cosine margin ``m`` (training loss only).
        scale: AM-softmax logit scale ``s``; also scales the student's class-level KD logits.

    Raises:
        ValueError: (on construction) ``kind`` not ``lstm`` or ``upstream``, ``kind:
            upstream`` without ``upstream``, ``hidden_size``, ``num_layers`` or
            ``embedding_dim`` below 1, a negative ``margin`` or ``scale <= 0``.
    """

    kind: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 2
    upstream: str | None = None
    upstream_frozen: bool = False
    embedding_dim: int = 128
    margin: float = 0.2
    scale: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in ("lstm", "upstream"):
            raise ValueError(f"student.kind must be 'lstm' or 'upstream', got {self.kind!r}")
        if self.kind == "upstream" and not self.upstream:
            raise ValueError("student.kind 'upstream' needs student.upstream (a model folder)")
        _at_least("student", self, hidden_size=1, num_layers=1, embedding_dim=1)
        if not self.margin >= 0:
            raise ValueError(f"student.margin must be >= 0, got {self.margin}")
        if not self.scale > 0:
            raise ValueError(f"student.scale must be > 0, got {self.scale}")


@dataclass
class IGConfig:
    """Integrated-Gradients maps of the teacher (:mod:`.attribution`), for ``imlkd`` training
    and the ``cache`` and ``gap`` commands.

    Attributes:
        durations: segment durations in seconds (> 0), each tiling the crop; null = the whole
            crop; longer than the crop = the whole crop (default, as the paper: 1 s, 2 s, whole).
        n_steps: IG integration steps (>= 2; default 32, the paper's); more steps shrink the
            completeness gap.
        baseline: IG baseline: ``"zero"`` (all-zero mel input, default, the paper's) or
            ``"noise"`` (mel spectrogram of seeded white noise at ``noise_dbfs``).
        noise_dbfs: level of the noise baseline in dB full scale (``baseline: noise`` only).
        method: captum's quadrature (``"gausslegendre"``, default, exact for a polynomial
            integrand of degree < 2 n_steps; ``"riemann_trapezoid"``, ...). captum 0.9's
            ``"riemann_trapezoid"`` weights sum to (n_steps - 1) / n_steps, so its maps come out
            scaled by about that (0.97 at 32 steps for a cubic F); the completeness gap shows it.
        internal_batch_size: captum's chunking of the ``n_steps x segments`` forward passes
            (memory only; not part of the cache key); null: all at once.
        cache_dir: folder of the map cache (shared by runs: keyed by segment audio, teacher
            weights, IG settings and target centroid).
        use_cache: False: no cache, every map is recomputed every epoch (to time the cache).

    Raises:
        ValueError: (on construction) no ``durations`` or one ``<= 0``, ``n_steps < 2``, an
            unknown ``baseline`` or ``method``, ``internal_batch_size < 1``, or an empty
            ``cache_dir`` with ``use_cache`` (it would be the working folder; ``use_cache:
            false`` is no cache).
    """

    durations: list[float | None] = field(default_factory=lambda: [1.0, 2.0, None])
    n_steps: int = 32
    baseline: str = "zero"
    noise_dbfs: float = -60.0
    method: str = "gausslegendre"
    internal_batch_size: int | None = 512
    cache_dir: str = "runs/imlkd_cache"
    use_cache: bool = True

    def __post_init__(self) -> None:
        if not self.durations or any(d is not None and not d > 0 for d in self.durations):
            raise ValueError(f"ig.durations must be positive seconds or null (the whole crop), "
                             f"got {self.durations}")
        if self.internal_batch_size is not None and self.internal_batch_size < 1:
            raise ValueError(f"ig.internal_batch_size must be >= 1 or null, got "
                             f"{self.internal_batch_size}")
        if self.use_cache and not self.cache_dir:
            raise ValueError("ig.cache_dir must name a folder (for no cache: ig.use_cache "
                             "false)")
        try:
            self.settings()
        except ValueError as err:
            raise ValueError(f"ig: {err}") from None

    def settings(self) -> IGSettings:
        """The IG settings of this config (``durations`` and the cache fields are not part
        of them).

        Raises:
            ValueError: ``n_steps`` below 2, an unknown ``baseline`` or ``method``.
        """
        return IGSettings(self.n_steps, self.baseline, self.noise_dbfs, self.method,
                          self.internal_batch_size)


@dataclass
class LossConfig:
    """The system and its loss weights (:mod:`.losses`); a weight applies only to the terms
    ``method`` uses.

    Attributes:
        method: ``"none"`` (AM-softmax only), ``"logit_kd"`` (+ class level),
            ``"embedding_kd"`` (+ instance) or ``"imlkd"`` (default: + map, instance, class
            and batch level); see ``docs/imlkd.md``.
        ce: weight of the AM-softmax cross-entropy on the training speakers (every method).
        map: weight of the integrated-input term, ``KL`` of the teacher's IG frame maps to the
            student's predicted maps, averaged over segments (``imlkd``).
        instance: weight of the instance-level term ``1 - cos`` between the student embedding,
            projected to the teacher's width, and the teacher's (``embedding_kd``, ``imlkd``).
        class_level: weight of the class-level term ``tau^2 KL`` of the softened teacher and
            student logits over the training speakers (``logit_kd``, ``imlkd``).
        batch_level: weight of the batch-level term, ``||G_s - G_t||_F^2 / B^2`` of the
            row-normalised ``B x B`` Gram matrices of the embeddings (``imlkd``).
        tau: temperature of the class-level term (> 0; default 2).

    Raises:
        ValueError: (on construction) an unknown ``method``, ``tau <= 0`` or a negative
            weight.
    """

    method: str = "imlkd"
    ce: float = 1.0
    map: float = 1.0
    instance: float = 1.0
    class_level: float = 1.0
    batch_level: float = 1.0
    tau: float = 2.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"loss.method must be one of {METHODS}, got {self.method!r}")
        if not self.tau > 0:
            raise ValueError(f"loss.tau must be > 0, got {self.tau}")
        for name in ("ce", "map", "instance", "class_level", "batch_level"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")

    def weights(self) -> dict[str, float]:
        """The active terms of ``method`` and their weights."""
        w = {"ce": self.ce}
        if self.method in ("logit_kd", "imlkd"):
            w["class_level"] = self.class_level
        if self.method in ("embedding_kd", "imlkd"):
            w["instance"] = self.instance
        if self.method == "imlkd":
            w["map"] = self.map
            w["batch_level"] = self.batch_level
        return w


@dataclass
class TrainConfig:
    """Optimisation (AdamW, constant learning rate) and the run folder.

    Attributes:
        output_dir: run folder (``config.yaml``, ``metrics.jsonl``, ``checkpoints/epoch_N``,
            ``result.json``); ignored by ``table``, which uses ``table.output_dir``.
        epochs: passes over the training crops (one checkpoint each).
        keep_checkpoints: newest complete checkpoints kept (>= 1); older ones are deleted after
            each save, as ``train-se``'s (every epoch's used to stay: 30 epochs of an LSTM
            student are 114 MB a run, of an upstream student its weights and AdamW state 30
            times). A mid-epoch ``epoch_N_batch_B`` saved for a SIGTERM is kept on top of them
            while it is the newest, and deleted at the next save. Bare ``epoch_N`` folders of
            runs older than the manifest are resumed from but never deleted.
        batch_size: crops per update; a last batch of fewer than 2 crops is skipped.
        lr: AdamW learning rate, constant; > 0 and at most 3.4e37 (AdamW's first step,
            ``lr / (1 - 0.9)``, must fit in float32).
        weight_decay: AdamW weight decay of the weights with >= 2 dimensions (others: 0).
        seed: seeds the model's initialisation and the batch order (a permutation per epoch).
        cpu: force CPU (default True); False: ``accelerate`` picks the device.
        resume: continue from the newest complete checkpoint in ``output_dir/checkpoints``
            (refused when it was trained with other settings); False (default): start at epoch
            0 (refused when ``output_dir`` holds an earlier run's checkpoints).
        max_grad_norm: clip the gradients' total L2 norm to this (> 0; ``.inf``: no clipping).
        save_on_sigterm: on SIGTERM (a scheduler's preemption or time limit) finish the
            batch under way (its optimizer step), save a mid-epoch checkpoint
            ``epoch_N_batch_B`` (with the epoch's partial loss sums, so the resumed run logs
            and ends as an uninterrupted one), then stop with exit status 143; false: stop at
            once, losing the epoch so far. The grace period before SIGKILL must exceed one
            batch (with its IG maps) plus one save (docs/reliability.md).

    Raises:
        ValueError: (on construction) ``epochs < 1``, ``batch_size < 2`` (a batch of one crop
            is skipped, so nothing would train), ``keep_checkpoints < 1``, ``lr <= 0`` or above
            3.4e37 (:func:`~robustdistill.nonfinite.largest_adam_learning_rate`), a
            negative ``weight_decay`` or ``seed``, ``max_grad_norm <= 0``, or an empty
            ``output_dir``; the message names the key.
    """

    output_dir: str = "runs/imlkd_speaker/run"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    cpu: bool = True
    resume: bool = False
    max_grad_norm: float = field(default=5.0, metadata={INFINITE_OK: "no clipping"})
    keep_checkpoints: int = 2
    save_on_sigterm: bool = True

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("training.output_dir must name a folder")
        _at_least("training", self, epochs=1, batch_size=2, seed=0, keep_checkpoints=1)
        for name in ("lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"training.{name} must be > 0, got {getattr(self, name)}")
        if self.lr > (most := largest_adam_learning_rate(ADAM_BETA1)):
            raise ValueError(f"training.lr must be at most {most:.4g}, the largest whose first "
                             f"AdamW step (lr / (1 - beta1), beta1 = {ADAM_BETA1:g}) fits in "
                             f"float32; got {self.lr:g}")
        if not self.weight_decay >= 0:
            raise ValueError(f"training.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass
class TableConfig:
    """What ``robustdistill train-speaker table`` trains and where.

    Attributes:
        methods: systems trained for the table, each a ``loss.method`` (default all four; the
            teacher is always evaluated).
        seeds: ``training.seed`` of each run; every method is trained once per seed.
        output_dir: folder of the runs (``<method>_seed<seed>``), ``results.json`` and
            ``table.md``; a finished run with the same config there is reused.

    Raises:
        ValueError: (on construction) no ``methods``, an unknown or repeated one, no ``seeds``,
            a negative or repeated one (a repeated run would count twice in the mean and
            standard deviation), or an empty ``output_dir``.
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    output_dir: str = "runs/imlkd_speaker"

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if not self.methods or bad:
            raise ValueError(f"table.methods must be a non-empty list of {METHODS}, got "
                             f"{self.methods}")
        if not self.seeds or min(self.seeds) < 0:
            raise ValueError(f"table.seeds must be a non-empty list of seeds >= 0, got "
                             f"{self.seeds}")
        for key in ("methods", "seeds"):
            values = getattr(self, key)
            if len(set(values)) < len(values):
                raise ValueError(f"table.{key} must not repeat an entry (each run would count "
                                 f"twice in the table), got {values}")
        if not self.output_dir:
            raise ValueError("table.output_dir must name a folder")


@dataclass
class SpeakerKDConfig:
    """The whole recipe (``configs/imlkd_speaker.yaml``).

    Attributes:
        teacher: path of a GE2E ``pretrained.pt``; null: the installed resemblyzer package's.
        data / student / ig / loss / training / table: see their classes.
    """

    teacher: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    ig: IGConfig = field(default_factory=IGConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    table: TableConfig = field(default_factory=TableConfig)
