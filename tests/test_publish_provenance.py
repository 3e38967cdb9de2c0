"""Mutation-testing additions for robustdistill.publish.provenance: which trainer wrote a run
(run_recipe's documented keys), what the card says about a run's data and corruption, and the
frame rate of a student."""

from __future__ import annotations

import pytest
import yaml

from robustdistill.publish.provenance import (
    config_section,
    model_facts,
    run_recipe,
    summarise_run,
)


@pytest.mark.parametrize(("config", "recipe"), [
    ({"augmentation": {"p_noise": 0.5}}, "ssl"),  # augmentation alone marks a distill run
    ({"objectives": {"layerwise": {}}, "loss": {"method": "imlkd"}}, "ssl"),
    ({"training": {"epochs": 3}}, "speaker"),  # training.epochs alone marks train-speaker
    ({"ig": {"n_steps": 2}}, "speaker"),
    ({"loss": {"method": "imlkd"}, "data": {"snr_range": [0, 5]}}, "speaker"),
    ({"data": {"snr_range": [0, 5]}}, "se"),
    ({"data": {"speech_dir": "s"}}, "se"),
    ({"loss": {"teacher": "nsnet2"}}, "se"),
    ({"loss": "not a section", "data": ["nor", "this"]}, "ssl"),  # non-mappings are ignored
    ({"training": "x"}, "ssl"),
])
def test_run_recipe_reads_the_keys_each_trainer_writes(config, recipe):
    assert run_recipe(config) == recipe
    marked = bool({"objectives", "augmentation"} & set(config))
    # the default applies only to a config no trainer's keys mark
    assert run_recipe(config, default="se") == ("se" if recipe == "ssl" and not marked
                                                 else recipe)


def test_config_section_is_a_mapping_or_empty():
    assert config_section({"a": {"x": 1}}, "a") == {"x": 1}
    assert config_section({"a": [1, 2]}, "a") == {}
    assert config_section({"a": "text"}, "a") == {}
    assert config_section({}, "a") == {}


def _run(tmp_path, config) -> str:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return summarise_run(tmp_path)


def test_disabled_augmentation_is_described_as_clean_audio(tmp_path):
    summary = _run(tmp_path, {"teacher": "t", "objectives": {"layerwise": {}},
                              "augmentation": {"enabled": False, "noise_dir": "noise",
                                               "snr_min": 0.0, "snr_max": 20.0}})
    assert summary.corruption == "none (the student saw clean audio)"


def test_validation_split_and_a_fixed_crop_length_are_described(tmp_path):
    summary = _run(tmp_path, {"teacher": "t", "objectives": {"layerwise": {}},
                              "data": {"train_dataset": "corpus", "train_split": "train",
                                       "validation_split": "dev", "validation_fraction": 0.05,
                                       "min_length_s": 2.0, "max_length_s": 2.0,
                                       "batch_size": 4}})
    assert summary.validation_data == "split `dev` of the training dataset"
    assert summary.train_data == ("the `corpus` dataset, split `train`; random crops of 2 s, "
                                  "batch 4")


def test_se_run_with_reverb_probability_zero_says_no_reverberation(tmp_path):
    """A train-se run with a room folder but reverb_prob 0: no room touched the input, and the
    target is the clean speech whatever ``target`` says."""
    summary = _run(tmp_path, {"loss": {"teacher": None},
                              "data": {"speech_dir": "speech", "noise_dir": "noise",
                                       "rir_dir": "rooms", "reverb_prob": 0.0,
                                       "target": "dry", "snr_range": [-5, 5],
                                       "crop_seconds": 1.0}})
    assert summary.recipe == "se"
    assert summary.corruption == ("noisy mixtures: noise added to every item at an SNR drawn "
                                  "uniformly from -5 to 5 dB, no reverberation; the training "
                                  "target is the clean speech")


def test_model_facts_frame_rate_is_16k_over_the_product_of_the_strides(tiny_wavlm_dir):
    facts = model_facts(tiny_wavlm_dir)  # conv strides (4, 4, 4)
    assert facts.frame_rate_hz == 16000 / 64
    assert facts.num_layers == 2 and facts.hidden_size == 32


def test_relative_local_teacher_is_found_from_another_working_directory(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    """A run made in WORK with ``teacher: runs/teacher`` and ``output_dir: runs/demo``, read
    from elsewhere (``card --run ../runs/demo``): the teacher is still the local folder, not a
    hub id the card would name as ``base_model``."""
    import shutil

    from robustdistill.publish.card_training import teacher_text

    work = tmp_path / "work"
    shutil.copytree(tiny_wavlm_dir, work / "runs" / "teacher")
    run_dir = work / "runs" / "demo"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"teacher": "runs/teacher", "output_dir": "runs/demo",
         "objectives": {"layerwise": {}}}))
    elsewhere = work / "sub"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = summarise_run("../runs/demo")
    assert summary.teacher == "runs/teacher"  # as configured, no local absolute path
    assert summary.teacher_dir is not None and summary.teacher_facts is not None
    assert teacher_text(summary, None).startswith("the local teacher folder `runs/teacher`")
    # moved away from where it was made: no local folder is found, as before
    other = tmp_path / "moved"
    shutil.copytree(run_dir, other)
    assert summarise_run(other).teacher_dir is None


def _run_made_in(work, teacher_src):
    """A run made in ``work`` with ``teacher: runs/teacher`` and ``output_dir: runs/demo``."""
    import shutil

    shutil.copytree(teacher_src, work / "runs" / "teacher")
    run_dir = work / "runs" / "demo"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"teacher": "runs/teacher", "output_dir": "runs/demo",
         "objectives": {"layerwise": {}}}))
    return run_dir


def test_relative_local_teacher_is_found_through_a_symlinked_runs_folder(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    """``runs/`` a link to a bigger disk (``runs -> /disk/experiments``): the run folder's
    resolved path does not end with ``runs/demo``, its path as named does."""
    disk = tmp_path / "disk" / "experiments"
    disk.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "runs").symlink_to(disk)
    _run_made_in(work, tiny_wavlm_dir)
    (work / "sub").mkdir()
    monkeypatch.chdir(work / "sub")
    summary = summarise_run("../runs/demo")
    assert summary.teacher_dir is not None and summary.teacher_facts is not None


def test_relative_local_teacher_is_the_one_of_the_runs_start_folder(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    """Card run from another checkout that has its own ``runs/teacher``: the run's teacher is
    the one next to the run, not the current folder's namesake."""
    a = _run_made_in(tmp_path / "a", tiny_wavlm_dir)
    _run_made_in(tmp_path / "b", tiny_wavlm_dir)
    monkeypatch.chdir(tmp_path / "b")
    summary = summarise_run(a)
    assert summary.teacher_dir.resolve() == (tmp_path / "a" / "runs" / "teacher").resolve()
