"""Initialising a narrower student CNN from the teacher's by structured channel pruning.

DPHuBERT ("DPHuBERT: Joint Distillation and Pruning of Self-Supervised Speech Models",
arXiv 2305.17651; reference code ``pyf98/DPHuBERT``, ``wav2vec2/components.py``,
``ConvFeatureExtractionModel.prune``) keeps a subset of each CNN layer's output channels: it
slices that layer's convolution and norm to the kept channels, slices the next layer's input
channels (or the feature projection's, after the last layer) to match, and so keeps every kept
weight as the teacher had it. We do the same slicing, but choose the channels once, before
distillation and without data, where DPHuBERT learns hard-concrete masks while distilling
(deviation, named ``student.narrow_cnn_init: prune``): a channel's score is the L1 norm of the
weights that read it downstream (the next CNN layer's input kernels for the kept outputs of
that layer, or the feature projection's columns after the last layer) times the absolute gain
of the channel's norm where there is one (GroupNorm in layer 0, LayerNorm per layer or before
the projection). Layers are chosen from the last to the first, so that a channel is scored by
the channels it feeds that are themselves kept. This is the "outgoing-weight" magnitude
criterion of filter pruning ("Pruning Filters for Efficient ConvNets", arXiv 1608.08710, scores
a filter by its own weights; a per-channel norm after the convolution would cancel that scale,
so the reading weights are used instead).

Kept channels stay in the teacher's order. With a per-channel GroupNorm in layer 0 (the
``group`` CNN of HuBERT / WavLM / wav2vec 2.0 Base), the kept channels of layer 0 give exactly
the teacher's outputs for those channels; deeper layers differ only by the missing inputs.
"""

from __future__ import annotations

import torch

from .upstream import has_layer_norm_cnn

__all__ = ["cnn_layout", "copy_pruned_cnn", "select_cnn_channels"]

_CONV = "feature_extractor.conv_layers.{}.conv.{}"
_NORM = "feature_extractor.conv_layers.{}.layer_norm.{}"
_PROJ_NORM = "feature_projection.layer_norm.{}"
_PROJ = "feature_projection.projection.{}"


def cnn_layout(config) -> tuple | None:
    """What must agree between two CNNs for one to be pruned from the other: kernels,
    strides, conv bias and norm mode (``None`` for a config without a waveform CNN)."""
    if not hasattr(config, "conv_dim"):
        return None
    return (tuple(config.conv_kernel), tuple(config.conv_stride), config.conv_bias,
            "layer" if has_layer_norm_cnn(config) else "group")


def select_cnn_channels(teacher_state: dict[str, torch.Tensor],
                        conv_dim: list[int]) -> list[torch.Tensor]:
    """Choose which teacher channels each student CNN layer keeps.

    Args:
        teacher_state: the teacher's ``state_dict()`` (``transformers`` key names).
        conv_dim: the student's channels per CNN layer, ``conv_dim[l]`` at most the teacher's.

    Returns:
        One sorted ``LongTensor`` of teacher channel indices per layer, ``len == conv_dim[l]``
        (``arange`` where the layer keeps all channels).

    Raises:
        ValueError: the layer counts differ, or a student layer is wider than the teacher's.
    """
    widths = []
    for layer in range(len(conv_dim)):
        key = _CONV.format(layer, "weight")
        if key not in teacher_state:
            raise ValueError(f"the teacher's CNN has fewer than {len(conv_dim)} layers")
        widths.append(teacher_state[key].shape[0])
    if _CONV.format(len(conv_dim), "weight") in teacher_state:
        raise ValueError(f"the teacher's CNN has more than {len(conv_dim)} layers")
    too_wide = [i for i, (s, t) in enumerate(zip(conv_dim, widths, strict=True)) if s > t]
    if too_wide:
        raise ValueError(f"student CNN layers {too_wide} are wider than the teacher's "
                         f"({[widths[i] for i in too_wide]} channels): nothing to prune")
    kept: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(conv_dim)
    for layer in reversed(range(len(conv_dim))):
        if layer == len(conv_dim) - 1:
            # the projection: (hidden, channels); all its rows read the last layer
            reader = teacher_state[_PROJ.format("weight")].abs().sum(0)
            if _PROJ_NORM.format("weight") in teacher_state:
                reader = reader * teacher_state[_PROJ_NORM.format("weight")].abs()
        else:  # next conv: (out, in, kernel); only its kept outputs read this layer
            nxt = teacher_state[_CONV.format(layer + 1, "weight")]
            reader = nxt[kept[layer + 1]].abs().sum((0, 2))
        gain = teacher_state.get(_NORM.format(layer, "weight"))
        score = reader * gain.abs() if gain is not None else reader
        top = torch.topk(score.float(), conv_dim[layer], sorted=False).indices
        kept[layer] = torch.sort(top).values
    return kept


@torch.no_grad()
def copy_pruned_cnn(student: torch.nn.Module, teacher: torch.nn.Module,
                    projection: bool = True) -> int:
    """Copy the teacher's CNN into a student CNN with as many or fewer channels per layer.

    Slices, per layer, the convolution's output (and input) channels and its norm to the
    channels :func:`select_cnn_channels` keeps, then (``projection``) the feature projection's
    layer norm and input columns to the last layer's kept channels, where the student's shapes
    then match (the projection's output width is the student's).

    Args:
        student: a ``transformers`` waveform model whose CNN has the teacher's layout
            (:func:`cnn_layout`) and ``config.conv_dim`` at most the teacher's.
        teacher: the teacher model (not the ``Upstream`` wrapper).
        projection: also slice the feature projection (``create_student`` decides, by
            ``StudentConfig.copy_projection``).

    Returns:
        The number of student tensors written.

    Raises:
        ValueError: the layouts differ, or a student layer is wider than the teacher's.
    """
    if cnn_layout(student.config) != cnn_layout(teacher.config):
        raise ValueError(f"student CNN {cnn_layout(student.config)} cannot be pruned from the "
                         f"teacher's {cnn_layout(teacher.config)}")
    source = teacher.state_dict()
    target = student.state_dict()
    kept = select_cnn_channels(source, list(student.config.conv_dim))
    sliced: dict[str, torch.Tensor] = {}
    for layer, out_idx in enumerate(kept):
        weight = source[_CONV.format(layer, "weight")][out_idx]
        sliced[_CONV.format(layer, "weight")] = weight if layer == 0 else weight[:, kept[layer - 1]]
        if _CONV.format(layer, "bias") in source:  # conv_bias: true
            sliced[_CONV.format(layer, "bias")] = source[_CONV.format(layer, "bias")][out_idx]
        for part in ("weight", "bias"):
            if _NORM.format(layer, part) in source:
                sliced[_NORM.format(layer, part)] = source[_NORM.format(layer, part)][out_idx]
    last = kept[-1]
    if projection:
        for part in ("weight", "bias"):
            if _PROJ_NORM.format(part) in source:  # kept below only if the student has it
                sliced[_PROJ_NORM.format(part)] = source[_PROJ_NORM.format(part)][last]
        sliced[_PROJ.format("weight")] = source[_PROJ.format("weight")][:, last]
        sliced[_PROJ.format("bias")] = source[_PROJ.format("bias")]
    written = 0
    for key, tensor in sliced.items():
        if key in target and target[key].shape == tensor.shape:
            target[key].copy_(tensor)
            written += 1
    return written
