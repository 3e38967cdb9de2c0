"""Mutation-testing gaps (round 2) in the speaker data and models: training crops (speaker from
the file name, count, positions, centring, padding), FSDD's per-speaker selection order, the
test-other speaker folders, attentive statistics pooling by hand, the class logits' scale and
the upstream featurizer's layer average."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from robustdistill.speaker.data import load_fsdd, load_speaker_folders, load_train_crops
from robustdistill.speaker.models import AttentiveStatsPool, MelLSTMEncoder, SpeakerModel


def _loud(n, seed):
    # loud enough (about -9 dBFS) that the -30 dBFS volume normalisation (raise only) is a no-op
    return (0.5 * np.random.default_rng(seed).standard_normal(n)).clip(-1, 1).astype(np.float32)


def test_training_crops_speakers_count_positions_and_padding(tmp_path):
    long, mid, short = _loud(4000, 0), _loud(2000, 1), _loud(1000, 2)
    for name, x in (("103-1240-0000.wav", long), ("27-5-1.wav", mid), ("4-77-3.wav", short)):
        sf.write(tmp_path / name, x, 16000, subtype="FLOAT")
    crops = load_train_crops(tmp_path, crop_seconds=0.1, crops_per_utterance=3)
    got = {c.key: c for c in crops}
    # 4000 samples hold 2 non-overlapping 1600-sample crops: evenly spaced at 0 and 2400
    # 2000 samples hold one: centred at 200; 1000 samples: zero-padded to 1600, at 0
    assert set(got) == {"103-1240-0000.wav:0", "103-1240-0000.wav:2400", "27-5-1.wav:200",
                        "4-77-3.wav:0"}
    assert got["103-1240-0000.wav:0"].speaker == "103" and got["27-5-1.wav:200"].speaker == "27"
    assert got["4-77-3.wav:0"].speaker == "4"
    np.testing.assert_array_equal(got["103-1240-0000.wav:2400"].audio, long[2400:4000])
    np.testing.assert_array_equal(got["27-5-1.wav:200"].audio, mid[200:1800])
    np.testing.assert_array_equal(got["4-77-3.wav:0"].audio[:1000], short)
    assert np.all(got["4-77-3.wav:0"].audio[1000:] == 0)
    assert all(len(c.audio) == 1600 for c in crops)


def test_fsdd_takes_the_first_takes_of_every_digit_per_speaker(tmp_path):
    for spk in ("jackson", "nicolas"):
        for digit in range(3):
            for take in range(2):
                sf.write(tmp_path / f"{digit}_{spk}_{take}.wav", _loud(800, digit + 3 * take),
                         8000)
    sf.write(tmp_path / "readme_x.wav", _loud(800, 9), 8000)  # not {digit}_{speaker}_{take}
    utts = load_fsdd(tmp_path, per_speaker=3)
    assert [(u.speaker, u.key) for u in utts] == [
        (s, f"{d}_{s}_0.wav") for s in ("jackson", "nicolas") for d in range(3)]
    assert all(len(u.audio) == 1600 for u in utts)  # 8 kHz resampled to 16 kHz


def test_test_other_speaker_is_the_folder_name(tmp_path):
    for spk, files in (("3000", ["a-1-1.flac", "b-1-2.flac"]), ("61", ["c-2-1.flac"])):
        (tmp_path / spk).mkdir()
        for k, f in enumerate(files):
            sf.write(tmp_path / spk / f, _loud(1600, k), 16000)
    utts = load_speaker_folders(tmp_path)
    assert [(u.speaker, u.key) for u in utts] == [
        ("3000", "a-1-1.flac"), ("3000", "b-1-2.flac"), ("61", "c-2-1.flac")]


def test_attentive_stats_pool_with_uniform_attention_is_mean_and_std():
    pool = AttentiveStatsPool(3, eps=1e-5)
    with torch.no_grad():  # a zero last layer: equal scores, uniform weights over real frames
        pool.attention[2].weight.zero_()
        pool.attention[2].bias.zero_()
    frames = torch.tensor([[[1.0, 0.0, 2.0], [3.0, 4.0, 2.0], [5.0, -1.0, 2.0], [9.0, 9.0, 9.0]]])
    out = pool(frames, torch.tensor([3]))
    real = frames[0, :3]
    mean = real.mean(0)
    std = torch.sqrt(real.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(out[0], torch.cat([mean, std]), rtol=0, atol=1e-6)
    # mean (3, 1, 2); variances (8/3, 14/3, 0)
    torch.testing.assert_close(out[0, 3:], torch.sqrt(torch.tensor([8 / 3, 14 / 3, 0.0]) + 1e-5),
                               rtol=0, atol=1e-6)


def test_class_logits_are_scaled_cosines_without_margin():
    model = SpeakerModel(MelLSTMEncoder(8, 1), num_speakers=3, embedding_dim=4, margin=0.3,
                         scale=20.0)
    emb = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    w = model.classifier.weight
    expected = 20.0 * torch.nn.functional.normalize(emb, dim=-1) @ \
        torch.nn.functional.normalize(w, dim=-1).T
    torch.testing.assert_close(model.logits(emb), expected, rtol=0, atol=1e-5)


def test_upstream_encoder_with_equal_layer_weights_averages_every_hidden_state(tiny_wavlm_dir):
    from robustdistill.speaker.models import UpstreamEncoder

    encoder = UpstreamEncoder(str(tiny_wavlm_dir)).eval()
    wav = 0.1 * torch.randn(2, 3200, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([3200, 2400])
    with torch.no_grad():
        frames, frame_lengths = encoder(wav, lengths)
        out = encoder.upstream(wav, lengths)
    expected = torch.stack(out.hidden_states).mean(0)
    assert len(out.hidden_states) > 1
    torch.testing.assert_close(frames, expected, rtol=0, atol=1e-5)
    assert torch.equal(frame_lengths, out.frame_lengths)
    with torch.no_grad():
        encoder.layer_weights.copy_(torch.tensor([0.0] * (len(out.hidden_states) - 1) + [50.0]))
        frames, _ = encoder(wav, lengths)
    torch.testing.assert_close(frames, out.hidden_states[-1], rtol=0, atol=1e-4)
