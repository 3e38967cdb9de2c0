"""The upstream contract: frame arithmetic, masks, padding, Whisper windows."""

from __future__ import annotations

import pytest
import torch
from conftest import WHISPER_DIR

from robustdistill.upstream import Upstream, lengths_to_mask


@pytest.mark.parametrize("family", ["wavlm", "hubert", "wav2vec2", "data2vec-audio"])
def test_frame_lengths_equal_the_models_output_lengths(family, tmp_path):
    from robustdistill.teachers import make_random_teacher

    upstream = Upstream.from_pretrained(make_random_teacher(family, "tiny", tmp_path))
    for n in [200, 201, 255, 256, 319, 320, 321, 999, 1000, 4096, 4097, 7777]:
        out = upstream.model(torch.randn(1, n), output_hidden_states=True)
        assert upstream.frame_lengths(torch.tensor([n])).item() == out.last_hidden_state.shape[1], n


def test_padded_batch_mask_and_lengths(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    from robustdistill.teachers import PRESETS

    # A layer-norm CNN (WavLM Large style) is trained with an attention mask.
    WavLMModel(WavLMConfig(feat_extract_norm="layer", **PRESETS["tiny"])).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(tmp_path)
    upstream = Upstream.from_pretrained(tmp_path)
    assert upstream.use_attention_mask and upstream.normalize
    lengths = torch.tensor([4000, 2500, 900])
    waves = torch.randn(3, 4000)
    out = upstream(waves, lengths, return_extract_features=True)
    assert len(out.hidden_states) == upstream.num_layers + 1
    expected = [upstream.model(waves[i : i + 1, :n]).last_hidden_state.shape[1]
                for i, n in enumerate(lengths.tolist())]
    assert out.frame_lengths.tolist() == expected
    assert torch.equal(out.frame_mask, lengths_to_mask(out.frame_lengths, out.frame_mask.shape[1]))
    assert out.extract_features.shape[:2] == out.hidden_states[0].shape[:2]
    # With the attention mask, real frames do not depend on the padding.
    alone = upstream(waves[1:2, :2500], lengths[1:2])
    torch.testing.assert_close(out.hidden_states[-1][1, : expected[1]],
                               alone.hidden_states[-1][0], atol=1e-4, rtol=1e-4)


def test_frozen_upstream_has_no_gradients_and_stays_in_eval(tiny_hubert_dir):
    upstream = Upstream.from_pretrained(tiny_hubert_dir)
    upstream.train()
    assert not upstream.model.training
    assert not any(p.requires_grad for p in upstream.parameters())
    assert upstream.model.config.layerdrop == 0.0 and not upstream.model.config.apply_spec_augment


def test_a_trainable_upstream_follows_the_callers_grad_mode(tiny_hubert_dir):
    """Validation runs the student under no_grad: no graph is built there."""
    upstream = Upstream.from_pretrained(tiny_hubert_dir, frozen=False)
    wave, lengths = torch.randn(1, 4000), torch.tensor([4000])
    with torch.no_grad():
        assert upstream(wave, lengths).hidden_states[-1].grad_fn is None
    assert upstream(wave, lengths).hidden_states[-1].grad_fn is not None


def test_an_upstream_loaded_in_bfloat16_takes_float32_waveforms(tiny_hubert_dir):
    upstream = Upstream.from_pretrained(tiny_hubert_dir, dtype=torch.bfloat16)
    out = upstream(torch.randn(2, 4000), torch.tensor([4000, 3000]))
    assert out.hidden_states[-1].dtype == torch.bfloat16


def test_bad_input_is_rejected(tiny_hubert_dir):
    upstream = Upstream.from_pretrained(tiny_hubert_dir)
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        upstream(torch.randn(2, 1, 400), torch.tensor([400, 400]))
    with pytest.raises(ValueError, match="shorter than one frame"):
        upstream(torch.randn(2, 400), torch.tensor([400, 100]))
    with pytest.raises(ValueError, match="lengths must lie"):
        upstream(torch.randn(2, 400), torch.tensor([400, 401]))


def test_non_speech_checkpoint_is_a_clear_error(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8, vocab_size=10)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a waveform speech encoder"):
        Upstream.from_pretrained(tmp_path)


def test_whisper_encoder_keeps_real_frames_of_each_30s_window():
    if not WHISPER_DIR.is_dir():
        pytest.skip("../shared/models/whisper-tiny.en is absent")
    upstream = Upstream.from_pretrained(WHISPER_DIR)
    lengths = torch.tensor([16000, 8000])
    out = upstream(torch.randn(2, 16000) * 0.1, lengths)
    assert out.frame_lengths.tolist() == [50, 25]  # ceil(n / 320)
    assert len(out.hidden_states) == 5 and out.hidden_states[-1].shape == (2, 50, 384)
    assert out.hidden_states[-1][1, 25:].abs().sum() == 0
