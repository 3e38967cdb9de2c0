"""ASR: a CTC head over characters on the featurizer output, greedy decoding, WER and CER.

SUPERB's ASR task ("SUPERB: Speech processing Universal PERformance Benchmark",
arXiv:2105.01051) trains a 2-layer BLSTM with CTC ("Connectionist Temporal Classification",
Graves et al., ICML 2006) on the weighted sum of the frozen upstream's hidden states. Here the
head is a small BLSTM (``head.num_layers: 0`` gives a linear head) and the output alphabet is
``<blank>``, space, apostrophe and A-Z (29 symbols). Decoding is greedy (best path: argmax per
frame, merge repeats, drop blanks). WER and CER come from torchmetrics.

Transcripts come from the data source's ``text`` (a manifest's ``text`` column). For
LibriSpeech-mini they are machine transcripts made by Whisper tiny.en with
``downstream/tasks/asr/make_transcripts.py``, not LibriSpeech's human references; references
are normalised to the alphabet with the same function
(:func:`~downstream.tasks.asr.make_transcripts.normalize_transcript`).

Tensor legend: ``B`` batch, ``T`` frames, ``D`` featurizer width, ``V`` alphabet size (29).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torchmetrics.functional.text import char_error_rate, word_error_rate

from ...base import Example, Task, TaskConfig
from ...data import Utterance

logger = logging.getLogger(__name__)

__all__ = ["ALPHABET", "AsrConfig", "AsrHeadConfig", "AsrTask", "CtcHead", "decode_greedy",
           "edit_distance", "encode_text"]

#: Index 0 is the CTC blank; then space, apostrophe, A-Z.
ALPHABET = ("<blank>", " ", "'", *(chr(c) for c in range(ord("A"), ord("Z") + 1)))
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}


def encode_text(text: str, vocabulary: Sequence[str] = ALPHABET, tokens: str = "characters"
                ) -> list[int]:
    """Normalised transcript -> vocabulary indices (no blanks).

    Args:
        text: the transcript.
        vocabulary: the CTC output symbols, index 0 the blank (default: :data:`ALPHABET`).
        tokens: ``"characters"`` (each character is a symbol) or ``"words"`` (space-separated
            symbols, e.g. phones for phone recognition).

    Raises:
        ValueError: a symbol outside the vocabulary (normalise first).
    """
    index = _INDEX if vocabulary is ALPHABET else {t: i for i, t in enumerate(vocabulary)}
    units = list(text) if tokens == "characters" else text.split()
    try:
        return [index[u] for u in units]
    except KeyError as err:
        raise ValueError(f"symbol {err.args[0]!r} is not in the CTC vocabulary: {text!r}") from None


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
    """Levenshtein distance (substitutions + deletions + insertions) between two token lists."""
    previous = list(range(len(reference) + 1))
    for i, h in enumerate(hypothesis, 1):
        current = [i]
        for j, r in enumerate(reference, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (h != r)))
        previous = current
    return previous[-1]


def decode_greedy(log_probs: torch.Tensor, lengths: torch.Tensor,
                  vocabulary: Sequence[str] = ALPHABET, tokens: str = "characters") -> list[str]:
    """Best-path CTC decoding.

    Args:
        log_probs: ``(B, T, V)`` (any monotone scores work).
        lengths: ``(B,)`` real frames.
        vocabulary / tokens: as :func:`encode_text` (``"words"`` joins symbols with spaces).

    Returns:
        ``B`` strings: argmax per frame, repeats merged, blanks dropped, spaces collapsed.
    """
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for row, n in zip(best, lengths.tolist(), strict=True):
        row = row[:n]
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[1:] = row[1:] != row[:-1]
        chars = [vocabulary[i] for i in row[keep & (row != 0)].tolist()]
        out.append(" ".join(("".join(chars) if tokens == "characters" else " ".join(chars))
                            .split()))
    return out


@dataclass
class AsrHeadConfig:
    """The CTC head.

    Attributes:
        hidden_size: LSTM units per direction.
        num_layers: BLSTM layers; 0 gives a linear layer on the features.
        dropout: dropout on the head's input and between BLSTM layers.
        project_dim: width of a linear projection of the features before the BLSTM (s3prl's
            ASR ``project_dim: 1024``); 0: none.

    Raises:
        ValueError: (on construction) a negative ``num_layers`` or ``project_dim``,
            ``hidden_size`` below 1, or ``dropout`` outside ``[0, 1)``.
    """

    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.2
    project_dim: int = 0

    def __post_init__(self) -> None:
        if self.num_layers < 0 or self.hidden_size < 1 or self.project_dim < 0:
            raise ValueError("head.num_layers and head.project_dim must be >= 0 and "
                             f"head.hidden_size >= 1, got {self.num_layers}, "
                             f"{self.project_dim} and {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"head.dropout must lie in [0, 1), got {self.dropout}")


@dataclass
class AsrConfig(TaskConfig):
    """ASR / phone recognition settings.

    Attributes:
        head: see :class:`AsrHeadConfig`.
        vocabulary: CTC output symbols without the blank (index 0 is always the blank). None:
            English characters (space, apostrophe, A-Z) with transcripts normalised by
            :func:`~downstream.tasks.asr.make_transcripts.normalize_transcript`. A list (e.g.
            the 39 CMU / TIMIT phones for SUPERB's phone recognition) is used verbatim:
            transcripts are not normalised and must hold only these symbols.
        tokens: ``"characters"`` (each character of the transcript is a symbol) or
            ``"words"`` (space-separated symbols: phone sequences ``"HH AH L OW"``). With
            ``"words"`` the reported ``wer`` is the symbol error rate (PER for phones).

    Raises:
        ValueError: (on construction) an empty ``vocabulary``, repeated symbols, a
            ``<blank>`` symbol, or (``tokens: words``) an empty symbol or one with a space.
    """

    head: AsrHeadConfig = field(default_factory=AsrHeadConfig)
    vocabulary: list[str] | None = None
    tokens: Literal["characters", "words"] = "characters"

    def __post_init__(self) -> None:
        if self.vocabulary is not None:
            if not self.vocabulary or len(set(self.vocabulary)) != len(self.vocabulary):
                raise ValueError("vocabulary must be a non-empty list of distinct symbols")
            if "<blank>" in self.vocabulary:
                raise ValueError("vocabulary must not contain <blank> (index 0 is added)")
            if self.tokens == "words" and any(not v or " " in v for v in self.vocabulary):
                raise ValueError("with tokens: words, symbols cannot be empty or hold spaces")


class CtcHead(nn.Module):
    """Dropout -> BLSTM (optional) -> linear -> log-softmax over the vocabulary
    (``vocab_size`` symbols including the blank; default :data:`ALPHABET`)."""

    def __init__(self, input_size: int, config: AsrHeadConfig, vocab_size: int = len(ALPHABET)
                 ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = None
        self.projector = nn.Linear(input_size, config.project_dim) if config.project_dim \
            else nn.Identity()
        width = input_size = config.project_dim or input_size
        if config.num_layers > 0:
            self.lstm = nn.LSTM(input_size, config.hidden_size, config.num_layers,
                                batch_first=True, bidirectional=True,
                                dropout=config.dropout if config.num_layers > 1 else 0.0)
            width = 2 * config.hidden_size
        self.proj = nn.Linear(width, vocab_size)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` features, ``(B,)`` lengths -> ``(B, T, V)`` log-probabilities."""
        x = self.dropout(self.projector(features))
        if self.lstm is not None:
            packed = pack_padded_sequence(x, frame_lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = pad_packed_sequence(x, batch_first=True, total_length=features.shape[1])
        return self.proj(x).log_softmax(dim=-1)


class AsrTask(Task):
    """Character CTC ASR, or phone recognition with ``vocabulary`` + ``tokens: words``
    (module docstring)."""

    name = "asr"
    config_class = AsrConfig
    primary_metric = "wer"
    higher_is_better = False

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """The CTC symbols, index 0 the blank."""
        vocab = self.config.vocabulary
        return ALPHABET if vocab is None else ("<blank>", *vocab)

    def _normalize(self, text: str | None) -> str:
        if self.config.vocabulary is None:
            # imported here, not at the top: `python -m downstream.tasks.asr.make_transcripts`
            # imports this package first, and a module-level import of make_transcripts would
            # load it a second time before it runs as __main__ (runpy's RuntimeWarning)
            from .make_transcripts import normalize_transcript

            return normalize_transcript(text or "")
        return " ".join((text or "").split()) if self.config.tokens == "words" else (text or "")

    def setup(self, splits: dict[str, list[Utterance]]) -> None:
        """Check that every utterance has a transcript that normalises to non-empty text made
        of vocabulary symbols.

        Raises:
            ValueError: utterances without ``text`` (naming the first few), symbols outside
                the vocabulary, or ``data.max_seconds`` set (cropped audio no longer matches
                its transcript).
        """
        if self.config.data.max_seconds is not None:
            raise ValueError("asr: data.max_seconds must be null (cropping the audio would cut "
                             "it off from its transcript)")
        missing = [u.key for items in splits.values() for u in items
                   if not u.text or not self._normalize(u.text)]
        if missing:
            raise ValueError(f"{len(missing)} utterances have no transcript (first: "
                             f"{missing[:3]}); use a manifest with a 'text' column")
        for items in splits.values():
            for u in items:
                encode_text(self._normalize(u.text), self.vocabulary, self.config.tokens)
        self._chars = sum(len(self._normalize(u.text)) for u in splits["train"])

    def target(self, utterance: Utterance) -> str:
        """The normalised transcript (default: A-Z, apostrophe, space)."""
        return self._normalize(utterance.text)

    def build_head(self, input_size: int) -> nn.Module:
        """A :class:`CtcHead` over the vocabulary (blank included)."""
        return CtcHead(input_size, self.config.head, len(self.vocabulary))

    def training_loss(self, head: nn.Module, features: torch.Tensor, frame_lengths: torch.Tensor,
                      examples: list[Example]) -> torch.Tensor:
        """CTC loss, summed over each utterance and divided by its number of target symbols
        (characters, or space-separated symbols with ``tokens: words``), then averaged over
        the batch (``reduction="mean"``). Utterances too short for their
        transcript give an infinite loss that is zeroed (``zero_infinity``)."""
        log_probs = head(features, frame_lengths)
        targets = [torch.tensor(encode_text(e.target, self.vocabulary, self.config.tokens),
                                dtype=torch.long) for e in examples]
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        return nn.functional.ctc_loss(
            log_probs.transpose(0, 1).float(), torch.cat(targets).to(features.device),
            frame_lengths, target_lengths.to(features.device), blank=0, reduction="mean",
            zero_infinity=True,
        )

    def evaluate(self, head: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor,
                                                                  list[Example]]]
                 ) -> dict[str, float]:
        """Corpus WER and CER of greedy decoding (torchmetrics), and the number of words;
        per-utterance records ``{key, reference, hypothesis, word_errors, words, char_errors,
        chars}`` in ``last_items`` (corpus WER = summed word errors / summed words)."""
        hyps, refs, keys = [], [], []
        for features, lengths, examples in batches:
            hyps += decode_greedy(head(features, lengths), lengths, self.vocabulary,
                                  self.config.tokens)
            refs += [e.target for e in examples]
            keys += [e.key for e in examples]
        self.last_items = [
            {"key": k, "reference": r, "hypothesis": h,
             "word_errors": edit_distance(h.split(), r.split()), "words": len(r.split()),
             "char_errors": edit_distance(list(h), list(r)), "chars": len(r)}
            for k, r, h in zip(keys, refs, hyps, strict=True)
        ]
        return {"wer": float(word_error_rate(hyps, refs)),
                "cer": float(char_error_rate(hyps, refs)),
                "words": float(sum(len(r.split()) for r in refs))}

    @classmethod
    def item_statistic(cls, items, metric):
        """``wer`` / ``cer``: errors summed over the resampled utterances divided by their
        reference words / characters (corpus rates, as torchmetrics)."""
        unit = {"wer": "word", "cer": "char"}.get(metric)
        if unit is None:
            return None
        errors = np.array([r[f"{unit}_errors"] for r in items], dtype=np.float64)
        total = np.array([r[f"{unit}s"] for r in items], dtype=np.float64)

        def rate(idx):
            n = total[idx].sum()
            return float(errors[idx].sum() / n) if n else float("nan")
        return rate

    def summary(self) -> dict:
        """The output symbols (blank excluded), ``tokens``, the training set's characters
        (normalised transcripts; 0 before :meth:`setup`) and where the transcripts come from."""
        vocab = self.vocabulary[1:]
        return {"alphabet": "".join(vocab) if self.config.tokens == "characters"
                else " ".join(vocab), "tokens": self.config.tokens,
                "train_characters": getattr(self, "_chars", 0),
                "transcripts": "from the manifest's text column (LibriSpeech-mini: Whisper "
                               "tiny.en greedy transcripts, make_transcripts.py)"}
