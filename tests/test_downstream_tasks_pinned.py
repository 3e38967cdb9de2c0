"""Utterance classification setup, speaker-verification trials and crops, the training
teacher's loading rule and ending processes (mutation round 3)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch

from downstream.base import EncodedExample, Example
from downstream.data import DataConfig, SourceConfig, Utterance
from downstream.tasks.speaker_verification.task import (
    SpeakerVerification,
    SpeakerVerificationConfig,
    build_trials,
)
from downstream.tasks.utterance_classification.task import (
    UtteranceClassification,
    UtteranceClassificationConfig,
)


def _data():
    return DataConfig(SourceConfig(root="x"))


def _utts(prefix, labels=(), speakers=()):
    if labels:
        return [Utterance(f"{prefix}{i}", "a.wav", label=lab) for i, lab in enumerate(labels)]
    return [Utterance(f"{prefix}{i}", "a.wav", speaker=s) for i, s in enumerate(speakers)]


def test_classification_setup_indexes_sorted_train_labels_and_refuses_bad_splits():
    task = UtteranceClassification(UtteranceClassificationConfig(_data()))
    task.setup({"train": _utts("t", ["yes", "no", "up", "no"]), "dev": _utts("d", ["up"]),
                "test": _utts("e", ["yes"])})
    assert task.classes == ["no", "up", "yes"]
    assert task.target(Utterance("x", "a.wav", label="yes")) == 2
    with pytest.raises(ValueError, match=r"test labels not in train: \['down'\]"):
        task.setup({"train": _utts("t", ["yes", "no"]), "dev": _utts("d", ["no"]),
                    "test": _utts("e", ["down"])})
    with pytest.raises(ValueError, match="at least two classes"):
        task.setup({"train": _utts("t", ["yes", "yes"]), "dev": [], "test": []})
    with pytest.raises(ValueError, match="no label"):
        task.setup({"train": _utts("t", ["yes", "no"]) + [Utterance("u", "a.wav")],
                    "dev": [], "test": []})


def test_classification_head_projects_to_the_configured_width():
    task = UtteranceClassification(UtteranceClassificationConfig(_data()))
    task.setup({"train": _utts("t", ["a", "b", "c"]), "dev": [], "test": []})
    head = task.build_head(6)
    assert (head.projector.in_features, head.projector.out_features) == (6, 256)
    assert (head.classifier.in_features, head.classifier.out_features) == (256, 3)


def _plain_trials(speakers):
    pairs = [(i, j) for i in range(len(speakers)) for j in range(i + 1, len(speakers))]
    return ({p for p in pairs if speakers[p[0]] == speakers[p[1]]},
            {p for p in pairs if speakers[p[0]] != speakers[p[1]]})


def test_trials_keep_every_target_pair_and_sample_distinct_non_target_pairs():
    speakers = [s for s in "abcde" for _ in range(3)]  # 15 target, 90 non-target pairs
    target, nontarget = _plain_trials(speakers)
    pairs, labels = build_trials(speakers, 20, seed=4)
    got = [tuple(p) for p in pairs.tolist()]
    assert {p for p, lab in zip(got, labels, strict=True) if lab == 1} == target
    sampled = [p for p, lab in zip(got, labels, strict=True) if lab == 0]
    assert len(sampled) == 20 and len(set(sampled)) == 20 and set(sampled) <= nontarget
    assert labels.tolist() == [1] * 15 + [0] * 20
    many, labels = build_trials(speakers, 80, seed=4)  # without replacement: 80 distinct
    assert len({tuple(p) for p in many[labels == 0].tolist()}) == 80
    again, _ = build_trials(speakers, 20, seed=4)
    np.testing.assert_array_equal(again, pairs)
    # all non-target pairs when no more than asked for
    pairs, labels = build_trials(speakers, 90, seed=4)
    assert {tuple(p) for p, lab in zip(pairs.tolist(), labels, strict=True) if lab == 0} \
        == nontarget


def test_trial_sample_depends_on_the_seed_and_on_the_speaker_list():
    speakers = [s for s in "abcdefgh" for _ in range(2)]
    renamed = [s.upper() for s in speakers]  # same structure, other names
    base, _ = build_trials(speakers, 10, seed=0)
    assert not np.array_equal(base, build_trials(speakers, 10, seed=1)[0])
    assert not np.array_equal(base, build_trials(renamed, 10, seed=0)[0])


def test_trials_need_a_target_pair():
    with pytest.raises(ValueError, match="0 target"):
        build_trials(["a", "b", "c"], 10, seed=0)


def test_verification_evaluates_the_trials_of_its_own_seed():
    class Embed(torch.nn.Module):
        def embed(self, features, lengths):
            return features[:, 0, 0]

    speakers = [s for s in "abcdef" for _ in range(2)]
    feats = torch.randn(12, 1, 1, 3, generator=torch.Generator().manual_seed(0))
    examples = [Example(f"k{i}", None, None, s) for i, s in enumerate(speakers)]
    config = SpeakerVerificationConfig(_data())
    config.trials.max_nontarget = 8
    task = SpeakerVerification(config, seed=7)
    task.evaluate(Embed(), [(feats, torch.ones(12, dtype=torch.long), examples)])
    pairs, labels = build_trials(speakers, 8, seed=7)
    assert [(r["enroll"], r["test"], r["label"]) for r in task.last_items] == [
        (f"k{i}", f"k{j}", int(lab)) for (i, j), lab in zip(pairs.tolist(), labels, strict=True)]


def test_verification_setup_refuses_dev_speakers_seen_in_training():
    task = SpeakerVerification(SpeakerVerificationConfig(_data()))
    with pytest.raises(ValueError, match=r"train and dev splits share speakers \['a'\]"):
        task.setup({"train": _utts("t", speakers=["a", "b"]), "dev": _utts("d", speakers=["a"]),
                    "test": _utts("e", speakers=["c"])})


def test_verification_crop_starts_cover_zero_to_n_minus_crop():
    config = SpeakerVerificationConfig(_data(), train_crop_seconds=0.1)  # 5 frames at 50 Hz
    task = SpeakerVerification(config)
    task.frames_per_second = 50.0
    e = EncodedExample(Example("k", None, 0, "a"),
                       torch.arange(8, dtype=torch.float32).reshape(1, 8, 1))
    starts = {int(task.collate([e], True, np.random.default_rng(s)).hidden[0, 0, 0, 0])
              for s in range(60)}
    assert starts == {0, 1, 2, 3}


# ---- the training teacher ---------------------------------------------------------------

def test_training_teacher_is_frozen_with_train_randomness_off(tiny_wavlm_dir):
    from robustdistill.config import DistillConfig
    from robustdistill.teachers import load_teacher

    teacher = load_teacher(DistillConfig(teacher=str(tiny_wavlm_dir)))
    teacher.train()
    assert teacher.frozen and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.parameters())
    config = teacher.model.config
    assert (config.layerdrop, config.mask_time_prob, config.mask_feature_prob) == (0.0, 0.0, 0.0)


def test_training_teacher_passes_trust_remote_code_and_whisper_frames(monkeypatch):
    from robustdistill import teachers
    from robustdistill.config import DistillConfig

    calls = []
    monkeypatch.setattr(teachers.Upstream, "from_pretrained",
                        lambda *a, **k: calls.append((a, k)) or "up")
    cfg = DistillConfig(teacher="some/teacher")
    cfg.trust_remote_code = True
    cfg.whisper_teacher_frames = "native"
    assert teachers.load_teacher(cfg) == "up"
    assert calls == [(("some/teacher",), {"frozen": True, "trust_remote_code": True,
                                          "whisper_frames": "native"})]


def test_random_teachers_depend_on_the_seed_and_normalise_only_with_layer_norm(tmp_path):
    from transformers import AutoModel

    from robustdistill.teachers import make_random_teacher

    def weights(folder):
        return AutoModel.from_pretrained(folder).state_dict()

    a = weights(make_random_teacher("wavlm", "tiny", tmp_path / "a", seed=3))
    b = weights(make_random_teacher("wavlm", "tiny", tmp_path / "b", seed=3))
    c = weights(make_random_teacher("wavlm", "tiny", tmp_path / "c", seed=4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    group = json.loads((tmp_path / "a" / "preprocessor_config.json").read_text())
    assert (group["do_normalize"], group["return_attention_mask"]) == (False, False)
    make_random_teacher("data2vec-audio", "tiny", tmp_path / "d")
    layer = json.loads((tmp_path / "d" / "preprocessor_config.json").read_text())
    assert (layer["do_normalize"], layer["return_attention_mask"]) == (True, True)


# ---- ending processes --------------------------------------------------------------------

@pytest.mark.parametrize("processes", [1, 2])
def test_finish_processes_waits_settles_then_ends_training(monkeypatch, processes):
    from robustdistill import processes as module

    log = []
    monkeypatch.setattr(module.time, "sleep", lambda s: log.append(("sleep", s)))
    acc = types.SimpleNamespace(num_processes=processes,
                                wait_for_everyone=lambda: log.append("wait"),
                                end_training=lambda: log.append("end"))
    module.finish_processes(acc)
    expected = ["wait", ("sleep", module.SETTLE_S), "end"] if processes > 1 else ["wait", "end"]
    assert log == expected
