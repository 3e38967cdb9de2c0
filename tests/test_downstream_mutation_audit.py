"""Mutation-audit additions (session 13) for the downstream package: behaviours whose mutants
no earlier test killed. Per-item classification records, cosine trial scores, the dev
evaluation after the last step, the test audio of each condition (task examples on real
speech / noise / rooms, and the runner's encoding per condition with the run's seed),
``--evaluate-only`` restoring the layer weights, seeded subsampling and item splits, the
seed mean of layer weights, SV crops at training only, labels not mixed in one table, the
CLI's ``--seed``, and head dropout off in eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_downstream_task_metrics import _data, _Logits

from downstream.base import Example


def test_classification_items_name_the_predicted_and_the_true_label():
    """Each record's ``prediction`` is the label of the argmax class and ``target`` the true
    label (McNemar and any error analysis read them), not the target twice."""
    from downstream.tasks.utterance_classification import UtteranceClassificationConfig
    from downstream.tasks.utterance_classification.task import UtteranceClassification

    task = UtteranceClassification(UtteranceClassificationConfig(data=_data()))
    task.classes = ["a", "b", "c"]
    targets, predictions = [0, 1, 2], [1, 1, 0]
    logits = torch.nn.functional.one_hot(torch.tensor(predictions), 3).float()[:, None]
    examples = [Example(f"u{i}", np.zeros(1), t) for i, t in enumerate(targets)]
    task.evaluate(_Logits(), [(logits, torch.ones(3, dtype=torch.long), examples)])
    assert [(r["key"], r["target"], r["prediction"], r["correct"]) for r in task.items()] == [
        ("u0", "a", "b", 0), ("u1", "b", "b", 1), ("u2", "c", "a", 0)]


def test_verification_scores_are_cosines_whatever_the_embedding_norm():
    """Trials are scored by the cosine of the two embeddings: scaling an embedding (the
    x-vector's norm varies with the utterance) must not change a score, nor the EER."""
    from test_downstream_task_metrics import _sv_batch, _sv_task

    emb, lengths, examples = _sv_batch()
    scaled = emb * torch.tensor([2.0, 0.5, 3.0, 1.0])[:, None, None]
    task = _sv_task()
    metrics = task.evaluate(_Logits(), [(scaled, lengths, examples)])
    # the cosines of the unit vectors of _sv_batch, in its trial order
    np.testing.assert_allclose([r["score"] for r in task.items()],
                               [0.8, 0.8, 0.6, 0.0, 0.96, 0.6], atol=1e-6)
    assert metrics["eer"] == 0.25


def test_the_last_step_is_evaluated_on_dev_when_eval_every_does_not_divide_steps():
    """5 steps, dev every 2: dev after steps 2, 4 and 5 (the last), and the last step's head
    is kept when it is the best; without that evaluation 1 step of training would be lost."""
    from test_downstream_head_training import _encoded, _equal_states, _setup

    from downstream.runner import RunOptions
    from downstream.training import train_head

    task, featurizer, head = _setup([0.1, 0.2, 0.9], steps=5, eval_every=2)
    record = train_head(task, featurizer, head, _encoded(6), _encoded(4, 1),
                        RunOptions("scripted", "x", "c", "o"))
    assert [h["step"] for h in record["history"]] == [2, 4, 5]
    assert (record["best_step"], record["best_metric"]) == (5, 0.9)
    assert _equal_states(head.state_dict(), task.snapshots[-1][1])


def _real_utterance():
    """A LibriSpeech test-other utterance (first 2 s) and a corruptor over the real test noise
    and room recordings of ../shared/data."""
    from conftest import require_shared_data

    from downstream.conditions import TestCorruptor
    from downstream.data import Utterance, load_waveform

    data = require_shared_data()
    path = sorted((data / "librispeech-mini" / "test-other" / "1688").glob("*.flac"))[0]
    utterance = Utterance(f"1688/{path.name}", str(path), label="1688", speaker="1688")
    clean = load_waveform(utterance, max_seconds=2.0)
    return utterance, clean, TestCorruptor.from_dirs(data / "noise", data / "rir", seed=4)


def _task(name):
    from downstream.base import get_task

    task_class = get_task(name)
    task = task_class(task_class.config_class(data=_data()), seed=4)
    if name == "utterance_classification":
        task.classes, task.index = ["1688"], {"1688": 0}
    else:
        task.speakers, task.index = ["1688"], {"1688": 0}
    return task


@pytest.mark.parametrize("task_name", ["utterance_classification", "speaker_verification"])
def test_the_test_split_hears_the_condition_it_is_named_after(task_name):
    """Real speech, real noise and room: a test example of ``snr5`` holds the speech plus the
    utterance's noise at 5 dB (measured on the example), ``reverb+snr0`` the reverberant speech
    plus noise at 0 dB against it, ``clean`` the speech itself. A task that handed the clean
    waveform to every condition would report the clean accuracy / EER as the noisy ones."""
    from downstream.conditions import parse_condition
    from robustdistill.augment import reverberate

    utterance, clean, corruptor = _real_utterance()
    task = _task(task_name)
    examples = {name: task.make_example(utterance, clean, "test", parse_condition(name),
                                        corruptor)
                for name in ("clean", "snr5", "snr-5", "reverb", "reverb+snr0")}
    np.testing.assert_array_equal(examples["clean"].waveform, clean)
    drawn = corruptor.draw(utterance.key, clean.shape[0])
    wet = reverberate(clean, drawn.rir).astype(np.float64)
    for name, speech, snr in (("snr5", clean.astype(np.float64), 5.0),
                              ("snr-5", clean.astype(np.float64), -5.0),
                              ("reverb+snr0", wet, 0.0)):
        noise = examples[name].waveform.astype(np.float64) - speech
        measured = 10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2))
        assert measured == pytest.approx(snr, abs=0.01), name
        # the noise is the utterance's own segment (its drawn recording), scaled
        cos = noise @ drawn.noise / np.linalg.norm(noise) / np.linalg.norm(drawn.noise)
        assert cos == pytest.approx(1.0, abs=1e-4), name
    np.testing.assert_allclose(examples["reverb"].waveform, wet, atol=1e-5)
    assert np.abs(wet - clean).max() > 0.01  # the room changes the audio


def test_each_condition_of_a_run_encodes_its_own_corrupted_test_audio(tmp_path, monkeypatch):
    """The runner encodes the test split once per condition with that condition's audio (the
    run's seeded noise / room draw per utterance), and train / dev clean: a runner that
    encoded the clean test audio for every condition would write the clean numbers under
    ``snr0`` and ``reverb`` with no error."""
    import soundfile as sf
    from test_downstream_tasks import _save_tiny, _tone, _uc_config, _write_config

    from downstream import encoding, runner
    from downstream.conditions import TestCorruptor, parse_condition

    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob", "eve", "fay"):
        for label, freq in (("lo", 300.0), ("hi", 1200.0)):
            sf.write(corpus / "audio" / f"{label}_{speaker}_0.wav", _tone(freq, 0.5, rng), 16000)
    (corpus / "noise").mkdir()
    sf.write(corpus / "noise" / "white.wav", rng.standard_normal(16000).astype(np.float32) * 0.1,
             16000)
    (corpus / "rir").mkdir()
    # trailing zeros: a response that decays (robustdistill.augment.rir_implausibility)
    sf.write(corpus / "rir" / "room.wav",
             np.r_[1.0, 0.0, 0.6, 0.0, -0.3, np.zeros(45)].astype(np.float32), 16000)
    config = _uc_config(corpus)
    config["training"] = {"steps": 1, "batch_size": 4, "eval_every": 1}
    config["disk_cache"] = False
    seen = {}
    real = encoding.encode_examples

    def encode(upstream, featurizer, examples, *args, desc="", **kwargs):
        seen[desc.removeprefix("encode ")] = {e.key: e.waveform.copy() for e in examples}
        return real(upstream, featurizer, examples, *args, desc=desc, **kwargs)

    monkeypatch.setattr(encoding, "encode_examples", encode)
    results = runner.run_evaluation(runner.RunOptions(
        task="utterance_classification", upstream=_save_tiny("hubert", tmp_path / "up"),
        config=_write_config(tmp_path / "uc.yaml", config), out=str(tmp_path / "out"),
        conditions=["clean", "snr0", "reverb"], test_noise_dir=str(corpus / "noise"),
        test_rir_dir=str(corpus / "rir"), seed=2, bootstrap_resamples=0))
    assert sorted(seen) == ["dev/clean", "test/clean", "test/reverb", "test/snr0", "train/clean"]
    # results.json lists the conditions in the order asked (the table's and plot's order)
    assert results["conditions"] == list(results["metrics"]) == ["clean", "snr0", "reverb"]
    corruptor = TestCorruptor.from_dirs(corpus / "noise", corpus / "rir", seed=2)
    clean = seen["test/clean"]
    assert sorted(clean) == ["hi_fay_0.wav", "lo_fay_0.wav"]
    for name in ("snr0", "reverb"):
        assert sorted(seen[f"test/{name}"]) == sorted(clean)
        for key, wave in clean.items():
            expected = corruptor.apply(wave, parse_condition(name), key)
            np.testing.assert_array_equal(seen[f"test/{name}"][key], expected)
            assert np.abs(expected - wave).max() > 0.01


def test_evaluate_only_restores_the_trained_layer_weights_with_the_head(tmp_path):
    """``--evaluate-only`` tests the saved featurizer + head: the learned layer weights come
    back with the head (a fresh featurizer has uniform weights, which the head was never
    trained on), so the reloaded pair gives the saved pair's logits."""
    from downstream import runner
    from downstream.featurizer import Featurizer
    from downstream.tasks.utterance_classification.task import (
        UtteranceClassification,
        UtteranceClassificationConfig,
    )

    def make():
        task = UtteranceClassification(UtteranceClassificationConfig(data=_data()))
        task.classes = ["hi", "lo"]
        return task, Featurizer(3, 8), task.build_head(8)

    options = runner.RunOptions("utterance_classification", "up", "c.yaml", str(tmp_path))
    task, featurizer, head = make()
    with torch.no_grad():
        featurizer.weights.copy_(torch.log(torch.tensor([0.7, 0.2, 0.1])))
    runner.save_head(tmp_path / "head.pt", task, featurizer, head, {"best_step": 1}, options)
    task2, featurizer2, head2 = make()
    runner.load_head(tmp_path / "head.pt", task2, featurizer2, head2, options)
    assert featurizer2.layer_weights() == pytest.approx({"0": 0.7, "1": 0.2, "2": 0.1})
    hidden = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 3])
    torch.testing.assert_close(head2(featurizer2(hidden), lengths),
                               head(featurizer(hidden), lengths))


def test_subsample_and_item_split_follow_the_run_seed():
    """``--seeds 0 1 2`` varies the subsampled items and the item split with the seed (the
    spread over seeds is meant to include the data draw); one seed gives one draw."""
    from downstream.data import SplitConfig, Utterance, _cut_by_item, subsample

    items = [Utterance(f"{label}{i}", "x", label=label) for label in "ab" for i in range(20)]

    def picked(seed):
        return tuple(u.key for u in subsample(items, 6, seed))

    assert picked(1) == picked(1)
    draws = {picked(seed) for seed in range(5)}
    assert len(draws) > 1
    for draw in draws:  # balanced whatever the seed
        assert sum(k.startswith("a") for k in draw) == 3

    def dev(seed):
        return tuple(u.key for u in _cut_by_item(items, SplitConfig("item", 0.2, 0.2), seed,
                                                 with_train=True)[1])

    assert dev(3) == dev(3)
    assert len({dev(seed) for seed in range(5)}) > 1


def test_aggregate_layer_weights_are_the_mean_over_seeds(tmp_path):
    """A multi-seed results.json reports each layer's weight averaged over the seeds (they
    still sum to one), not the first seed's."""
    from test_downstream_results import _seed_run

    from downstream.seeds import aggregate_seeds

    runs = []
    for seed, weights in ((0, {"0": 0.6, "1": 0.4}), (1, {"0": 0.2, "1": 0.8})):
        runs.append(_seed_run(tmp_path, "a", seed, [1, 0, 1, 1]))
        runs[-1]["featurizer"] = {"weights": weights}
    merged = aggregate_seeds(runs, [tmp_path / "a" / f"seed{s}" for s in (0, 1)], resamples=0)
    assert merged["featurizer"]["weights"] == pytest.approx({"0": 0.4, "1": 0.6})
    assert merged["seeds"] == [0, 1]


def test_verification_crops_training_batches_only():
    """``train_crop_seconds`` crops training utterances; dev and test embeddings are computed
    on the whole utterance (a crop there would score 3 s of each test utterance)."""
    from downstream.base import EncodedExample

    task = _task("speaker_verification")
    task.config.train_crop_seconds = 0.1  # 5 frames at 50 frames per second
    encoded = [EncodedExample(Example(k, np.zeros(1), None, "1688"),
                              torch.arange(n * 2.0).reshape(1, n, 2)) for k, n in
               (("u0", 20), ("u1", 12))]
    whole = task.collate(encoded, train=False, rng=np.random.default_rng(0))
    assert whole.frame_lengths.tolist() == [20, 12]
    torch.testing.assert_close(whole.hidden[1, :, :12], encoded[1].hidden)
    cropped = task.collate(encoded, train=True, rng=np.random.default_rng(0))
    assert cropped.frame_lengths.tolist() == [5, 5]


def test_results_of_two_labels_of_one_task_folder_are_not_tabled_together(tmp_path):
    """Keyword spotting and speaker identification share the task folder and the metric
    (accuracy); their results in one table would compare a KWS model with a SID one."""
    from test_downstream_results import _result, _uc_items

    from downstream.table import results_table

    ks, sid = (_result(tmp_path, name, "utterance_classification", "accuracy",
                       {"clean": _uc_items([1, 0, 1])}) for name in ("ks_run", "sid_run"))
    ks["label"], sid["label"] = "ks", "sid"
    with pytest.raises(ValueError, match="different tasks"):
        results_table([ks, sid])
    sid["label"] = "ks"
    assert "accuracy" in results_table([ks, sid])


def test_evaluate_cli_passes_the_seed_to_the_run(monkeypatch, tmp_path):
    """``robustdistill evaluate --seed 3`` runs seed 3 (the split, noise draws and head all
    follow it); no ``--seed`` is seed 0."""
    from downstream import runner
    from downstream.cli import evaluate_main

    seen = []

    def run(options):
        seen.append(options.seed)
        return {"primary_metric": "accuracy", "task": options.task,
                "metrics": {"clean": {"accuracy": 1.0}}}

    monkeypatch.setattr(runner, "run_evaluation", run)
    argv = ["--task", "ks", "--upstream", "up", "--config", "c.yaml", "--out",
            str(tmp_path / "out"), "--conditions", "clean"]
    assert evaluate_main([*argv, "--seed", "3"]) == 0
    assert evaluate_main(argv) == 0
    assert seen == [3, 0]


def test_classification_head_dropout_is_off_in_eval_mode():
    """A head trained with ``head.dropout`` > 0 predicts deterministically in eval mode (the
    runner evaluates dev and test with ``head.eval()``): dropout applies to training only."""
    from downstream.tasks.utterance_classification.task import MeanPoolClassifier

    torch.manual_seed(0)
    head = MeanPoolClassifier(8, 3, projector_dim=16, dropout=0.5).eval()
    features = torch.randn(4, 6, 8)
    lengths = torch.tensor([6, 5, 3, 1])
    expected = head.classifier(head.projector(features)[0:1, :6].mean(dim=1))
    torch.testing.assert_close(head(features, lengths)[0:1], expected)
    torch.testing.assert_close(head(features, lengths), head(features, lengths))
    assert not torch.equal(head.train()(features, lengths), head.eval()(features, lengths))
