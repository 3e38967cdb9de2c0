"""``robustdistill enhance IN OUT --model DIR``: enhance a file or a folder of files.

Any sample rate and channel count in: each channel is resampled to the model's rate (soxr),
enhanced by streaming with carried state in chunks of ``--chunk-seconds`` (constant memory for
long files; the result equals whole-file enhancement exactly, see
:mod:`robustdistill.se.streaming`), resampled back, and written at the input's rate and
channel count (same container; PCM_16 for formats without float). A folder is processed
recursively, mirroring its layout under ``OUT``. A progress bar counts seconds of audio.

``--model`` is an SE student folder (``save_pretrained``; a training run's folder also works:
its ``student/`` is used), ``nsnet2`` or ``dtln`` (the pretrained teachers), or a
distillation run folder with an SSL student and its enhancement head (``student/`` +
``heads/enhancement.*``; see :mod:`robustdistill.se.ssl_head`; whole channels, not streamed).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import AudioError, list_audio_files, probe_audio, resample
from .streaming import StreamingEnhancer
from .teachers import TEACHERS, load_teacher
from .teachers.base import FrameModel

__all__ = ["load_enhancer", "enhance_waveform", "enhance_file", "main"]

logger = logging.getLogger(__name__)


def load_enhancer(model: str | Path):
    """An SE model by teacher name or folder (see the module docstring), in ``eval`` mode.

    Raises:
        FileNotFoundError: neither a teacher name nor a folder holding an SE student.
        ValueError: a model folder that is not an SE student's (``config.json`` of another
            model).
    """
    from .ssl_head import SSLHeadEnhancer, is_ssl_run
    from .students import GRUMaskStudent

    if str(model) in TEACHERS:
        return load_teacher(str(model))
    folder = Path(model)
    for run in (folder, folder.parent):  # an SSL distillation run, or its student/ folder
        if is_ssl_run(run) and (run == folder or folder.name == "student"):
            return SSLHeadEnhancer.from_run(run)
    for candidate in (folder, folder / "student"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return GRUMaskStudent.from_pretrained(candidate).eval()
    raise FileNotFoundError(f"--model {model}: not {' / '.join(TEACHERS)} and no SE student "
                            f"folder (config.json + model.safetensors) at {folder} or "
                            f"{folder / 'student'}")


@torch.no_grad()
def enhance_waveform(model, waveform: np.ndarray, sample_rate: int,
                     chunk_seconds: float = 10.0, progress=None) -> np.ndarray:
    """Enhance ``(N,)`` or ``(N, C)`` audio at ``sample_rate`` Hz; same shape and rate out.

    Raises:
        ValueError: empty, non-finite or more than 2-D audio.
    """
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"expected (samples,) or (samples, channels) audio, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or Inf")
    chans = x[:, None] if x.ndim == 1 else x
    streaming = isinstance(model, FrameModel)
    rate = model.stft.sample_rate if streaming else model.sample_rate
    out = np.zeros_like(chans)
    for c in range(chans.shape[1]):
        sig = chans[:, c]
        if sample_rate != rate:
            sig = resample(sig, sample_rate, rate)
        if streaming:
            stream = StreamingEnhancer(model)
            chunk = max(int(chunk_seconds * rate), model.stft.hop_length)
            parts = []
            for i in range(0, sig.size, chunk):
                parts.append(stream.push(torch.from_numpy(np.ascontiguousarray(
                    sig[i: i + chunk]))))
                if progress is not None:
                    progress.update(min(chunk, sig.size - i) / rate)
            parts.append(stream.flush())
            y = torch.cat(parts, dim=1)[0, stream.delay: stream.delay + sig.size].numpy()
        else:  # a non-causal enhancer (SSL student + head): the whole channel at once
            y = model(torch.from_numpy(np.ascontiguousarray(sig))[None]).enhanced[0].numpy()
            if progress is not None:
                progress.update(sig.size / rate)
        if sample_rate != rate:
            y = resample(y, rate, sample_rate)
            y = np.pad(y, (0, max(0, chans.shape[0] - y.size)))[: chans.shape[0]]
        out[:, c] = y
    return out[:, 0] if x.ndim == 1 else out


def enhance_file(model, src: str | Path, dst: str | Path,
                 chunk_seconds: float = 10.0, progress=None) -> Path:
    """Enhance one audio file into ``dst`` (parent folders created).

    Args:
        model: an SE teacher or student (see :func:`enhance_waveform`).
        src: the input file (any rate, mono or multi-channel; each channel enhanced alone).
        dst: the output file (format from its extension), at the input's sample rate and
            channel count; the input's subtype is kept where soundfile accepts it, with
            16-bit PCM as the fallback.
        chunk_seconds: seconds of audio per streaming step of a frame model (memory and
            progress granularity only: the output does not depend on it).
        progress: optional ``tqdm``-like bar, updated with seconds of audio done.

    Returns:
        ``dst``.

    Raises:
        AudioError: unreadable, empty or non-finite input (nothing is written).
    """
    probe_audio(src)  # AudioError naming permission, empty and non-audio files
    try:
        data, rate = sf.read(str(src), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{src}: cannot decode audio ({err})", "unreadable") from err
    if data.size == 0:
        raise AudioError(f"{src}: empty audio (0 samples)", "empty")
    if not np.isfinite(data).all():
        raise AudioError(f"{src}: NaN or Inf samples", "non-finite")
    info = sf.info(str(src))
    y = enhance_waveform(model, data, rate, chunk_seconds, progress)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subtype = info.subtype if info.subtype in sf.available_subtypes(info.format) else None
    try:
        sf.write(str(dst), y, rate, subtype=subtype)
    except (RuntimeError, TypeError, ValueError):
        sf.write(str(dst), y, rate, subtype="PCM_16")
    return dst


def main(argv: list[str]) -> int:
    """``robustdistill enhance IN OUT --model DIR [--chunk-seconds S]``."""
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(prog="robustdistill enhance",
                                     description="Enhance a file or a folder of audio files.")
    parser.add_argument("input", help="an audio file or a folder (searched recursively)")
    parser.add_argument("output", help="output file (for a file) or folder (for a folder)")
    parser.add_argument("--model", required=True,
                        help="an SE student folder or train-se run folder, a distill run folder "
                             "with an enhancement head (or its student/), 'nsnet2' or 'dtln'")
    parser.add_argument("--chunk-seconds", type=float, default=10.0,
                        help="streaming chunk (memory bound; the output does not depend on it)")
    args = parser.parse_args(argv)
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        parser.error(f"input {src} does not exist")
    try:
        model = load_enhancer(args.model)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if src.is_dir():
        files = list_audio_files(src)
        if not files:
            parser.error(f"no audio files below {src}")
        pairs = [(Path(f), dst / Path(f).relative_to(src)) for f in files]
    else:
        if dst.is_dir() or args.output.endswith(("/", os.sep)):
            dst = dst / src.name
        pairs = [(src, dst)]
    for _, b in pairs:  # before any work: soundfile picks the container by the extension
        if b.suffix[1:].upper() not in sf.available_formats():
            parser.error(f"output {b}: unknown audio file extension {b.suffix!r}; allowed: "
                         + ", ".join(f".{f.lower()}" for f in sorted(sf.available_formats())))
    seconds = {}  # audio seconds to process: every channel of every file
    for a, _ in pairs:
        try:
            info = sf.info(str(a))
            seconds[a] = info.duration * info.channels
        except (sf.LibsndfileError, RuntimeError, OSError):
            seconds[a] = 0.0  # enhance_file names the problem below
    skipped: dict[str, str] = {}
    with tqdm(total=sum(seconds.values()), unit="s", unit_scale=True,
              desc="enhance (audio seconds x channels)") as bar:
        for a, b in pairs:
            try:
                enhance_file(model, a, b, args.chunk_seconds, bar)
            except AudioError as err:  # one bad file does not stop a folder
                skipped[str(a)] = err.reason
                logger.warning("skipping %s [%s]: %s", a, err.reason, err)
    logger.info("%d file(s) enhanced into %s; %d skipped", len(pairs) - len(skipped), dst,
                len(skipped))
    return 0 if len(skipped) < len(pairs) else 1
