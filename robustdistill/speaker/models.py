"""Speaker models: an encoder of frames, attentive statistics pooling, an embedding and an
additive-margin softmax over training speakers, plus the IML-KD heads.

Encoders (both "kinds" of student the issue asks for):

* :class:`MelLSTMEncoder`: a GE2E-shaped LSTM over log-mel frames (same 10 ms hop as the GE2E
  teacher, so its frames align with the teacher's Integrated-Gradients maps one to one).
* :class:`UpstreamEncoder`: any :class:`robustdistill.upstream.Upstream` (a teacher or a
  distilled student checkpoint) and a learned softmax-weighted sum of its layers (SUPERB's
  featurizer), 20 ms frames.

Pooling: attentive statistics pooling ("Attentive Statistics Pooling for Deep Speaker
Embedding", Okabe et al., arXiv:1803.10963). Classifier: AM-softmax (arXiv:1801.05599,
:class:`downstream.tasks.speaker_verification.head.AMSoftmax`).

Legend: ``B`` batch, ``N`` samples (16 kHz), ``T`` frames, ``H`` frame width, ``E`` embedding
width, ``K`` training speakers.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from downstream.pooling import frame_mask
from downstream.tasks.speaker_verification.head import AMSoftmax

from .ge2e import HOP, MelSpectrogram

__all__ = ["SPEAKER_MODEL_TYPE", "SPEAKER_UPSTREAM_MODEL_TYPE", "AttentiveStatsPool", "MelLSTMEncoder", "SpeakerEmbedder",
           "SpeakerModel", "SpeakerOutput", "UpstreamEncoder"]


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling ("Attentive Statistics Pooling for Deep Speaker
    Embedding", arXiv:1803.10963): frame weights
    ``alpha = softmax_t(v^T tanh(W h_t + b) + k)`` over real frames, then the weighted mean and
    standard deviation, concatenated.

    Args:
        input_size: ``H``.
        attention_size: width of the attention's hidden layer.

    Forward: ``(B, T, H)``, ``(B,)`` frame lengths -> ``(B, 2 H)``.
    """

    def __init__(self, input_size: int, attention_size: int = 64, eps: float = 1e-5) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(input_size, attention_size), nn.Tanh(),
                                       nn.Linear(attention_size, 1))
        self.eps = eps

    def forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Pool ``frames`` ``(B, T, H)`` over their first ``frame_lengths`` ``(B,)`` frames.

        Returns:
            ``(B, 2 H)``: the attention-weighted mean, then ``sqrt(var + eps)``.
        """
        mask = frame_mask(frame_lengths, frames.shape[1])
        scores = self.attention(frames).squeeze(-1).masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=1).unsqueeze(-1)
        mean = (alpha * frames).sum(1)
        var = (alpha * frames.pow(2)).sum(1) - mean.pow(2)
        return torch.cat([mean, torch.sqrt(var.clamp_min(0) + self.eps)], dim=-1)


class MelLSTMEncoder(nn.Module):
    """LSTM over per-utterance mean-normalised log-mel frames (40 bands, 25 ms / 10 ms).

    Args:
        hidden_size / num_layers: LSTM shape (GE2E: 256 x 3; students: smaller).

    Forward: ``(B, N)`` zero-padded waveforms, ``(B,)`` sample lengths ->
    ``((B, T, H) frames, (B,) frame lengths)`` with ``T = 1 + N // 160``; frame ``k`` is
    centred at sample ``160 k`` (centred STFT, as the GE2E teacher's).
    """

    samples_per_frame = HOP
    first_frame_centre = 0

    def __init__(self, hidden_size: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        self.mel = MelSpectrogram()
        self.lstm = nn.LSTM(40, hidden_size, num_layers, batch_first=True)
        self.output_size = hidden_size

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Real 10 ms frames, ``1 + n // 160``, of ``(B,)`` sample counts ``n``; ``(B,)``."""
        return 1 + torch.div(lengths, HOP, rounding_mode="floor")

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        """Encode ``(B, N)`` zero-padded 16 kHz waveforms with ``(B,)`` sample lengths.

        Returns:
            ``(frames, frame_lengths)``: ``(B, T, H)`` LSTM outputs (``T = 1 + N // 160``,
            ``H = hidden_size``; zero past each utterance's real frames) and ``(B,)`` real
            frames.

        Raises:
            ValueError: ``waveforms`` is not ``(batch, samples)``.
        """
        frame_lengths = self.frame_lengths(lengths)
        logmel = torch.log(self.mel(waveforms) + 1e-6)
        mask = frame_mask(frame_lengths, logmel.shape[1]).unsqueeze(-1).to(logmel.dtype)
        mean = (logmel * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
        x = (logmel - mean) * mask
        packed = nn.utils.rnn.pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=logmel.shape[1])
        return out, frame_lengths


class UpstreamEncoder(nn.Module):
    """An :class:`~robustdistill.upstream.Upstream` and a softmax-weighted sum of its hidden
    states (all ``L + 1``), trainable or frozen.

    Args:
        name_or_path: a local folder or hub id (``HF_HUB_OFFLINE=1``: local only).
        frozen: freeze the upstream (only the layer weights and the head train).

    Forward: as :class:`MelLSTMEncoder`, frames of ``samples_per_frame`` (320) samples, frame
    ``k`` centred at sample ``first_frame_centre + k * samples_per_frame`` (200 for the
    wav2vec 2.0 CNN: :attr:`robustdistill.upstream.Upstream.first_frame_centre`).
    """

    def __init__(self, name_or_path: str, frozen: bool = False) -> None:
        super().__init__()
        from robustdistill.upstream import Upstream

        self.upstream = Upstream.from_pretrained(name_or_path, frozen=frozen)
        self.samples_per_frame = self.upstream.samples_per_frame
        self.first_frame_centre = self.upstream.first_frame_centre
        self.layer_weights = nn.Parameter(torch.zeros(self.upstream.num_layers + 1))
        self.output_size = self.upstream.hidden_size

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Real upstream frames of ``(B,)`` sample counts; ``(B,)``. See
        :meth:`robustdistill.upstream.Upstream.frame_lengths`."""
        return self.upstream.frame_lengths(lengths)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        """Encode ``(B, N)`` zero-padded 16 kHz waveforms with ``(B,)`` sample lengths.

        Returns:
            ``(frames, frame_lengths)``: ``(B, T, H)`` softmax-weighted sum of the upstream's
            ``L + 1`` hidden states (20 ms frames, ``H`` the upstream's hidden size) and
            ``(B,)`` real frames.
        """
        out = self.upstream(waveforms, lengths)
        stacked = torch.stack(out.hidden_states, dim=0)  # (L + 1, B, T, H)
        weights = torch.softmax(self.layer_weights, dim=0).view(-1, 1, 1, 1)
        return (weights * stacked).sum(0), out.frame_lengths


def _checked_lengths(waveforms: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``(B,)`` sample lengths of ``(B, N)`` waveforms (default: all ``N``).

    Raises:
        ValueError: waveforms that are not ``(batch, samples)``; lengths that are not a
            ``(batch,)`` integer tensor with values in ``[1, samples]``.
    """
    if waveforms.dim() != 2:
        raise ValueError(f"expected (batch, samples) waveforms, got {tuple(waveforms.shape)}")
    if lengths is None:
        return torch.full((waveforms.shape[0],), waveforms.shape[1], dtype=torch.long,
                          device=waveforms.device)
    lengths = torch.as_tensor(lengths, device=waveforms.device)
    if tuple(lengths.shape) != (waveforms.shape[0],) or lengths.is_floating_point():
        raise ValueError(f"lengths must be ({waveforms.shape[0]},) integers, got shape "
                         f"{tuple(lengths.shape)} {lengths.dtype}")
    if int(lengths.min()) < 1 or int(lengths.max()) > waveforms.shape[1]:
        raise ValueError(f"lengths must lie in [1, {waveforms.shape[1]}], got {lengths.tolist()}")
    return lengths


@dataclass
class SpeakerOutput:
    """What :meth:`SpeakerModel.forward` returns.

    Attributes:
        embedding: ``(B, E)`` speaker embedding (not normalised).
        map_logits: ``(B, T)`` frame logits of the predicted input-sensitivity map.
        frame_lengths: ``(B,)`` real frames.
    """

    embedding: torch.Tensor
    map_logits: torch.Tensor
    frame_lengths: torch.Tensor


class SpeakerModel(nn.Module):
    """Encoder -> attentive statistics pooling -> linear embedding; AM-softmax classifier; a
    frame-level map head (IML-KD's integrated input) and an optional projection of the
    embedding to the teacher's width (instance-level alignment).

    IML-KD: "Integrated Multi-Level Knowledge Distillation for Enhanced Speaker
    Verification" (arXiv:2409.09389).

    Args:
        encoder: :class:`MelLSTMEncoder` or :class:`UpstreamEncoder`.
        num_speakers: ``K``.
        embedding_dim: ``E``.
        teacher_dim: width of the teacher's embedding; None: no projection.
        margin / scale: AM-softmax ``m`` and ``s``.
    """

    def __init__(self, encoder: nn.Module, num_speakers: int, embedding_dim: int = 128,
                 teacher_dim: int | None = None, margin: float = 0.2, scale: float = 30.0
                 ) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.output_size
        self.pool = AttentiveStatsPool(width)
        self.embedding = nn.Linear(2 * width, embedding_dim)
        self.classifier = AMSoftmax(embedding_dim, num_speakers, margin, scale)
        self.map_head = nn.Linear(width, 1)
        self.projection = nn.Linear(embedding_dim, teacher_dim) if teacher_dim else None

    @property
    def samples_per_frame(self) -> int:
        """The encoder's hop in samples at 16 kHz (160 for the log-mel LSTM, 320 for an
        upstream)."""
        return self.encoder.samples_per_frame

    @property
    def first_frame_centre(self) -> int:
        """The sample at which the encoder's frame 0 is centred (0 for the log-mel LSTM, 200
        for a wav2vec 2.0-style CNN upstream); frame ``k`` at that ``+ k * samples_per_frame``.
        """
        return self.encoder.first_frame_centre

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> SpeakerOutput:
        """``(B, N)`` waveforms (16 kHz, zero-padded) and ``(B,)`` lengths (default: all N).

        Returns:
            :class:`SpeakerOutput`: ``(B, E)`` embedding, ``(B, T)`` map logits and ``(B,)``
            frame lengths.

        Raises:
            ValueError: ``waveforms`` is not ``(batch, samples)``, or ``lengths`` is not
                ``(batch,)`` integers in ``[1, samples]``.
        """
        lengths = _checked_lengths(waveforms, lengths)
        frames, frame_lengths = self.encoder(waveforms, lengths)
        embedding = self.embedding(self.pool(frames, frame_lengths))
        return SpeakerOutput(embedding, self.map_head(frames).squeeze(-1), frame_lengths)

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Class logits without margin, ``s cos(e, w_k)``: ``(B, E)`` -> ``(B, K)``."""
        return self.classifier.scale * self.classifier.cosine(embedding)

    def project(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(B, E)`` -> ``(B, E_teacher)`` for the instance-level loss.

        Raises:
            RuntimeError: the model was built without ``teacher_dim``.
        """
        if self.projection is None:
            raise RuntimeError("this SpeakerModel has no projection (teacher_dim was None)")
        return self.projection(embedding)


#: ``config.json`` ``model_type`` of an exported speaker student (a folder of this library,
#: not a ``transformers`` model): an LSTM one, and one on an upstream (its encoder saved with
#: ``save_pretrained`` in the subfolder ``upstream/``).
SPEAKER_MODEL_TYPE = "robustdistill-speaker-lstm"
SPEAKER_UPSTREAM_MODEL_TYPE = "robustdistill-speaker-upstream"
#: The parts of a :class:`SpeakerModel` that compute the embedding (its state-dict prefixes).
EMBEDDER_PARTS = ("encoder.", "pool.", "embedding.")
_UPSTREAM_DIR = "upstream"
_UPSTREAM_KEYS = "encoder.upstream."


class SpeakerEmbedder(nn.Module):
    """The inference part of a :class:`SpeakerModel`: its encoder (log-mel LSTM, or an
    upstream and its learned weighted sum of layers), attentive statistics pooling and the
    linear embedding; what ``robustdistill train-speaker`` exports to ``RUN/student``. The
    AM-softmax classifier over the training speakers, the map head and the projection to the
    teacher's width serve training only and are not part of it.

    Args:
        encoder: :class:`MelLSTMEncoder` or :class:`UpstreamEncoder`.
        embedding_dim: ``E``.

    Forward: ``(B, N)`` zero-padded 16 kHz waveforms and ``(B,)`` sample lengths (default: all
    ``N``) -> ``(B, E)`` embeddings, not normalised (compare them by cosine similarity).
    """

    def __init__(self, encoder: nn.Module, embedding_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        width = encoder.output_size
        self.pool = AttentiveStatsPool(width)
        self.embedding = nn.Linear(2 * width, embedding_dim)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``(B, N)`` zero-padded 16 kHz waveforms, ``(B,)`` sample lengths (default: all
        ``N``) -> ``(B, E)`` embeddings (not normalised).

        Raises:
            ValueError: ``waveforms`` is not ``(batch, samples)``, or ``lengths`` is not
                ``(batch,)`` integers in ``[1, samples]``.
        """
        lengths = _checked_lengths(waveforms, lengths)
        frames, frame_lengths = self.encoder(waveforms, lengths)
        return self.embedding(self.pool(frames, frame_lengths))

    @classmethod
    def from_speaker_model(cls, model: SpeakerModel) -> SpeakerEmbedder:
        """The embedder of a trained student, with its weights (copied).

        Raises:
            ValueError: an encoder other than :class:`MelLSTMEncoder` or
                :class:`UpstreamEncoder`, or an upstream on Whisper (its encoder alone, which
                ``save_pretrained`` writes in a layout ``from_pretrained`` would not read back).
        """
        if not isinstance(model.encoder, MelLSTMEncoder | UpstreamEncoder):
            raise ValueError(f"cannot export a speaker student with a "
                             f"{type(model.encoder).__name__} encoder")
        if isinstance(model.encoder, UpstreamEncoder) and model.encoder.upstream.is_whisper:
            raise ValueError("speaker students on a Whisper upstream are not exported: its "
                             "encoder saved alone would reload with random weights")
        embedder = cls(copy.deepcopy(model.encoder), model.embedding.out_features)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()
                 if k.startswith(EMBEDDER_PARTS)}
        embedder.load_state_dict(state, strict=True)
        return embedder.eval()

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created); an
        upstream encoder goes to ``folder/upstream`` (``save_pretrained``: its config, weights
        and ``preprocessor_config.json``), and ``model.safetensors`` holds the rest.

        The preprocessor config of an SSL upstream (WavLM, HuBERT, wav2vec 2.0...) is a
        ``Wav2Vec2FeatureExtractor`` with the ``do_normalize`` and ``return_attention_mask``
        the upstream was built with (from its source folder's preprocessor, else the
        ``transformers`` convention): :meth:`from_pretrained` reads them back from it. Without
        it the reload follows the convention, which differs from the source's preprocessor
        for e.g. ``facebook/wav2vec2-base`` (``do_normalize`` with a group-norm CNN)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        config = {"architectures": [type(self).__name__],
                  "embedding_dim": self.embedding.out_features, "sampling_rate": 16000,
                  "hop_samples": self.encoder.samples_per_frame}
        stale = folder / _UPSTREAM_DIR
        if stale.is_dir():  # an earlier export's upstream: never counted or read with this one
            shutil.rmtree(stale)
        if isinstance(self.encoder, UpstreamEncoder):
            upstream = self.encoder.upstream
            upstream.model.save_pretrained(folder / _UPSTREAM_DIR)
            if upstream.feature_extractor is not None:  # Whisper's log-mel
                upstream.feature_extractor.save_pretrained(folder / _UPSTREAM_DIR)
            else:  # what Upstream.from_pretrained reads back: the input the student had
                from transformers import Wav2Vec2FeatureExtractor

                Wav2Vec2FeatureExtractor(
                    feature_size=1, sampling_rate=16000, padding_value=0.0,
                    do_normalize=upstream.normalize,
                    return_attention_mask=upstream.use_attention_mask,
                ).save_pretrained(folder / _UPSTREAM_DIR)
            state = {k: v for k, v in state.items() if not k.startswith(_UPSTREAM_KEYS)}
            config.update(model_type=SPEAKER_UPSTREAM_MODEL_TYPE, upstream=_UPSTREAM_DIR,
                          num_layers=upstream.num_layers, hidden_size=upstream.hidden_size)
        else:
            lstm = self.encoder.lstm
            config.update(model_type=SPEAKER_MODEL_TYPE, hidden_size=lstm.hidden_size,
                          num_layers=lstm.num_layers)
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> SpeakerEmbedder:
        """Load a folder written by :meth:`save_pretrained` (in ``eval`` mode).

        Raises:
            FileNotFoundError: ``config.json`` or ``model.safetensors`` missing.
            ValueError: the config is not an exported speaker student's (another
                ``model_type``, a missing field), or the weights do not fit it.
        """
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: not a speaker student folder")
        config = json.loads((folder / "config.json").read_text())
        kind = config.get("model_type")
        if kind not in (SPEAKER_MODEL_TYPE, SPEAKER_UPSTREAM_MODEL_TYPE):
            raise ValueError(f"{folder}: model_type {kind!r} is not {SPEAKER_MODEL_TYPE!r} or "
                             f"{SPEAKER_UPSTREAM_MODEL_TYPE!r}")
        state = load_file(str(folder / "model.safetensors"))
        try:
            if kind == SPEAKER_MODEL_TYPE:
                encoder = MelLSTMEncoder(config["hidden_size"], config["num_layers"])
            else:
                encoder = UpstreamEncoder(str(folder / config["upstream"]), frozen=True)
            model = cls(encoder, config["embedding_dim"])
        except KeyError as err:
            raise ValueError(f"{folder / 'config.json'} has no {err}") from None
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a tensor of another shape
            raise ValueError(f"{folder}: model.safetensors does not fit the config ({err})"
                             ) from None
        if kind == SPEAKER_UPSTREAM_MODEL_TYPE:  # the upstream's weights are in upstream/
            missing = [k for k in missing if not k.startswith(_UPSTREAM_KEYS)]
        if missing or unexpected:
            raise ValueError(f"{folder}: model.safetensors does not fit the config (missing "
                             f"{missing[:5]}, unexpected {unexpected[:5]})")
        return model.eval()
