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


def test_a_stop_record_is_written_then_raised_and_removed_once_a_run_is_past_it(tmp_path):
    """``distill``, ``train-se`` and ``train-speaker`` stop through ``stop_with_record``: the
    record (with a NaN as strict null) in ``stopped.json``, an earlier ``final_state.json``
    removed, the message raised as the trainer's error; a record without the fields the card
    reads is refused before anything is written. ``remove_stopped`` (``train-speaker``, which
    writes no final state) removes it."""
    from robustdistill.nonfinite import NonFiniteTrainingError, stop_with_record
    from robustdistill.outcome import remove_stopped

    class SpeakerStop(NonFiniteTrainingError):
        pass

    with pytest.raises(ValueError, match=r"a stop record needs checkpoint"):
        stop_with_record(tmp_path, {"step": 2, "reason": "non-finite", "message": "m"},
                         main_process=True)
    assert list(tmp_path.iterdir()) == []
    write_outcome(tmp_path, FINAL_STATE, {"step": 4})
    record = {"step": 5, "reason": "non-finite", "message": "stopped at epoch 2", "loss": float(
        "nan"), "checkpoint": None}
    with pytest.raises(SpeakerStop, match=r"^stopped at epoch 2$"):
        stop_with_record(tmp_path, record, main_process=True, error=SpeakerStop)
    assert sorted(p.name for p in tmp_path.iterdir()) == [STOPPED]
    assert json.loads((tmp_path / STOPPED).read_text()) == {**record, "loss": None}
    with pytest.raises(NonFiniteTrainingError):  # another process: raises, writes nothing
        stop_with_record(tmp_path / "other", record, main_process=False)
    assert not (tmp_path / "other").exists()
    assert remove_stopped(tmp_path) is True and list(tmp_path.iterdir()) == []
    assert remove_stopped(tmp_path) is False
