"""ASR task: alphabet, greedy CTC decoding by hand, and a few training steps end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel

from downstream.config import ConfigError
from downstream.runner import RunOptions, run_evaluation
from downstream.tasks.asr import decode_greedy, encode_text
from downstream.tasks.asr.make_transcripts import normalize_transcript, speaker_of
from downstream.tasks.asr.task import ALPHABET
from robustdistill.synthetic import write_synthetic_corpus


@pytest.fixture(autouse=True)
def one_thread():
    """Small LSTMs on a shared 2-core machine run ~50x slower with 2 intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_alphabet_and_encoding():
    assert len(ALPHABET) == 29 and ALPHABET[0] == "<blank>"
    assert encode_text("AB' Z") == [3, 4, 2, 1, 28]
    with pytest.raises(ValueError, match="not in the CTC vocabulary"):
        encode_text("a")


def test_greedy_decoding_by_hand():
    # frames: A A blank A B B space space C  (+ 2 padding frames that must be ignored)
    path = [3, 3, 0, 3, 4, 4, 1, 1, 5, 6, 6]
    scores = torch.nn.functional.one_hot(torch.tensor([path]), 29).float()
    assert decode_greedy(scores, torch.tensor([9])) == ["AAB C"]
    assert decode_greedy(scores, torch.tensor([1])) == ["A"]


def test_head_and_loss_learn_to_transcribe():
    """The CTC loss + greedy decoding path can fit two utterances exactly."""
    from downstream.base import Example
    from downstream.tasks.asr.task import AsrConfig, AsrHeadConfig, AsrTask

    task = AsrTask.__new__(AsrTask)
    task.config = AsrConfig.__new__(AsrConfig)
    task.config.head = AsrHeadConfig(hidden_size=8, num_layers=0, dropout=0.0)
    torch.manual_seed(0)
    head = task.build_head(8)
    features = torch.randn(2, 20, 8)
    lengths = torch.tensor([20, 15])
    examples = [Example("a", None, "AB BA"), Example("b", None, "C'Z")]
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(150):
        loss = task.training_loss(head, features, lengths, examples)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        metrics = task.evaluate(head, [(features, lengths, examples)])
        assert decode_greedy(head(features, lengths), lengths) == ["AB BA", "C'Z"]
    assert metrics == {"wer": 0.0, "cer": 0.0, "words": 3.0}


def test_normalisation_and_speakers(tmp_path):
    assert normalize_transcript("Mr. Hale's 3rd—\u201cno\u201d, 'twas 1,000!") == \
        "MR HALE'S THIRD NO TWAS ONE THOUSAND"
    assert normalize_transcript("the 21st and 40th, 12th") == "THE TWENTY FIRST AND FORTIETH TWELFTH"
    assert speaker_of(tmp_path / "103-1240-0000.flac") == "103"
    assert speaker_of(tmp_path / "spk7" / "take.wav") == "spk7"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr")
    paths = write_synthetic_corpus(root / "speech", 12, seconds_range=(1.0, 1.5), seed=2)
    words = ["A CAT", "THE DOG'S", "NO", "YES NO"]
    with (root / "manifest.jsonl").open("w") as f:
        for i, p in enumerate(paths):
            f.write(json.dumps({"path": str(p), "text": words[i % 4],
                                "speaker": f"s{i % 4}"}) + "\n")
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, conv_dim=(32, 32, 32), conv_kernel=(8, 8, 8),
                       conv_stride=(4, 4, 4), num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    HubertModel(cfg).save_pretrained(root / "up")
    (root / "asr.yaml").write_text(f"""
data:
  source: {{manifest: {root / "manifest.jsonl"}}}
  split: {{by: speaker, dev: 0.25, test: 0.25}}
training: {{steps: 4, batch_size: 4, eval_every: 2, eval_batch_size: 4, learning_rate: 0.01}}
head: {{hidden_size: 16, num_layers: 1, dropout: 0.0}}
disk_cache: false
""")
    return root


def test_trains_and_writes_results(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = run_evaluation(RunOptions(
        task="asr", upstream=str(corpus / "up"), config=str(corpus / "asr.yaml"),
        out=str(tmp_path / "out"), conditions=["clean"],
    ))
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["primary_metric"] == "wer" and saved["higher_is_better"] is False
    clean = saved["metrics"]["clean"]
    assert clean["wer"] >= 0 and clean["cer"] >= 0 and clean["words"] > 0
    losses = [h["train_loss"] for h in saved["dev"]["history"]]
    assert len(losses) == 2 and losses[1] < losses[0]  # CTC loss goes down at lr 0.01


def test_missing_transcripts_and_cropping_are_refused(corpus, tmp_path):
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    rows[0]["text"] = ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in rows))
    options = dict(task="asr", upstream=str(corpus / "up"), config=str(corpus / "asr.yaml"),
                   out=str(tmp_path / "out"), conditions=["clean"])
    with pytest.raises(ValueError, match="no transcript"):
        run_evaluation(RunOptions(**options, overrides={"data": {"source": {"manifest": str(bad)}}}))
    with pytest.raises(ValueError, match="max_seconds"):
        run_evaluation(RunOptions(**options, overrides={"data": {"max_seconds": 1.0}}))
    with pytest.raises(ConfigError, match="hidden_size"):
        run_evaluation(RunOptions(**options, overrides={"head": {"hiden_size": 3}}))


MODEL = Path(__file__).resolve().parents[1] / ".." / "shared" / "models" / "whisper-tiny.en"
TEST_OTHER = MODEL.parents[1] / "data" / "librispeech-mini" / "test-other" / "1688"


@pytest.mark.skipif(not (MODEL.is_dir() and TEST_OTHER.is_dir()),
                    reason="needs ../shared/models/whisper-tiny.en and ../shared/data")
def test_make_transcripts_writes_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from downstream.tasks.asr.make_transcripts import main

    before = torch.get_num_threads()
    (tmp_path / "audio").mkdir()
    for name in ("1688-142285-0002.flac", "1688-142285-0009.flac"):  # 2.8 s and 3.5 s
        (tmp_path / "audio" / name).symlink_to(TEST_OTHER / name)
    out = tmp_path / "m.jsonl"
    main([str(tmp_path / "audio"), str(out), "--model", str(MODEL), "--limit", "1"])
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(first) == 1
    assert first[0]["text"] == "YOU DON'T MEAN THAT YOU THOUGHT ME SO SILLY"
    assert first[0]["speaker"] == "1688" and first[0]["duration"] == pytest.approx(2.835)
    main([str(tmp_path / "audio"), str(out), "--model", str(MODEL)])  # resumes: one new row
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows[:1]] == [first[0]["path"]] and len(rows) == 2
    assert rows[1]["path"].endswith("1688-142285-0009.flac") and rows[1]["text"]
    torch.set_num_threads(before)


def test_phone_vocabulary_round_trip():
    """PR: space-separated phones as CTC symbols; decoding joins them with spaces."""
    vocab = ("<blank>", "HH", "AH", "L", "OW")
    assert encode_text("HH AH L OW", vocab, "words") == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="'ZH'"):
        encode_text("HH ZH", vocab, "words")
    # frames: HH HH blank AH L L blank L OW -> "HH AH L L OW"
    path = [1, 1, 0, 2, 3, 3, 0, 3, 4]
    scores = torch.nn.functional.one_hot(torch.tensor(path), len(vocab)).float()[None]
    assert decode_greedy(scores, torch.tensor([9]), vocab, "words") == ["HH AH L L OW"]
    from downstream.data import DataConfig, SourceConfig
    from downstream.tasks.asr.task import AsrConfig

    with pytest.raises(ValueError, match="blank"):
        AsrConfig(DataConfig(SourceConfig(root="x")), vocabulary=["<blank>", "AH"])


def test_make_transcripts_runs_as_a_module_without_runpy_warning_and_task_still_normalises():
    """`python -m downstream.tasks.asr.make_transcripts` (the command the ASR configs give)
    used to print runpy's "found in sys.modules ... unpredictable behaviour" RuntimeWarning,
    because the package's task module imported make_transcripts at import time."""
    import os
    import subprocess
    import sys

    from downstream.data import DataConfig, SourceConfig, Utterance
    from downstream.tasks.asr.task import AsrConfig, AsrTask

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONWARNINGS": "error::RuntimeWarning"}
    proc = subprocess.run([sys.executable, "-P", "-m", "downstream.tasks.asr.make_transcripts",
                           "--help"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr and "sys.modules" not in proc.stderr
    assert proc.stdout.startswith("usage: make_transcripts.py")
    # the task's own normalisation (now imported where it is used) is unchanged
    task = AsrTask(AsrConfig(DataConfig(SourceConfig(root="x"))), seed=0)
    assert task.target(Utterance("u", "u.wav", text="It's 3rd—ok")) == "IT'S THIRD OK"
