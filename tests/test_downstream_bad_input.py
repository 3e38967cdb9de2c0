"""Downstream bad input: a hand-edited results.json whose metric is not a number (a quoted
"0.3", a list) is refused in one line naming the file, metric and condition, before
``compare`` writes anything (it failed with a TypeError traceback in the plot, after
results.json and results.md were written), and the card names it; a text file given as a head
is a one-line error; head values that train nothing are refused when the config is read."""

from __future__ import annotations

import json
import re

import pytest

from downstream.cli import compare_main
from downstream.load import load_results


def _result(upstream: str, eer) -> dict:
    return {"task": "speaker_verification", "upstream": upstream, "primary_metric": "eer",
            "higher_is_better": False, "conditions": ["clean", "snr5"],
            "metrics": {"clean": {"eer": eer, "min_dcf": 0.5}, "snr5": {"eer": 0.4}}}


@pytest.mark.parametrize("value", ["0.3", [0.3], True, {"value": 0.3}])
def test_a_metric_that_is_not_a_number_is_one_line_and_nothing_is_written(tmp_path, capsys,
                                                                        value):
    good, bad = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(_result("a", 0.2)))
    bad.write_text(json.dumps(_result("b", value)))
    with pytest.raises(ValueError, match=rf"{bad}: metric 'eer' under 'clean' is not a number "
                                         r"or null, got "):
        load_results(bad)
    with pytest.raises(SystemExit) as exc:
        compare_main([str(good), str(bad), "--out", str(tmp_path / "cmp")])
    assert exc.value.code == 2
    assert "metric 'eer' under 'clean' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_null_and_integer_metrics_are_still_read(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_result("a", None) | {"metrics": {
        "clean": {"eer": None, "min_dcf": 1}, "snr5": {"eer": 0.4}}}))
    (entry,) = load_results(path)
    assert entry["metrics"]["clean"]["min_dcf"] == 1
    assert entry["metrics"]["clean"]["eer"] != entry["metrics"]["clean"]["eer"]  # NaN


def test_the_card_names_a_metric_that_is_not_a_number_instead_of_a_silent_dash(tmp_path,
                                                                               caplog):
    import logging

    from robustdistill.publish.results import load_task_results

    path = tmp_path / "a.json"
    path.write_text(json.dumps(_result("a", "0.3")))
    with caplog.at_level(logging.WARNING, logger="robustdistill"):
        (task,) = load_task_results(path)
    assert "eer" not in task.metrics["clean"] and task.metrics["snr5"]["eer"].value == 0.4
    assert f"{path}: eer under clean is not a number ('0.3')" in caplog.text


def test_a_head_file_that_is_text_is_a_value_error_not_a_key_error(tmp_path):
    """torch.load of a text file raises KeyError (the unpickler reads 'h' as an opcode); it
    ended evaluate --evaluate-only in a traceback."""
    from downstream.runner import RunOptions, load_head

    text = tmp_path / "head.pt"
    text.write_text("hello this is not a head\n" * 10)
    options = RunOptions(task="utterance_classification", upstream="fbank", config="x",
                         out=str(tmp_path))
    with pytest.raises(ValueError, match=rf"{text} cannot be read as a head file \(KeyError"):
        load_head(text, None, None, None, options)


@pytest.mark.parametrize("task, values, message", [
    ("speaker_verification", {"head": {"scale": 0.0}}, "head.scale must be > 0, got 0.0"),
    ("speaker_verification", {"head": {"margin": -0.5}},
     "head.margin (the AM-softmax additive margin) must be >= 0, got -0.5"),
    ("speaker_verification", {"head": {"margin": float("nan")}},
     "head.margin: expected a finite number, got nan"),  # refused as a number at all
    ("speaker_verification", {"head": {"embedding_dim": 0}}, "head.embedding_dim must be >= 1"),
    ("speaker_verification", {"head": {"channels": -1}}, "head.channels must be >= 1"),
    ("speaker_verification", {"head": {"dilations": [1, 0, 3]}}, "head.dilations must all be"),
    ("speaker_verification", {"train_crop_seconds": 0.0}, "train_crop_seconds must be > 0"),
    ("utterance_classification", {"head": {"dropout": 1.0}}, "head.dropout must lie in [0, 1)"),
    ("utterance_classification", {"head": {"projector_dim": -1}},
     "head.projector_dim must be >= 0"),
    ("speech_enhancement", {"head": {"output_dropout": 1.0}},
     "head.output_dropout must lie in [0, 1)"),
    ("speech_enhancement", {"head": {"dropout": -0.1}}, "head.dropout must lie in [0, 1)"),
    ("utterance_classification", {"data": {"max_seconds": 0}},
     "data.max_seconds must be a number of seconds above 0"),
    ("speaker_verification", {"data": {"max_seconds": float("nan")}},
     "data.max_seconds: expected a finite number, got nan"),
])
def test_head_values_that_train_nothing_are_refused_at_load(task, values, message):
    """Accepted before: scale 0 (all-zero logits, no gradient: the random head was scored),
    a negative AM-softmax margin (a bonus to the target logit: a real run with margin -0.5 went
    to a results.json),
    embedding_dim 0 (every trial scored 0, EER 0.5), train_crop_seconds 0 (one-frame crops),
    dropout 1 (every training input zeroed), data.max_seconds 0 (one-sample utterances: "no
    usable audio" naming no setting): each ran to a results.json, or failed, without a word."""
    from downstream.base import get_task
    from downstream.config import from_dict

    config_class = get_task(task).config_class
    data = {"data": {"source": {"root": "x", "pattern": "(?P<speaker>.+)"}}}
    with pytest.raises(ValueError, match=re.escape(message)):
        from_dict(config_class, {"data": data["data"] | values.get("data", {})}
                  | {k: v for k, v in values.items() if k != "data"})
    from_dict(config_class, data)  # the defaults stand


def test_stoi_with_under_30_frames_of_speech_is_unscored_not_averaged_in(caplog):
    """A reference with 0.3 s of speech in 1 s (a short crop, as ``train-se``'s validation
    pairs of ``data.crop_seconds`` are) keeps 21 STOI frames once silence is removed, fewer
    than STOI's 30: pystoi returns 1e-5, which was averaged in as a score (a 0.5 s validation
    crop of test-other gave it to 15 of 128 items). It is NaN and said; 0.5 s of speech is
    scored."""
    import logging

    import numpy as np

    from downstream.tasks.speech_enhancement.task import speech_metrics

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speech = 0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    short = np.where(t < 0.3, speech, 0.0)
    noisy = short + 0.01 * rng.standard_normal(16000)
    with caplog.at_level(logging.WARNING):
        scores = speech_metrics(noisy, short, "crop 7")
    assert np.isnan(scores["stoi"]) and np.isfinite(scores["si_sdr"])
    assert ("STOI undefined on crop 7 (fewer than 30 STOI frames, about 0.4 s, of speech in "
            "the reference)") in caplog.text
    longer = np.where(t < 0.5, speech, 0.0)
    assert 0.5 < speech_metrics(longer + 0.01 * rng.standard_normal(16000), longer,
                                metrics=("stoi",))["stoi"] <= 1.0


def test_stoi_of_a_silent_reference_is_unscored_not_averaged_in(caplog):
    """A test utterance silent in its first ``max_seconds`` (an all-zero reference) had STOI
    1e-5 (pystoi's value with no speech frame) averaged into the test STOI (0.705 instead of
    0.941 over 4 real items, one of them silent), while its PESQ and SI-SDR were left out."""
    import logging

    import numpy as np

    from downstream.tasks.speech_enhancement.task import speech_metrics

    rng = np.random.default_rng(0)
    speech = (0.1 * np.sin(np.arange(16000) / 5.0) * (1 + rng.random(16000))).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        scores = speech_metrics(rng.standard_normal(16000) * 0.01, np.zeros(16000), "late.flac")
    assert np.isnan(scores["stoi"]) and np.isnan(scores["si_sdr"])
    assert "STOI undefined on late.flac (the reference is silent)" in caplog.text
    # a silent estimate of real speech is still scored: the model earned its low STOI
    assert np.isfinite(speech_metrics(np.zeros(16000), speech, "quiet")["stoi"])


def test_help_of_the_downstream_command_prints_its_usage_and_exits_0(capsys):
    """``python -m downstream.cli --help`` is a request, not an error: usage on stdout, exit 0
    (it was the usage on stderr with exit status 2, as for an unknown command)."""
    from downstream.cli import main

    for flag in ("--help", "-h"):
        assert main([flag]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("usage: python -m downstream.cli {evaluate,compare,aggregate}")
        assert "COMMAND --help" in out and err == ""
    assert main(["evaluat"]) == 2  # a misspelt command stays an error
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: python -m downstream.cli")
