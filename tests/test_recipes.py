"""Recipe fidelity (issue 6): each point of the DistilHuBERT / RobustDistiller reference code.

References: s3prl ``pretrain/distiller`` + ``upstream/distiller`` (DistilHuBERT, arXiv
2110.01900) and github.com/Hguimaraes/robustdistiller ``pretrain/robust_distiller``
(RobustDistiller, arXiv 2302.09437). Every test here fails on the code before the fix.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from conftest import REPO, WHISPER_DIR

from robustdistill.augment import (
    AugmentationConfig,
    Corruptor,
    NoiseBank,
    RirBank,
    mix_at_snr,
    reverberate,
)
from robustdistill.config import check_model_path, load_config
from robustdistill.objectives import DistillationInputs, LayerwisePrediction, MaskEnhancement
from robustdistill.upstream import Upstream, UpstreamOutput, interpolate_frames, lengths_to_mask

SR = 16_000
RECIPES = ("configs/distilhubert.yaml", "configs/robust_wavlm_base_plus.yaml")


def _tiny_config(tmp_path, teacher_dir, out: str, extra: dict | None = None):
    overrides = {
        "teacher": str(teacher_dir), "output_dir": str(tmp_path / out), "seed": 3,
        "data.synthetic_items": 8, "data.synthetic_seconds": "[0.6, 1.0]",
        "data.synthetic_dir": str(tmp_path / "corpus"), "data.batch_size": 2,
        "data.max_length_s": 1.0, "data.min_length_s": 0.5, "data.validation_fraction": 0.25,
        "augmentation.num_simulated_rooms": 2, "augmentation.room_max_order": 3,
        "objectives": "{layerwise: {teacher_layers: [1, 2], head: mlp, reduction: mean}, "
                      "enhancement: {input: cnn, hidden_size: 8, num_layers: 2, dropout: 0.1}}",
        "training.learning_rate": 1e-3, "training.warmup_ratio": 0.0, "training.cpu": True,
        "training.log_every": 1, "training.eval_every": 100, "training.report_to": "[]",
        "training.max_steps": 1, "training.export_student": False,
        **(extra or {}),
    }
    argv = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    return load_config(None, argv)


# ---- 1. curriculum + step-0 validation --------------------------------------------------------


def test_validation_with_a_curriculum_uses_the_target_distribution(tmp_path, tiny_wavlm_dir):
    from robustdistill.trainer import _Run

    cfg = _tiny_config(tmp_path, tiny_wavlm_dir, "curriculum",
                       {"augmentation.curriculum_steps": 50})
    run = _Run(cfg)
    assert run.corruptor.target_step == 50
    c = cfg.augmentation
    assert run.corruptor.probabilities(run.corruptor.target_step) == pytest.approx(
        (c.p_noise, c.p_reverb, c.p_noise_reverb, c.p_none))
    assert run.corruptor.snr_range(run.corruptor.target_step) == (c.snr_min, c.snr_max)
    values = run.validate()  # crashed before: validation passed step=None to the curriculum
    assert math.isfinite(values["loss"])


# ---- 2. layer losses averaged over targets ----------------------------------------------------


def _two_layer_inputs() -> DistillationInputs:
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    layer1 = torch.tensor([[[1.0, 0.0], [0.0, -1.0]]])
    layer2 = torch.tensor([[[3.0, 0.0], [0.0, 3.0]]])
    frames = torch.tensor([2])
    mask = lengths_to_mask(frames, 2)
    teacher = UpstreamOutput((layer1, layer1, layer2), frames, mask)
    out = UpstreamOutput((student, student), frames, mask)
    wave = torch.zeros(1, 800)
    return DistillationInputs(teacher, out, mask, wave, wave, torch.tensor([800]))


@pytest.mark.parametrize("reduction, factor", [("mean", 0.5), ("sum", 1.0)])
def test_layer_losses_are_averaged_over_targets_like_the_references(reduction, factor):
    objective = LayerwisePrediction(teacher_hidden_size=2, teacher_num_layers=2,
                                    student_hidden_size=2, teacher_layers=[1, 2],
                                    lambda_cos=1.0, reduction=reduction, head="linear")
    with torch.no_grad():
        for head in objective.heads:
            head.weight.copy_(torch.eye(2))
            head.bias.zero_()
    terms = objective(_two_layer_inputs())
    # Layer 1: frame 0 |P-H| = (0, 0), cos 1; frame 1 |P-H| = (0, 2) -> 1, cos -1.
    # Layer 2: frame 0 |P-H| = (2, 0) -> 1, cos 1; frame 1 (0, 2) -> 1, cos 1.
    l1 = {1: (0 + 1) / 2, 2: (1 + 1) / 2}
    cos = {1: (math.log1p(math.exp(-1)) + math.log1p(math.e)) / 2,
           2: math.log1p(math.exp(-1))}
    # The reference: rec_loss.mean() over B x N x T x D + sim_loss.mean() over B x N x T.
    reference = (l1[1] + l1[2]) / 2 + (cos[1] + cos[2]) / 2
    loss = sum(t.weight * t.total for t in terms.values()) / 2  # 2 real frames
    assert loss.item() == pytest.approx(factor * 2 * reference, abs=1e-6)
    for layer in (1, 2):  # logged terms stay per-layer means, unweighted
        assert (terms[f"layer{layer}_l1"].total / 2).item() == pytest.approx(l1[layer], abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        LayerwisePrediction(teacher_hidden_size=2, teacher_num_layers=2, student_hidden_size=2,
                            reduction="average")


# ---- 3. enhancement head on CNN features with dropout -----------------------------------------


def test_recipe_enhancement_head_is_the_reference_reconstruction_head():
    cfg = load_config(REPO / "configs/robust_wavlm_base_plus.yaml")
    options = cfg.objectives["enhancement"]
    objective = MaskEnhancement(teacher_hidden_size=768, teacher_num_layers=12,
                                student_hidden_size=768, student_conv_dim=512, **options)
    head = objective.head
    assert objective.input == "cnn" and objective.needs_extract_features
    assert head.lstm.input_size == 512 and head.lstm.hidden_size == 256  # input_dim: 512
    assert head.lstm.num_layers == 3 and head.lstm.bidirectional and head.lstm.dropout == 0.1
    assert isinstance(head.dropout, torch.nn.Dropout) and head.dropout.p == 0.1
    assert head.proj.in_features == 512 and head.proj.out_features == 257
    # Dropout acts in training only.
    features = torch.randn(1, 5, 512)
    args = (features, torch.tensor([5]), 10, torch.tensor([10]))
    head.eval()
    assert torch.equal(head(*args), head(*args))
    head.train()
    torch.manual_seed(0)
    assert not torch.equal(head(*args), head(*args))
    with pytest.raises(ValueError, match="dropout"):
        MaskEnhancement(teacher_hidden_size=4, teacher_num_layers=1, student_hidden_size=4,
                        dropout=1.0)


# ---- 4. DistilHuBERT's MLP prediction heads ---------------------------------------------------


def test_mlp_heads_compute_distilhuberts_expand_last_output_layer():
    torch.manual_seed(0)
    d_s, d_t, n = 4, 3, 2
    objective = LayerwisePrediction(teacher_hidden_size=d_t, teacher_num_layers=2,
                                    student_hidden_size=d_s, teacher_layers=[1, 2], head="mlp")
    assert objective.expand.in_features == d_s and objective.expand.out_features == n * d_s
    x = torch.randn(2, 5, d_s)
    # s3prl: Sequential(Linear(D, D*N), GELU, SplitLinear(D, N, D_t)); SplitLinear computes
    # einsum("...klm,kmn->...kln") of chunk k with weight[k] (D x D_t) plus bias[k].
    hidden = F.gelu(x @ objective.expand.weight.T + objective.expand.bias)
    weight = torch.stack([h.weight.T for h in objective.heads])  # N x D x D_t
    bias = torch.stack([h.bias for h in objective.heads])  # N x D_t
    split = torch.einsum("btkm,kmn->btkn", hidden.reshape(2, 5, n, d_s), weight) + bias
    for k, prediction in enumerate(objective.predict(x)):
        torch.testing.assert_close(prediction, split[:, :, k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="head"):
        LayerwisePrediction(teacher_hidden_size=2, teacher_num_layers=1, student_hidden_size=2,
                            head="split")


# ---- 5. feature_grad_mult -------------------------------------------------------------------


def _cnn_grads(model_dir, mult: float, use_features: bool) -> torch.Tensor:
    torch.manual_seed(0)
    up = Upstream.from_pretrained(model_dir, frozen=False)
    up.feature_grad_mult = mult
    wave = torch.randn(2, 4000)
    out = up(wave, torch.tensor([4000, 3000]), return_extract_features=use_features)
    loss = out.hidden_states[-1].pow(2).mean()
    if use_features:
        loss = loss + out.extract_features.pow(2).mean()
    loss.backward()
    conv = up.model.feature_extractor.conv_layers[0].conv.weight
    return torch.zeros_like(conv) if conv.grad is None else conv.grad.clone()


@pytest.mark.parametrize("use_features", [False, True])
def test_feature_grad_mult_scales_the_gradient_into_the_cnn(tiny_hubert_dir, use_features):
    full = _cnn_grads(tiny_hubert_dir, 1.0, use_features)
    tenth = _cnn_grads(tiny_hubert_dir, 0.1, use_features)
    assert full.abs().sum() > 0
    torch.testing.assert_close(tenth, 0.1 * full, rtol=1e-4, atol=1e-9)
    assert torch.count_nonzero(_cnn_grads(tiny_hubert_dir, 0.0, use_features)) == 0


def test_feature_grad_mult_zero_runs_the_cnn_without_a_graph(tiny_hubert_dir):
    """0 freezes the CNN as the reference code does (under no_grad: no saved activations);
    the layers above it still train, and grad mode is restored after the call."""
    up = Upstream.from_pretrained(tiny_hubert_dir, frozen=False)
    up.feature_grad_mult = 0.0
    inside = []  # does the first conv layer's output join a graph?
    up.model.feature_extractor.conv_layers[0].register_forward_hook(
        lambda _m, _i, output: inside.append(output.requires_grad))
    out = up(torch.randn(2, 4000), torch.tensor([4000, 3000]), return_extract_features=True)
    assert inside == [False]
    assert out.extract_features.grad_fn is None and not out.extract_features.requires_grad
    out.hidden_states[-1].pow(2).mean().backward()
    assert up.model.feature_extractor.conv_layers[0].conv.weight.grad is None
    assert up.model.encoder.layers[0].attention.q_proj.weight.grad is not None
    assert torch.is_grad_enabled()


def test_students_get_the_recipes_feature_grad_mult(tmp_path, tiny_wavlm_dir):
    from robustdistill.trainer import _Run

    run = _Run(_tiny_config(tmp_path, tiny_wavlm_dir, "fgm"))
    assert run.cfg.student.feature_grad_mult == 0.1  # the default, as both references
    assert run.accelerator.unwrap_model(run.model).student.feature_grad_mult == 0.1
    for path in RECIPES:
        assert load_config(REPO / path).student.feature_grad_mult == 0.1


# ---- 7. optimiser, clipping, precision ---------------------------------------------------------


def test_recipes_use_the_reference_optimiser_and_clipping():
    clip = {"configs/distilhubert.yaml": 5.0, "configs/robust_wavlm_base_plus.yaml": 15.0}
    for path in RECIPES:
        t = load_config(REPO / path).training
        assert t.max_grad_norm == clip[path]
        assert t.adam_eps == 1e-6 and t.adam_betas == [0.9, 0.98] and t.learning_rate == 2e-4
        assert t.weight_decay == 0.01 and t.weight_decay_params == "non_bias"
        assert t.warmup_ratio == 0.07 and t.mixed_precision == "fp16"


def test_optimizer_groups_and_eps_follow_the_config(tmp_path, tiny_wavlm_dir):
    from robustdistill.trainer import _Run

    run = _Run(_tiny_config(tmp_path, tiny_wavlm_dir, "opt", {
        "training.adam_eps": "1.0e-6", "training.weight_decay": 0.01,
        "training.weight_decay_params": "non_bias"}))
    names = {id(p): n for n, p in run.accelerator.unwrap_model(run.model).named_parameters()}
    decayed, plain = run.optimizer.param_groups
    assert decayed["eps"] == plain["eps"] == 1e-6
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all("bias" in names[id(p)] for p in plain["params"])
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert any("layer_norm.weight" in n for n in decayed_names)  # s3prl decays them too


def test_teacher_runs_outside_autocast_and_gives_float32_targets(
        tmp_path, tiny_wavlm_dir, fresh_accelerator_state):
    from robustdistill.trainer import _Run

    run = _Run(_tiny_config(tmp_path, tiny_wavlm_dir, "amp", {"training.mixed_precision": "bf16"}))
    seen = {}
    teacher_forward = run.teacher.forward
    student_forward = run.model.forward

    def teacher_spy(*args, **kwargs):
        seen["teacher_autocast"] = torch.is_autocast_enabled("cpu")
        out = teacher_forward(*args, **kwargs)
        seen["teacher_dtype"] = out.hidden_states[-1].dtype
        return out

    def student_spy(*args, **kwargs):
        seen["student_autocast"] = torch.is_autocast_enabled("cpu")
        return student_forward(*args, **kwargs)

    run.teacher.forward = teacher_spy
    run.model.forward = student_spy
    batch = next(run._batches())
    run._loss(batch, np.random.default_rng(0), 0)
    assert seen == {"teacher_autocast": False, "teacher_dtype": torch.float32,
                    "student_autocast": True}


def test_steps_skipped_by_the_fp16_scaler_are_counted(tmp_path, tiny_wavlm_dir, monkeypatch):
    from robustdistill.trainer import _Run

    run = _Run(_tiny_config(tmp_path, tiny_wavlm_dir, "scaler"))
    # What accelerate reports after a GradScaler step that found inf/NaN gradients.
    monkeypatch.setattr(type(run.optimizer), "step_was_skipped", property(lambda self: True))
    run.train_step(run._batches())
    assert run.progress.scaler_skipped_steps == 1 and run.progress.step == 1
    assert "scaler_skipped_steps" in run.progress.state_dict()


# ---- 8. corruption: order, one channel of a stereo RIR, SNR -------------------------------------


def _speech(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + rng.standard_normal(n) * 0.1)).astype(
        np.float32)


def _stereo_rir(path: Path, offset: int = 20) -> np.ndarray:
    """Two channels of one room, the second 20 samples later and with other reflections."""
    rng = np.random.default_rng(1)
    decay = np.exp(-np.arange(3000) / 600.0)
    left = np.zeros(4000)
    left[100] = 1.0
    left[150:3150] += 0.3 * rng.standard_normal(3000) * decay
    right = np.zeros(4000)
    right[100 + offset] = 1.0
    right[170:3170] += 0.3 * rng.standard_normal(3000) * decay
    data = np.stack([left, right], axis=1)
    sf.write(path, data, SR, subtype="FLOAT")
    return data


@pytest.fixture
def room_and_noise(tmp_path):
    (tmp_path / "rir").mkdir()
    (tmp_path / "noise").mkdir()
    stereo = _stereo_rir(tmp_path / "rir" / "room.wav")
    noise = np.random.default_rng(2).standard_normal(3 * SR).astype(np.float32) * 0.1
    sf.write(tmp_path / "noise" / "n.wav", noise, SR, subtype="FLOAT")
    return tmp_path, stereo


def test_stereo_rir_contributes_one_seeded_channel_not_the_mean(room_and_noise):
    root, stereo = room_and_noise
    bank = RirBank.from_folder(root / "rir", channels="one")
    assert len(bank) == 1 and len(bank.channels[0]) == 2
    cfg = AugmentationConfig(rir_dir=str(root / "rir"), p_noise=0, p_reverb=1,
                             p_noise_reverb=0, p_none=0)
    assert cfg.rir_channels == "one"
    corruptor = Corruptor.from_config(cfg)
    clean = _speech(SR)
    channels_seen = set()
    for seed in range(8):
        noisy, info = corruptor.corrupt(clean, np.random.default_rng(seed))
        channels_seen.add(info.rir_channel)
        expected = reverberate(clean, stereo[:, info.rir_channel].astype(np.float32))
        np.testing.assert_allclose(noisy, expected, atol=1e-5)
        again, _ = corruptor.corrupt(clean, np.random.default_rng(seed))
        np.testing.assert_array_equal(noisy, again)  # seeded
    assert channels_seen == {0, 1}
    # The down-mix is a comb filter (two copies 20 samples apart): not what either mic heard.
    mean = RirBank.from_folder(root / "rir", channels="mean").rirs[0]
    for channel in bank.channels[0]:
        assert not np.allclose(mean[: channel.size], channel, atol=1e-2)


def test_noise_first_order_reverberates_speech_and_noise_with_snr_against_dry_speech(
        room_and_noise):
    root, stereo = room_and_noise
    common = {"noise_dir": str(root / "noise"), "rir_dir": str(root / "rir"), "p_noise": 0,
              "p_reverb": 0, "p_noise_reverb": 1, "p_none": 0, "noise_file_prob": 1.0}
    clean = _speech(SR)
    first = Corruptor.from_config(AugmentationConfig(**common, noise_reverb_order="noise_first"))
    noisy, info = first.corrupt(clean, np.random.default_rng(5))
    # Replay the same draws by hand: kind, RIR index, channel, file-or-white, SNR, file, offset.
    noise_bank = NoiseBank.from_folder(root / "noise")
    rng = np.random.default_rng(5)
    rng.choice(4, p=(0, 0, 1, 0))
    rng.integers(0, 1)
    channel = int(rng.integers(0, 2))
    rng.random()
    snr = float(rng.uniform(0, 20))
    segment, _ = noise_bank.draw(clean.size, rng)
    assert (info.rir_channel, info.snr_db) == (channel, snr)
    dry_mix = mix_at_snr(clean, segment, snr)
    noise_part = dry_mix.astype(np.float64) - clean
    measured = 10 * math.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise_part**2))
    assert measured == pytest.approx(info.snr_db, abs=1e-3)  # SNR against the dry speech
    expected = reverberate(dry_mix, stereo[:, channel].astype(np.float32))
    np.testing.assert_allclose(noisy, expected, atol=1e-5)
    # The default order reverberates first: same draws, a different signal.
    second = Corruptor.from_config(AugmentationConfig(**common))
    other, other_info = second.corrupt(clean, np.random.default_rng(5))
    assert other_info == info and not np.allclose(other, noisy, atol=1e-3)
    with pytest.raises(ValueError, match="noise_reverb_order"):
        AugmentationConfig(noise_reverb_order="both")


def test_recipe_corruption_settings():
    a = load_config(REPO / "configs/robust_wavlm_base_plus.yaml").augmentation
    assert a.noise_reverb_order == "noise_first" and a.rir_channels == "one"
    assert (a.p_noise, a.p_reverb, a.p_noise_reverb, a.p_none) == (0.25, 0.25, 0.25, 0.25)
    assert (a.snr_min, a.snr_max, a.noise_file_prob) == (0.0, 20.0, 0.7)


# ---- 9. Whisper frames on the student's grid ----------------------------------------------------


def test_interpolate_frames_is_exact_on_a_ramp():
    hidden = torch.arange(6.0).view(1, 6, 1).repeat(2, 1, 3)  # frame j holds value j
    out = interpolate_frames(hidden, 0.625, 5)
    torch.testing.assert_close(out[0, :, 0], torch.arange(5.0) + 0.625)
    assert interpolate_frames(hidden, 0.625, 7)[0, -1, 0] == 5.0  # clamped past the end
    with pytest.raises(ValueError, match="offset"):
        interpolate_frames(hidden, 1.0, 3)


def test_whisper_frame_count_equals_the_student_cnns(tiny_hubert_dir):
    from transformers import HubertConfig, HubertModel

    # The Base CNN (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2) with a tiny rest.
    student = HubertModel(HubertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                       intermediate_size=8, conv_dim=[4] * 7,
                                       num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=1))
    lengths = torch.tensor([400, 401, 719, 720, 32000, 32080, 32079, 48000 + 123])
    expected = student._get_feat_extract_output_lengths(lengths)
    fake = Upstream.__new__(Upstream)
    torch.nn.Module.__init__(fake)
    fake.is_whisper, fake.whisper_frames = True, "ssl"
    torch.testing.assert_close(Upstream.frame_lengths(fake, lengths), expected)


@pytest.mark.slow
@pytest.mark.skipif(not WHISPER_DIR.is_dir(), reason="../shared/models/whisper-tiny.en is absent")
def test_a_click_peaks_at_the_student_frame_centred_on_it():
    teacher = Upstream.from_pretrained(WHISPER_DIR)
    frames = (30, 50, 77)
    n = 2 * SR
    batch = torch.zeros(len(frames) + 1, n)  # the last row stays silent: the baseline
    for row, frame in enumerate(frames):
        batch[row, 320 * frame + 200] = 1.0  # the centre of student frame `frame`
    lengths = torch.full((len(frames) + 1,), n)
    peaks = {}
    for grid in ("native", "ssl"):
        teacher.whisper_frames = grid
        layer0 = teacher(batch, lengths).hidden_states[0]  # the encoder's convolutional front
        response = (layer0[:-1] - layer0[-1:]).norm(dim=-1)
        peaks[grid] = response.argmax(dim=1).tolist()
    assert peaks["ssl"] == list(frames)  # aligned: the frame centred on the click
    # Whisper's own grid: frame k + 1 (centre 320 k + 320, 120 samples from the click) wins.
    assert peaks["native"] == [f + 1 for f in frames]


# ---- errors a newcomer hits -------------------------------------------------------------------


def test_missing_local_teacher_says_so_and_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*make-teacher"):
        check_model_path(str(tmp_path / "no-teacher"), "teacher",
                         "robustdistill make-teacher --out X")
    check_model_path("microsoft/wavlm-base-plus", "teacher", "")  # a hub id is not checked


def test_demo_config_makes_its_teacher_when_missing(tmp_path, monkeypatch):
    from robustdistill.startup_checks import prepare_models

    cfg = load_config(REPO / "configs/demo.yaml", ["--teacher", str(tmp_path / "t")])
    assert cfg.make_teacher == "wavlm/small"
    prepare_models(cfg)
    assert (tmp_path / "t" / "config.json").is_file()
    cfg = load_config(REPO / "configs/demo.yaml",
                      ["--teacher", str(tmp_path / "u"), "--make_teacher", "null"])
    with pytest.raises(FileNotFoundError, match="make-teacher"):
        prepare_models(cfg)


# ---- 10. the docs table covers every recipe setting ---------------------------------------------


def test_docs_recipes_table_names_every_recipe_setting():
    text = (REPO / "docs" / "recipes.md").read_text()
    for path in RECIPES:
        cfg = load_config(REPO / path)
        keys = [f"student.{k}" for k in ("num_layers", "init_layers", "copy_projection",
                                         "feature_grad_mult")]
        keys += [f"training.{k}" for k in ("max_grad_norm", "adam_eps", "weight_decay",
                                           "weight_decay_params", "mixed_precision")]
        keys += [f"objectives.layerwise.{k}" for k in cfg.objectives["layerwise"]]
        for key in keys:
            assert re.search(rf"`{re.escape(key)}`", text), f"{key} ({path}) not in recipes.md"


def test_mlp_heads_export_to_s3prls_distiller_and_predict_the_same(tmp_path):
    expert = pytest.importorskip("s3prl.upstream.distiller.expert",
                                 reason="s3prl not importable (pip install --no-deps s3prl)")
    from transformers import HubertConfig, HubertModel

    from robustdistill.s3prl_export import export_s3prl_distiller

    torch.manual_seed(0)
    model = HubertModel(HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(24, 24, 24), conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_proj_layer_norm=False)).eval()
    objective = LayerwisePrediction(teacher_hidden_size=20, teacher_num_layers=12,
                                    student_hidden_size=32, teacher_layers=[4, 8, 12],
                                    head="mlp")
    ckpt = export_s3prl_distiller(model, tmp_path / "s.ckpt", heads=objective.s3prl_heads())
    wav = torch.randn(4000)
    with torch.no_grad():
        theirs = expert.UpstreamExpert(str(ckpt)).eval()([wav])["hidden_states"]
        ours = objective.predict(model(wav[None]).last_hidden_state)
    for k in range(3):  # s3prl: [projection] + 2 layers + 3 heads
        torch.testing.assert_close(theirs[3 + k], ours[k], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="mlp"):  # s3prl has no per-target linear layout
        LayerwisePrediction(teacher_hidden_size=2, teacher_num_layers=1,
                            student_hidden_size=2, head="linear").s3prl_heads()
