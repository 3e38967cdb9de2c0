"""The training loop: exact resume, export round trip, loss normalisation across micro-batches."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from robustdistill.config import load_config
from robustdistill.export import export_from_checkpoint
from robustdistill.trainer import train
from robustdistill.upstream import Upstream


def _config(tmp_path, teacher_dir, out: str, **training):
    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 3,
        "data.synthetic_items": 12, "data.synthetic_seconds": "[0.6, 1.2]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": 2,
        "data.max_length_s": 1.0, "data.min_length_s": 0.5, "data.validation_fraction": 0.2,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 3,
        "objectives": "{layerwise: {teacher_layers: [1, 2]}, enhancement: {hidden_size: 8, num_layers: 1}}",
        "training.learning_rate": 1e-3, "training.warmup_ratio": 0.0, "training.cpu": True,
        "training.log_every": 1, "training.eval_every": 100, "training.report_to": "[]",
        **{f"training.{k}": v for k, v in training.items()},
    }
    argv = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return load_config(None, argv)


def _student_state(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run_dir / "checkpoints").glob("checkpoint_*"))[-1]
                         / "model.safetensors"))


@pytest.mark.slow
def test_resume_from_mid_run_checkpoint_is_exact(tmp_path, tiny_wavlm_dir):
    # Uninterrupted: 6 steps (2 micro-batches each, so the sampler crosses epochs), with a
    # checkpoint after step 3.
    train(_config(tmp_path, tiny_wavlm_dir, "full", max_steps=6, save_every=3,
                  gradient_accumulation_steps=2))
    # The same run interrupted after step 3 and resumed from that checkpoint.
    mid = tmp_path / "full" / "checkpoints" / "checkpoint_0"
    train(_config(tmp_path, tiny_wavlm_dir, "part", max_steps=6, save_every=3,
                  gradient_accumulation_steps=2, resume_from=str(mid)))
    full, resumed = _student_state(tmp_path / "full"), _student_state(tmp_path / "part")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    part = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    train_full = {r["step"]: r["loss"] for r in lines if r["split"] == "train"}
    train_part = {r["step"]: r["loss"] for r in part if r["split"] == "train"}
    assert {s: v for s, v in train_full.items() if s > 3} == train_part  # after the resume


@pytest.mark.slow
def test_resume_from_a_checkpoint_at_an_epoch_end_after_a_partial_batch(tmp_path,
                                                                        tiny_wavlm_dir):
    """Batches of 4 from 9-10 training items: the third batch is partial and ends the epoch;
    a checkpoint right after it resumes into the next epoch exactly."""
    def config(out, **training):
        cfg = _config(tmp_path, tiny_wavlm_dir, out, max_steps=5, save_every=3, **training)
        cfg.data.batch_size = 4
        return cfg

    train(config("full"))
    mid = tmp_path / "full" / "checkpoints" / "checkpoint_0"
    progress = json.loads((mid / "training_state.json").read_text())["progress"]
    assert (progress["epoch"], progress["batches_in_epoch"]) == (0, 3)
    train(config("part", resume_from=str(mid)))
    full, resumed = _student_state(tmp_path / "full"), _student_state(tmp_path / "part")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    # it went on from step 3 (a rerun from scratch, same seed, would end with these weights too)
    logged = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["split"] == "train"] == [4, 5]


@pytest.mark.slow
def test_export_round_trip_gives_the_trained_students_hidden_states(tmp_path, tiny_wavlm_dir):
    student_dir = train(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=2, save_every=2))
    run = tmp_path / "run"
    assert {p.name for p in student_dir.iterdir()} >= {
        "config.json", "model.safetensors", "preprocessor_config.json"}
    assert {p.name for p in (run / "heads").iterdir()} == {
        "layerwise.safetensors", "layerwise.json", "enhancement.safetensors", "enhancement.json"}
    assert not any("head" in k for k in load_file(str(student_dir / "model.safetensors")))
    # The exported weights are exactly the checkpoint's student weights.
    state = _student_state(run)
    exported = load_file(str(student_dir / "model.safetensors"))
    for key, value in exported.items():
        assert torch.equal(value, state[f"student.model.{key}"]), key
    model = AutoModel.from_pretrained(student_dir)
    assert type(model).__name__ == "WavLMModel"
    AutoFeatureExtractor.from_pretrained(student_dir)
    # The reloaded student gives exactly the trained student's hidden states (the trained
    # student: the run's student config with the final checkpoint's weights).
    trained = AutoModel.from_config(AutoConfig.from_pretrained(run / "student_init"))
    trained.load_state_dict({k[len("student.model."):]: v for k, v in state.items()
                             if k.startswith("student.model.")})
    waves = torch.randn(2, 4000) * 0.1
    with torch.no_grad():
        plain = model.eval()(waves, output_hidden_states=True).hidden_states
        reference = trained.eval()(waves, output_hidden_states=True).hidden_states
        ours = Upstream.from_pretrained(student_dir)(waves, torch.tensor([4000, 4000]))
    for a, b, c in zip(plain, reference, ours.hidden_states, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-5)  # through our upstream contract
    # `robustdistill export` from the checkpoint writes the same weights again.
    again = export_from_checkpoint(run, out_dir=tmp_path / "again" / "student")
    for key, value in load_file(str(again / "model.safetensors")).items():
        assert torch.equal(value, exported[key]), key
    # and the same heads' rebuild recipes (their layouts were empty before the checkpoint
    # kept them)
    for name in ("layerwise", "enhancement"):
        mine = json.loads((tmp_path / "again" / "heads" / f"{name}.json").read_text())
        trainers = json.loads((run / "heads" / f"{name}.json").read_text())
        assert mine["head_config"] == trainers["head_config"] != {}
        assert mine["options"] == trainers["options"]
        # the trainer's export records the weights of its last step (the card's "step 2")
        assert trainers["student_weights"]["step"] == 2
    final = json.loads((run / "final_state.json").read_text())
    assert final["step"] == 2 and final["ranks_identical"]


def _layer_norm_teacher(tmp_path):
    """A tiny WavLM with a layer-norm CNN and an attention mask (as WavLM Large), whose student
    inherits both, so padding changes no model output (float rounding aside)."""
    from transformers import Wav2Vec2FeatureExtractor

    from robustdistill.teachers import PRESETS

    torch.manual_seed(0)
    teacher_dir = tmp_path / "layer_norm_teacher"
    config = AutoConfig.for_model("wavlm", **PRESETS["tiny"], feat_extract_norm="layer")
    AutoModel.from_config(config).save_pretrained(teacher_dir)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(
        teacher_dir)
    return teacher_dir


def _validation_argv(tmp_path, teacher_dir, out: str, batch_size: int = 2) -> list[str]:
    """A run whose 7 validation items (14 generated clips, half held out) have unequal
    lengths (0.55-1.0 s, so batches are padded), corrupted by noise and rooms."""
    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 3,
        "data.synthetic_items": 14, "data.synthetic_seconds": "[0.55, 1.0]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": batch_size,
        "data.max_length_s": 1.0, "data.min_length_s": 0.5, "data.validation_fraction": 0.5,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 3,
        "objectives": "{layerwise: {teacher_layers: [1, 2]}, enhancement: {hidden_size: 8, "
                      "num_layers: 1}}",
        "training.max_steps": 1, "training.eval_at_start": True, "training.eval_every": 100,
        "training.save_every": 0, "training.export_student": False, "training.cpu": True,
        "training.report_to": "[]",
    }
    return [item for key, value in overrides.items() for item in (f"--{key}", str(value))]


#: Validation means on other batchings of the same items: float64 sums and reductions, so
#: what differs is float32 rounding (the models on another batch shape, each objective's
#: float32 sum over a batch): about 1e-7 relative here, against 1e-3 and more when an item's
#: corruption or the items evaluated change with the batching.
_BATCHING_RTOL = 1e-5


def test_validation_losses_do_not_depend_on_the_batch_size(tmp_path):
    """7 items in batches of 1, 2 (a last batch of 1) and 3: each item has its own corruption
    (keyed by its index), so the means are the same up to float32 rounding."""
    from robustdistill.trainer import _Run

    teacher_dir = _layer_norm_teacher(tmp_path)
    means = {}
    for batch_size in (1, 2, 3):
        run = _Run(load_config(None, _validation_argv(tmp_path, teacher_dir, f"b{batch_size}",
                                                      batch_size)))
        assert len(run.valid_set) == 7
        means[batch_size] = run.validate()
    assert means[1].keys() == means[2].keys() == means[3].keys()
    assert {"loss", "enhancement/l1", "layerwise/layer2"} <= means[1].keys()
    for batch_size in (2, 3):
        for name, value in means[1].items():
            assert means[batch_size][name] == pytest.approx(value, rel=_BATCHING_RTOL), (
                batch_size, name)


@pytest.mark.slow
def test_validation_losses_do_not_depend_on_the_number_of_processes(tmp_path):
    """The step-0 validation of one process and of two (`accelerate launch --multi_gpu`, gloo)
    on 7 items: rank 0 evaluates 4, rank 1 three (none dropped), each with the corruption of
    its index, so every term agrees up to float32 rounding."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import free_port

    teacher_dir = _layer_norm_teacher(tmp_path)
    train(load_config(None, _validation_argv(tmp_path, teacher_dir, "one")))
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), str(repo / "distill.py"),
           *_validation_argv(tmp_path, teacher_dir, "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "7 validation utterances; 2 process(es)" in result.stderr

    def step0(out):
        records = [json.loads(x) for x in (tmp_path / out / "metrics.jsonl").read_text()
                   .splitlines()]
        first = records[0]
        assert (first["step"], first["split"]) == (0, "validation")
        return {k: v for k, v in first.items() if k not in ("step", "split", "lr")}

    one, two = step0("one"), step0("two")
    assert one.keys() == two.keys() and "loss" in one
    for name, value in one.items():
        assert two[name] == pytest.approx(value, rel=_BATCHING_RTOL), name


def test_loss_normalisation_does_not_depend_on_the_micro_batch_split(tmp_path):
    """One step of batch 4 equals one step of 2 x 2 accumulated micro-batches (same data).

    Crops of unequal lengths (0.55-1.0 s), so the mean over every real frame of the step and
    the mean of per-micro-batch means differ; a layer-norm CNN teacher with an attention mask
    (as WavLM Large), whose student inherits both, so padding changes no model output."""
    from robustdistill.trainer import _Run

    teacher_dir = _layer_norm_teacher(tmp_path)

    def first_step(batch_size, accumulation):
        cfg = _config(tmp_path, teacher_dir, f"norm{batch_size}", max_steps=1,
                      gradient_accumulation_steps=accumulation)
        cfg.data.batch_size = batch_size
        cfg.data.synthetic_seconds = [0.55, 1.0]
        cfg.data.synthetic_dir = str(tmp_path / "unequal_lengths")
        cfg.augmentation.enabled = False
        cfg.training.max_grad_norm = 0.0
        run = _Run(cfg)
        for module in run.model.modules():  # dropout off: modules and WavLM's attention
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = 0.0
        # Plain SGD with lr 1: the update is the gradient itself (Adam's first step is
        # sign-like and would amplify float noise in near-zero gradients).
        run.optimizer.optimizer = torch.optim.SGD(run.model.parameters(), lr=1.0)
        before = {k: v.detach().clone() for k, v in run.model.named_parameters()}
        batches = run._batches()
        values = run.train_step(batches)
        return values, {k: before[k] - v.detach() for k, v in run.model.named_parameters()}

    single, params_single = first_step(4, 1)
    split, params_split = first_step(2, 2)
    for name in single:
        if "/" in name or name == "loss":
            assert split[name] == pytest.approx(single[name], rel=1e-5), name
    for key in params_single:
        torch.testing.assert_close(params_split[key], params_single[key], rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_two_cpu_processes_end_with_identical_parameters(tmp_path, tiny_wavlm_dir):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): DDP keeps ranks equal."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import free_port

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--main_process_port", str(free_port()), str(repo / "distill.py"),
           "--config", str(repo / "configs" / "demo.yaml"), "--teacher", str(tiny_wavlm_dir),
           "--output_dir", str(out), "--data.synthetic_items", "16",
           "--data.synthetic_seconds", "[0.6, 1.2]", "--data.synthetic_dir", str(tmp_path / "c"),
           "--data.max_length_s", "1.0", "--data.min_length_s", "0.5",
           "--data.validation_fraction", "0.1875", "--data.batch_size", "2",
           "--augmentation.num_simulated_rooms", "2", "--augmentation.room_max_order", "3",
           "--objectives.layerwise.teacher_layers", "[1, 2]",
           "--objectives.enhancement.hidden_size", "8", "--training.max_steps", "3",
           "--training.eval_every", "3", "--training.save_every", "3",
           "--training.gradient_accumulation_steps", "2", "--training.report_to", "[]",
           "--teacher_cache.dir", str(tmp_path / "cache"), "--teacher_cache.context", "crop"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # 3 validation items on 2 processes: all are evaluated (rank 1 one, rank 0 two)
    assert "not evaluated" not in result.stderr
    final = json.loads((out / "final_state.json").read_text())
    assert final["step"] == 3 and len(final["parameter_sha256_per_rank"]) == 2
    assert final["ranks_identical"]
    # the lazily filled cache's lookups are every rank's, not rank 0's alone
    cache = final["teacher_cache"]
    assert len(cache["per_process"]) == 2 and all(p["misses"] > 0 for p in cache["per_process"])
    for key in ("hits", "hits_read_in_loader", "misses"):
        assert cache[key] == sum(p[key] for p in cache["per_process"])
    assert cache["entries"] == len(list((tmp_path / "cache").rglob("*.safetensors")))


def test_a_non_finite_gradient_skips_the_update_instead_of_poisoning_the_weights(
        tmp_path, tiny_wavlm_dir):
    from robustdistill.trainer import _Run

    run = _Run(_config(tmp_path, tiny_wavlm_dir, "nan", max_steps=2))
    before = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    head = run.model.objectives["layerwise"].heads[0].weight
    handle = head.register_hook(lambda grad: grad * float("nan"))  # a diverging step
    values = run.train_step(run._batches())
    handle.remove()
    assert not math.isfinite(values["grad_norm"])
    assert run.progress.skipped_updates == 1 and run.progress.step == 1
    assert run.progress.nonfinite_losses == 0  # the loss was finite: a gradient skip
    for key, value in run.model.named_parameters():
        assert torch.equal(value, before[key]), key
    assert math.isfinite(run.train_step(run._batches())["grad_norm"])  # and training goes on


@pytest.mark.slow
def test_streaming_dataset_trains_and_resumes_exactly(tmp_path, tiny_wavlm_dir):
    """A `datasets` stream (no torchcodec: bytes decoded with soundfile) resumes exactly."""
    from datasets import Audio, Dataset

    from robustdistill.synthetic import write_synthetic_corpus

    files = write_synthetic_corpus(tmp_path / "wavs", 10, (0.6, 1.2), seed=5)
    table = Dataset.from_dict({"audio": [str(f) for f in files]})
    table.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))

    def cfg(out, **training):
        config = _config(tmp_path, tiny_wavlm_dir, out, max_steps=7, save_every=3,
                         **training)
        config.data.synthetic_items = None
        config.data.train_dataset, config.data.streaming = str(tmp_path / "hf"), True
        config.data.validation_dir = str(tmp_path / "wavs")
        config.data.max_validation_items = 2
        return config

    train(cfg("full"))  # 7 batches of 2 from 10 items: the stream crosses an epoch
    train(cfg("part", resume_from=str(tmp_path / "full" / "checkpoints" / "checkpoint_0")))
    full, resumed = _student_state(tmp_path / "full"), _student_state(tmp_path / "part")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_shuffled_stream_resumes_exactly_with_and_without_workers(tmp_path, tiny_wavlm_dir,
                                                                    num_workers):
    """data.shuffle_buffer 8, and 2 DataLoader workers (11 one-row shards: 6 and 5 rows): a
    resume after step 3 (inside a turn of the workers) gives the uninterrupted run's losses
    and weights, across the epoch boundary. Before exact replay the buffer's examples were
    lost (and with workers the epoch restarted): the losses differed from step 4 on. A resume
    with another data.num_workers is refused."""
    from datasets import Audio, Dataset

    from robustdistill.config import ConfigError
    from robustdistill.synthetic import write_synthetic_corpus

    files = write_synthetic_corpus(tmp_path / "wavs", 11, (0.6, 1.2), seed=5)
    table = Dataset.from_dict({"audio": [str(f) for f in files]})
    table.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))

    def cfg(out, workers=num_workers, **training):
        config = _config(tmp_path, tiny_wavlm_dir, out, max_steps=8, save_every=3,
                         **training)
        config.data.synthetic_items = None
        config.data.train_dataset, config.data.streaming = str(tmp_path / "hf"), True
        config.data.shuffle_buffer, config.data.num_workers = 8, workers
        config.data.validation_dir = str(tmp_path / "wavs")
        config.data.max_validation_items = 2
        return config

    def losses(out):
        lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
        return {r["step"]: r["loss"] for r in map(json.loads, lines) if r["split"] == "train"}

    train(cfg("full"))  # 8 batches of 2 from 11 items: the stream crosses an epoch
    mid = tmp_path / "full" / "checkpoints" / "checkpoint_0"
    train(cfg("part", resume_from=str(mid)))
    full, resumed = _student_state(tmp_path / "full"), _student_state(tmp_path / "part")
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    assert {s: v for s, v in losses("full").items() if s > 3} == losses("part")
    for out in ("full", "part"):  # counted with workers too (before: "not counted")
        final = json.loads((tmp_path / out / "final_state.json").read_text())
        assert final["skipped_audio"]["streamed_items_skipped"] == 0
    with pytest.raises(ConfigError, match=f"saved with {num_workers} DataLoader worker"):
        train(cfg("other", workers=2 - num_workers, resume_from=str(mid)))


def test_an_empty_training_stream_is_an_error_not_a_hang(tmp_path, tiny_wavlm_dir):
    """A 4-example stream whose examples are all held out for validation yields no batch."""
    from datasets import Audio, Dataset

    from robustdistill.config import ConfigError
    from robustdistill.synthetic import write_synthetic_corpus
    from robustdistill.trainer import _Run

    files = write_synthetic_corpus(tmp_path / "wavs", 4, (0.6, 1.2), seed=5)
    table = Dataset.from_dict({"audio": [str(f) for f in files]})
    table.cast_column("audio", Audio(decode=False)).save_to_disk(str(tmp_path / "hf"))
    cfg = _config(tmp_path, tiny_wavlm_dir, "empty", max_steps=2)
    cfg.data.synthetic_items = None
    cfg.data.train_dataset, cfg.data.streaming = str(tmp_path / "hf"), True
    cfg.data.max_validation_items = 4
    run = _Run(cfg)
    with pytest.raises(ConfigError, match="no training batch"):
        run.train_step(run._batches())


def test_enhancement_head_on_cnn_features_trains(tmp_path, tiny_wavlm_dir):
    from robustdistill.trainer import _Run

    cfg = _config(tmp_path, tiny_wavlm_dir, "cnn", max_steps=1)
    cfg.objectives["enhancement"]["input"] = "cnn"
    cfg.data.max_length_s = 1.5  # whole 0.6-1.2 s items: crops of unequal length, padding
    run = _Run(cfg)
    assert run.model.needs_cnn
    lengths = []

    def recorded(batches):
        for batch in batches:
            lengths.append(batch["lengths"].clone())
            yield batch

    values = run.train_step(recorded(run._batches()))
    assert math.isfinite(values["enhancement/l1"]) and values["enhancement/l1"] > 0
    # the real (unpadded) seconds of the step's crops: samples / 16 kHz, padding not counted
    real = torch.cat(lengths)
    assert real.numel() == 2 and int(real.min()) < int(real.max()) <= 1.2 * 16000  # padded
    assert values["audio_seconds"] == int(real.sum()) / 16000  # exact (float64 sum)
    assert run.model.objectives["enhancement"].head.lstm.weight_ih_l0.shape[1] == 32  # conv_dim


def test_tf32_option_turns_on_tf32_matmuls_and_convolutions(tmp_path, tiny_wavlm_dir):
    """``training.tf32`` sets both backend flags (as transformers' ``tf32=True``); off leaves
    them as they were."""
    from robustdistill.trainer import _Run

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        _Run(_config(tmp_path, tiny_wavlm_dir, "off", max_steps=1))
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        _Run(_config(tmp_path, tiny_wavlm_dir, "on", max_steps=1, tf32="true"))
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_cudnn_benchmark_option_sets_the_backend_flag(tmp_path, tiny_wavlm_dir):
    """``training.cudnn_benchmark`` turns on cuDNN's algorithm search; off leaves it as it was."""
    from robustdistill.trainer import _Run

    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        _Run(_config(tmp_path, tiny_wavlm_dir, "off", max_steps=1))
        assert not torch.backends.cudnn.benchmark
        _Run(_config(tmp_path, tiny_wavlm_dir, "on", max_steps=1, cudnn_benchmark="true"))
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = saved


def test_a_student_init_checkpoint_trains_without_its_layerdrop_and_specaugment(
        tmp_path, tiny_wavlm_dir):
    """student_init loads a checkpoint as stored (LayerDrop 0.1, SpecAugment on): the run
    switches both off, as for a created student; with student.keep_train_randomness the kept
    LayerDrop is refused (a skipped layer is missing from hidden_states)."""
    from robustdistill.config import ConfigError
    from robustdistill.teachers import make_random_teacher
    from robustdistill.trainer import _Run

    init = make_random_teacher("wavlm", "tiny", tmp_path / "init", seed=4)
    cfg = _config(tmp_path, tiny_wavlm_dir, "init", max_steps=1)
    cfg.student_init = str(init)
    config = _Run(cfg).model.student.model.config
    assert (config.layerdrop, config.apply_spec_augment) == (0.0, False)
    cfg = _config(tmp_path, tiny_wavlm_dir, "keep", max_steps=1)
    cfg.student_init, cfg.student.keep_train_randomness = str(init), True
    with pytest.raises(ConfigError, match=r"keeps LayerDrop \(layerdrop 0.1"):
        _Run(cfg)


def test_resume_with_another_batch_or_seed_is_refused(tmp_path, tiny_wavlm_dir):
    from robustdistill.trainer import _Run

    train(_config(tmp_path, tiny_wavlm_dir, "first", max_steps=2, save_every=2))
    checkpoint = str(tmp_path / "first" / "checkpoints" / "checkpoint_0")
    same = _Run(_config(tmp_path, tiny_wavlm_dir, "same", max_steps=4))
    assert same.resume(checkpoint) and same.progress.step == 2
    other = _config(tmp_path, tiny_wavlm_dir, "other", max_steps=4)
    other.data.batch_size, other.seed = 3, 4
    with pytest.raises(ValueError, match=r"seed 3 -> 4; data.batch_size 2 -> 3"):
        _Run(other).resume(checkpoint)
    # A teacher cache turned on at the resume moves every later crop onto the teacher's
    # 64-sample frames (the same command otherwise): refused, not silently other crops.
    cached = _config(tmp_path, tiny_wavlm_dir, "cached", max_steps=4)
    cached.teacher_cache.dir = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"crop grid \(samples; set by teacher_cache\) 1 -> 64"):
        _Run(cached).resume(checkpoint)
    # A resume cannot shorten the run: its config (and card) would say fewer steps than it
    # trained. max_steps equal to the checkpoint's step (nothing left to train) is fine.
    with pytest.raises(ValueError, match=r"checkpoint_0 is at step 2, past training.max_steps "
                                         r"1: a resume cannot shorten a run"):
        _Run(_config(tmp_path, tiny_wavlm_dir, "short", max_steps=1)).resume(checkpoint)
    assert _Run(_config(tmp_path, tiny_wavlm_dir, "equal", max_steps=2)).resume(checkpoint)



def test_a_resume_keeps_the_runs_student_init_and_refuses_another_student(tmp_path,
                                                                          tiny_wavlm_dir):
    """Every start wrote ``student_init`` again: a resume with another student shape replaced
    it before failing on the checkpoint, so the run's checkpoints no longer fitted its
    ``student_init`` (export and card then refused the run)."""
    from robustdistill.config import ConfigError
    from robustdistill.trainer import _Run

    train(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=2, save_every=2))
    init = tmp_path / "run" / "student_init"
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in init.iterdir()}
    other = _config(tmp_path, tiny_wavlm_dir, "run", max_steps=4, resume_from="latest")
    other.student.num_layers = 1
    with pytest.raises(ConfigError, match=r"holds this run's student, and the settings given "
                                          r"make another \(num_hidden_layers 2 -> 1\)"):
        _Run(other)
    same = _Run(_config(tmp_path, tiny_wavlm_dir, "run", max_steps=4, resume_from="latest"))
    assert same.resume("latest") and same.progress.step == 2
    # neither start rewrote it (same bytes, same modification time)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in init.iterdir()} == before


def test_final_state_counts_the_whole_runs_teacher_cache_lookups_across_resumes(
        tmp_path, tiny_wavlm_dir):
    """A resumed run's ``final_state.json`` counted the teacher cache lookups since its last
    start only: a finished run launched again with ``--resume`` (nothing left to train)
    replaced the run's counts with zeros (soak test, real audio: 80 steps, then 0 hits)."""
    def cfg(out, max_steps, **training):
        c = _config(tmp_path, tiny_wavlm_dir, out, max_steps=max_steps, save_every=2,
                    eval_every=2, **training)  # both runs validate at steps 2 and 4
        c.teacher_cache.dir = str(tmp_path / f"cache_{out}")  # each run fills its own
        return c

    def lookups(out):
        final = json.loads((tmp_path / out / "final_state.json").read_text())
        return {k: final["teacher_cache"][k] for k in ("hits", "hits_read_in_loader", "misses")}

    train(cfg("straight", 4))
    whole = lookups("straight")
    assert whole["misses"] > 0 and whole["hits"] > 0
    train(cfg("resumed", 2))
    train(cfg("resumed", 4, resume_from="auto"))  # steps 3 and 4
    assert lookups("resumed") == whole
    train(cfg("resumed", 4, resume_from="auto"))  # launched again: nothing to train
    assert lookups("resumed") == whole


def test_streaming_ranks_resume_each_in_its_own_epoch(tmp_path):
    """Two streaming ranks with unequal shards (4 and 12 rows) are in different epochs when
    rank 0 checkpoints; the checkpoint holds rank 0's progress and each rank's stream. After
    the resume each rank's next epoch follows its own stream, as in the uninterrupted run."""
    import io
    import types

    import numpy as np
    import soundfile as sf
    from datasets import Audio, Dataset

    from robustdistill.data import StreamingAudioDataset, build_dataloader, load_hf_split
    from robustdistill.trainer import TrainingProgress, _Run

    def wav(i):
        buffer = io.BytesIO()
        sf.write(buffer, (i + np.arange(8000 + i) / 32000).astype(np.float32), 16000,
                 format="WAV", subtype="FLOAT")
        return buffer.getvalue()

    cells = [{"bytes": wav(i), "path": f"{i}.wav"} for i in range(16)]
    table = Dataset.from_dict({"audio": cells}).cast_column("audio", Audio(decode=False))
    for shard, (a, b) in enumerate([(0, 2), (2, 8), (8, 10), (10, 16)]):
        table.select(range(a, b)).to_parquet(str(tmp_path / f"train-{shard:05d}-of-00004.parquet"))
    stream = load_hf_split(str(tmp_path), streaming=True)

    def rank_run(rank):
        data = StreamingAudioDataset(stream, max_length_s=0.1, min_length_s=0.1, seed=0,
                                     rank=rank, world_size=2)
        run = types.SimpleNamespace(
            progress=TrainingProgress(), sampler=None, train_set=data, _stream_resumed=False,
            loader=build_dataloader(data, 2), note_skipped=lambda batch: None,
            cfg=types.SimpleNamespace(data=types.SimpleNamespace(batch_size=2)),
            accelerator=types.SimpleNamespace(process_index=rank))
        return run, _Run._batches(run)

    steps, cut = 8, 5
    reference = []
    for rank in range(2):
        _, batches = rank_run(rank)
        reference.append([next(batches)["waveforms"] for _ in range(steps)])
    runs = [rank_run(rank) for rank in range(2)]
    first = [[next(batches)["waveforms"] for _ in range(cut)] for _, batches in runs]
    progress = runs[0][0].progress.state_dict()  # the main process's only
    streams = [run.train_set.state_dict() for run, _ in runs]
    assert streams[0]["epoch"] != streams[1]["epoch"]
    for rank in range(2):
        run, batches = rank_run(rank)
        run.progress.load_state_dict(progress)
        run.train_set.load_state_dict(streams[rank])
        run._stream_resumed = True
        rest = [next(batches)["waveforms"] for _ in range(steps - cut)]
        for got, expected in zip(first[rank] + rest, reference[rank], strict=True):
            assert torch.equal(got, expected), rank
