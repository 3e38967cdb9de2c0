"""Audio datasets, sampler and batching for distillation (and downstream evaluation).

Three sources give the same items, ``{"waveform": float32 (S,), "index": int}``, mono at 16 kHz
and randomly cropped to at most ``max_length_s``:

* :class:`AudioFileDataset`: a folder of audio files (wav/flac/ogg/mp3, read by soundfile
  through :func:`robustdistill.audio.load_audio`);
* :class:`HFAudioDataset`: a map-style Hugging Face ``datasets`` split (hub name or local path);
* :class:`StreamingAudioDataset`: a streaming ``datasets`` split, sharded by rank.

Audio through ``datasets`` is never decoded by ``datasets`` itself (its 5.x decoder needs
torchcodec and FFmpeg): the audio column is cast to ``Audio(decode=False)`` and the encoded
``bytes`` (or ``path``) are decoded with :func:`~robustdistill.audio.load_audio`.

Randomness is a pure function of ``(seed, epoch, index)``, never of the global RNG, the worker
or the process: :class:`ShardedRandomSampler` yields ``(index, epoch)`` keys, and the dataset
draws the crop start from ``np.random.default_rng([seed, epoch, index])``. A run therefore
resumes exactly from ``(epoch, samples consumed)`` with :meth:`ShardedRandomSampler.set_start`.

Bad audio never stops a run. Files that are unreadable or shorter than ``min_length_s`` are
dropped when the dataset is built, with one warning giving the count and the first names. A
file that fails at read time (corrupt since the scan, NaN/Inf samples, which a header scan
cannot see; digital silence; a corrupt float file, see :data:`robustdistill.audio.MAX_PEAK`)
is logged (once per process) and replaced by the next readable item (``index + 1``,
``index + 2``, ...), so the batch stays full and deterministic; only when
:data:`MAX_READ_FAILURES` items in a row (or all items) fail does the dataset raise
:class:`~robustdistill.audio.AudioError`, since the data is then broken, not noisy: the trainer
then stops with a checkpoint and one line (:class:`robustdistill.trainer.DataReadError`).
Validation items are each read once when the datasets are built, so a validation set with no
readable item is an error at start-up and one with some is used without them.

Tensor legend (lhotse style):

* ``B``: batch size (utterances);
* ``S``: samples at 16 kHz; ``S_max`` the longest in the batch;
* ``waveforms``: ``(B, S_max)`` float32, zero after each utterance's end;
* ``lengths``: ``(B,)`` int64, real samples per utterance (``lengths[b] <= S_max``);
* ``indices``: ``(B,)`` int64, dataset index of each utterance (see each dataset for meaning).

Package layout (each module one job; import everything from ``robustdistill.data``):

* :mod:`~robustdistill.data.config`: :class:`DataConfig`;
* :mod:`~robustdistill.data.cropped`: the map-style base (scan, filter, fallback, crop);
* :mod:`~robustdistill.data.files`: :class:`AudioFileDataset`;
* :mod:`~robustdistill.data.hf_datasets`: :func:`load_hf_split`, :class:`HFAudioDataset`;
* :mod:`~robustdistill.data.streaming`: :class:`StreamingAudioDataset`;
* :mod:`~robustdistill.data.sampler`: :class:`ShardedRandomSampler`;
* :mod:`~robustdistill.data.batching`: :func:`collate_waveforms`, :func:`build_dataloader`;
* :mod:`~robustdistill.data.build`: :func:`build_datasets` from a :class:`DataConfig`.
"""

from .batching import build_dataloader, collate_waveforms
from .build import build_datasets
from .config import DataConfig
from .cropped import MAX_READ_FAILURES
from .files import AudioFileDataset
from .hf_datasets import HFAudioDataset, load_hf_split
from .sampler import ShardedRandomSampler
from .streaming import StreamingAudioDataset

__all__ = [
    "MAX_READ_FAILURES",
    "AudioFileDataset",
    "DataConfig",
    "HFAudioDataset",
    "ShardedRandomSampler",
    "StreamingAudioDataset",
    "build_dataloader",
    "build_datasets",
    "collate_waveforms",
    "load_hf_split",
]
