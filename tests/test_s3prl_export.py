"""The exported checkpoint loads in s3prl's own distiller upstream and gives our hidden states."""

from __future__ import annotations

import pytest
import torch
from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

from robustdistill.s3prl_export import export_s3prl_distiller, hubert_to_distiller_config
from robustdistill.upstream import Upstream

expert = pytest.importorskip(
    "s3prl.upstream.distiller.expert",
    reason="s3prl not importable (install with: pip install --no-deps s3prl omegaconf protobuf)",
)


def tiny_hubert(**overrides) -> HubertModel:
    kwargs = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(24, 24, 24), conv_kernel=(8, 8, 8), conv_stride=(4, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_proj_layer_norm=False,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**kwargs)).eval()
    with torch.no_grad():  # non-trivial norms and biases so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def s3prl_hidden(ckpt, wavs: list[torch.Tensor]) -> list[torch.Tensor]:
    up = expert.UpstreamExpert(str(ckpt)).eval()
    with torch.no_grad():
        return up(wavs)["hidden_states"]


@pytest.mark.parametrize(("norm", "conv_dim"), [
    ("group", (24, 24, 24)), ("layer", (24, 24, 24)),
    ("group", (12, 12, 24)),  # uneven widths, as the pruned preset's
])
def test_same_hidden_states_unpadded(tmp_path, norm, conv_dim):
    model = tiny_hubert(feat_extract_norm=norm, conv_dim=conv_dim)
    ckpt = export_s3prl_distiller(Upstream(model), tmp_path / "s.ckpt",
                                  allow_normalization_mismatch=True)
    wavs = torch.randn(2, 4000)
    ours = Upstream(model, normalize=False)(wavs, torch.tensor([4000, 4000])).hidden_states
    theirs = s3prl_hidden(ckpt, list(wavs))
    # s3prl: [projected CNN features] + L layer outputs + 1 zero prediction head.
    assert len(theirs) == model.config.num_hidden_layers + 2
    for i in range(1, model.config.num_hidden_layers + 1):
        torch.testing.assert_close(theirs[i], ours[i], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        projected = model.feature_projection(model.feature_extractor(wavs).transpose(1, 2))
    projected = projected[0] if isinstance(projected, tuple) else projected
    torch.testing.assert_close(theirs[0], projected, atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(theirs[-1]) == 0


def test_same_hidden_states_padded_batch(tmp_path):
    model = tiny_hubert()
    ckpt = export_s3prl_distiller(model, tmp_path / "s.ckpt")
    lengths = torch.tensor([4000, 2500])
    wavs = torch.randn(2, 4000)
    wavs[1, 2500:] = 0
    ours = Upstream(model, use_attention_mask=True)(wavs, lengths)
    theirs = s3prl_hidden(ckpt, [wavs[0], wavs[1, :2500]])
    for b, n in enumerate(ours.frame_lengths.tolist()):
        for i in range(1, 3):
            torch.testing.assert_close(theirs[i][b, :n], ours.hidden_states[i][b, :n],
                                       atol=1e-5, rtol=1e-5)


def test_trained_heads_are_written(tmp_path):
    model = tiny_hubert()
    head = {"pred_layer_id": [1, 2],
            "state_dict": {"0.weight": torch.randn(64, 32), "0.bias": torch.randn(64),
                           "2.weight": torch.randn(2, 32, 20), "2.bias": torch.randn(1, 1, 2, 20)}}
    torch.save(head, tmp_path / "heads.pt")
    ckpt = export_s3prl_distiller(model, tmp_path / "s.ckpt", heads=tmp_path / "heads.pt")
    wav = torch.randn(4000)
    theirs = s3prl_hidden(ckpt, [wav])
    assert len(theirs) == 1 + 2 + 2
    with torch.no_grad():
        last = model(wav[None]).last_hidden_state
        inter = torch.nn.functional.gelu(last @ head["state_dict"]["0.weight"].T
                                         + head["state_dict"]["0.bias"])
        expect = torch.einsum("btnd,ndf->btnf", inter.reshape(1, -1, 2, 32),
                              head["state_dict"]["2.weight"]) + head["state_dict"]["2.bias"]
    torch.testing.assert_close(theirs[3], expect[:, :, 0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(theirs[4], expect[:, :, 1], atol=1e-4, rtol=1e-4)


def test_folder_round_trip_and_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_hubert()
    model.save_pretrained(tmp_path / "student")
    ckpt = export_s3prl_distiller(tmp_path / "student", tmp_path / "s.ckpt")
    saved = torch.load(ckpt, weights_only=False)
    cfg = saved["Config"]["distiller"]
    assert cfg["extractor_conv_feature_layers"] == "[(24, 8, 4)] + [(24, 8, 4)] + [(24, 8, 4)]"
    assert (cfg["encoder_layers"], cfg["encoder_embed_dim"], cfg["conv_pos"]) == (2, 32, 16)
    assert cfg["extractor_mode"] == "default" and cfg["layer_norm_first"] is False


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (lambda: tiny_hubert(feat_proj_layer_norm=True), "feat_proj_layer_norm"),
        (lambda: tiny_hubert(conv_dim=(32, 32, 32)), "post_extract_proj"),
        (lambda: WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64,
                                        conv_dim=(24,) * 3, conv_kernel=(8,) * 3,
                                        conv_stride=(4,) * 3, num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=2)), "HuBERT"),
    ],
)
def test_refuses_what_s3prl_cannot_reproduce(tmp_path, model, match):
    with pytest.raises(ValueError, match=match):
        export_s3prl_distiller(model(), tmp_path / "s.ckpt")
    assert not (tmp_path / "s.ckpt").exists()


def test_refuses_normalised_student_unless_allowed(tmp_path):
    up = Upstream(tiny_hubert(), normalize=True)
    with pytest.raises(ValueError, match="normalization_mismatch"):
        export_s3prl_distiller(up, tmp_path / "s.ckpt")
    with pytest.raises(ValueError, match="feat_proj_layer_norm"):
        hubert_to_distiller_config(HubertConfig())


def test_export_s3prl_command_and_feature_selection(tmp_path, monkeypatch, capsys):
    """``robustdistill export-s3prl`` writes a checkpoint whose s3prl ``paper`` key is our last
    layer and whose ``last_hidden_state`` is the zero head (documented: never use it)."""
    from robustdistill.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_hubert()
    model.save_pretrained(tmp_path / "student")
    out = tmp_path / "s3prl" / "student.ckpt"
    assert main(["export-s3prl", "--student", str(tmp_path / "student"), "--out", str(out)]) == 0
    assert "-s hidden_states" in capsys.readouterr().out
    wav = torch.randn(4000)
    up = expert.UpstreamExpert(str(out)).eval()
    with torch.no_grad():
        states = up([wav])
        ours = model(wav[None], output_hidden_states=True).hidden_states
    torch.testing.assert_close(states["paper"], ours[-1], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(states["last_hidden_state"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["export-s3prl", "--student", str(tmp_path / "missing"), "--out", str(out)])
    assert exc.value.code == 2
