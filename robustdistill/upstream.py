"""One contract for every speech encoder: padded waveforms plus lengths in, hidden states plus
frame lengths out.

:class:`Upstream` wraps any ``transformers`` speech encoder loaded by hub id or local folder:
WavLM, HuBERT, wav2vec 2.0, data2vec-audio (raw waveform input, 20 ms frames) and the Whisper
encoder (log-mel input, 20 ms frames, a fixed 30 s window). It is used for the frozen teacher,
for the trainable student and as the frozen upstream of downstream evaluation.

Tensor legend: ``B`` batch, ``S`` samples (16 kHz), ``T`` frames (50 per second), ``D`` hidden
width, ``L`` transformer layers (``hidden_states`` holds ``L + 1`` tensors; index 0 is the
input of the first transformer layer, as in ``transformers``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from torch import nn
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from .audio import SAMPLE_RATE, require_float_audio

logger = logging.getLogger(__name__)

__all__ = ["CustomCodeError", "ModelFolderError", "Upstream", "UpstreamOutput",
           "custom_code_problem", "disable_train_randomness", "has_layer_norm_cnn",
           "ignored_code_note",
           "interpolate_frames", "lengths_to_mask", "model_folder_errors"]

#: Whisper's encoder needs exactly 30 s of log-mel input (3000 frames of 10 ms).
WHISPER_WINDOW_SAMPLES = 30 * SAMPLE_RATE
#: Samples per Whisper encoder frame (two stride-2 convs over 10 ms mel frames: 20 ms).
WHISPER_SAMPLES_PER_FRAME = 320
#: Whisper frame ``k`` is centred at sample ``320 k`` (mel frames centred at ``160 j``, then a
#: stride-2 convolution with padding 1); a wav2vec 2.0-style CNN frame ``k`` (receptive field
#: 400, stride 320) is centred at ``320 k + 200``: 200 samples (0.625 frame) later.
SSL_FRAME_CENTRE_OFFSET = 200
#: Receptive field in samples of the wav2vec 2.0-style CNN (kernels 10,3,3,3,3,2,2).
SSL_RECEPTIVE_FIELD = 400
#: Whisper frame placements (``Upstream.whisper_frames``): Whisper's own grid, or
#: interpolated at the centres of a wav2vec 2.0-style student's frames.
WHISPER_FRAME_GRIDS = ("native", "ssl")


class ModelFolderError(ValueError):
    """A local model folder whose files ``transformers`` cannot read: a ``config.json`` that is
    not JSON or has no ``model_type``, weights cut short (an interrupted copy or download)."""


class CustomCodeError(ModelFolderError):
    """A local model folder whose ``config.json`` names a ``model_type`` this ``transformers``
    version does not know: a model defined by Python files of its own (``has_code``: its
    ``auto_map`` names them; ``trust_remote_code`` would run them), or by a newer
    ``transformers``. Was reported as "not a readable model folder"."""

    def __init__(self, message: str, has_code: bool) -> None:
        super().__init__(message)
        self.has_code = has_code

    def __reduce__(self):  # keep has_code if it is pickled (another process)
        return type(self), (str(self), self.has_code)


def custom_code_problem(folder: str | Path) -> tuple[str, bool] | None:
    """Why ``transformers`` cannot load the local model ``folder`` by itself, when its
    ``config.json`` names a ``model_type`` this version does not know; else None (no or an
    unreadable ``config.json``, no ``model_type``, a known one). Reads ``config.json`` only.

    Returns:
        ``(reason, has_code)``: ``has_code`` when its ``auto_map`` names the folder's own
        code (``"holds custom code: model_type 'x' is not known to transformers 5.25.0; its
        config.json's auto_map names modeling_x.XModel; robustdistill runs no model folder's
        own code (trust_remote_code is off)"``), else a model of a newer ``transformers``.
    """
    try:
        config = json.loads((Path(folder).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or model_type in CONFIG_MAPPING_NAMES:
        return None
    known = f"model_type {model_type!r} is not known to transformers {transformers.__version__}"
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and auto_map:
        names = [n for v in auto_map.values() for n in (v if isinstance(v, list) else [v]) if n]
        code = ", ".join(dict.fromkeys(str(n) for n in names))
        return (f"holds custom code: {known}; its config.json's auto_map names {code}; "
                "robustdistill runs no model folder's own code (trust_remote_code is off)",
                True)
    return (f"{known} (a model of a newer transformers, or of code of its own, which "
            "robustdistill does not run)", False)


def ignored_code_note(folder: str | Path) -> str | None:
    """Why the local model ``folder``'s own code is not run, when its ``config.json`` names a
    ``model_type`` this ``transformers`` knows and its ``auto_map`` names code files the
    folder holds (``modeling_x.py``): the stock class is loaded, that code ignored; else None
    (no or an unreadable ``config.json``, no ``auto_map``, none of its files in ``folder``,
    an unknown ``model_type``: :func:`custom_code_problem`). Reads ``config.json`` only.

    Returns:
        ``"FOLDER: its own code (modeling_x.py, named by config.json's auto_map) is not run
        (trust_remote_code is off); the stock 'wavlm' class of transformers is used"``.
    """
    path = Path(folder).expanduser()
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    model_type, auto_map = config.get("model_type"), config.get("auto_map")
    if model_type not in CONFIG_MAPPING_NAMES or not isinstance(auto_map, dict):
        return None
    names = [n for v in auto_map.values() for n in (v if isinstance(v, list) else [v])
             if isinstance(n, str) and "." in n]
    # "modeling_x.XModel" or a hub repo's "owner/repo--modeling_x.XModel": modeling_x.py
    files = [f"{n.split('--')[-1].rsplit('.', 1)[0]}.py" for n in names]
    shipped = [f for f in dict.fromkeys(files) if (path / f).is_file()]
    if not shipped:
        return None
    return (f"{folder}: its own code ({', '.join(shipped)}, named by config.json's auto_map) "
            f"is not run (trust_remote_code is off); the stock {model_type!r} class of "
            "transformers is used")


@contextmanager
def model_folder_errors(name_or_path: str | Path, trust_remote_code: bool = False
                        ) -> Iterator[None]:
    """Turn ``transformers``' and ``safetensors``' errors while loading from the local folder
    ``name_or_path`` into one :class:`ModelFolderError` naming the folder and the cause (on
    one line) (a truncated ``model.safetensors`` raised ``SafetensorError``, a bad
    ``config.json`` an ``OSError``: tracebacks in every command). A folder whose model needs
    code of its own (:func:`custom_code_problem`; unless ``trust_remote_code``, when the
    error is that code's) is a :class:`CustomCodeError` saying so, not "not a readable model
    folder". A folder of a known ``model_type`` that ships code of its own is loaded as the
    stock model, with a warning that its code is not run (:func:`ignored_code_note`). A hub
    id's errors pass unchanged (the commands explain an unreachable hub
    themselves).

    Raises:
        ModelFolderError: ``name_or_path`` is a folder and loading from it failed.
    """
    if not trust_remote_code and (ignored := ignored_code_note(name_or_path)) is not None:
        logger.warning("%s", ignored)
    try:
        yield
    except (OSError, ValueError, SafetensorError) as err:
        if isinstance(err, ModelFolderError) or not Path(name_or_path).is_dir():
            raise
        if not trust_remote_code and (problem := custom_code_problem(name_or_path)):
            raise CustomCodeError(f"{name_or_path}: {problem[0]}", problem[1]) from err
        said = " ".join(str(err).split()) or type(err).__name__  # on one line, all of it
        raise ModelFolderError(f"{name_or_path}: not a readable model folder ({said})") from err


class _GradMultiply(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``scale`` (fairseq's
    ``GradMultiply``, used by wav2vec 2.0 / DistilHuBERT as ``feature_grad_mult``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def interpolate_frames(hidden: torch.Tensor, offset: float, num_frames: int) -> torch.Tensor:
    """Linear interpolation of a frame sequence at fractional positions ``k + offset``.

    Used to move Whisper's frames (centred at ``320 k`` samples) onto a wav2vec 2.0-style
    student's frame centres (``320 k + 200``): ``offset = 200 / 320``.

    Args:
        hidden: ``(B, T, D)`` frames at integer positions ``0 .. T-1``.
        offset: fractional shift in frames, in ``[0, 1)``.
        num_frames: ``K``, output frames; positions past ``T - 1`` use the last frame.

    Returns:
        ``(B, K, D)``: ``out[:, k] = (1 - offset) * hidden[:, k] + offset * hidden[:, k + 1]``
        (indices clamped to ``T - 1``).

    Raises:
        ValueError: ``offset`` outside ``[0, 1)`` or ``num_frames < 0``.
    """
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset must be in [0, 1) frames, got {offset}")
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    last = hidden.shape[1] - 1
    lo = torch.arange(num_frames, device=hidden.device).clamp(max=last)
    hi = (lo + 1).clamp(max=last)
    return hidden[:, lo] * (1.0 - offset) + hidden[:, hi] * offset


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(B,)`` integer lengths -> ``(B, max_len)`` bool mask, True on real positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def has_layer_norm_cnn(config) -> bool:
    """Whether a waveform encoder's CNN normalises each frame (layer norm) rather than each
    channel over the whole input (group norm, as WavLM/HuBERT/wav2vec 2.0 Base).

    Only a layer-norm CNN gives padding-independent CNN features, and only such checkpoints
    were trained with normalised input and an attention mask (``transformers`` convention).
    data2vec-audio's CNN always uses layer norm (its config has no ``feat_extract_norm``), but
    its stack of positional convolutions still carries the padding into the last real frames of
    its hidden states, mask or not.
    """
    if getattr(config, "model_type", "") == "data2vec-audio":
        return True
    return getattr(config, "feat_extract_norm", "group") == "layer"


#: Config fields of train-mode randomness and their "off" values.
TRAIN_RANDOMNESS = {"layerdrop": 0.0, "encoder_layerdrop": 0.0, "apply_spec_augment": False,
                    "mask_time_prob": 0.0, "mask_feature_prob": 0.0}


def disable_train_randomness(config) -> None:
    """Turn off the train-mode randomness of a speech SSL config in place.

    LayerDrop (``layerdrop``, Whisper's ``encoder_layerdrop``) silently skips layers and
    SpecAugment (``apply_spec_augment``, ``mask_time_prob``, ``mask_feature_prob``) silently
    masks frames; a teacher must never do either, and a student only when asked.
    """
    for name, off in TRAIN_RANDOMNESS.items():
        if hasattr(config, name):
            setattr(config, name, off)


@dataclass
class UpstreamOutput:
    """What :meth:`Upstream.forward` returns.

    Attributes:
        hidden_states: ``L + 1`` tensors of shape ``(B, T, D)``; frames past ``frame_lengths``
            are padding and must not be used.
        frame_lengths: ``(B,)`` long, real frames per utterance.
        frame_mask: ``(B, T)`` bool, True on real frames.
        extract_features: ``(B, T, C)`` output of the convolutional feature encoder (before
            the projection to ``D``), or None when not asked for / not available (Whisper).
    """

    hidden_states: tuple[torch.Tensor, ...]
    frame_lengths: torch.Tensor
    frame_mask: torch.Tensor
    extract_features: torch.Tensor | None = None


class Upstream(nn.Module):
    """A speech encoder behind the upstream contract.

    Args:
        model: a loaded ``transformers`` model: an SSL encoder (``WavLMModel``, ``HubertModel``,
            ``Wav2Vec2Model``, ``Data2VecAudioModel``...) or a Whisper model / encoder.
        normalize: zero-mean unit-variance normalisation of each waveform over its real
            samples, as the model's ``Wav2Vec2FeatureExtractor`` (``do_normalize``) does.
        use_attention_mask: pass an attention mask to the model. ``transformers`` convention:
            only models with ``feat_extract_norm == "layer"`` were trained with one; for the
            others padding is zeros and the outputs of padded batches depend slightly on the
            padding, as in the original models.
        feature_extractor: the Whisper feature extractor (log-mel), required for Whisper.
        frozen: eval mode, ``requires_grad=False`` on all parameters, forward under no_grad.
        feature_grad_mult: factor on the gradient flowing back into the convolutional
            feature encoder (wav2vec 2.0 / DistilHuBERT ``feature_grad_mult``; 1: unchanged,
            0: the CNN runs under no_grad, as in fairseq and s3prl, so it is frozen, saves no
            activations and costs no backward pass). Also applies to the returned
            ``extract_features``.
        whisper_frames: where a Whisper encoder's frames are placed: ``"native"`` (its own
            frames, centred at ``320 k`` samples; ``ceil(S / 320)`` of them) or ``"ssl"``
            (interpolated at ``320 k + 200``, the centres of a wav2vec 2.0-style CNN's frames,
            with that CNN's frame count: the alignment a Whisper teacher needs with such a
            student, see :data:`SSL_FRAME_CENTRE_OFFSET`).

    Raises:
        ValueError: Whisper model without a feature extractor; a negative
            ``feature_grad_mult``; an unknown ``whisper_frames``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        normalize: bool = False,
        use_attention_mask: bool = False,
        feature_extractor=None,
        frozen: bool = True,
        feature_grad_mult: float = 1.0,
        whisper_frames: str = "native",
    ) -> None:
        super().__init__()
        if not feature_grad_mult >= 0:
            raise ValueError(f"feature_grad_mult must be >= 0, got {feature_grad_mult}")
        if whisper_frames not in WHISPER_FRAME_GRIDS:
            raise ValueError(
                f"whisper_frames must be one of {WHISPER_FRAME_GRIDS}, got {whisper_frames!r}"
            )
        self.feature_grad_mult = float(feature_grad_mult)
        self.whisper_frames = whisper_frames
        self.is_whisper = getattr(model.config, "model_type", "") == "whisper"
        if self.is_whisper:
            if feature_extractor is None:
                raise ValueError("a Whisper upstream needs its WhisperFeatureExtractor")
            model = model.get_encoder() if hasattr(model, "get_encoder") else model
        self.model = model
        self.normalize = normalize
        self.use_attention_mask = use_attention_mask
        self.feature_extractor = feature_extractor
        self.frozen = frozen
        #: LayerDrop/SpecAugment settings of the checkpoint as stored (before
        #: :func:`disable_train_randomness`); filled by :meth:`from_pretrained`.
        self.checkpoint_train_randomness: dict = {}
        if frozen:
            self.freeze()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        frozen: bool = True,
        trust_remote_code: bool = False,
        keep_train_randomness: bool = False,
        dtype: torch.dtype = torch.float32,
        revision: str | None = None,
        whisper_frames: str = "native",
    ) -> Upstream:
        """Load an encoder by hub id (``microsoft/wavlm-base-plus``) or local folder.

        ``whisper_frames`` is the constructor's (used by Whisper checkpoints only).

        LayerDrop and SpecAugment are switched off unless ``keep_train_randomness`` (never
        for a frozen upstream). Normalisation and attention-mask use follow the folder's
        ``preprocessor_config.json`` when it has one, else the ``transformers`` convention
        (both on exactly when ``feat_extract_norm == "layer"``).

        Raises:
            OSError: the id cannot be resolved (offline with no local copy, typo).
            ModelFolderError: a local folder whose files cannot be read (a ValueError);
                :class:`CustomCodeError` when its model needs code of its own and
                ``trust_remote_code`` is off.
            ValueError: the checkpoint is not a speech encoder this contract supports.
        """
        name_or_path = str(name_or_path)
        with model_folder_errors(name_or_path, trust_remote_code):
            config = AutoConfig.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, revision=revision
            )
            checkpoint_randomness = {k: getattr(config, k) for k in TRAIN_RANDOMNESS
                                     if hasattr(config, k)}
            if frozen or not keep_train_randomness:
                disable_train_randomness(config)
            model = AutoModel.from_pretrained(
                name_or_path,
                config=config,
                trust_remote_code=trust_remote_code,
                revision=revision,
                dtype=dtype,
            )
            feature_extractor = _load_feature_extractor(name_or_path, trust_remote_code,
                                                        revision)
        if config.model_type == "whisper":
            upstream = cls(model, feature_extractor=feature_extractor, frozen=frozen,
                           whisper_frames=whisper_frames)
        elif not hasattr(model, "_get_feat_extract_output_lengths"):
            raise ValueError(
                f"{name_or_path}: {type(model).__name__} is not a waveform speech encoder "
                "(expected WavLM, HuBERT, wav2vec 2.0, data2vec-audio or Whisper)"
            )
        else:
            layer_norm = has_layer_norm_cnn(config)
            normalize = getattr(feature_extractor, "do_normalize", layer_norm)
            use_mask = getattr(feature_extractor, "return_attention_mask", layer_norm)
            upstream = cls(model, normalize=normalize, use_attention_mask=use_mask,
                           frozen=frozen)
        upstream.checkpoint_train_randomness = checkpoint_randomness
        return upstream

    def freeze(self) -> None:
        """Eval mode and no gradients for every parameter (a frozen teacher/upstream)."""
        self.frozen = True
        self.model.eval()
        self.model.requires_grad_(False)

    def train(self, mode: bool = True) -> Upstream:
        """Like ``nn.Module.train``, but a frozen upstream always stays in eval mode."""
        super().train(mode and not self.frozen)
        return self

    # ------------------------------------------------------------------ shape facts
    @property
    def config(self):
        """The wrapped model's ``transformers`` config (``self.model.config``)."""
        return self.model.config

    @property
    def hidden_size(self) -> int:
        """Width ``D`` of the hidden states."""
        return self.config.d_model if self.is_whisper else self.config.hidden_size

    @property
    def num_layers(self) -> int:
        """Number of transformer layers ``L`` (``hidden_states`` holds ``L + 1`` tensors)."""
        return self.config.encoder_layers if self.is_whisper else self.config.num_hidden_layers

    @property
    def conv_dim(self) -> int | None:
        """Channels ``C`` of the convolutional features, None for Whisper."""
        return None if self.is_whisper else self.config.conv_dim[-1]

    @property
    def samples_per_frame(self) -> int:
        """Samples per output frame at 16 kHz (320 for all supported families: 20 ms)."""
        if self.is_whisper:
            return WHISPER_SAMPLES_PER_FRAME
        return math.prod(self.config.conv_stride)

    @property
    def first_frame_centre(self) -> int:
        """Sample (16 kHz) at which output frame 0 is centred; frame ``k`` is centred at
        ``first_frame_centre + k * samples_per_frame``.

        An SSL CNN's frame ``k`` reads samples ``[k * stride, k * stride + field)`` (``field``
        its receptive field, ``1 + sum((kernel_l - 1) * prod(strides before l))``): centre
        ``field // 2``, 200 for the wav2vec 2.0 CNN (field 400, :data:`SSL_RECEPTIVE_FIELD`).
        Whisper: 0 for its own frames (``whisper_frames="native"``),
        :data:`SSL_FRAME_CENTRE_OFFSET` (200) when interpolated onto the SSL grid (``"ssl"``).
        """
        if self.is_whisper:
            return SSL_FRAME_CENTRE_OFFSET if self.whisper_frames == "ssl" else 0
        field, step = 1, 1
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride, strict=True):
            field += (kernel - 1) * step
            step *= stride
        return field // 2

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Real output frames for waveforms of ``lengths`` samples.

        Uses the model's own convolution arithmetic (``_get_feat_extract_output_lengths``)
        for SSL encoders, ``ceil(n / 320)`` for Whisper (``whisper_frames="native"``) or the
        Base CNN's ``max(1, (n - 400) // 320 + 1)`` (``"ssl"``).

        Args:
            lengths: ``(B,)`` integer sample counts.

        Returns:
            ``(B,)`` long frame counts, never negative: 0 for an utterance shorter than the
            SSL encoder's receptive field (the convolution arithmetic alone gives -1 for a
            few samples) and for 0 samples.
        """
        lengths = torch.as_tensor(lengths)
        if self.is_whisper and self.whisper_frames == "ssl":
            # Frames whose centre 320 k + 200 lies within the utterance's real Whisper frames.
            frames = (torch.div(lengths - SSL_RECEPTIVE_FIELD, WHISPER_SAMPLES_PER_FRAME,
                                rounding_mode="floor") + 1).clamp(min=1).long()
            return torch.where(lengths > 0, frames, torch.zeros_like(frames))
        if self.is_whisper:
            return torch.div(lengths + WHISPER_SAMPLES_PER_FRAME - 1, WHISPER_SAMPLES_PER_FRAME,
                             rounding_mode="floor").long()
        return self.model._get_feat_extract_output_lengths(lengths).long().clamp(min=0)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor,
        *,
        return_extract_features: bool = False,
    ) -> UpstreamOutput:
        """Encode a padded batch.

        Args:
            waveforms: ``(B, S)`` float, 16 kHz, zero-padded after ``lengths``.
            lengths: ``(B,)`` long, real samples per utterance.
            return_extract_features: also return the CNN features ``(B, T, C)``.

        Returns:
            :class:`UpstreamOutput`.

        Raises:
            ValueError: wrongly shaped input, integer (or bool) waveforms (e.g. int16 PCM,
                which would be read as samples of +-32768: scale it to [-1, 1) first with
                :func:`robustdistill.audio.prepare_waveform`), lengths outside ``[1, S]``, or
                an utterance shorter than one frame (400 samples for the Base CNN).
        """
        if waveforms.dim() != 2:
            raise ValueError(f"waveforms must be (B, S), got shape {tuple(waveforms.shape)}")
        require_float_audio(waveforms)
        lengths = torch.as_tensor(lengths, device=waveforms.device).long()
        if lengths.shape != (waveforms.shape[0],):
            raise ValueError(f"lengths must be ({waveforms.shape[0]},), got {tuple(lengths.shape)}")
        if int(lengths.min()) < 1 or int(lengths.max()) > waveforms.shape[1]:
            raise ValueError(f"lengths must lie in [1, {waveforms.shape[1]}], got {lengths.tolist()}")
        if not self.is_whisper and int(self.frame_lengths(lengths.min()).item()) < 1:
            raise ValueError(f"an utterance of {int(lengths.min())} samples is shorter than one "
                             f"frame of this encoder (its receptive field)")
        context = torch.no_grad() if self.frozen else nullcontext()  # the caller's grad mode
        with context:
            if self.is_whisper:
                return self._forward_whisper(waveforms, lengths)
            return self._forward_ssl(waveforms, lengths, return_extract_features)

    def _forward_ssl(self, waveforms, lengths, return_extract_features) -> UpstreamOutput:
        sample_mask = lengths_to_mask(lengths, waveforms.shape[1])
        if self.normalize:
            waveforms = _normalize(waveforms, sample_mask)
        waveforms = waveforms * sample_mask  # padding is exactly zero
        waveforms = waveforms.to(self.model.dtype)  # a model loaded in bf16/fp16 (dtype=)
        captured = {}
        handles = []
        grad_enabled = torch.is_grad_enabled()
        if self.feature_grad_mult == 0.0 and grad_enabled:
            # the CNN under no_grad, as the reference code (fairseq / s3prl: feature_grad_mult
            # 0): no graph, no saved activations, no backward through it
            def no_grad_in(_module, _inputs):
                torch.set_grad_enabled(False)

            def grad_out(_module, _inputs, _output):
                torch.set_grad_enabled(True)
            handles.append(self.model.feature_extractor.register_forward_pre_hook(no_grad_in))
            handles.append(self.model.feature_extractor.register_forward_hook(grad_out))
        elif self.feature_grad_mult != 1.0 and grad_enabled:
            def scale_grad(_module, _inputs, output):
                return _GradMultiply.apply(output, self.feature_grad_mult)
            handles.append(self.model.feature_extractor.register_forward_hook(scale_grad))
        if return_extract_features:  # registered after scale_grad: sees its output
            def hook(_module, _inputs, output):
                captured["features"] = output.transpose(1, 2)  # (B, C, T) -> (B, T, C)
            handles.append(self.model.feature_extractor.register_forward_hook(hook))
        try:
            out = self.model(
                waveforms,
                attention_mask=sample_mask.long() if self.use_attention_mask else None,
                output_hidden_states=True,
                return_dict=True,
            )
        finally:
            for handle in handles:
                handle.remove()
            torch.set_grad_enabled(grad_enabled)  # also when the CNN raised under no_grad
        hidden_states = tuple(out.hidden_states)
        frame_lengths = self.frame_lengths(lengths).clamp(max=hidden_states[-1].shape[1])
        mask = lengths_to_mask(frame_lengths, hidden_states[-1].shape[1])
        return UpstreamOutput(hidden_states, frame_lengths, mask, captured.get("features"))

    def _forward_whisper(self, waveforms, lengths) -> UpstreamOutput:
        """Whisper needs 3000 log-mel frames: cut each utterance into 30 s windows, pad each
        window, encode, keep ``ceil(window_samples / 320)`` frames and join them again."""
        device = waveforms.device
        windows, owners, kept = [], [], []
        for b, n in enumerate(lengths.tolist()):
            for start in range(0, n, WHISPER_WINDOW_SAMPLES):
                piece = waveforms[b, start : min(n, start + WHISPER_WINDOW_SAMPLES)]
                windows.append(piece.float().cpu().numpy())
                owners.append(b)
                kept.append(math.ceil(piece.numel() / WHISPER_SAMPLES_PER_FRAME))
        features = self.feature_extractor(
            windows, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="max_length"
        ).input_features
        dtype = next(self.model.parameters()).dtype
        out = self.model(
            features.to(device=device, dtype=dtype), output_hidden_states=True, return_dict=True
        )
        native = torch.div(lengths + WHISPER_SAMPLES_PER_FRAME - 1, WHISPER_SAMPLES_PER_FRAME,
                           rounding_mode="floor")
        max_native = int(native.max())
        frame_lengths = self.frame_lengths(lengths).to(device)
        max_frames = int(frame_lengths.max())
        hidden_states = []
        for layer in out.hidden_states:
            joined = layer.new_zeros(len(lengths), max_native, layer.shape[-1])
            cursor = [0] * len(lengths)
            for i, (b, k) in enumerate(zip(owners, kept, strict=True)):
                joined[b, cursor[b] : cursor[b] + k] = layer[i, :k]
                cursor[b] += k
            if self.whisper_frames == "ssl":
                joined = interpolate_frames(
                    joined, SSL_FRAME_CENTRE_OFFSET / WHISPER_SAMPLES_PER_FRAME, max_frames
                )
            hidden_states.append(joined)
        mask = lengths_to_mask(frame_lengths, max_frames)
        return UpstreamOutput(tuple(hidden_states), frame_lengths, mask, None)


def _normalize(waveforms: torch.Tensor, mask: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero-mean unit-variance per utterance over real samples (``Wav2Vec2FeatureExtractor``)."""
    mask = mask.to(waveforms.dtype)
    count = mask.sum(dim=1, keepdim=True)
    mean = (waveforms * mask).sum(dim=1, keepdim=True) / count
    var = (((waveforms - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return (waveforms - mean) / torch.sqrt(var + eps) * mask


def _load_feature_extractor(name_or_path: str, trust_remote_code: bool, revision: str | None):
    try:
        return AutoFeatureExtractor.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, revision=revision
        )
    except (OSError, ValueError) as err:
        logger.info("no feature extractor for %s (%s); using the config's convention",
                    name_or_path, err)
        return None
