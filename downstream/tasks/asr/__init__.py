"""ASR (SUPERB ASR): character CTC head with greedy decoding; WER and CER.

Transcript manifests for folders without transcripts are made by ``make_transcripts.py``
(Whisper tiny.en, offline)."""

from .task import AsrConfig, AsrTask, decode_greedy, encode_text

TASK = AsrTask

__all__ = ["TASK", "AsrConfig", "AsrTask", "decode_greedy", "encode_text"]
