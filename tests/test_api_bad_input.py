"""Python API on input that violates its docstring: a clear error, never a silent number.

Each test fails without its fix: a ``(channels, samples)`` array down-mixed to one "sample"
per channel, integer PCM enhanced unscaled, SI-SDR of a silent signal (-199 dB or 0 dB),
frame lengths broadcast over the batch or past the features, speaker lengths that drop
utterances, distillation inputs whose mask broadcasts or weights frames, and losses that
broadcast ``(B, 1, D)`` targets or take fractional masks; then (second audit) integer PCM fed
to the upstream and SE models, lengths of another batch, empty losses that were NaN and crashes
deep inside pystoi, TFCKD and the speaker helpers.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from robustdistill.audio import AudioError, prepare_waveform, to_mono
from robustdistill.metrics import si_sdr, si_sdr_improvement
from robustdistill.objectives import (
    DistillationInputs,
    calibrated_set_loss,
    cosine_alignment_loss,
    gram_kd_loss,
)
from robustdistill.objectives.layerwise import layerwise_frame_losses
from robustdistill.upstream import UpstreamOutput, lengths_to_mask


def _tone(n=16000):
    return (0.1 * np.sin(np.arange(n) * 0.05)).astype(np.float32)


# ---------------------------------------------------------------------------- audio layout
@pytest.mark.parametrize("channels", [1, 2, 8])
def test_a_channels_first_array_is_refused_not_averaged_to_one_sample_per_channel(channels):
    wave = np.stack([_tone()] * channels)  # (C, N), torchaudio's layout
    with pytest.raises(AudioError, match="channels, samples"):
        prepare_waveform(wave, 16000)
    with pytest.raises(AudioError, match="channels, samples"):
        to_mono(wave)


def test_channels_last_and_one_sample_stereo_are_still_down_mixed():
    wave = np.stack([_tone(), -0.5 * _tone()], axis=1)  # (N, 2)
    np.testing.assert_allclose(prepare_waveform(wave, 16000), wave.mean(axis=1), atol=1e-7)
    assert to_mono(np.array([[0.2, 0.4]], np.float32)).tolist() == pytest.approx([0.3])


def test_enhance_waveform_refuses_channels_first_and_integer_audio():
    from robustdistill.se.enhance import enhance_waveform
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    model = GRUMaskStudent(StudentConfig(hidden_size=4, num_layers=1)).eval()
    x = _tone(4000)
    with pytest.raises(AudioError, match="channels, samples"):
        enhance_waveform(model, np.stack([x, x]), 16000)
    with pytest.raises(ValueError, match="int16"):
        enhance_waveform(model, (x * 32767).astype(np.int16), 16000)
    assert enhance_waveform(model, np.stack([x, x], axis=1), 16000).shape == (4000, 2)


# ---------------------------------------------------------------------------- SI-SDR
def test_si_sdr_of_a_silent_reference_or_estimate_is_an_error_not_a_number():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(1600)
    noisy = clean + 0.3 * rng.standard_normal(1600)
    with pytest.raises(ValueError, match="reference is silent"):
        si_sdr(noisy, np.zeros(1600))  # was -198.9 dB
    with pytest.raises(ValueError, match="reference is silent"):
        si_sdr(noisy, np.full(1600, 0.1))  # constant: zero after removing the mean
    with pytest.raises(ValueError, match="estimate is silent"):
        si_sdr(np.zeros(1600), clean)  # was 0 dB
    with pytest.raises(ValueError, match="estimate is silent"):
        si_sdr_improvement(np.zeros(1600), noisy, clean)  # was +10 dB over the noisy input
    with pytest.raises(ValueError, match="silent"):
        si_sdr(noisy[:1], clean[:1])  # one sample: zero after removing the mean
    # without mean removal a constant (non-zero) signal is a valid reference
    assert np.isfinite(float(si_sdr(noisy[:4], np.full(4, 0.1), zero_mean=False)))
    assert np.isfinite(float(si_sdr(noisy, clean)))


def test_speech_metrics_leave_a_silent_estimate_out_with_a_warning(caplog):
    from downstream.tasks.speech_enhancement.task import speech_metrics

    clean = np.random.default_rng(0).standard_normal(16000) * 0.1
    with caplog.at_level(logging.WARNING):
        scores = speech_metrics(np.zeros(16000), clean, "utt1")
    assert np.isnan(scores["si_sdr"])
    assert any("SI-SDR undefined on utt1" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="NaN"):  # non-finite input is still an error
        speech_metrics(np.r_[clean[:-1], np.nan], clean)


# ---------------------------------------------------------------------------- pooling
def test_pooling_refuses_lengths_that_do_not_match_the_features():
    from downstream.pooling import masked_mean, masked_mean_std

    x = torch.randn(3, 5, 2)
    for pool in (masked_mean, masked_mean_std):
        with pytest.raises(ValueError, match=r"\(B,\) frame lengths"):
            pool(x, torch.tensor([2]))  # was broadcast to all 3 utterances
        with pytest.raises(ValueError, match=r"\(B,\) frame lengths"):
            pool(x, torch.tensor([[2], [3], [5]]))  # was a (3, 5, 2) "pooled" output
        with pytest.raises(ValueError, match="exceed the 5 frames"):
            pool(x, torch.tensor([9, 5, 5]))  # was silently cut to 5
        with pytest.raises(ValueError, match="integer"):
            pool(x, torch.tensor([2.5, 3.0, 5.0]))
    torch.testing.assert_close(masked_mean(x, torch.tensor([2, 5, 1])),
                               torch.stack([x[0, :2].mean(0), x[1].mean(0), x[2, 0]]))


def test_speaker_models_refuse_lengths_of_another_batch_or_range():
    from robustdistill.speaker.models import MelLSTMEncoder, SpeakerEmbedder, SpeakerModel

    torch.manual_seed(0)
    model = SpeakerModel(MelLSTMEncoder(8, 1), num_speakers=3, embedding_dim=4).eval()
    embedder = SpeakerEmbedder.from_speaker_model(model)
    waves = torch.from_numpy(np.stack([_tone(3200), _tone(3200)]))
    for bad in (torch.tensor([3200]), torch.tensor([3200, 6400]), torch.tensor([3200, 0]),
                torch.tensor([3200.0, 1600.0])):
        with pytest.raises(ValueError, match="lengths"):
            model(waves, bad)  # (1,) used to return one embedding for two waveforms
        with pytest.raises(ValueError, match="lengths"):
            embedder(waves, bad)
    assert model(waves, torch.tensor([3200, 1600])).embedding.shape == (2, 4)
    assert embedder(waves).shape == (2, 4)


# ---------------------------------------------------------------------------- objectives
def _inputs(**changes):
    lengths = torch.tensor([10, 7])
    out = UpstreamOutput(tuple(torch.randn(2, 10, 4) for _ in range(3)), lengths,
                         lengths_to_mask(lengths, 10))
    wave = torch.randn(2, 3200)
    args = {"teacher": out, "student": out, "frame_mask": lengths_to_mask(lengths, 10),
            "clean": wave, "noisy": wave, "lengths": torch.tensor([3200, 2240])}
    args.update(changes)
    return DistillationInputs(**args)


def test_distillation_inputs_refuse_masks_and_waveforms_that_do_not_agree():
    mask = lengths_to_mask(torch.tensor([10, 7]), 10)
    with pytest.raises(ValueError, match="frame_mask must be"):
        _inputs(frame_mask=mask[:1])  # was broadcast over the batch by layerwise
    with pytest.raises(ValueError, match="frame_mask must be bool"):
        _inputs(frame_mask=mask.float() * 0.5)  # was half the loss
    with pytest.raises(ValueError, match="the teacher only 10"):
        _inputs(frame_mask=lengths_to_mask(torch.tensor([10, 7]), 13))
    with pytest.raises(ValueError, match="lengths must be"):
        _inputs(lengths=torch.tensor([3200]))  # was broadcast by the enhancement loss
    with pytest.raises(ValueError, match="same"):
        _inputs(noisy=torch.randn(2, 1000))
    assert _inputs(frame_mask=mask.float()).num_frames == 10  # 0/1 floats are fine


def test_layerwise_frame_losses_refuse_to_broadcast_the_target():
    prediction = torch.randn(2, 5, 4)
    for target in (torch.randn(2, 1, 4), torch.randn(5, 4)):
        with pytest.raises(ValueError, match="same"):
            layerwise_frame_losses(prediction, target)


def test_kd_losses_refuse_fractional_masks():
    student, teacher = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    for mask in (torch.full((2, 5), 0.5), torch.full((2, 5), 2.0)):
        with pytest.raises(ValueError, match="bool"):
            gram_kd_loss(student, teacher, mask)  # a mask of 2s used to change the loss
        with pytest.raises(ValueError, match="bool"):
            cosine_alignment_loss(student, teacher, mask)
        with pytest.raises(ValueError, match="bool"):
            calibrated_set_loss([student], [teacher], mask)
    ones = torch.ones(2, 5, dtype=torch.long)
    torch.testing.assert_close(gram_kd_loss(student, teacher, ones),
                               gram_kd_loss(student, teacher))


# ---------------------------------------------------------------- follow-ups (reported, fixed)
def test_map_kl_refuses_negative_teacher_entries_that_sum_to_one():
    from robustdistill.speaker.losses import map_kl

    with pytest.raises(ValueError, match="non-negative"):
        map_kl(torch.zeros(1, 2), torch.tensor([[1.5, -0.5]]))


def test_class_loss_refuses_a_nan_temperature():
    from robustdistill.speaker.losses import class_loss

    with pytest.raises(ValueError, match="tau"):
        class_loss(torch.zeros(2, 3), torch.zeros(2, 3), tau=float("nan"))


def test_a_string_of_axes_is_refused_not_read_letter_by_letter():
    from robustdistill.objectives.similarity import gram_kd_loss
    from robustdistill.se.losses import LossConfig

    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="not a string"):
        gram_kd_loss(x, x, axes="time")
    with pytest.raises(ValueError, match="gram_axes"):
        LossConfig(gram_axes="time")


def test_list_audio_files_takes_one_extension_as_a_string(tmp_path):
    import soundfile as sf

    from robustdistill.audio import list_audio_files

    sf.write(tmp_path / "a.flac", np.zeros(160, np.float32), 16000)
    sf.write(tmp_path / "b.wav", np.zeros(160, np.float32), 16000)
    assert list_audio_files(tmp_path, ".flac") == [tmp_path / "a.flac"]


# ---------------------------------------------------------------- follow-ups (second audit)
def _tiny_upstream():
    from transformers import HubertConfig, HubertModel

    from robustdistill.upstream import Upstream

    torch.manual_seed(0)
    return Upstream(HubertModel(HubertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
        conv_dim=[4] * 7, num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=1)))


def test_upstream_refuses_integer_pcm_and_counts_no_negative_frames():
    upstream = _tiny_upstream()
    wave = torch.from_numpy(_tone(1600))[None]
    with pytest.raises(ValueError, match="prepare_waveform"):
        upstream((wave * 32767).to(torch.int16), torch.tensor([1600]))  # was read as +-32768
    assert upstream(wave, torch.tensor([1600])).frame_lengths.tolist() == [4]
    # 0 samples has 0 frames (the convolution arithmetic gave -1); valid counts unchanged
    assert upstream.frame_lengths(torch.tensor([0, 5, 399, 400, 720])).tolist() == [0, 0, 0, 1, 2]


def test_se_models_refuse_integer_or_other_dtype_audio_and_take_one_activation_name():
    from robustdistill.se.students import GRUMaskStudent, StudentConfig

    model = GRUMaskStudent(StudentConfig(hidden_size=4, num_layers=1)).eval()
    x = torch.from_numpy(_tone(1600))
    with pytest.raises(ValueError, match="prepare_waveform"):
        model((x * 32767).to(torch.int16))  # was enhanced as samples of +-32768
    with pytest.raises(ValueError, match="float64.*float32"):
        model(x.double())  # was "mat1 and mat2 must have the same dtype"
    assert list(model(x, return_activations="gru1").activations) == ["gru1"]  # was KeyError 'g'
    with pytest.raises(KeyError, match="fc_in"):  # an unknown name lists the known ones
        model(x, return_activations=["gru9"])
    assert list(model(x, return_activations=["mask", "gru1"]).activations) == ["mask", "gru1"]


def test_resample_frames_refuses_lengths_of_another_batch_or_fractional():
    from robustdistill.objectives.cosine_alignment import resample_frames

    x = torch.randn(2, 5, 3)
    ok = torch.tensor([5, 4])
    for bad in (torch.tensor([5, 4, 3]), torch.tensor([5]), torch.tensor([[5, 4]])):
        with pytest.raises(ValueError, match=r"must be \(B,\)"):
            resample_frames(x, bad, ok)  # extra entries were ignored, too few an IndexError
        with pytest.raises(ValueError, match=r"must be \(B,\)"):
            resample_frames(x, ok, bad)
    with pytest.raises(ValueError, match="integer"):
        resample_frames(x, torch.tensor([4.7, 4.0]), ok)  # was truncated to 4
    with pytest.raises(ValueError, match="integer"):
        resample_frames(x, ok, torch.tensor([5.5, 5.0]))
    assert resample_frames(x, ok, torch.tensor([3, 5])).shape == (2, 5, 3)


def test_kd_losses_of_no_frame_or_no_utterance_are_errors_not_nan():
    for shape in ((2, 0, 4), (0, 5, 4)):
        with pytest.raises(ValueError, match="no frame"):
            cosine_alignment_loss(torch.randn(shape), torch.randn(shape))  # was NaN
    with pytest.raises(ValueError, match="empty batch"):
        gram_kd_loss(torch.randn(0, 5, 4), torch.randn(0, 5, 4))  # was NaN
    x = torch.randn(2, 5, 4)
    assert torch.isfinite(cosine_alignment_loss(x, x)) and torch.isfinite(gram_kd_loss(x, x))


def test_speech_metrics_refuse_short_empty_and_two_dimensional_signals():
    from downstream.tasks.speech_enhancement.task import MIN_METRIC_SAMPLES, speech_metrics

    clean = np.random.default_rng(0).standard_normal(16000) * 0.1
    for n in (0, 10, MIN_METRIC_SAMPLES - 1):  # AxisError / "zero-size array" from pystoi
        with pytest.raises(ValueError, match=f"at least {MIN_METRIC_SAMPLES} samples"):
            speech_metrics(0.9 * clean[:n], clean[:n])
    with pytest.raises(ValueError, match=r"\(S,\) mono"):
        speech_metrics(np.stack([clean, clean]), np.stack([clean, clean]))
    shortest = speech_metrics(0.9 * clean[:MIN_METRIC_SAMPLES], clean[:MIN_METRIC_SAMPLES])
    # no error; STOI needs 30 frames (about 0.4 s) of speech: NaN, no longer pystoi's 1e-5
    assert np.isfinite(shortest["si_sdr"]) and np.isnan(shortest["stoi"])


def test_tfckd_loss_refuses_a_flat_list_of_features():
    from robustdistill.objectives.tfckd import tfckd_loss

    feats = [torch.randn(2, 1, 5, 4) for _ in range(2)]
    with pytest.raises(ValueError, match="list of sets"):
        tfckd_loss(feats, feats)  # was "Boolean value of Tensor ... is ambiguous"
    assert torch.isfinite(tfckd_loss([feats], [feats]))


def test_speaker_attribution_helpers_refuse_empty_maps_and_sub_sample_segments():
    from robustdistill.speaker.attribution import frame_map, segment_bounds
    from robustdistill.speaker.losses import batch_loss

    with pytest.raises(ValueError, match="no frame"):
        frame_map(torch.zeros(2, 0, 3))  # was ZeroDivisionError
    for d in (1e-9, float("nan")):
        with pytest.raises(ValueError, match="one sample|positive"):
            segment_bounds(160, [d])  # was "range() arg 3 must not be zero"
    assert segment_bounds(160, [1 / 16000]) == [(i, i + 1) for i in range(160)]
    for shape in ((4,), (2, 3, 4)):
        with pytest.raises(ValueError, match=r"\(B, E\)"):
            batch_loss(torch.randn(shape), torch.randn(shape))  # IndexError / size mismatch
    assert torch.isfinite(batch_loss(torch.randn(3, 4), torch.randn(3, 5)))
