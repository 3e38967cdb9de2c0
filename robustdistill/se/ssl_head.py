"""Enhancement with an SSL student and its RobustDistiller enhancement head.

A distillation run with the ``enhancement`` objective (RobustDistiller, arXiv 2302.09437)
leaves ``student/`` (a stock ``transformers`` encoder) and ``heads/enhancement.safetensors``
+ ``heads/enhancement.json`` (the BiLSTM mask head and how to rebuild it); ``robustdistill
export --out OUT`` writes the student into ``OUT`` and its heads into ``OUT/heads``
(:func:`robustdistill.export.export_heads_dir`). Together they are an enhancer, used only when
the head records the student's weights or records none (:func:`ssl_folders`): the head's sigmoid mask on the noisy STFT (Hann window 400, hop 160, n_fft 512,
centred frames, as in training) gives the enhanced spectrum, inverted with the noisy phase.
Not causal (bidirectional LSTM, centred frames): whole files only, no streaming.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from .teachers.base import SEOutput

__all__ = ["SSLHeadEnhancer", "is_ssl_run", "ssl_folders"]

logger = logging.getLogger(__name__)


def is_ssl_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds ``student/`` and ``heads/enhancement.json``."""
    folder = Path(folder)
    return (folder / "heads" / "enhancement.json").is_file() and (folder / "student").is_dir()


def ssl_folders(folder: str | Path) -> tuple[Path, Path] | None:
    """The ``(student_dir, heads_dir)`` of an SSL student with an enhancement head at ``folder``.

    ``folder`` may be a run (``folder/student`` + ``folder/heads``), a run's ``student/``
    (heads in ``../heads``) or an export with its heads inside (``folder/heads``, where
    ``export --out`` and ``card`` put them).

    Returns:
        The pair, or None when no ``heads/enhancement.json`` goes with a student there.
    """
    folder = Path(folder)
    candidates = [(folder / "student", folder / "heads"), (folder, folder / "heads")]
    if folder.name == "student":
        candidates.append((folder, folder.parent / "heads"))
    for student_dir, heads_dir in candidates:
        if (heads_dir / "enhancement.json").is_file() and (student_dir / "config.json").is_file():
            return student_dir, heads_dir
    return None


def _min_samples(upstream: nn.Module, limit: int = 160000) -> int:
    """The fewest 16 kHz samples ``upstream`` turns into one frame (its receptive field: 400
    for the usual CNN); ``limit + 1`` if even ``limit`` samples give none."""
    lengths = torch.arange(1, limit + 1)
    ok = torch.nonzero(upstream.frame_lengths(lengths) >= 1)
    return int(lengths[ok[0, 0]]) if ok.numel() else limit + 1


class SSLHeadEnhancer(nn.Module):
    """SSL student + enhancement head as a whole-file enhancer (16 kHz).

    Args:
        upstream: a :class:`robustdistill.upstream.Upstream`.
        head: the :class:`robustdistill.objectives.enhancement.EnhancementHead`.
        head_config: ``heads/enhancement.json``'s ``head_config`` (``input``, STFT).

    Attributes:
        min_samples: the shortest input, in 16 kHz samples, that gives the encoder one frame
            (its receptive field, 400 samples = 25 ms for the usual CNN); shorter input raises.
    """

    sample_rate = 16000

    def __init__(self, upstream: nn.Module, head: nn.Module, head_config: dict):
        super().__init__()
        self.upstream, self.head = upstream, head
        self.input = head_config.get("input", "last")
        self.n_fft = int(head_config.get("n_fft", 512))
        self.hop = int(head_config.get("hop_length", 160))
        self.win = int(head_config.get("win_length", 400))
        self.min_samples = _min_samples(upstream)


    @classmethod
    def from_run(cls, folder: str | Path) -> SSLHeadEnhancer:
        """Load the student and ``heads/enhancement.*`` found at ``folder`` by
        :func:`ssl_folders` (in ``eval`` mode).

        Raises:
            FileNotFoundError: no student with an enhancement head at ``folder``.
            ValueError: the head records other student weights than the student's (e.g. a
                student exported again from another checkpoint beside old heads).
        """
        from safetensors.torch import load_file

        from ..export import heads_match
        from ..objectives.enhancement import EnhancementHead
        from ..upstream import Upstream

        found = ssl_folders(folder)
        if found is None:
            raise FileNotFoundError(f"{folder}: no student/ and heads/enhancement.json (train "
                                    "with the 'enhancement' objective)")
        student_dir, heads_dir = found
        match, other = heads_match(heads_dir, student_dir)
        if match is False:
            raise ValueError(f"{heads_dir}: the enhancement head was saved with other student "
                             f"weights ({other}) than {student_dir}'s: export the student and "
                             "its heads together again (robustdistill export)")
        if match is None:
            logger.warning("%s: the enhancement head records no student weights, so it is not "
                           "checked against %s", heads_dir, student_dir)
        recipe = json.loads((heads_dir / "enhancement.json").read_text())
        state = {k.removeprefix("head."): v for k, v in
                 load_file(str(heads_dir / "enhancement.safetensors")).items()}
        # the shapes come from the weights (an export of a checkpoint saved before checkpoints
        # kept the heads' layouts has an empty head_config)
        cfg = {**recipe.get("options", {}), **recipe.get("head_config", {})}
        layers = sum(1 for k in state if k.startswith("lstm.weight_ih_l")
                     and not k.endswith("_reverse"))
        hop = int(cfg.get("hop_length", 160))
        head = EnhancementHead(state["lstm.weight_ih_l0"].shape[1], state["proj.weight"].shape[0],
                               state["lstm.weight_hh_l0"].shape[1], layers,
                               max(1, round(320 / hop)), float(cfg.get("dropout", 0.0)))
        head.load_state_dict(state)
        upstream = Upstream.from_pretrained(student_dir)
        return cls(upstream, head, cfg).eval()

    @torch.no_grad()
    def forward(self, noisy: torch.Tensor, return_activations: bool = False) -> SEOutput:
        """``(B, N)`` (or ``(N,)``) 16 kHz -> :class:`SEOutput` with ``enhanced`` of the same
        shape (activations: ``mask`` ``(B, F, 257)``).

        Raises:
            ValueError: ``N`` below :attr:`min_samples` (shorter than one encoder frame).
        """
        squeeze = noisy.dim() == 1
        x = noisy[None] if squeeze else noisy
        if x.shape[-1] < self.min_samples:
            raise ValueError(f"{x.shape[-1]} samples at {self.sample_rate} Hz is shorter than one "
                             f"frame of this encoder ({self.min_samples} samples, "
                             f"{1000 * self.min_samples / self.sample_rate:g} ms)")
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        out = self.upstream(x, lengths, return_extract_features=self.input == "cnn")
        feats = out.extract_features if self.input == "cnn" else out.hidden_states[-1]
        window = torch.hann_window(self.win, device=x.device)
        spec = torch.stft(x, self.n_fft, self.hop, self.win, window, center=True,
                          pad_mode="constant", return_complex=True)  # (B, bins, F)
        frames = spec.shape[-1]
        mask = self.head(feats, out.frame_lengths, frames,
                         torch.full((x.shape[0],), frames, dtype=torch.long))
        y = torch.istft(spec * mask.transpose(1, 2), self.n_fft, self.hop, self.win, window,
                        center=True, length=x.shape[1])
        return SEOutput(y[0] if squeeze else y, {"mask": mask} if return_activations else {})
