"""Speech enhancement downstream (mutation round 3): the STFT against numpy, the mask head
against a hand-made upsampling, both losses by hand, the training mixtures' targets, and
consistent crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import get_window

from downstream.base import EncodedExample, Example
from downstream.conditions import TestCorruptor, parse_condition
from downstream.data import DataConfig, SourceConfig, Utterance
from downstream.tasks.speech_enhancement.task import (
    MaskHead,
    SEHeadConfig,
    SpeechEnhancementConfig,
    SpeechEnhancementTask,
    StftConfig,
    early_reverb_reference,
)
from robustdistill.augment import NoiseBank, RirBank

SR = 16_000


def _task(**config) -> SpeechEnhancementTask:
    return SpeechEnhancementTask(SpeechEnhancementConfig(DataConfig(SourceConfig(root="x")),
                                                         **config))


def _numpy_stft(x: np.ndarray, n_fft=512, hop=160, win=400) -> np.ndarray:
    """``(K, F)``: centred (reflect-padded) frames, a periodic Hann window of ``win`` samples
    centred in ``n_fft``."""
    xp = np.pad(x.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left: left + win] = get_window("hann", win)  # periodic
    k = len(x) // hop + 1
    return np.stack([np.fft.rfft(xp[m * hop: m * hop + n_fft] * window) for m in range(k)])


def _padded_stfts(waves):
    """Each wave's STFT as the task computes it: on its own, as s3prl's SE dataset does."""
    return [_numpy_stft(w) for w in waves]


def test_stft_is_superbs_512_160_400_periodic_hann_centred_per_utterance():
    task = _task()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(4000).astype(np.float32),
             rng.standard_normal(2500).astype(np.float32)]
    spec, k = task._stft(waves, "cpu")
    assert k.tolist() == [26, 16] and spec.shape == (2, 26, 257)
    np.testing.assert_allclose(spec[0].numpy(), _numpy_stft(waves[0]), atol=2e-3)
    # the shorter wave is transformed alone (reflect-centred at its own end), not zero-padded
    # to the batch's length first, and is zero after its frames
    np.testing.assert_allclose(spec[1, :16].numpy(), _numpy_stft(waves[1]), atol=2e-3)
    assert not spec[1, 16:].abs().any()
    alone, _ = task._stft(waves[1:], "cpu")
    torch.testing.assert_close(spec[1, :16], alone[0], atol=0, rtol=0)


def test_build_head_upsamples_50hz_features_to_the_stft_hop():
    task = _task()
    task.frames_per_second = 50.0
    assert task.build_head(4).upsample == 2  # hop 160: two STFT frames per 20 ms frame
    native = _task(stft=StftConfig(hop_length=None))
    native.frames_per_second = 50.0
    assert native.hop_length == 320 and native.build_head(4).upsample == 1


@pytest.mark.parametrize("upstream_hop, stft_hop", [(320, 256), (320, 128), (64, 160)])
def test_mask_frames_read_the_feature_frame_at_their_own_time(upstream_hop, stft_hop):
    """STFT frame ``j`` (at ``j * stft_hop`` samples) reads the feature frame covering that
    time, ``floor(j * stft_hop / upstream_hop)``, also when the hops are not integer multiples
    (a rounded ratio read frame j of a 256 hop at 320 samples per frame: 0.8 s late by 3.2 s;
    a 64-sample upstream read only its first 40 %)."""
    task = _task(stft=StftConfig(hop_length=stft_hop))
    task.frames_per_second = SR / upstream_hop
    head = task.build_head(1)
    samples = 6 * SR
    frames = samples // upstream_hop
    k = samples // stft_hop + 1
    features = torch.arange(frames, dtype=torch.float32).view(1, frames, 1)
    seen = []
    head.lstm.register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    with torch.no_grad():
        head(features, torch.tensor([frames]), torch.tensor([k]))
    read, _ = torch.nn.utils.rnn.pad_packed_sequence(seen[0], batch_first=True)
    j = torch.arange(k)
    expected = torch.clamp(j * stft_hop // upstream_hop, max=frames - 1).float()
    torch.testing.assert_close(read[0, :, 0], expected, atol=0, rtol=0)


def _manual_mask(head: MaskHead, features: torch.Tensor, k: int, activation) -> torch.Tensor:
    """One utterance: each frame repeated ``upsample`` times, padded with the last frame."""
    x = torch.cat([f.repeat(head.upsample, 1) for f in features])  # frame-major repeat
    if x.shape[0] < k:
        x = torch.cat([x, x[-1:].repeat(k - x.shape[0], 1)])
    out, _ = head.lstm(x[:k][None])
    return activation(head.proj(out))[0]


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_mask_head_equals_repeat_each_frame_then_pad_with_the_utterances_last(activation):
    torch.manual_seed(0)
    head = MaskHead(3, 7, 2, SEHeadConfig(hidden_size=4, num_layers=1,
                                          mask_activation=activation)).eval()
    features = torch.randn(2, 5, 3)
    features[1, 3:] = 0.0  # utterance 1 has 3 real frames, then zero padding
    frames = torch.tensor([5, 3])
    k = torch.tensor([13, 8])  # 13 > 2 * 5 and 8 > 2 * 3: padded with frame 4, and frame 2
    act = torch.sigmoid if activation == "sigmoid" else torch.relu
    with torch.no_grad():
        mask = head(features, frames, k)
        assert mask.shape == (2, 13, 7)
        torch.testing.assert_close(mask[0], _manual_mask(head, features[0], 13, act),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(mask[1, :8], _manual_mask(head, features[1, :3], 8, act),
                                   atol=1e-6, rtol=0)


def test_mask_head_gives_an_utterance_the_same_mask_alone_and_beside_a_longer_one():
    """The batch's zero padding must not reach a shorter utterance's last STFT frames."""
    torch.manual_seed(1)
    head = MaskHead(3, 7, 2, SEHeadConfig(hidden_size=4, num_layers=1)).eval()
    short = torch.randn(1, 50, 3)
    batch = torch.cat([torch.randn(1, 100, 3), torch.cat([short, torch.zeros(1, 50, 3)], 1)])
    k_short = 50 * 320 // 160 + 1  # 101 STFT frames of 16,000 samples: one past 2 x 50
    with torch.no_grad():
        alone = head(short, torch.tensor([50]), torch.tensor([k_short]))
        beside = head(batch, torch.tensor([100, 50]), torch.tensor([201, k_short]))
    torch.testing.assert_close(beside[1, :k_short], alone[0], atol=1e-6, rtol=0)


def test_mask_head_output_dropout_acts_in_training():
    """p = 1 drops the whole BLSTM output: the mask is the sigmoid of the bias alone (a
    config refuses p = 1, which trains nothing: it is set after construction to pin this)."""
    torch.manual_seed(0)
    config = SEHeadConfig(hidden_size=4, num_layers=1)
    config.output_dropout = 1.0
    head = MaskHead(3, 5, 2, config)
    head.train()
    mask = head(torch.randn(1, 4, 3), torch.tensor([4]), torch.tensor([8]))
    torch.testing.assert_close(mask[0], torch.sigmoid(head.proj.bias).expand(8, 5))


class _ConstantMask(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, features, frame_lengths, k):
        return torch.full((features.shape[0], int(k.max()), 257), self.value)


def _pairs():
    rng = np.random.default_rng(3)
    out = []
    for n in (3200, 1900):
        noisy = rng.standard_normal(n).astype(np.float32)
        clean = -0.5 * noisy + 0.1 * rng.standard_normal(n).astype(np.float32)
        out.append(Example(f"u{n}", noisy, clean))
    return out


def test_log1p_mse_is_over_real_frames_and_bins_against_the_clean_target():
    task = _task()
    examples = _pairs()
    loss = float(task.training_loss(_ConstantMask(0.3), torch.zeros(2, 10, 4), torch.tensor([10, 6]),
                                    examples))
    num, den = 0.0, 0
    ys = _padded_stfts([e.waveform for e in examples])
    ss = _padded_stfts([e.target for e in examples])
    for y, s in zip(ys, ss, strict=True):
        y, s = np.abs(y), np.abs(s)
        num += float(((np.log1p(0.3 * y) - np.log1p(s)) ** 2).sum())
        den += y.size
    assert loss == pytest.approx(num / den, rel=1e-4)


def test_npsm_mse_uses_the_phase_sensitive_target_clipped_at_zero():
    task = _task(loss="npsm_mse")
    examples = _pairs()
    loss = float(task.training_loss(_ConstantMask(0.3), torch.zeros(2, 10, 4), torch.tensor([10, 6]),
                                    examples))
    per_utt = []
    ys = _padded_stfts([e.waveform for e in examples])
    ss = _padded_stfts([e.target for e in examples])
    for y, s in zip(ys, ss, strict=True):
        target = np.abs(s) * np.maximum(0.0, np.cos(np.angle(y) - np.angle(s)))
        per_utt.append(float(((0.3 * np.abs(y) - target) ** 2).sum()) / y.shape[0])
    assert loss == pytest.approx(np.mean(per_utt), rel=1e-4)


def _room():
    rir = np.zeros(2400, np.float32)
    rir[0], rir[400], rir[1600] = 1.0, 0.6, 0.5  # 25 ms (early) and 100 ms (late) taps
    return rir / np.sqrt(np.sum(rir**2))


def test_a_reverberated_training_pair_targets_the_early_reference_of_the_dry_speech():
    rir = _room()
    task = _task(train_rir_dir="unused", train_reverb_prob=1.0, train_snr_db=[30.0, 30.0])
    task.rir_bank = RirBank((rir,), ("room",))
    clean = np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    ex = task.make_example(Utterance("k", "k.wav"), clean, "train", parse_condition("clean"),
                           TestCorruptor(None, None, seed=0))
    assert ex.extras["reverb"] is True and ex.extras["reference"] == "early"
    np.testing.assert_allclose(ex.target, early_reverb_reference(clean, rir), atol=1e-6)
    dry = _task(train_rir_dir="unused", train_reverb_prob=1.0, reverb_reference="dry")
    dry.rir_bank = task.rir_bank
    assert dry.make_example(Utterance("k", "k.wav"), clean, "train", parse_condition("clean"),
                            TestCorruptor(None, None, seed=0)).target is clean


def test_training_pairs_without_reverb_are_dry_noisy_at_a_drawn_snr():
    task = _task(train_rir_dir="unused", train_reverb_prob=0.0, train_snr_db=[-5.0, 20.0])
    task.rir_bank = RirBank((_room(),), ("room",))
    clean = np.random.default_rng(1).standard_normal(8000).astype(np.float32)
    snrs = []
    for key in ("a", "b", "c", "d"):
        ex = task.make_example(Utterance(key, "k.wav"), clean, "dev", parse_condition("clean"),
                               TestCorruptor(None, None, seed=0))
        assert ex.target is clean and ex.extras["reverb"] is False
        assert ex.extras["reference"] == "dry"
        noise = ex.waveform - clean
        snr = 10 * np.log10(np.sum(clean**2) / np.sum(noise**2))
        assert snr == pytest.approx(ex.extras["snr_db"], abs=0.01)
        snrs.append(ex.extras["snr_db"])
    assert all(-5.0 <= s <= 20.0 for s in snrs) and len(set(snrs)) == 4  # a draw per key


def test_training_noise_comes_from_the_noise_bank():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    task = _task(train_snr_db=[0.0, 0.0])
    task.noise_bank = NoiseBank((tone,), ("tone",))
    clean = 0.1 * np.random.default_rng(2).standard_normal(8000).astype(np.float32)
    ex = task.make_example(Utterance("k", "k.wav"), clean, "train", parse_condition("clean"),
                           TestCorruptor(None, None, seed=0))
    power = np.abs(np.fft.rfft(ex.waveform - clean)) ** 2
    freqs = np.fft.rfftfreq(8000, 1 / SR)
    assert power[np.abs(freqs - 1000) <= 10].sum() > 0.95 * power.sum()


def test_training_crop_cuts_waveform_and_target_at_the_same_samples_over_every_start():
    task = _task(train_crop_seconds=0.1)  # 5 frames
    n = 8
    wave = np.arange(320 * n, dtype=np.float32)
    e = EncodedExample(Example("k", wave, -2 * wave), torch.arange(n, dtype=torch.float32)
                       .reshape(1, n, 1))
    starts = set()
    for seed in range(60):
        batch = task.collate([e], True, np.random.default_rng(seed))
        start = int(batch.hidden[0, 0, 0, 0])
        starts.add(start)
        ex = batch.examples[0]
        np.testing.assert_array_equal(ex.waveform, wave[320 * start: 320 * (start + 5)])
        np.testing.assert_array_equal(ex.target, -2 * ex.waveform)
    assert starts == {0, 1, 2, 3}


def test_stft_of_a_wave_shorter_than_half_the_window_is_zero_padded_not_an_error():
    task = _task(stft=StftConfig(n_fft=1024, hop_length=160, win_length=400))
    wave = np.random.default_rng(1).standard_normal(450).astype(np.float32)  # < 1024 // 2
    spec, k = task._stft([wave], "cpu")
    window = torch.hann_window(400)
    expected = torch.stft(torch.from_numpy(wave), 1024, 160, 400, window, center=True,
                          pad_mode="constant", return_complex=True).transpose(0, 1)
    assert int(k[0]) == 450 // 160 + 1
    torch.testing.assert_close(spec[0], expected)
