"""Mutation-found gaps: student creation, pruning, the upstream contract, s3prl export, export
from a checkpoint. Each test pins one behaviour a plausible bug would change silently."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, HubertConfig, HubertModel

from robustdistill.pruning import select_cnn_channels
from robustdistill.student import (
    StudentConfig,
    create_student,
    save_student,
    student_feature_extractor,
)
from robustdistill.teachers import make_random_teacher
from robustdistill.upstream import Upstream, _normalize


def _three_layer_teacher(folder, **config_overrides):
    teacher_dir = make_random_teacher("wavlm", "tiny", folder)
    config = AutoConfig.from_pretrained(teacher_dir)
    config.num_hidden_layers = 3
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(teacher_dir)
    return teacher_dir


# ---- student.py ------------------------------------------------------------------------------


def test_default_student_takes_the_teachers_first_layers(tmp_path):
    """No init_layers: student layer i is teacher layer i (DistilHuBERT), not i + 1."""
    teacher = Upstream.from_pretrained(_three_layer_teacher(tmp_path / "t"))
    student = create_student(teacher, StudentConfig(num_layers=2))
    s, t = student.state_dict(), teacher.model.state_dict()
    for i in (0, 1):
        for part in ("attention.q_proj.weight", "feed_forward.output_dense.weight",
                     "final_layer_norm.weight"):
            key = f"encoder.layers.{i}.{part}"
            assert torch.equal(s[key], t[key]), key
    assert not torch.equal(s["encoder.layers.1.attention.q_proj.weight"],
                           t["encoder.layers.2.attention.q_proj.weight"])


def test_default_student_has_no_feature_masking_even_if_the_teacher_checkpoint_had(tmp_path):
    teacher_dir = _three_layer_teacher(tmp_path / "t", mask_feature_prob=0.2,
                                       mask_feature_length=2)
    teacher = Upstream.from_pretrained(teacher_dir)
    assert teacher.model.config.mask_feature_prob == 0.0  # a frozen teacher never masks
    assert create_student(teacher).config.mask_feature_prob == 0.0
    kept = create_student(teacher, StudentConfig(keep_train_randomness=True))
    assert kept.config.mask_feature_prob == 0.2


def test_projection_with_its_layer_norm_is_copied_when_copy_projection_is_off(tmp_path):
    """copy_projection=False only withholds a projection whose layer norm the student lacks;
    a student that has the layer norm takes both."""
    teacher = Upstream.from_pretrained(make_random_teacher("hubert", "tiny", tmp_path / "t"))
    assert teacher.config.feat_proj_layer_norm
    student = create_student(teacher, StudentConfig(num_layers=1, copy_projection=False,
                                                    projection_layer_norm=True))
    s, t = student.state_dict(), teacher.model.state_dict()
    for key in ("feature_projection.projection.weight", "feature_projection.projection.bias",
                "feature_projection.layer_norm.weight"):
        assert torch.equal(s[key], t[key]), key


def test_feature_extractor_keeps_the_teachers_normalize_and_mask_separately(tiny_hubert_dir):
    model = AutoModel.from_pretrained(tiny_hubert_dir)
    # (True, False) -> a mask too: test_a_normalising_students_batches_equal_the_trainers
    for (normalize, mask), want in (((True, False), (True, True)), ((False, True), (False, True)),
                                    ((False, False), (False, False))):
        teacher = Upstream(model, normalize=normalize, use_attention_mask=mask)
        fe = student_feature_extractor(teacher, model.config)
        assert (fe.do_normalize, fe.return_attention_mask) == want


# ---- pruning.py ------------------------------------------------------------------------------


def test_pruned_student_of_another_family_takes_the_projection_bias(tiny_wavlm_dir):
    teacher = Upstream.from_pretrained(tiny_wavlm_dir)
    student = create_student(teacher, StudentConfig(family="hubert", conv_dim=[8, 8, 8],
                                                    narrow_cnn_init="prune"))
    kept = select_cnn_channels(teacher.model.state_dict(), [8, 8, 8])
    s, t = student.state_dict(), teacher.model.state_dict()
    assert torch.equal(s["feature_projection.projection.weight"],
                       t["feature_projection.projection.weight"][:, kept[2]])
    assert torch.equal(s["feature_projection.projection.bias"],
                       t["feature_projection.projection.bias"])


# ---- upstream.py -----------------------------------------------------------------------------


def test_normalize_equals_the_feature_extractor_on_offset_audio():
    """Zero mean, unit variance over the real samples, as Wav2Vec2FeatureExtractor (the
    variance is taken around the mean: a DC offset must not inflate it)."""
    from transformers import Wav2Vec2FeatureExtractor

    g = torch.Generator().manual_seed(0)
    a = 0.1 * torch.randn(1000, generator=g) + 0.5
    b = 0.3 * torch.randn(600, generator=g) - 2.0
    waves = torch.zeros(2, 1000)
    waves[0], waves[1, :600] = a, b
    mask = torch.arange(1000)[None] < torch.tensor([[1000], [600]])
    ours = _normalize(waves, mask)
    fe = Wav2Vec2FeatureExtractor(do_normalize=True)
    for row, wave in enumerate((a, b)):
        ref = torch.tensor(fe(wave.numpy(), sampling_rate=16000)["input_values"][0])
        torch.testing.assert_close(ours[row, : wave.numel()], ref, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(ours[1, 600:]) == 0


def test_garbage_after_the_lengths_is_ignored_without_normalisation(tiny_hubert_dir):
    """A group-norm upstream (no normalisation, no attention mask) zeroes the padding itself:
    the caller's padding values do not change the output."""
    up = Upstream.from_pretrained(tiny_hubert_dir)
    assert not up.normalize and not up.use_attention_mask
    g = torch.Generator().manual_seed(1)
    waves = torch.randn(2, 4000, generator=g)
    lengths = torch.tensor([4000, 2500])
    clean = waves.clone()
    clean[1, 2500:] = 0
    dirty = waves.clone()
    dirty[1, 2500:] = 5.0
    a, b = up(clean, lengths), up(dirty, lengths)
    for x, y in zip(a.hidden_states, b.hidden_states, strict=True):
        assert torch.equal(x, y)


def test_extract_features_carry_the_scaled_gradient_into_the_cnn(tiny_hubert_dir):
    """A loss on extract_features alone (the enhancement head on CNN features) reaches the
    CNN, scaled by feature_grad_mult."""
    grads = {}
    for mult in (1.0, 0.5):
        up = Upstream.from_pretrained(tiny_hubert_dir, frozen=False)
        up.feature_grad_mult = mult
        wave = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
        out = up(wave, torch.tensor([4000, 3000]), return_extract_features=True)
        out.extract_features.pow(2).mean().backward()
        grads[mult] = up.model.feature_extractor.conv_layers[0].conv.weight.grad.clone()
    assert grads[1.0].abs().sum() > 0
    torch.testing.assert_close(grads[0.5], 0.5 * grads[1.0], rtol=1e-4, atol=1e-9)


def test_whisper_keeps_ceil_frames_of_a_length_that_is_not_a_multiple_of_320():
    from conftest import WHISPER_DIR

    if not WHISPER_DIR.is_dir():
        pytest.skip("../shared/models/whisper-tiny.en is absent")
    up = Upstream.from_pretrained(WHISPER_DIR)
    n = 8000 + 100  # 25.3 frames -> 26 real frames
    out = up(0.1 * torch.randn(1, n, generator=torch.Generator().manual_seed(0)),
             torch.tensor([n]))
    assert out.frame_lengths.tolist() == [26]
    last = out.hidden_states[-1][0, :26]
    assert bool((last.abs().sum(-1) > 0).all())  # every real frame holds the encoder's output


# ---- s3prl_export.py -------------------------------------------------------------------------


def _tiny_hubert(**overrides) -> HubertModel:
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, conv_dim=(24, 24, 24), conv_kernel=(8, 8, 8),
                  conv_stride=(4, 4, 4), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, feat_proj_layer_norm=False)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return HubertModel(HubertConfig(**kwargs)).eval()


def test_s3prl_config_maps_stable_layer_norm_and_the_default_head(tmp_path):
    from robustdistill.s3prl_export import export_s3prl_distiller

    model = _tiny_hubert(feat_extract_norm="layer", do_stable_layer_norm=True)
    ckpt = export_s3prl_distiller(Upstream(model), tmp_path / "s.ckpt",
                                  allow_normalization_mismatch=True)
    cfg = torch.load(ckpt, weights_only=False)["Config"]["distiller"]
    assert cfg["layer_norm_first"] is True and cfg["extractor_mode"] == "layer_norm"
    assert (cfg["n_tasks"], cfg["final_dim"], cfg["pred_layer_id"]) == (1, 32, [2])


def test_s3prl_stable_layer_norm_student_gives_our_first_layer(tmp_path):
    expert = pytest.importorskip("s3prl.upstream.distiller.expert")
    from robustdistill.s3prl_export import export_s3prl_distiller

    model = _tiny_hubert(feat_extract_norm="layer", do_stable_layer_norm=True)
    with torch.no_grad():  # non-trivial norms so a wrong layer-norm order shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    ckpt = export_s3prl_distiller(Upstream(model), tmp_path / "s.ckpt",
                                  allow_normalization_mismatch=True)
    wavs = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    ours = Upstream(model)(wavs, torch.tensor([4000, 4000])).hidden_states
    with torch.no_grad():
        theirs = expert.UpstreamExpert(str(ckpt)).eval()(list(wavs))["hidden_states"]
    # layer 1 of 2: before the final encoder layer norm our last state has (module docstring)
    torch.testing.assert_close(theirs[1], ours[1], atol=1e-5, rtol=1e-5)


def test_s3prl_refuses_a_raw_layer_norm_hubert_and_other_eps(tmp_path):
    from robustdistill.s3prl_export import export_s3prl_distiller

    with pytest.raises(ValueError, match="normalization_mismatch"):
        export_s3prl_distiller(_tiny_hubert(feat_extract_norm="layer"), tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="layer_norm_eps"):
        export_s3prl_distiller(_tiny_hubert(layer_norm_eps=1e-6), tmp_path / "b.ckpt")
    assert not any(tmp_path.iterdir())


# ---- export.py -------------------------------------------------------------------------------


def _fake_run(tmp_path, tiny_wavlm_dir, drop_key: str | None = None):
    teacher = Upstream.from_pretrained(tiny_wavlm_dir)
    student = create_student(teacher, StudentConfig(num_layers=1))
    run = tmp_path / "run"
    save_student(student, student_feature_extractor(teacher, student.config),
                 run / "student_init")
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"objectives": {"layerwise": {"teacher_layers": [1, 2]}}}))
    torch.manual_seed(3)
    trained = {f"student.model.{k}": v + torch.randn_like(v) if v.is_floating_point() else v
               for k, v in student.state_dict().items()}
    if drop_key:
        del trained[f"student.model.{drop_key}"]
    head = {"objectives.layerwise.heads.0.weight": torch.randn(4, 3),
            "objectives.layerwise.heads.0.bias": torch.randn(4)}
    ckpt = run / "checkpoints" / "checkpoint_2"
    ckpt.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in {**trained, **head}.items()},
              str(ckpt / "model.safetensors"))
    return run, trained, head


def test_export_from_checkpoint_writes_the_checkpoints_weights_and_heads(tmp_path,
                                                                         tiny_wavlm_dir):
    from robustdistill.export import export_from_checkpoint

    run, trained, head = _fake_run(tmp_path, tiny_wavlm_dir)
    out = export_from_checkpoint(run, out_dir=tmp_path / "out" / "student")
    exported = load_file(str(out / "model.safetensors"))
    assert set(exported) == {k[len("student.model."):] for k in trained}
    for key, value in exported.items():
        assert torch.equal(value, trained[f"student.model.{key}"]), key
    heads = load_file(str(tmp_path / "out" / "heads" / "layerwise.safetensors"))
    assert set(heads) == {"heads.0.weight", "heads.0.bias"}
    assert torch.equal(heads["heads.0.weight"], head["objectives.layerwise.heads.0.weight"])
    recipe = json.loads((tmp_path / "out" / "heads" / "layerwise.json").read_text())
    assert recipe["options"] == {"teacher_layers": [1, 2]}


def test_export_of_a_chosen_checkpoint_leaves_the_runs_own_student_alone(tmp_path,
                                                                        tiny_wavlm_dir):
    """Without ``out_dir``: the newest checkpoint goes to ``RUN/student``, a checkpoint given
    by name to ``RUN/exports/<name>/student`` (heads beside it), never over the final one."""
    from robustdistill.export import export_from_checkpoint

    run, trained, _ = _fake_run(tmp_path, tiny_wavlm_dir)
    (run / "student").mkdir()
    (run / "student" / "README.md").write_text("the final student's card")
    chosen = export_from_checkpoint(run, run / "checkpoints" / "checkpoint_2")
    assert chosen == run / "exports" / "checkpoint_2" / "student"
    assert (run / "exports" / "checkpoint_2" / "heads" / "layerwise.safetensors").is_file()
    assert sorted(p.name for p in (run / "student").iterdir()) == ["README.md"]
    assert not (run / "heads").exists()
    assert export_from_checkpoint(run) == run / "student"  # the newest: the run's own


def test_export_of_the_checkpoint_in_the_current_folder_is_named_after_it(
        tmp_path, tiny_wavlm_dir, monkeypatch):
    from robustdistill.export import export_from_checkpoint

    run, _, _ = _fake_run(tmp_path, tiny_wavlm_dir)
    monkeypatch.chdir(run / "checkpoints" / "checkpoint_2")
    out = export_from_checkpoint(run, ".")
    assert out == run / "exports" / "checkpoint_2" / "student"


def test_export_from_checkpoint_refuses_a_checkpoint_missing_student_weights(tmp_path,
                                                                             tiny_wavlm_dir):
    from robustdistill.export import export_from_checkpoint

    run, _, _ = _fake_run(tmp_path, tiny_wavlm_dir,
                          drop_key="encoder.layers.0.attention.q_proj.weight")
    with pytest.raises(RuntimeError, match="missing"):
        export_from_checkpoint(run, out_dir=tmp_path / "out" / "student")


def test_a_whisper_teachers_data2vec_student_takes_the_layer_norm_convention():
    """data2vec-audio's CNN is always layer-normed (its config has no feat_extract_norm): a
    student of a Whisper teacher normalises its input and takes an attention mask, as
    make-teacher's data2vec-audio and the transformers checkpoints do; a group-norm HuBERT
    student takes neither."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    whisper = SimpleNamespace(is_whisper=True)
    data2vec = AutoConfig.for_model("data2vec-audio")
    assert not hasattr(data2vec, "feat_extract_norm")
    fe = student_feature_extractor(whisper, data2vec)
    assert (fe.do_normalize, fe.return_attention_mask) == (True, True)
    fe = student_feature_extractor(whisper, AutoConfig.for_model("hubert"))
    assert (fe.do_normalize, fe.return_attention_mask) == (False, False)


def test_a_normalising_students_batches_equal_the_trainers(tiny_hubert_dir):
    """A teacher that normalises its input without an attention mask (facebook/wav2vec2-base's
    preprocessor): the student's saved feature extractor must give, for a padded batch, the
    input the trainer's Upstream gives the student (zero mean and unit variance over each
    utterance's real samples, zeros after them). Without a mask, Wav2Vec2FeatureExtractor
    normalises over the padded length, padding included."""
    model = AutoModel.from_pretrained(tiny_hubert_dir)
    teacher = Upstream(model, normalize=True, use_attention_mask=False)
    torch.manual_seed(0)
    student = create_student(teacher).eval()
    fe = student_feature_extractor(teacher, student.config)
    assert fe.do_normalize
    trainer_view = Upstream(student, normalize=fe.do_normalize,
                            use_attention_mask=fe.return_attention_mask, frozen=False).eval()
    g = torch.Generator().manual_seed(0)
    a, b = 0.1 * torch.randn(4000, generator=g) + 0.2, 0.3 * torch.randn(2500, generator=g)
    waves = torch.zeros(2, 4000)
    waves[0], waves[1, :2500] = a, b
    inputs = fe([a.numpy(), b.numpy()], sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = trainer_view(waves, torch.tensor([4000, 2500])).hidden_states
        theirs = student(**inputs, output_hidden_states=True).hidden_states
    for o, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(t, o, atol=1e-5, rtol=1e-5)


def test_a_resumed_run_keeps_the_input_convention_it_was_trained_with(tmp_path, tiny_wavlm_dir,
                                                                      caplog):
    """A run created before the mask rule (a teacher that normalises without a mask, e.g.
    wav2vec2-base) resumed under it was switched to an attention mask for its later steps
    (and its student_init/ rewritten): the padded utterances' features change, silently.
    Simulated here by flipping the saved convention of a run's first start."""
    from conftest import tiny_run_config

    from robustdistill.trainer import _Run, train

    run = tmp_path / "run"
    train(tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
        "training.max_steps": 2, "training.save_every": 2}))
    saved = run / "student_init" / "preprocessor_config.json"
    first = json.loads(saved.read_text())
    old = not first["return_attention_mask"]  # what an older version chose
    saved.write_text(json.dumps({**first, "return_attention_mask": old}))
    with caplog.at_level("WARNING", logger="robustdistill.trainer"):
        resumed = _Run(tiny_run_config(tmp_path, tiny_wavlm_dir, "run", **{
            "training.max_steps": 3, "training.resume_from": "latest"}))
    assert resumed.feature_extractor.return_attention_mask is old
    assert json.loads(saved.read_text())["return_attention_mask"] is old
    assert "resuming with the run's own student input convention" in caplog.text
    # a fresh run, or one resuming another run's checkpoint, takes today's rule
    fresh = _Run(tiny_run_config(tmp_path, tiny_wavlm_dir, "fresh", **{
        "training.max_steps": 3, "training.resume_from": "auto"}))
    assert fresh.feature_extractor.return_attention_mask is first["return_attention_mask"]
