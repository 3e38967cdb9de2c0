"""ASR task (mutation round 3): the CTC loss against a plain CTC forward pass, padding
independence of the BLSTM head, custom (phone) vocabularies through the task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from downstream.base import Example
from downstream.data import DataConfig, SourceConfig, Utterance
from downstream.tasks.asr.task import (
    ALPHABET,
    AsrConfig,
    AsrHeadConfig,
    AsrTask,
    CtcHead,
    encode_text,
)


def _ctc_nll(log_probs: np.ndarray, labels: list[int], blank: int = 0) -> float:
    """-log p(labels | log_probs) by the CTC forward recursion (Graves et al. 2006).
    ``log_probs``: ``(T, V)`` real frames only."""
    ext = [blank]
    for lab in labels:
        ext += [lab, blank]
    s = len(ext)
    alpha = np.full(s, -np.inf)
    alpha[0] = log_probs[0, ext[0]]
    if s > 1:
        alpha[1] = log_probs[0, ext[1]]
    for t in range(1, log_probs.shape[0]):
        new = np.full(s, -np.inf)
        for i in range(s):
            terms = [alpha[i]]
            if i >= 1:
                terms.append(alpha[i - 1])
            if i >= 2 and ext[i] != blank and ext[i] != ext[i - 2]:
                terms.append(alpha[i - 2])
            new[i] = np.logaddexp.reduce(terms) + log_probs[t, ext[i]]
        alpha = new
    total = np.logaddexp(alpha[-1], alpha[-2]) if s > 1 else alpha[-1]
    return float(-total)


def _task(**config) -> AsrTask:
    return AsrTask(AsrConfig(DataConfig(SourceConfig(root="x")), **config), seed=0)


def _linear_head(task: AsrTask, width: int = 6) -> torch.nn.Module:
    task.config.head = AsrHeadConfig(hidden_size=4, num_layers=0, dropout=0.0)
    torch.manual_seed(0)
    return task.build_head(width).eval()


def test_ctc_loss_is_the_per_character_nll_of_real_frames_averaged_over_the_batch():
    task = _task()
    head = _linear_head(task)
    torch.manual_seed(1)
    features = torch.randn(2, 9, 6)
    lengths = torch.tensor([9, 6])
    examples = [Example("a", None, "AB'A"), Example("b", None, "C C")]
    with torch.no_grad():
        loss = float(task.training_loss(head, features, lengths, examples))
        log_probs = head(features, lengths).double().numpy()
    expected = np.mean([
        _ctc_nll(log_probs[b, : int(lengths[b])], encode_text(e.target)) / len(e.target)
        for b, e in enumerate(examples)])
    assert loss == pytest.approx(expected, rel=1e-5)


def test_an_utterance_too_short_for_its_transcript_adds_zero_not_inf():
    """zero_infinity: "ABCDE" cannot fit in 3 frames; its loss is 0 and the batch mean stays
    the other utterance's per-character loss halved."""
    task = _task()
    head = _linear_head(task)
    torch.manual_seed(2)
    features = torch.randn(2, 8, 6)
    lengths = torch.tensor([8, 3])
    examples = [Example("a", None, "AB"), Example("b", None, "ABCDE")]
    with torch.no_grad():
        loss = float(task.training_loss(head, features, lengths, examples))
        log_probs = head(features, lengths).double().numpy()
    assert math.isfinite(loss)
    assert loss == pytest.approx(_ctc_nll(log_probs[0], [3, 4]) / 2 / 2, rel=1e-5)


def test_blstm_head_output_on_real_frames_does_not_depend_on_padding():
    """Packed sequences: the backward LSTM of a short utterance starts at its last real frame,
    so its log-probabilities equal those computed on the utterance alone."""
    torch.manual_seed(0)
    head = CtcHead(5, AsrHeadConfig(hidden_size=4, num_layers=1, dropout=0.0)).eval()
    short = torch.randn(1, 4, 5)
    padded = torch.cat([short, 3 * torch.randn(1, 6, 5)], dim=1)  # garbage after frame 4
    batch = torch.cat([padded, torch.randn(1, 10, 5)])
    with torch.no_grad():
        together = head(batch, torch.tensor([4, 10]))
        alone = head(short, torch.tensor([4]))
    assert together.shape == (2, 10, len(ALPHABET))
    torch.testing.assert_close(together[0, :4], alone[0], atol=1e-6, rtol=0)


PHONES = ["HH", "AH", "L", "OW"]


def test_a_phone_vocabulary_gets_the_blank_at_index_zero_and_words_are_collapsed():
    task = _task(vocabulary=PHONES, tokens="words")
    assert task.vocabulary == ("<blank>", "HH", "AH", "L", "OW")
    assert task.target(Utterance("u", "u.wav", text="  HH   AH L\tOW ")) == "HH AH L OW"
    assert task.build_head(3).proj.out_features == 5
    assert task.summary()["alphabet"] == "HH AH L OW"
    # the loss trains on indices 1..4 with 0 the blank: a head that always says "blank then
    # HH AH L OW" has loss ~0
    logits = torch.full((1, 9, 5), -30.0)
    for t, s in enumerate([0, 1, 0, 2, 0, 3, 0, 4, 0]):
        logits[0, t, s] = 0.0

    class Fixed(torch.nn.Module):
        def forward(self, features, lengths):
            return logits.log_softmax(-1)

    loss = task.training_loss(Fixed(), torch.zeros(1, 9, 3), torch.tensor([9]),
                              [Example("u", None, "HH AH L OW")])
    assert float(loss) < 1e-6


def test_setup_counts_train_characters_only_and_summary_names_the_alphabet():
    task = _task()
    splits = {"train": [Utterance("a", "a.wav", text="ab c"), Utterance("b", "b.wav", text="d")],
              "dev": [Utterance("c", "c.wav", text="long dev text")],
              "test": [Utterance("d", "d.wav", text="longer test text")]}
    task.setup(splits)
    summary = task.summary()
    assert summary["train_characters"] == len("AB C") + len("D")
    assert summary["alphabet"] == " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"
