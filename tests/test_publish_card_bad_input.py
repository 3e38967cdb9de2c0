"""``robustdistill card --speed-json`` under bad input: a NaN or negative timing was printed
into the card as it was (``| 1 s | nan s | -1.000 |``), a string one ended in a TypeError
traceback, and a file that is not JSON in a message that did not name it."""

from __future__ import annotations

import json

import pytest

from robustdistill.publish.card import read_speed_rows

GOOD = {"seconds": 1.0, "median_s": 0.01, "real_time_factor": 0.01, "threads": 1}


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    ('{"seconds": 1}', "expected a non-empty JSON list"),
    ("[]", "expected a non-empty JSON list"),
    (json.dumps([GOOD | {"median_s": float("nan")}]), "row 0: median_s must be a finite number "
                                                      "> 0, got nan"),
    (json.dumps([GOOD, GOOD | {"real_time_factor": -1.0}]), "row 1: real_time_factor must be"),
    (json.dumps([GOOD | {"seconds": "x"}]), "row 0: seconds must be a finite number > 0, got 'x'"),
    (json.dumps([{"seconds": 1.0, "median_s": 0.01}]), "row 0: real_time_factor must be"),
    (json.dumps([GOOD | {"threads": 0}]), "row 0: threads must be an integer >= 1"),
])
def test_speed_rows_that_would_print_a_wrong_number_are_refused(tmp_path, content, message):
    path = tmp_path / "speed.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"--speed-json {path}: .*{message.replace('[', '.')}"):
        read_speed_rows(path)


def test_good_speed_rows_are_read_and_the_command_refuses_bad_ones_in_one_line(tmp_path,
                                                                               capsys):
    from robustdistill.cli import main

    path = tmp_path / "speed.json"
    path.write_text(json.dumps([GOOD, GOOD | {"seconds": 10}]))
    assert read_speed_rows(path)[1]["seconds"] == 10
    path.write_text(json.dumps([GOOD | {"median_s": -0.5}]))
    with pytest.raises(SystemExit) as exit_info:
        main(["card", "--model", str(tmp_path / "model"), "--license", "mit",
              "--speed-json", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"robustdistill card: error: --speed-json {path}: row 0: median_s must be a finite "
        "number > 0, got -0.5")
