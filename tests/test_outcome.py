"""A run folder says how the run ended in one file: final_state.json or stopped.json."""

from __future__ import annotations

import json

import pytest

from robustdistill.outcome import FINAL_STATE, STOPPED, write_outcome


def test_each_outcome_replaces_the_other_segments_file(tmp_path):
    write_outcome(tmp_path, STOPPED, {"step": 3, "reason": "non-finite"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [STOPPED]
    # resumed and finished: the stop of step 3 is over
    path = write_outcome(tmp_path, FINAL_STATE, {"step": 4})
    assert path == tmp_path / FINAL_STATE and json.loads(path.read_text()) == {"step": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == [FINAL_STATE]
    # resumed with more steps and stopped again: step 4 was not where the run ended
    write_outcome(tmp_path, STOPPED, {"step": 6})
    assert sorted(p.name for p in tmp_path.iterdir()) == [STOPPED]
    assert json.loads((tmp_path / STOPPED).read_text()) == {"step": 6}


def test_only_outcome_files_are_written(tmp_path):
    with pytest.raises(ValueError, match="an outcome file is final_state.json or stopped.json"):
        write_outcome(tmp_path, "config.yaml", {})
    assert list(tmp_path.iterdir()) == []
