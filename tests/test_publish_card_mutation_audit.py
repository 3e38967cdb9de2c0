"""The card's chance-level limitation at its boundary (session 13 mutation audit): an interval
whose lower end equals chance level includes it, so the card must say so."""

from __future__ import annotations

from robustdistill.publish.card_results import chance_notes
from robustdistill.publish.results import MetricValue, TaskResult


def _task(low: float) -> TaskResult:
    # 4 classes: chance level 0.25 (exact in binary floating point)
    return TaskResult(task="utterance_classification", label="ks", upstream="me",
                      primary_metric="accuracy", higher_is_better=True,
                      conditions=["clean", "snr0"],
                      metrics={"clean": {"accuracy": MetricValue(0.9, (0.8, 0.95))},
                               "snr0": {"accuracy": MetricValue(0.4, (low, 0.55))}},
                      dataset="d", raw={"task_summary": {"num_classes": 4}})


def test_an_interval_starting_at_chance_level_is_noted_and_one_above_it_is_not():
    (note,) = chance_notes([_task(0.25)])
    assert "ks: the accuracy interval includes chance level (0.25, 4 classes)" in note
    assert "`snr0`" in note and "`clean`" not in note
    assert chance_notes([_task(0.2501)]) == []
