"""Utterance classification: keyword spotting, speaker identification, intent, emotion."""

from .task import UtteranceClassification, UtteranceClassificationConfig

TASK = UtteranceClassification

__all__ = ["TASK", "UtteranceClassification", "UtteranceClassificationConfig"]
