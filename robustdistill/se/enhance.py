"""``robustdistill enhance IN OUT --model DIR``: enhance a file or a folder of files.

Any sample rate and channel count in: each channel is resampled to the model's rate (soxr),
enhanced by streaming with carried state in chunks of ``--chunk-seconds`` (this bounds the
model's working memory; the file, its resampled copy and the output are held whole, about four
times the file's float32 size; the result equals whole-file enhancement exactly, see
:mod:`robustdistill.se.streaming`), resampled back, and written at the input's rate and
channel count (the container of OUT's extension, with the input's subtype where that container
takes it, else the container's default: Ogg Vorbis, 16-bit PCM WAV/FLAC; integer output clips
samples beyond full scale, logged with their count). A folder is processed
recursively, mirroring its layout under ``OUT``. A progress bar counts seconds of audio.

``--model`` is an SE student folder (``save_pretrained``; a training run's folder also works:
its ``student/`` is used), ``nsnet2`` or ``dtln`` (the pretrained teachers), or an SSL student
with its enhancement head: a distillation run folder (``student/`` + ``heads/enhancement.*``),
its ``student/``, or an ``export --out`` folder (heads inside); see
:mod:`robustdistill.se.ssl_head` (whole channels, not streamed; a head saved with other
student weights is refused).

A model works at one rate (:func:`model_rate`; 16 kHz for the teachers and the SSL head):
input at a higher rate is resampled down to it and the result back up, so the output holds
nothing above half that rate (8 kHz), which is logged once per run. A file the
model cannot use (unreadable, empty, non-finite, a sample beyond ``audio.MAX_PEAK``, shorter
than the model's receptive field) or
whose enhanced audio is not finite is skipped with a warning naming it and the reason, and
nothing is written for it; the run goes on with the other files and exits 1 only when no file
was written. An output that would overwrite its input is refused before any work.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from ..audio import (
    AudioError,
    check_channels_last,
    check_peak,
    list_audio_files,
    probe_audio,
    require_float_audio,
    resample,
)
from .streaming import StreamingEnhancer
from .teachers import TEACHERS, load_teacher
from .teachers.base import FrameModel

__all__ = ["EnhanceError", "load_enhancer", "model_rate", "enhance_waveform", "enhance_file",
           "main"]

logger = logging.getLogger(__name__)


class EnhanceError(ValueError):
    """Audio that the model cannot enhance, or whose enhanced result is unusable.

    Args:
        message: the problem (prefixed with the file's name by :func:`enhance_file`).
        reason: short, what a run counts: ``"too short"`` (fewer samples at the model's rate
            than its receptive field) or ``"non-finite output"`` (NaN or Inf in the result).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def model_rate(model) -> int:
    """The sample rate, in Hz, at which ``model`` (from :func:`load_enhancer`) works."""
    return int(model.stft.sample_rate if isinstance(model, FrameModel) else model.sample_rate)


def load_enhancer(model: str | Path):
    """An SE model by teacher name or folder (see the module docstring), in ``eval`` mode.

    Raises:
        FileNotFoundError: neither a teacher name nor a folder holding an SE student.
        ValueError: a model folder that is not an SE student's (``config.json`` of another
            model), or an enhancement head saved with other student weights.
    """
    from .ssl_head import SSLHeadEnhancer, ssl_folders
    from .students import GRUMaskStudent

    if str(model) in TEACHERS:
        return load_teacher(str(model))
    folder = Path(model)
    if ssl_folders(folder) is not None:  # an SSL student with its enhancement head
        return SSLHeadEnhancer.from_run(folder)
    for candidate in (folder, folder / "student"):
        if (candidate / "config.json").is_file() and (candidate / "model.safetensors").is_file():
            return GRUMaskStudent.from_pretrained(candidate).eval()
    unfinished = ("; it holds checkpoints/ but no student/: a training run exports its student "
                  "when it finishes (resume it to finish)"
                  if (folder / "checkpoints").is_dir() else "")
    raise FileNotFoundError(f"--model {model}: not {' / '.join(TEACHERS)} and no SE student "
                            f"folder (config.json + model.safetensors) at {folder} or "
                            f"{folder / 'student'}{unfinished}")


@torch.no_grad()
def enhance_waveform(model, waveform: np.ndarray, sample_rate: int,
                     chunk_seconds: float = 10.0, progress=None) -> np.ndarray:
    """Enhance ``(N,)`` or ``(N, C)`` audio at ``sample_rate`` Hz; same shape and rate out.

    Each channel is resampled to :func:`model_rate` (16 kHz for the teachers) and back, so for
    input above that rate the result has no content over ``model_rate / 2`` Hz.

    Raises:
        EnhanceError: a channel shorter than the model's receptive field at its rate (reason
            ``"too short"``), or NaN / Inf in the enhanced audio (``"non-finite output"``,
            e.g. from huge finite samples that overflow the model's arithmetic).
        ValueError: empty, non-finite, integer or more than 2-D audio.
        AudioError: a ``(channels, samples)`` array (see
            :func:`robustdistill.audio.check_channels_last`).
    """
    x = np.asarray(waveform)
    require_float_audio(x)
    x = x.astype(np.float32, copy=False)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"expected (samples,) or (samples, channels) audio, got {x.shape}")
    check_channels_last(x)
    if not np.isfinite(x).all():
        raise ValueError("audio contains NaN or Inf")
    chans = x[:, None] if x.ndim == 1 else x
    streaming = isinstance(model, FrameModel)
    rate = model_rate(model)
    shortest = max(1, int(getattr(model, "min_samples", 1)))
    out = np.zeros_like(chans)
    for c in range(chans.shape[1]):
        sig = chans[:, c]
        if sample_rate != rate:
            sig = resample(sig, sample_rate, rate)
        if sig.size < shortest:
            at_rate = f" ({sig.size} at {rate} Hz)" if sample_rate != rate else ""
            raise EnhanceError(f"{chans.shape[0]} sample(s) at {sample_rate} Hz{at_rate} is "
                               f"shorter than the model's receptive field ({shortest} samples "
                               f"at {rate} Hz)", "too short")
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
    if not np.isfinite(out).all():
        bad = int(out.size - np.isfinite(out).sum())
        raise EnhanceError(f"the enhanced audio has {bad} NaN or Inf of {out.size} samples "
                           f"(input peak |x| = {float(np.abs(x).max()):.3g})",
                           "non-finite output")
    return out[:, 0] if x.ndim == 1 else out


def enhance_file(model, src: str | Path, dst: str | Path,
                 chunk_seconds: float = 10.0, progress=None) -> Path:
    """Enhance one audio file into ``dst`` (parent folders created).

    An integer output format (PCM, as for an integer input) cannot hold samples beyond
    full scale: libsndfile clips them to [-1, 1], which is logged as a warning with their
    count (a float input above full scale written as FLAC, or a model raising a clipped
    input's peak).

    Args:
        model: an SE teacher or student (see :func:`enhance_waveform`).
        src: the input file (any rate, mono or multi-channel; each channel enhanced alone).
        dst: the output file (format from its extension), at the input's sample rate and
            channel count; the input's subtype is kept where that format takes it, else the
            format's default subtype (Ogg: Vorbis; 16-bit PCM where there is none).
        chunk_seconds: seconds of audio per streaming step of a frame model (memory and
            progress granularity only: the output does not depend on it).
        progress: optional ``tqdm``-like bar, updated with seconds of audio done.

    Returns:
        ``dst``.

    Raises:
        AudioError: unreadable, empty or non-finite input, or a sample beyond
            :data:`robustdistill.audio.MAX_PEAK` (``"invalid"``: a corrupt float file, as
            every reader refuses it; nothing is written).
        EnhanceError: input too short for the model, or a non-finite result (nothing is
            written; the message names ``src``).
    """
    probe_audio(src)  # AudioError naming permission, empty and non-audio files
    try:
        data, rate = sf.read(os.fsencode(src), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{src}: cannot decode audio ({err})", "unreadable") from err
    if data.size == 0:
        raise AudioError(f"{src}: empty audio (0 samples)", "empty")
    if not np.isfinite(data).all():
        raise AudioError(f"{src}: NaN or Inf samples", "non-finite")
    check_peak(data, str(src))
    info = sf.info(os.fsencode(src))
    try:
        y = enhance_waveform(model, data, rate, chunk_seconds, progress)
    except EnhanceError as err:
        raise EnhanceError(f"{src}: {err}", err.reason) from err
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fmt = dst.suffix[1:].upper()  # soundfile picks the container by the extension
    subtype = "PCM_16"  # e.g. RAW, which has no default
    if fmt in sf.available_formats():  # the input's subtype where the container takes it
        subtype = (info.subtype if sf.check_format(fmt, info.subtype)
                   else sf.default_subtype(fmt)) or subtype
    try:
        sf.write(os.fsencode(dst), y, rate, subtype=subtype)
    except (RuntimeError, TypeError, ValueError):
        subtype = "PCM_16"
        sf.write(os.fsencode(dst), y, rate, subtype=subtype)
    over = int(np.count_nonzero(np.abs(y) > 1.0))
    if over and subtype.startswith(("PCM_", "ULAW", "ALAW")):  # integer samples
        logger.warning("%s: %d of %d samples beyond full scale (peak %.3g) clipped to [-1, 1] "
                       "in its %s output", dst, over, y.size, float(np.abs(y).max()), subtype)
    return dst


def _positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds > 0")
    return value


def _same_file(a: Path, b: Path) -> bool:
    """Whether writing ``b`` would replace ``a`` (same path, or a link to the same file).
    ``os.path.realpath``: ``Path.resolve`` raises on a loop of links (listed, then skipped)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """``robustdistill enhance IN OUT --model DIR [--chunk-seconds S]``.

    Returns:
        0 when at least one file was written, 1 when every file was skipped (each logged
        with its reason). Usage errors (missing input, no audio files, an output that is the
        input, a file as the output of a folder, a bad ``--chunk-seconds``, an unknown output
        extension) exit 2 with one line.
        An output folder inside the input folder is allowed; the audio files already under it
        (earlier outputs) are not inputs.
    """
    from tqdm.auto import tqdm

    parser = argparse.ArgumentParser(prog="robustdistill enhance",
                                     description="Enhance a file or a folder of audio files.")
    parser.add_argument("input", help="an audio file or a folder (searched recursively)")
    parser.add_argument("output", help="output file (for a file) or folder (for a folder)")
    parser.add_argument("--model", required=True,
                        help="an SE student folder or train-se run folder, a distill run folder "
                             "with an enhancement head (or its student/), 'nsnet2' or 'dtln'")
    parser.add_argument("--chunk-seconds", type=_positive_seconds, default=10.0,
                        help="streaming chunk in seconds (bounds the model's working memory; the "
                             "file is held whole; the output does not depend on it)")
    args = parser.parse_args(argv)
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        parser.error(f"input {src} does not exist")
    try:
        model = load_enhancer(args.model)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            parser.error(f"output {dst} is a file: a folder input needs an output folder")
        if dst.exists() and _same_file(src, dst):
            parser.error(f"output folder {dst} is the input folder: enhancing would overwrite "
                         "the originals; give another output folder")
        try:
            files = list_audio_files(src)
        except FileNotFoundError as err:
            parser.error(str(err))
        if dst.resolve().is_relative_to(src.resolve()):  # e.g. enhance data data/enhanced
            inside = [f for f in files  # realpath: Path.resolve raises on a loop of links
                      if Path(os.path.realpath(f)).is_relative_to(dst.resolve())]
            if inside:  # earlier outputs are not inputs (a rerun would enhance them again)
                logger.info("leaving out %d file(s) under the output folder %s", len(inside),
                            dst)
                files = [f for f in files if f not in inside]
            if not files:
                parser.error(f"no audio files in {src} outside the output folder {dst}")
        pairs = [(Path(f), dst / Path(f).relative_to(src)) for f in files]
    else:
        if dst.is_dir() or args.output.endswith(("/", os.sep)):
            dst = dst / src.name
        pairs = [(src, dst)]
    for a, b in pairs:
        if _same_file(a, b):
            parser.error(f"output {b} is the input file {a}: enhancing would overwrite it; "
                         "give another output")
    for _, b in pairs:  # before any work: soundfile picks the container by the extension
        if b.suffix[1:].upper() not in sf.available_formats():
            parser.error(f"output {b}: unknown audio file extension {b.suffix!r}; allowed: "
                         + ", ".join(f".{f.lower()}" for f in sorted(sf.available_formats())))
    seconds = {}  # audio seconds to process: every channel of every file
    above: dict[int, Path] = {}  # input rates over the model's (one example file each)
    rate = model_rate(model)
    for a, _ in pairs:
        try:
            info = sf.info(os.fsencode(a))
            seconds[a] = info.duration * info.channels
            if info.samplerate > rate:
                above.setdefault(info.samplerate, a)
        except (sf.LibsndfileError, RuntimeError, OSError):
            seconds[a] = 0.0  # enhance_file names the problem below
    if above:
        logger.warning("the model works at %d Hz: input at %s Hz (e.g. %s) is resampled to it "
                       "and back, so the output has no content above %d Hz", rate,
                       ", ".join(str(r) for r in sorted(above)), above[max(above)], rate // 2)
    skipped: dict[str, str] = {}
    with tqdm(total=sum(seconds.values()), unit="s", unit_scale=True,
              desc="enhance (audio seconds x channels)") as bar:
        for a, b in pairs:
            try:
                enhance_file(model, a, b, args.chunk_seconds, bar)
            except (AudioError, EnhanceError) as err:  # one bad file does not stop a folder
                skipped[str(a)] = err.reason
                logger.warning("skipping %s [%s]: %s", a, err.reason, err)
    reasons = {r: list(skipped.values()).count(r) for r in sorted(set(skipped.values()))}
    logger.info("%d file(s) enhanced into %s; %d skipped%s", len(pairs) - len(skipped), dst,
                len(skipped),
                f" ({', '.join(f'{r}: {n}' for r, n in reasons.items())})" if reasons else "")
    return 0 if len(skipped) < len(pairs) else 1
