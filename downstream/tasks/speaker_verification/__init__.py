"""Speaker verification: x-vector-style head, AM-softmax training, cosine scoring, EER/minDCF."""

from .task import SpeakerVerification, SpeakerVerificationConfig

TASK = SpeakerVerification

__all__ = ["TASK", "SpeakerVerification", "SpeakerVerificationConfig"]
