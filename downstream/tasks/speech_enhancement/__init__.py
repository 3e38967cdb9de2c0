"""Speech enhancement (SUPERB SE): BLSTM mask on the noisy STFT; PESQ, STOI, SI-SDR."""

from .task import SpeechEnhancementConfig, SpeechEnhancementTask, speech_metrics

TASK = SpeechEnhancementTask

__all__ = ["TASK", "SpeechEnhancementConfig", "SpeechEnhancementTask", "speech_metrics"]
