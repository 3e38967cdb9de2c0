"""Creating a student: a stock ``transformers`` speech SSL model with fewer layers.

The student is a plain ``HubertModel`` / ``WavLMModel`` / ``Wav2Vec2Model`` /
``Data2VecAudioModel`` checkpoint, exactly like DistilHuBERT in ``transformers``
("DistilHuBERT: Speech Representation Learning by Layer-wise Distillation of Hidden-unit
BERT", arXiv 2110.01900): the convolutional feature encoder plus two transformer layers of the
teacher's width (about 23.5 M parameters for a Base teacher), initialised from the teacher's
CNN and chosen transformer layers when the shapes allow. Prediction heads never live in it
(they belong to the objectives), so ``AutoModel.from_pretrained`` loads it with no custom code.

Creation is its own step (``robustdistill create-student``), separate from training.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    PreTrainedModel,
    Wav2Vec2FeatureExtractor,
)

from .pruning import cnn_layout, copy_pruned_cnn
from .upstream import Upstream, disable_train_randomness, has_layer_norm_cnn

logger = logging.getLogger(__name__)

__all__ = ["NARROW_CNN_INITS", "STUDENT_CONFIG_HELP", "STUDENT_PRESETS", "StudentConfig",
           "create_student", "save_student", "student_feature_extractor"]

#: Student families: ``transformers`` model types whose models are stock waveform encoders.
STUDENT_FAMILIES = ("hubert", "wavlm", "wav2vec2", "data2vec-audio")

#: Named student shapes; a preset fills only the fields left unset (None) in the config.
#: ``default``: DistilHuBERT (arXiv 2110.01900): the teacher's CNN and width, 2 layers (23.5 M
#: parameters for a Base teacher). ``fast``: a FitHuBERT-like thin student ("FitHuBERT: Going
#: Thinner and Deeper for Knowledge Distillation of Speech Self-Supervised Learning", arXiv
#: 2207.00555) with a narrower CNN as DPHuBERT's pruned ones ("DPHuBERT: Joint Distillation and
#: Pruning of Self-Supervised Speech Models", arXiv 2305.17651): 256 CNN channels, width 384,
#: 6 heads, FFN 1536, 2 layers (5.9 M parameters), HuBERT family (PyTorch SDPA attention;
#: WavLM's gated relative position bias has only eager attention in ``transformers``). Its
#: shapes differ from the teacher's, so it starts from random weights (nothing is pruned or
#: sliced from the teacher unless ``narrow_cnn_init: prune``). ``pruned``: the ``default`` shape
#: with the teacher's first two CNN layers pruned to half their channels (512 -> 256 for a Base
#: teacher; ``conv_fraction``: each CNN layer's share of the teacher's channels, 1 for layers
#: past the list) by :mod:`robustdistill.pruning` (DPHuBERT's slicing with a one-shot magnitude
#: choice); these two layers run at 3,200 and 1,600 frames per second and take most of the
#: CNN's time, so the student is about 3.1x faster than a Base teacher on CPU where ``default``
#: is 1.9x, and the later CNN layers and the projection stay the teacher's. CPU speed,
#: downstream cost and the check of the pruned initialisation: ``docs/performance.md``.
STUDENT_PRESETS: dict[str, dict] = {
    "default": {},
    "pruned": {"conv_fraction": [0.5, 0.5], "narrow_cnn_init": "prune"},
    "fast": {"family": "hubert", "conv_dim": [256] * 7, "hidden_size": 384,
             "num_attention_heads": 6, "intermediate_size": 1536},
}

#: How a student CNN narrower than the teacher's starts (``StudentConfig.narrow_cnn_init``).
NARROW_CNN_INITS = ("random", "prune")

# Fields a student of another family inherits from an SSL teacher's config.
_SHARED_FIELDS = (
    "conv_dim", "conv_stride", "conv_kernel", "conv_bias", "feat_extract_norm",
    "feat_extract_activation", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
    "hidden_act", "layer_norm_eps", "do_stable_layer_norm", "feat_proj_layer_norm",
)


@dataclass
class StudentConfig:
    """How to build the student.

    Attributes:
        preset: a key of :data:`STUDENT_PRESETS` (``default``, ``pruned`` or ``fast``); it fills the
            shape fields left unset below.
        family: ``transformers`` model type of the student (one of ``STUDENT_FAMILIES``);
            default: the teacher's when it is one of them, else ``hubert``.
        num_layers: transformer layers of the student (DistilHuBERT: 2).
        hidden_size: width ``D_s``; default the teacher's (768 for a Base teacher).
        num_attention_heads: default the teacher's at the teacher's width, else
            ``hidden_size // 64``.
        intermediate_size: feed-forward width; default the teacher's at the teacher's
            width, else ``4 * hidden_size``.
        conv_dim: channels of the 7 CNN layers; default the teacher's (512 each).
        narrow_cnn_init: how a student CNN of the teacher's layout but fewer channels starts:
            ``random`` (default; as before), or ``prune``: the teacher's CNN sliced to the
            channels whose downstream weights are largest (:mod:`robustdistill.pruning`;
            DPHuBERT's slicing, arXiv 2305.17651), also for a student of another family
            whose CNN has the teacher's kernels, strides and norm. Needs ``init_from_teacher``.
            Default: the preset's, else ``random``.
        init_from_teacher: copy the teacher's CNN, projection, positional convolution and
            the ``init_layers`` transformer layers where shapes match (else random init).
        init_layers: 0-based teacher transformer layers copied into student layers 0, 1, ...;
            default the first ``num_layers`` (as DistilHuBERT).
        keep_train_randomness: keep the teacher's LayerDrop/SpecAugment settings for the
            student (default off: no layer is skipped and no frame masked silently).
            ``distill`` refuses a kept LayerDrop (> 0): transformers leaves a skipped layer
            out of ``hidden_states``, which shifts the layers the objectives read.
        projection_layer_norm: ``feat_proj_layer_norm`` of HuBERT students (the only family
            whose config has it). Default off, as DistilHuBERT (``ntu-spml/distilhubert``) and s3prl's distiller
            have it (so the student exports to s3prl).
        copy_projection: copy the teacher's feature projection (CNN channels -> width) even
            when the teacher has a layer norm before it and the student does not. Default on,
            as s3prl's distiller (``init_teacher_conv_layers`` loads ``post_extract_proj``
            from HuBERT Base, whose projection follows a layer norm the distiller lacks);
            off keeps that projection randomly initialised.
        feature_grad_mult: factor on the gradient reaching the student's CNN during
            distillation (both reference codes: 0.1, fairseq's ``GradMultiply``; 1: plain
            gradient; 0: frozen CNN, run under no_grad as the reference code does, about 1.9x
            shorter cached CPU steps for the ``default`` student, see ``docs/performance.md``). A
            training setting: the saved student does not hold it.

    The shape fields ``hidden_size``, ``num_attention_heads``, ``intermediate_size`` and
    ``conv_dim`` take None (not 0) for "the preset's, else the teacher's / derived".

    Raises:
        ValueError: (on construction, naming the key) an unknown ``preset``, ``family`` or
            ``narrow_cnn_init``, ``num_layers`` below 1, ``hidden_size``,
            ``num_attention_heads``, ``intermediate_size`` or a ``conv_dim`` entry below 1
            (None is the only "default" value), a negative ``init_layers`` entry or
            ``feature_grad_mult``, ``init_layers`` not one per student layer, or a
            ``hidden_size`` not divisible by ``num_attention_heads``.
    """

    preset: str = field(default="default", metadata={"help": f"student shape preset, one of {tuple(STUDENT_PRESETS)}; explicit fields override it"})
    family: str | None = field(default=None, metadata={"help": f"student model type, one of {STUDENT_FAMILIES}; default: the preset's (fast: hubert), else the teacher's when it is one of these, else hubert"})
    num_layers: int = field(default=2, metadata={"help": "transformer layers of the student"})
    hidden_size: int | None = field(default=None, metadata={"help": "student width; default the teacher's"})
    num_attention_heads: int | None = field(default=None, metadata={"help": "default hidden_size // 64"})
    intermediate_size: int | None = field(default=None, metadata={"help": "default 4 * hidden_size"})
    conv_dim: list[int] | None = field(default=None, metadata={"help": "CNN channels per layer; default the teacher's"})
    narrow_cnn_init: str | None = field(default=None, metadata={"help": f"a narrower student CNN starts {NARROW_CNN_INITS}: random, or pruned from the teacher's; default the preset's, else random"})
    init_from_teacher: bool = field(default=True, metadata={"help": "copy teacher CNN and layers where shapes allow"})
    init_layers: list[int] | None = field(default=None, metadata={"help": "teacher layers (0-based) copied into the student layers"})
    keep_train_randomness: bool = field(default=False, metadata={"help": "keep the teacher's LayerDrop/SpecAugment settings in the student (distill refuses a LayerDrop above 0: a skipped layer is missing from hidden_states; the references train without it)"})
    projection_layer_norm: bool = field(default=False, metadata={"help": "HuBERT students: layer norm before the feature projection (off: DistilHuBERT layout, exportable to s3prl)"})
    copy_projection: bool = field(default=True, metadata={"help": "copy the teacher's feature projection even without its layer norm (s3prl's distiller does)"})
    feature_grad_mult: float = field(default=0.1, metadata={"help": "gradient factor into the student's CNN (DistilHuBERT/RobustDistiller: 0.1; 0 freezes it)"})

    def __post_init__(self) -> None:
        if self.preset not in STUDENT_PRESETS:
            raise ValueError(f"student.preset must be one of {tuple(STUDENT_PRESETS)}, got "
                             f"{self.preset!r}")
        if self.narrow_cnn_init is not None and self.narrow_cnn_init not in NARROW_CNN_INITS:
            raise ValueError(f"student.narrow_cnn_init must be one of {NARROW_CNN_INITS}, got "
                             f"{self.narrow_cnn_init!r}")
        if self.family is not None and self.family not in STUDENT_FAMILIES:
            raise ValueError(f"student.family must be one of {STUDENT_FAMILIES}, got {self.family!r}")
        if self.num_layers < 1:
            raise ValueError(f"student.num_layers must be >= 1, got {self.num_layers}")
        for name in ("hidden_size", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"student.{name} must be >= 1, or null for the default, got "
                                 f"{value}")
        if self.conv_dim is not None and (not self.conv_dim or min(self.conv_dim) < 1):
            raise ValueError(f"student.conv_dim needs channel counts >= 1 (or null: the "
                             f"teacher's), got {self.conv_dim}")
        if self.init_layers is not None and any(i < 0 for i in self.init_layers):
            raise ValueError(f"student.init_layers are 0-based teacher layers (>= 0), got "
                             f"{self.init_layers}")
        if not self.feature_grad_mult >= 0:
            raise ValueError(f"student.feature_grad_mult must be >= 0, got {self.feature_grad_mult}")
        if self.init_layers is not None and len(self.init_layers) != self.num_layers:
            raise ValueError(
                f"student.init_layers needs one teacher layer per student layer "
                f"({self.num_layers}), got {self.init_layers}"
            )
        if (self.hidden_size is not None and self.num_attention_heads is not None
                and self.hidden_size % self.num_attention_heads):
            raise ValueError(f"student.hidden_size {self.hidden_size} is not divisible by "
                             f"student.num_attention_heads {self.num_attention_heads}")


#: Each :class:`StudentConfig` field's help text, by field name (for command-line options).
STUDENT_CONFIG_HELP = {f.name: f.metadata.get("help", "") for f in fields(StudentConfig)}


def _first_set(*values):
    """The first value that is not None (None means "not set"; 0 is a value, refused by
    :class:`StudentConfig`)."""
    return next(v for v in values if v is not None)


def _student_config(teacher: Upstream, cfg: StudentConfig):
    """Build the student's ``PreTrainedConfig`` from the teacher's and ``cfg``."""
    teacher_type = teacher.config.model_type
    family = cfg.family or STUDENT_PRESETS[cfg.preset].get("family") or (
        teacher_type if teacher_type in STUDENT_FAMILIES else "hubert")
    if family == teacher_type:
        base = teacher.config.to_dict()
        for key in ("model_type", "architectures", "_name_or_path", "transformers_version",
                    "dtype", "torch_dtype"):
            base.pop(key, None)
    else:
        base = {k: getattr(teacher.config, k) for k in _SHARED_FIELDS if hasattr(teacher.config, k)}
    config = AutoConfig.for_model(family, **base)
    preset = dict(STUDENT_PRESETS[cfg.preset])
    if cfg.hidden_size is not None:  # an explicit width: the preset's heads/FFN do not apply
        preset = {k: v for k, v in preset.items()
                  if k in ("conv_dim", "conv_fraction", "family", "narrow_cnn_init")}
    hidden = _first_set(cfg.hidden_size, preset.get("hidden_size"), teacher.hidden_size)
    same_width = family == teacher_type and hidden == teacher.hidden_size
    config.hidden_size = hidden
    config.num_hidden_layers = cfg.num_layers
    # Same family and width: keep the teacher's heads and FFN so its layers can be copied.
    config.num_attention_heads = _first_set(
        cfg.num_attention_heads, preset.get("num_attention_heads"),
        teacher.config.num_attention_heads if same_width else max(1, hidden // 64))
    config.intermediate_size = _first_set(
        cfg.intermediate_size, preset.get("intermediate_size"),
        teacher.config.intermediate_size if same_width else 4 * hidden)
    if hidden % config.num_attention_heads:
        raise ValueError(f"student width {hidden} is not divisible by its "
                         f"{config.num_attention_heads} attention heads: set "
                         "student.num_attention_heads")
    groups = getattr(config, "num_conv_pos_embedding_groups", 1)
    if hidden % groups:  # torch's message ("in_channels must be divisible by groups") names none
        raise ValueError(f"student width {hidden} is not divisible by the "
                         f"{groups} groups of the positional convolution "
                         "(num_conv_pos_embedding_groups, the teacher's): set student.hidden_size "
                         f"to a multiple of {groups}")
    conv_dim = cfg.conv_dim if cfg.conv_dim is not None else preset.get("conv_dim")
    if conv_dim is None and "conv_fraction" in preset:  # a share of the teacher's channels
        shares = list(preset["conv_fraction"]) + [1.0] * len(config.conv_dim)
        conv_dim = [max(1, round(share * width))
                    for share, width in zip(shares, config.conv_dim, strict=False)]
    if conv_dim is not None:
        if len(conv_dim) != len(config.conv_stride):
            raise ValueError(
                f"student.conv_dim needs {len(config.conv_stride)} entries, got {conv_dim}"
            )
        config.conv_dim = list(conv_dim)
    if hasattr(config, "feat_proj_layer_norm"):
        config.feat_proj_layer_norm = cfg.projection_layer_norm
    if cfg.keep_train_randomness:  # the teacher checkpoint's own (the loaded teacher has none)
        for name, value in getattr(teacher, "checkpoint_train_randomness", {}).items():
            if hasattr(config, name):
                setattr(config, name, value)
    else:
        disable_train_randomness(config)
    config.architectures = [AutoModel._model_mapping[type(config)].__name__]
    return config


def create_student(teacher: Upstream, cfg: StudentConfig | None = None) -> PreTrainedModel:
    """Build a student from a loaded teacher.

    Args:
        teacher: the (frozen) teacher upstream; its config gives the defaults.
        cfg: :class:`StudentConfig` (default: DistilHuBERT shape, 2 layers).

    Returns:
        A stock ``transformers`` model (``HubertModel``, ``WavLMModel``, ...).

    Raises:
        ValueError: ``init_layers`` outside the teacher's layers, a bad config, or
            ``narrow_cnn_init: prune`` with a student CNN layer wider than the teacher's.
    """
    cfg = cfg or StudentConfig()
    config = _student_config(teacher, cfg)
    student = AutoModel.from_config(config)
    if cfg.init_from_teacher and config.model_type == teacher.config.model_type:
        layers = cfg.init_layers or list(range(cfg.num_layers))
        bad = [i for i in layers if not 0 <= i < teacher.num_layers]
        if bad:
            raise ValueError(
                f"student.init_layers {bad} outside the teacher's {teacher.num_layers} layers"
            )
        copied, skipped = _copy_from_teacher(student, teacher.model, layers, cfg.copy_projection)
        logger.info("student initialised from the teacher: %d tensors copied, %d random "
                    "(shape mismatch)", copied, len(skipped))
    else:
        logger.info("student (%s) randomly initialised: teacher is %s",
                    config.model_type, teacher.config.model_type)
    narrow_init = cfg.narrow_cnn_init or STUDENT_PRESETS[cfg.preset].get("narrow_cnn_init", "random")
    if cfg.init_from_teacher and narrow_init == "prune":
        if cnn_layout(config) != cnn_layout(teacher.config):  # e.g. Whisper: no CNN
            logger.warning("student.narrow_cnn_init 'prune': the teacher (%s) has no CNN of "
                           "the student's layout; the student's CNN stays random",
                           teacher.config.model_type)
        else:
            projection = _takes_projection(student, teacher.model.state_dict(),
                                           cfg.copy_projection)
            written = copy_pruned_cnn(student, teacher.model, projection)
            logger.info("student CNN %s pruned from the teacher's %s: %d tensors written",
                        list(config.conv_dim), list(teacher.config.conv_dim), written)
    return student


_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.*)$")


def _takes_projection(student, teacher_state: dict, copy_projection: bool) -> bool:
    """Whether the student takes the teacher's feature projection: always, unless
    ``copy_projection`` is false and the projection follows a layer norm the student lacks."""
    norm_key = "feature_projection.layer_norm.weight"
    return copy_projection or norm_key not in teacher_state or norm_key in student.state_dict()


@torch.no_grad()
def _copy_from_teacher(student, teacher, layers: list[int],
                       copy_projection: bool = True) -> tuple[int, list[str]]:
    """Copy every student tensor whose teacher counterpart has the same shape.

    Student layer ``i`` takes teacher layer ``layers[i]``. WavLM keeps its relative
    position bias only in layer 0, so a student layer 0 takes it from teacher layer 0.
    ``copy_projection=False``: a teacher projection that follows a layer norm the student
    lacks is not copied.
    """
    teacher_state = teacher.state_dict()
    if not _takes_projection(student, teacher_state, copy_projection):
        teacher_state = {k: v for k, v in teacher_state.items()
                         if not k.startswith("feature_projection.")}
    copied, skipped = 0, []
    for key, tensor in student.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match:
            source = f"encoder.layers.{layers[int(match.group(1))]}.{match.group(2)}"
            if source not in teacher_state:  # WavLM rel_attn_embed lives in layer 0 only
                source = f"encoder.layers.0.{match.group(2)}"
        else:
            source = key
        if source in teacher_state and teacher_state[source].shape == tensor.shape:
            tensor.copy_(teacher_state[source])
            copied += 1
        else:
            skipped.append(key)
    return copied, skipped


def student_feature_extractor(teacher: Upstream, student_config) -> Wav2Vec2FeatureExtractor:
    """The student's preprocessor: the teacher's waveform convention when the teacher is a
    waveform SSL model (its normalisation, and its attention mask, which a normalising student
    always takes, so that ``AutoFeatureExtractor`` batches equal the trainer's), else the
    ``transformers`` convention for the student's CNN norm (normalised input and an attention
    mask exactly for a layer-norm CNN,
    :func:`~robustdistill.upstream.has_layer_norm_cnn`: ``feat_extract_norm: layer``, and
    every data2vec-audio CNN, whose config has no ``feat_extract_norm``)."""
    if teacher.is_whisper:
        layer_norm = has_layer_norm_cnn(student_config)
        normalize, attention_mask = layer_norm, layer_norm
    else:
        # A normalising extractor without a mask (facebook/wav2vec2-base's) normalises a padded
        # batch over the padding too, unlike the trainer (real samples only, zeros after them):
        # with a mask it normalises as the trainer, and the student is trained with that mask.
        normalize = teacher.normalize
        attention_mask = teacher.use_attention_mask or normalize
    return Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=normalize,
        return_attention_mask=attention_mask,
    )


def save_student(student: PreTrainedModel, feature_extractor, out_dir: str | Path) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json``.

    The folder loads with ``AutoModel.from_pretrained`` and ``AutoFeatureExtractor``;
    no custom code is needed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out_dir, safe_serialization=True)
    feature_extractor.save_pretrained(out_dir)
    return out_dir
