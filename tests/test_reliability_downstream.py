"""Downstream evaluation over a corpus with broken and unusual files: it finishes, skips and
counts each broken file per split, and uses the unusual-but-valid ones (issue 14)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_downstream_tasks import SR, _save_tiny, _tone, _uc_config
from test_reliability_audio import deny_unreadable  # noqa: F401

from downstream.cli import evaluate_main

#: file -> (what it is, skipped?) ; speakers ann..dan train, eve dev, fay test.
BROKEN = {"lo_ann_5.wav": "nan", "hi_bob_6.wav": "empty", "lo_cat_7.wav": "text",
          "hi_dan_8.wav": "silent", "lo_eve_9.wav": "one sample", "hi_fay_4.wav": "mode 000"}
UNUSUAL = {"hi_ann_7.wav": "96 kHz", "lo_bob_8.wav": "6 channels", "hi_cat_9.wav": "8-bit"}


def _corpus(root):
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir(parents=True)
    for s, speaker in enumerate(["ann", "bob", "cat", "dan", "eve", "fay"]):
        for label, freq in (("lo", 300.0), ("hi", 1200.0)):
            for take in range(3):
                sf.write(audio / f"{label}_{speaker}_{take}.wav",
                         _tone(freq * (1 + 0.05 * s), 0.4 + 0.1 * take, rng), SR)
    nan = _tone(300.0, 0.5, rng)
    nan[100] = np.nan
    sf.write(audio / "lo_ann_5.wav", nan, SR, subtype="FLOAT")
    (audio / "hi_bob_6.wav").write_bytes(b"")
    (audio / "lo_cat_7.wav").write_text("not audio " * 100)
    sf.write(audio / "hi_dan_8.wav", np.zeros(SR // 2, np.float32), SR)
    sf.write(audio / "lo_eve_9.wav", np.full(1, 0.1, np.float32), SR)
    sf.write(audio / "hi_fay_4.wav", _tone(1200.0, 0.5, rng), SR)
    os.chmod(audio / "hi_fay_4.wav", 0)
    t = np.arange(int(0.5 * 96_000)) / 96_000
    sf.write(audio / "hi_ann_7.wav", (0.3 * np.sin(2 * np.pi * 1200 * t)).astype(np.float32),
             96_000)
    sf.write(audio / "lo_bob_8.wav", np.stack([_tone(315.0, 0.5, rng)] * 6, axis=1), SR)
    sf.write(audio / "hi_cat_9.wav", _tone(1320.0, 0.5, rng), SR, subtype="PCM_U8")
    noise, rir = root / "noise", root / "rir"
    noise.mkdir()
    rir.mkdir()
    sf.write(noise / "white.wav", rng.standard_normal(SR).astype(np.float32) * 0.1, SR)
    decay = np.exp(-np.arange(2000) / 300.0) * rng.standard_normal(2000)
    decay[0] = 1.0
    sf.write(rir / "room.wav", decay.astype(np.float32), SR)
    return root


@pytest.mark.slow
def test_downstream_evaluation_skips_and_counts_broken_files_and_finishes(
        tmp_path, deny_unreadable):  # noqa: F811
    root = _corpus(tmp_path / "corpus")
    upstream = str(_save_tiny("wavlm", tmp_path / "tiny_wavlm"))
    config = tmp_path / "uc.yaml"
    config.write_text(yaml.safe_dump(_uc_config(root)))
    out = tmp_path / "out"
    argv = ["--task", "utterance_classification", "--upstream", upstream, "--config",
            str(config), "--out", str(out), "--test-noise-dir", str(root / "noise"),
            "--test-rir-dir", str(root / "rir")]
    assert evaluate_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_items"] == {"train": 4, "dev": 1, "test": 1}
    for metrics in results["metrics"].values():
        assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))
