"""The ``teacher_cache`` section of a distillation config (:class:`TeacherCacheConfig`) and the
values its options may take (contexts, crop starts, storage dtypes), checked when the config is
read.

Part of :mod:`robustdistill.teacher_cache`, whose docstring describes the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..files import file_blocking_folder

CONTEXTS = ("utterance", "crop")
CROP_STARTS = ("frames", "chunks")
DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class TeacherCacheConfig:
    """The ``teacher_cache`` section of a distillation config (off unless ``dir`` is set).

    Attributes:
        dir: cache root folder; None disables the cache (teacher on every step).
        context: ``"utterance"`` (the teacher sees whole utterances; crops on its frame grid)
            or ``"crop"`` (the teacher sees exactly the crop; entries per crop).
        dtype: storage dtype of the targets: ``float16`` (default), ``bfloat16`` or
            ``float32``.
        layers: teacher ``hidden_states`` indices to store; default the union of the
            objectives' ``teacher_layers``.
        missing: ``"compute"`` (a miss is computed by the teacher and written) or ``"error"``
            (every entry must have been built by ``robustdistill cache-teacher``).
        crop_starts: ``"frames"`` or ``"chunks"`` (package docstring).
        max_utterance_s: with context ``"utterance"``, the longest utterance (seconds) the
            teacher encodes whole; a dataset with a longer one is refused at start-up (a miss
            would run the teacher's attention over all its frames at once).
        read_in_workers: read each training batch's targets in the collate function, i.e. in
            the ``DataLoader`` workers when ``data.num_workers > 0``, so the step only moves
            them to the device (:class:`CacheReader`); the values are the same bytes either
            way. Each batch then carries ``K x B x T x D`` targets through the workers' shared
            memory (86 MB in fp16 for 24 x 15.6 s crops and 3 WavLM Base+ layers): a container
            with a small ``/dev/shm`` needs it raised, or this option off.

    Raises:
        ValueError: in ``__post_init__``, an unknown context, dtype or ``missing`` mode, or a
            ``dir`` where a file stands (itself or one of its parents).
    """

    dir: str | None = field(default=None, metadata={"help": "cache root; null: teacher on every step"})
    context: str = field(default="utterance", metadata={"help": "utterance (whole utterance, crops on the frame grid) or crop (teacher sees the crop)"})
    dtype: str = field(default="float16", metadata={"help": "storage dtype: float16, bfloat16 or float32"})
    layers: list[int] | None = field(default=None, metadata={"help": "teacher layers to store; default: the objectives' teacher_layers"})
    missing: str = field(default="compute", metadata={"help": "compute (lazy fill) or error (prebuilt only)"})
    crop_starts: str = field(default="frames", metadata={"help": "frames (a crop starts on any teacher frame) or chunks (only at multiples of the crop length: fixed chunks that recur, so context crop can be prebuilt)"})
    max_utterance_s: float = field(default=120.0, metadata={"help": "context utterance: the longest utterance the teacher encodes whole, in seconds (its attention grows with the square of the length); a longer one is an error at start-up: use context crop with crop_starts chunks"})
    read_in_workers: bool = field(default=True, metadata={"help": "read a batch's cached targets in the DataLoader workers (collate), off the step's critical path; false: in the step"})

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"teacher_cache.context must be one of {CONTEXTS}, got {self.context!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"teacher_cache.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.missing not in ("compute", "error"):
            raise ValueError(f"teacher_cache.missing must be compute or error, got {self.missing!r}")
        if self.crop_starts not in CROP_STARTS:
            raise ValueError(f"teacher_cache.crop_starts must be one of {CROP_STARTS}, got "
                             f"{self.crop_starts!r}")
        if self.layers is not None and not self.layers:
            raise ValueError("teacher_cache.layers must name at least one layer (or be null)")
        if not self.max_utterance_s > 0:
            raise ValueError(f"teacher_cache.max_utterance_s must be > 0, got "
                             f"{self.max_utterance_s}")
        if self.dir and (blocking := file_blocking_folder(self.dir)) is not None:
            # found when the config is read, not as a NotADirectoryError once the teacher and
            # the data are loaded
            raise ValueError(f"teacher_cache.dir {self.dir!r}: {str(blocking)!r} is a file, "
                             "not a folder")
