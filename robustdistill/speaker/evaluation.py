"""Speaker verification of the teacher and of a student: L2-normalised whole-utterance
embeddings (:func:`embed_utterances`), cosine-scored trials, EER and minDCF
(:func:`evaluate_embeddings`; trials from
:func:`downstream.tasks.speaker_verification.task.build_trials`, the same for every system).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from downstream.tasks.speaker_verification.task import build_trials
from robustdistill.metrics.verification import compute_eer, compute_min_dcf

from .config import DataConfig
from .data import Utterance
from .ge2e import GE2E
from .models import MelLSTMEncoder, SpeakerModel, UpstreamEncoder

__all__ = ["EVAL_BATCH", "embed_utterances", "evaluate_embeddings", "evaluate_student",
           "evaluate_teacher", "ignores_padding"]


@torch.no_grad()
def embed_utterances(embed_fn, utterances: list[Utterance], batch_size: int = 16) -> np.ndarray:
    """``(U, E)`` L2-normalised embeddings; ``embed_fn((B, N) padded, (B,) lengths) -> (B, E)``.
    Utterances are batched by similar length."""
    order = sorted(range(len(utterances)), key=lambda i: len(utterances[i].audio))
    out: list[np.ndarray | None] = [None] * len(utterances)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        lengths = torch.tensor([len(utterances[j].audio) for j in idx])
        wav = torch.zeros(len(idx), int(lengths.max()))
        for r, j in enumerate(idx):
            wav[r, : lengths[r]] = torch.from_numpy(utterances[j].audio)
        emb = F.normalize(embed_fn(wav, lengths), dim=-1).double().cpu().numpy()
        for r, j in enumerate(idx):
            out[j] = emb[r]
    return np.stack(out)  # type: ignore[arg-type]


def evaluate_embeddings(embeddings: np.ndarray, speakers: list[str], cfg: DataConfig
                        ) -> dict[str, float]:
    """Cosine-scored trials (every target pair, ``max_nontarget`` non-target pairs): EER and
    minDCF (``p_target``), as fractions; plus the trial counts.

    Args:
        embeddings: ``(U, E)`` L2-normalised embeddings (a dot product is their cosine).
        speakers: the speaker of each of the ``U`` utterances.
        cfg: ``max_nontarget``, ``trials_seed`` and ``p_target``.

    Returns:
        ``{"eer", "min_dcf", "target_trials", "nontarget_trials"}``.

    Raises:
        ValueError: no target or no non-target trial (:func:`build_trials`).
    """
    pairs, labels = build_trials(speakers, cfg.max_nontarget, cfg.trials_seed)
    scores = np.einsum("pd,pd->p", embeddings[pairs[:, 0]], embeddings[pairs[:, 1]])
    tar, non = scores[labels == 1], scores[labels == 0]
    return {"eer": compute_eer(tar, non)[0],
            "min_dcf": compute_min_dcf(tar, non, cfg.p_target, warn=False)[0],  # EER warns
            "target_trials": int(len(tar)), "nontarget_trials": int(len(non))}


def evaluate_teacher(teacher: GE2E, sets: dict[str, list[Utterance]], cfg: DataConfig
                     ) -> dict[str, dict[str, float]]:
    """GE2E utterance embeddings (Resemblyzer's partial averaging) on each set."""
    def embed(wav, lengths):
        return torch.stack([teacher.embed_utterance(w[:n]) for w, n in
                            zip(wav, lengths, strict=True)])

    return {name: evaluate_embeddings(embed_utterances(embed, utts), [u.speaker for u in utts],
                                      cfg) for name, utts in sets.items()}


#: Utterances per forward pass of :func:`evaluate_student` for a student whose embedding of an
#: utterance does not depend on the padding (:func:`ignores_padding`); others get one each.
EVAL_BATCH = 16


def ignores_padding(encoder: torch.nn.Module) -> bool:
    """Whether an encoder's frames of an utterance are those it gives the utterance alone,
    whatever the zero padding a batch adds after it (float rounding aside).

    True for the log-mel LSTM (per-utterance masked mean, packed sequences), a Whisper upstream
    (each utterance cut into its own 30 s windows) and a WavLM, HuBERT or wav2vec 2.0 upstream
    with a layer-norm CNN given an attention mask. False for any other encoder: a group-norm
    CNN (the Base shapes) normalises each channel over the padded input, a transformer without
    an attention mask attends to the padding, and data2vec-audio's stack of positional
    convolutions carries the padding into the real frames even with one (cosines of 0.98-0.99
    between an utterance's batched and lone embeddings on a random HuBERT Base-shaped student).
    """
    if isinstance(encoder, MelLSTMEncoder):
        return True
    if not isinstance(encoder, UpstreamEncoder):
        return False
    from robustdistill.upstream import has_layer_norm_cnn  # transformers: only for upstreams

    upstream = encoder.upstream
    config = upstream.model.config
    return upstream.is_whisper or (upstream.use_attention_mask and has_layer_norm_cnn(config)
                                   and config.model_type in ("wavlm", "hubert", "wav2vec2"))


def evaluate_student(model: SpeakerModel, sets: dict[str, list[Utterance]], cfg: DataConfig
                     ) -> dict[str, dict[str, float]]:
    """Student embeddings of whole utterances on each set, scored by
    :func:`evaluate_embeddings`.

    Each utterance's embedding is the one the student gives it alone: batches of
    :data:`EVAL_BATCH` utterances of similar length when the encoder
    :func:`ignores_padding`, one utterance per forward pass otherwise, so the metrics do not
    depend on which utterances share a batch (they do depend on the whole set: EER and minDCF
    are computed over all of its trials).
    """
    model.eval()
    device = next(model.parameters()).device
    batch = EVAL_BATCH if ignores_padding(getattr(model, "encoder", None)) else 1

    def embed(wav, lengths):
        return model(wav.to(device), lengths.to(device)).embedding

    return {name: evaluate_embeddings(embed_utterances(embed, utts, batch),
                                      [u.speaker for u in utts], cfg)
            for name, utts in sets.items()}
