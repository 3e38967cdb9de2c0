"""train-speaker checkpoints, its command's errors and the exported embedder: pins found by mutation testing (2026-12-06)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import speaker_kd_config

from robustdistill.checkpoints import verify_checkpoint


# ---------------------------------------------------------------------------- train-speaker
def _speaker_cfg(tmp_path, out: str, epochs: int, resume: bool = False):
    return speaker_kd_config(tmp_path, out, epochs, resume, method="none")


def test_speaker_fresh_run_into_an_earlier_runs_folder_is_refused(tiny, tmp_path):
    """``resume: false`` into a folder holding an earlier run's ``epoch_1``/``epoch_2`` is
    refused and leaves that run intact (it used to train over it: the two runs' logs mixed, and
    an earlier checkpoint beyond the new run's last was later resumed as the new run's)."""
    from robustdistill.speaker.train import train_system

    teacher, crops = tiny
    train_system(_speaker_cfg(tmp_path, "r", 2), teacher, crops)
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run"):
        train_system(_speaker_cfg(tmp_path, "r", 2), teacher, crops)
    ckpts = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_1", "epoch_2"]
    assert verify_checkpoint(ckpts / "epoch_2")["step"] == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_speaker_main_reports_a_config_typo_as_a_usage_error(tmp_path, capsys):
    from robustdistill.speaker.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"training": {"epochs": 1}}))
    with pytest.raises(SystemExit) as stop:
        main(["train", "--config", str(config), "--training.epochz", "2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown config key" in err and "epochz" in err


def _two_layer_speaker_model():
    from robustdistill.speaker.models import MelLSTMEncoder, SpeakerModel

    torch.manual_seed(0)
    return SpeakerModel(MelLSTMEncoder(8, 2), num_speakers=3, embedding_dim=6, teacher_dim=4)


def test_speaker_embedder_of_a_two_layer_student_round_trips_in_eval_mode(tmp_path):
    from robustdistill.speaker.models import SpeakerEmbedder

    model = _two_layer_speaker_model().eval()
    embedder = SpeakerEmbedder.from_speaker_model(model)
    assert (embedder.encoder.lstm.hidden_size, embedder.encoder.lstm.num_layers,
            embedder.embedding.out_features) == (8, 2, 6)
    assert not embedder.training
    x = torch.randn(2, 3200, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([3200, 2000])
    with torch.no_grad():
        expected = model(x, lengths).embedding
        torch.testing.assert_close(embedder(x, lengths), expected, rtol=0, atol=0)
    embedder.save_pretrained(tmp_path / "s")
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (config["hidden_size"], config["num_layers"], config["embedding_dim"]) == (8, 2, 6)
    loaded = SpeakerEmbedder.from_pretrained(tmp_path / "s")
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths), expected, rtol=0, atol=0)


def test_speaker_embedder_refuses_weights_with_a_tensor_missing(tmp_path):
    from safetensors.torch import load_file, save_file

    from robustdistill.speaker.models import SpeakerEmbedder

    SpeakerEmbedder.from_speaker_model(_two_layer_speaker_model()).save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    del weights["embedding.bias"]
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="embedding.bias"):
        SpeakerEmbedder.from_pretrained(tmp_path)
    weights["embedding.bias"] = torch.zeros(7)  # another shape
    save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="does not fit the config"):
        SpeakerEmbedder.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["embedding_dim"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has no 'embedding_dim'"):
        SpeakerEmbedder.from_pretrained(tmp_path)


def test_a_whisper_upstream_student_is_not_exported_and_the_run_goes_on(tmp_path, caplog):
    """Whisper's encoder saved alone would reload with random weights: refused, and the
    trainer's export step only logs it."""
    import logging

    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from robustdistill.speaker.models import SpeakerEmbedder, SpeakerModel, UpstreamEncoder
    from robustdistill.speaker.train import _export_student

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=1)
    WhisperModel(config).save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor().save_pretrained(tmp_path / "whisper")
    model = SpeakerModel(UpstreamEncoder(str(tmp_path / "whisper")), 3, 6, 4)
    with pytest.raises(ValueError, match="Whisper upstream are not exported"):
        SpeakerEmbedder.from_speaker_model(model)
    with caplog.at_level(logging.WARNING, logger="robustdistill.speaker"):
        _export_student(model, tmp_path / "student")
    assert "student not exported" in caplog.text and not (tmp_path / "student").exists()


def test_exporting_an_lstm_student_over_an_upstream_one_drops_the_stale_upstream(
        tmp_path, tiny_wavlm_dir):
    from robustdistill.publish.provenance import model_facts
    from robustdistill.speaker.models import SpeakerEmbedder, SpeakerModel, UpstreamEncoder

    torch.manual_seed(0)
    upstream_student = SpeakerModel(UpstreamEncoder(str(tiny_wavlm_dir)), 3, 6, 4)
    SpeakerEmbedder.from_speaker_model(upstream_student).save_pretrained(tmp_path / "s")
    assert (tmp_path / "s" / "upstream").is_dir()
    lstm = SpeakerEmbedder.from_speaker_model(_two_layer_speaker_model())
    lstm.save_pretrained(tmp_path / "s")
    assert not (tmp_path / "s" / "upstream").exists()
    assert model_facts(tmp_path / "s").parameters == sum(p.numel() for p in lstm.parameters())


def test_an_upstream_speaker_student_exports_its_upstream_and_reloads_exactly(
        tmp_path, tiny_wavlm_dir):
    """``kind: upstream``: the upstream goes to ``student/upstream`` (save_pretrained),
    ``model.safetensors`` holds the layer weights, pooling and embedding; the reloaded embedder
    gives the trained model's embeddings, and the card counts every weight."""
    from robustdistill.publish.provenance import model_facts
    from robustdistill.speaker.models import SpeakerEmbedder, SpeakerModel, UpstreamEncoder

    torch.manual_seed(0)
    model = SpeakerModel(UpstreamEncoder(str(tiny_wavlm_dir)), num_speakers=3, embedding_dim=6,
                         teacher_dim=4).eval()
    with torch.no_grad():
        model.encoder.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
        for p in model.encoder.upstream.parameters():
            p.add_(0.01)  # trained away from the folder's weights
    embedder = SpeakerEmbedder.from_speaker_model(model)
    embedder.save_pretrained(tmp_path / "s")
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["model_type"] == "robustdistill-speaker-upstream"
    assert (tmp_path / "s" / "upstream" / "config.json").is_file()
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert not any(k.startswith("encoder.upstream.") for k in stored)
    assert "encoder.layer_weights" in stored
    loaded = SpeakerEmbedder.from_pretrained(tmp_path / "s")
    x = torch.randn(2, 3200, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([3200, 2000])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths), model(x, lengths).embedding,
                                   rtol=0, atol=0)
    assert model_facts(tmp_path / "s").parameters == sum(
        p.numel() for p in embedder.parameters())
