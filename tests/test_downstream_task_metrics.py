"""Mutation-testing additions for the task metrics: utterance accuracy (micro) and its
per-item macro statistic, speaker-verification scoring of trials, x-vector padding,
AM-softmax, ASR WER/CER, SE per-utterance SI-SDRi and the PESQ/STOI argument order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from downstream.base import Example
from downstream.data import DataConfig, SourceConfig


def _data():
    return DataConfig(SourceConfig(root="x"))


class _Logits(nn.Module):
    """Head stub: the features of frame 0 are the logits / the embedding."""

    def forward(self, features, frame_lengths):
        return features[:, 0]

    def embed(self, features, frame_lengths):
        return features[:, 0]


# ---------------------------------------------------------------- utterance classification
def test_accuracy_is_micro_and_macro_item_statistic_skips_absent_classes():
    from downstream.tasks.utterance_classification import UtteranceClassificationConfig
    from downstream.tasks.utterance_classification.task import UtteranceClassification

    task = UtteranceClassification(UtteranceClassificationConfig(data=_data()))
    task.classes = ["a", "b", "c"]
    targets, predictions = [0, 0, 0, 1], [0, 0, 0, 0]
    logits = torch.nn.functional.one_hot(torch.tensor(predictions), 3).float()[:, None]
    examples = [Example(f"u{i}", np.zeros(1), t) for i, t in enumerate(targets)]
    metrics = task.evaluate(_Logits(), [(logits, torch.ones(4, dtype=torch.long), examples)])
    assert metrics["accuracy"] == pytest.approx(0.75)  # 3 of 4 items
    assert metrics["macro_accuracy"] == pytest.approx(0.5)  # class a: 1, class b: 0
    items = task.items()
    assert [r["correct"] for r in items] == [1, 1, 1, 0]
    macro = UtteranceClassification.item_statistic(items, "macro_accuracy")
    assert macro(np.arange(4)) == pytest.approx(0.5)
    # a resample holding only class-a items: the macro average is over the classes present
    assert macro(np.array([0, 1, 1, 2])) == pytest.approx(1.0)
    assert UtteranceClassification.item_statistic(items, "accuracy")(np.array([3, 3, 0])) == \
        pytest.approx(1 / 3)


def test_macro_accuracy_of_a_run_counts_only_the_classes_among_its_targets():
    """A class predicted but never a target (c here) used to count as 0 in the run's macro
    accuracy (torchmetrics' macro average: (1/2 + 1 + 0) / 3 = 0.5), while its interval and
    compare used the per-item statistic over the target classes: (1/2 + 1) / 2 = 0.75."""
    from downstream.tasks.utterance_classification import UtteranceClassificationConfig
    from downstream.tasks.utterance_classification.task import UtteranceClassification

    task = UtteranceClassification(UtteranceClassificationConfig(data=_data()))
    task.classes = ["a", "b", "c"]
    targets, predictions = [0, 0, 1], [0, 2, 1]
    logits = torch.nn.functional.one_hot(torch.tensor(predictions), 3).float()[:, None]
    examples = [Example(f"u{i}", np.zeros(1), t) for i, t in enumerate(targets)]
    metrics = task.evaluate(_Logits(), [(logits, torch.ones(3, dtype=torch.long), examples)])
    assert metrics["macro_accuracy"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    macro = UtteranceClassification.item_statistic(task.items(), "macro_accuracy")
    assert macro(np.arange(3)) == metrics["macro_accuracy"]


# ---------------------------------------------------------------- speaker verification
def _sv_task(**trials):
    from downstream.tasks.speaker_verification.task import (
        SpeakerVerification,
        SpeakerVerificationConfig,
        TrialsConfig,
    )

    return SpeakerVerification(SpeakerVerificationConfig(data=_data(),
                                                         trials=TrialsConfig(**trials)))


def _sv_batch():
    # speaker A: (1, 0), (0.8, 0.6); speaker B: (0.6, 0.8), (0, 1). Cosine scores:
    # target trials (A0, A1) 0.8, (B0, B1) 0.8; non-target (A0, B0) 0.6, (A0, B1) 0,
    # (A1, B0) 0.96, (A1, B1) 0.6.
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])[:, None]
    examples = [Example(k, np.zeros(1), None, s) for k, s in
                (("a0", "A"), ("a1", "A"), ("b0", "B"), ("b1", "B"))]
    return emb, torch.ones(4, dtype=torch.long), examples


def test_speaker_verification_scores_trials_by_hand():
    from downstream.tasks.speaker_verification.task import SpeakerVerification

    task = _sv_task()
    metrics = task.evaluate(_Logits(), [_sv_batch()])
    items = task.items()
    assert [(r["enroll"], r["test"], r["label"]) for r in items] == [
        ("a0", "a1", 1), ("b0", "b1", 1), ("a0", "b0", 0), ("a0", "b1", 0), ("a1", "b0", 0),
        ("a1", "b1", 0)]
    np.testing.assert_allclose([r["score"] for r in items], [0.8, 0.8, 0.6, 0.0, 0.96, 0.6],
                               atol=1e-6)
    # (P_miss, P_fa): inf (1, 0); 0.96 (1, 1/4); 0.8 (0, 1/4); the crossing between 0.96 and
    # 0.8 with alpha = (3/4) / (3/4 + 1/4): EER = 1/4.
    assert metrics["eer"] == pytest.approx(0.25)
    # minDCF, p_target 0.01: P_miss + 99 P_fa -> 1 (reject all) is the minimum
    assert metrics["min_dcf"] == pytest.approx(1.0)
    assert task.last_trials == {"target": 2, "nontarget": 4, "speakers": 2, "items": 4}
    assert SpeakerVerification.resample_units(items) == [("a0", "a1"), ("b0", "b1")]
    eer = SpeakerVerification.item_statistic(items, "eer")  # (copy, utterance) rows
    assert eer(np.array([[0, 0], [0, 1], [1, 2], [1, 3]])) == pytest.approx(0.25)
    # speaker A twice: no non-target trial
    assert np.isnan(eer(np.array([[0, 0], [0, 1], [1, 0], [1, 1]])))
    # the configured prior is used: p_target 0.5 -> P_miss + P_fa, minimum 1/4 at t = 0.8
    task = _sv_task(p_target=0.5)
    assert task.evaluate(_Logits(), [_sv_batch()])["min_dcf"] == pytest.approx(0.25)


def test_speaker_verification_warns_of_an_eer_above_half_once_per_set_of_utterances(caplog):
    """A head at chance (or reversed) was warned about at every dev evaluation; now once per
    set of utterances (dev, test), each evaluation's EER still returned."""
    # A0 = B0 = (1, 0), A1 = B1 = (0, 1): target trials (A0, A1), (B0, B1) score 0; non-target
    # (A0, B0) 1, (A0, B1) 0, (A1, B0) 0, (A1, B1) 1. (P_miss, P_fa): inf (1, 0); 1 (1, 1/2);
    # 0 (0, 1): the crossing between 1 and 0 at alpha = (1/2) / (1/2 + 1) = 1/3, so
    # EER = 1/2 + 1/3 * 1/2 = 2/3.
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])[:, None]

    def batch(prefix):
        return emb, torch.ones(4, dtype=torch.long), [
            Example(f"{prefix}{k}", np.zeros(1), None, s)
            for k, s in (("a0", "A"), ("a1", "A"), ("b0", "B"), ("b1", "B"))]

    task = _sv_task()
    with caplog.at_level("WARNING"):
        dev = [task.evaluate(_Logits(), [batch("dev/")])["eer"] for _ in range(3)]
        test = [task.evaluate(_Logits(), [batch("test/")])["eer"] for _ in range(2)]
    assert dev + test == [pytest.approx(2 / 3)] * 5
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings  # before: 5, one per evaluation
    assert warnings[0].startswith("EER 0.667 > 0.5 on these 4 utterances")
    assert "Said once for these utterances" in warnings[0]


def _three_speaker_trials():
    """Speakers A (a0, a1), B (b0, b1), C (c0, c1): every target trial, three non-target."""
    rows = [("a0", "a1", 1, 0.9), ("b0", "b1", 1, 0.5), ("c0", "c1", 1, 0.8),
            ("a0", "b0", 0, 0.7), ("a0", "c0", 0, 0.3), ("b0", "c0", 0, 0.2)]
    return [{"enroll": e, "test": t, "label": lab, "score": s} for e, t, lab, s in rows]


def test_speaker_verification_resamples_speakers_then_utterances_with_multiplicities():
    from downstream.stats import full_indices
    from downstream.tasks.speaker_verification.task import SpeakerVerification
    from robustdistill.metrics.verification import compute_eer

    items = _three_speaker_trials()
    assert SpeakerVerification.resample_units(items) == [("a0", "a1"), ("b0", "b1"),
                                                         ("c0", "c1")]
    eer = SpeakerVerification.item_statistic(items, "eer")
    # utterances a0 a1 b0 b1 c0 c1 = 0..5; rows (copy, utterance).
    # The sample itself: target 0.9, 0.8, 0.5, non-target 0.7, 0.3, 0.2; (P_miss, P_fa) at
    # 0.9 (2/3, 0), 0.8 (1/3, 0), 0.7 (1/3, 1/3): EER 1/3
    assert eer(full_indices([(2, 2, 2)])[0]) == pytest.approx(1 / 3)
    # A once, B twice (both copies with both utterances), C not drawn: target (a0, a1) x1,
    # (b0, b1) x2 (once per copy); non-target (a0, b0) x 1 * 2, the trials with C x0. Target
    # 0.9, 0.5, 0.5, non-target 0.7, 0.7: (P_miss, P_fa) at 0.9 (2/3, 0), at 0.7 (2/3, 1),
    # crossing at alpha = 2/3: EER 2/3, the unweighted EER of that repeated list
    b_twice = np.array([[0, 0], [0, 1], [1, 2], [1, 3], [2, 2], [2, 3]])
    assert eer(b_twice) == pytest.approx(2 / 3)
    assert eer(b_twice) == pytest.approx(compute_eer([0.9, 0.5, 0.5], [0.7, 0.7])[0])
    assert eer(b_twice[::-1]) == pytest.approx(2 / 3)  # the order of the rows is irrelevant
    # copy 0 of A drew a0 twice, a1 once; copy 1 of B drew b0, b1: target (a0, a1) x 2 * 1,
    # (b0, b1) x1; non-target (a0, b0) x 2 * 1 -> target 0.9, 0.9, 0.5, non-target 0.7, 0.7:
    # (P_miss, P_fa) at 0.9 (1/3, 0), 0.7 (1/3, 1), alpha 1/3: EER 1/3
    assert eer(np.array([[0, 0], [0, 0], [0, 1], [1, 2], [1, 3]])) == pytest.approx(1 / 3)
    # copy 0 of A drew a0 twice (no (a0, a0) trial: A has no target trial), copy 1 of B b0
    # and b1: target 0.5, non-target (a0, b0) x2 = 0.7, 0.7 above it: EER 1
    assert eer(np.array([[0, 0], [0, 0], [1, 2], [1, 3]])) == pytest.approx(1.0)
    # a0 in copy 0 and a1 in copy 1 of A: no target pair within one copy, and the pair
    # across the copies has no score (same speaker): no trial at all
    assert np.isnan(eer(np.array([[0, 0], [1, 1]])))
    assert SpeakerVerification.item_statistic(items, "min_dcf") is None


def test_speaker_verification_units_refuse_inconsistent_trial_labels():
    from downstream.tasks.speaker_verification.task import SpeakerVerification

    items = _three_speaker_trials() + [{"enroll": "a1", "test": "a0", "label": 0, "score": 0.1}]
    with pytest.raises(ValueError, match="inconsistent trial labels"):
        SpeakerVerification.item_statistic(items, "eer")


def test_xvector_embedding_ignores_padding_in_eval_mode():
    from downstream.tasks.speaker_verification.head import XVectorHead

    torch.manual_seed(0)
    head = XVectorHead(3, 2, channels=4, kernel_sizes=[3, 3], dilations=[1, 2],
                       embedding_dim=5).eval()
    short = torch.randn(1, 6, 3)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 4, 3)], dim=1), torch.randn(1, 10, 3)])
    with torch.no_grad():
        alone = head.embed(short, torch.tensor([6]))
        padded = head.embed(batch, torch.tensor([6, 10]))[:1]
    torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)


def test_xvector_training_batch_norm_statistics_ignore_padding():
    """In training, the batch norm statistics count real frames only (``batch_norm: masked``):
    more zero padding after a short utterance changes neither the embeddings nor the running
    statistics. ``batch_norm: padded`` keeps torch's BatchNorm1d, which counts the padding."""
    from downstream.tasks.speaker_verification.head import XVectorHead

    torch.manual_seed(0)
    short, long = torch.randn(1, 4, 3), torch.randn(1, 10, 3)
    lengths = torch.tensor([4, 10])

    def run(mode, extra):
        torch.manual_seed(1)
        head = XVectorHead(3, 2, channels=4, kernel_sizes=[3, 3], dilations=[1, 2],
                           embedding_dim=5, **({} if mode is None else {"batch_norm": mode}))
        head.train()
        pad = torch.zeros(1, 10 + extra - 4, 3)
        batch = torch.cat([torch.cat([short, pad], 1),
                           torch.cat([long, torch.zeros(1, extra, 3)], 1)])
        emb = head.embed(batch, lengths)
        return emb.detach(), head.tdnn[0][1].running_mean.clone()

    emb, running = run(None, 0)  # the default: masked
    emb_more, running_more = run(None, 6)
    torch.testing.assert_close(emb_more, emb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(running_more, running, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(run("masked", 6)[0], emb, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(run("padded", 6)[0], run("padded", 0)[0], atol=1e-3)


def test_masked_batch_norm_equals_batch_norm_over_the_real_frames():
    from downstream.tasks.speaker_verification.head import MaskedBatchNorm1d

    torch.manual_seed(0)
    x, lengths = torch.randn(3, 4, 7), torch.tensor([7, 4, 2])
    mask = (torch.arange(7)[None] < lengths[:, None]).unsqueeze(1)
    masked, ref = MaskedBatchNorm1d(4), nn.BatchNorm1d(4)
    with torch.no_grad():
        masked.weight.uniform_()
        masked.bias.uniform_()
    ref.load_state_dict(masked.state_dict())
    real = torch.cat([x[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1)  # (C, 13)
    out = masked(x, mask)
    torch.testing.assert_close(
        torch.cat([out[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1),
        ref(real[None])[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked.running_mean, ref.running_mean)
    torch.testing.assert_close(masked.running_var, ref.running_var)  # unbiased, as torch
    masked.eval()
    ref.eval()
    torch.testing.assert_close(masked(x, mask), ref(x))  # eval: the running statistics
    with pytest.raises(ValueError, match="batch_norm must be one of masked, padded"):
        from downstream.tasks.speaker_verification.head import XVectorHead
        XVectorHead(3, 2, batch_norm="none")


def test_am_softmax_subtracts_the_margin_from_the_target_cosine():
    from downstream.tasks.speaker_verification.head import AMSoftmax

    loss = AMSoftmax(2, 2, margin=0.2, scale=10.0)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # embedding along class 0: cosines (1, 0); logits 10 * (1 - 0.2) = 8 and 0
    value = loss(torch.tensor([[3.0, 0.0]]), torch.tensor([0])).item()
    assert value == pytest.approx(float(np.log1p(np.exp(-8.0))), rel=1e-4)


# ---------------------------------------------------------------- ASR
def _asr_task():
    from downstream.tasks.asr.task import AsrConfig, AsrTask

    return AsrTask(AsrConfig(data=_data()))


def _paths(texts, frames=12):
    """One-hot 'log-probs' whose greedy decoding is each text (blank between symbols)."""
    from downstream.tasks.asr.task import ALPHABET

    index = {c: i for i, c in enumerate(ALPHABET)}
    out = torch.zeros(len(texts), frames, len(ALPHABET))
    for b, text in enumerate(texts):
        path = [s for ch in text for s in (index[ch], 0)]
        path += [0] * (frames - len(path))
        out[b] = torch.nn.functional.one_hot(torch.tensor(path), len(ALPHABET)).float()
    return out


def test_asr_wer_is_normalised_by_reference_words():
    from downstream.tasks.asr.task import AsrTask, edit_distance

    assert edit_distance(["A", "B", "C"], ["A", "X", "C"]) == 1  # one substitution
    assert edit_distance(["A", "C"], ["A", "B", "C"]) == 1  # one deletion
    assert edit_distance([], ["A", "B"]) == 2
    task = _asr_task()
    examples = [Example("u1", None, "A B C D"), Example("u2", None, "E F")]
    # hypotheses "A B" (2 deletions of 4 words) and "E G F" (1 insertion of 2 words)
    features = _paths(["A B", "E G F"])
    metrics = task.evaluate(_Logits2(), [(features, torch.tensor([12, 12]), examples)])
    # corpus WER = (2 + 1) / (4 + 2) reference words = 0.5 (by hypothesis words: 3 / 5)
    assert metrics["wer"] == pytest.approx(0.5)
    # CER: "A B" vs "A B C D": 4 deletions of 7 characters; "E G F" vs "E F": 2 insertions of
    # 3 characters -> 6 / 10
    assert metrics["cer"] == pytest.approx(0.6)
    items = task.items()
    assert [(r["word_errors"], r["words"], r["char_errors"], r["chars"]) for r in items] == [
        (2, 4, 4, 7), (1, 2, 2, 3)]
    for metric in ("wer", "cer"):
        stat = AsrTask.item_statistic(items, metric)
        assert stat(np.arange(2)) == pytest.approx(metrics[metric])
    assert AsrTask.item_statistic(items, "wer")(np.array([0, 0])) == pytest.approx(0.5)


class _Logits2(nn.Module):
    """ASR head stub: the features are the log-probabilities."""

    def forward(self, features, frame_lengths):
        return features


# ---------------------------------------------------------------- speech enhancement
def test_se_records_the_si_sdr_improvement_of_each_utterance(monkeypatch):
    import downstream.tasks.speech_enhancement.task as se

    c = np.tile(np.array([1.0, -1.0, 1.0, -1.0], np.float32), 80)
    e = np.tile(np.array([1.0, 1.0, -1.0, -1.0], np.float32), 80)
    monkeypatch.setattr(se, "speech_metrics",
                        lambda signal, reference, key="": {"pesq": 1.0, "stoi": 0.5,
                                                           "si_sdr": 0.0})
    task = se.SpeechEnhancementTask(se.SpeechEnhancementConfig(_data()))
    monkeypatch.setattr(task, "enhance", lambda head, f, lengths, ex: [c + 0.1 * e])
    # noisy c + e: 0 dB; enhanced c + 0.1 e: 20 dB -> +20 dB improvement
    metrics = task.evaluate(None, [(None, None, [Example("u", c + e, c)])])
    assert task.items()[0]["si_sdr_improvement"] == pytest.approx(20.0, abs=1e-4)
    assert metrics["si_sdr_improvement"] == pytest.approx(20.0, abs=1e-4)


def test_speech_metrics_pass_reference_first_to_pesq_and_stoi():
    from pesq import pesq
    from pystoi import stoi

    from downstream.tasks.speech_enhancement.task import speech_metrics
    from robustdistill.synthetic import synthetic_waveform

    sr = 16000
    rng = np.random.default_rng(0)
    clean = synthetic_waveform(2.0, rng).astype(np.float64)
    noisy = clean + 0.1 * np.std(clean) * rng.standard_normal(clean.size)
    out = speech_metrics(noisy, clean)
    assert out["pesq"] == pytest.approx(pesq(sr, clean, noisy, "wb"), abs=1e-6)
    assert out["stoi"] == pytest.approx(stoi(clean, noisy, sr), abs=1e-6)
    # the order matters for these signals (the check above would not see a swap otherwise)
    assert abs(pesq(sr, noisy, clean, "wb") - out["pesq"]) > 0.3
    assert abs(stoi(noisy, clean, sr) - out["stoi"]) > 0.01
