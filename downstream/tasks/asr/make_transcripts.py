"""Transcribe a folder of speech with Whisper into an ASR manifest (JSON lines).

The LibriSpeech subset under ``../shared/data`` ships without transcripts, so the ASR task's
references are made here by a real recogniser: OpenAI Whisper tiny.en ("Robust Speech
Recognition via Large-Scale Weak Supervision", arXiv:2212.04356), run in ``transformers`` in
float32 with greedy decoding, fully offline. They are machine transcripts, not LibriSpeech's
human references: WER figures computed against them measure agreement with Whisper tiny.en.

Each manifest line is ``{"path": ..., "text": ..., "speaker": ..., "duration": seconds}``;
``text`` is normalised to the ASR task's alphabet (upper-case A-Z, apostrophe, space; integers
spelled out, other symbols dropped). Usage::

    python -m downstream.tasks.asr.make_transcripts AUDIO_DIR OUT.jsonl \
        --model ../shared/models/whisper-tiny.en [--limit N] [--batch-size 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from robustdistill.audio import SAMPLE_RATE, AudioError, list_audio_files, load_audio

logger = logging.getLogger(__name__)

__all__ = ["iter_transcripts", "main", "normalize_transcript", "speaker_of"]

#: Whisper's fixed input window (samples at 16 kHz); longer audio is cut into windows.
WINDOW = 30 * SAMPLE_RATE

_ONES = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "TEN", "ELEVEN", "TWELVE", "THIRTEEN", "FOURTEEN", "FIFTEEN", "SIXTEEN", "SEVENTEEN", "EIGHTEEN", "NINETEEN"]
_TENS = ["_", "_", "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY", "NINETY"]


def _spell(n: int) -> str:
    """Spell a non-negative integer below 10**9 in upper-case English words."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((10**6, "MILLION"), (1000, "THOUSAND"), (100, "HUNDRED")):
        if n >= size:
            rest = n % size
            return f"{_spell(n // size)} {word}" + ("" if rest == 0 else " " + _spell(rest))
    raise AssertionError(n)


_ORDINAL = {"ONE": "FIRST", "TWO": "SECOND", "THREE": "THIRD", "FIVE": "FIFTH",
            "EIGHT": "EIGHTH", "NINE": "NINTH", "TWELVE": "TWELFTH"}


def _spell_ordinal(n: int) -> str:
    """``3`` -> ``"THIRD"``, ``21`` -> ``"TWENTY FIRST"``, ``40`` -> ``"FORTIETH"``."""
    *head, last = _spell(n).split()
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("Y"):
        last = last[:-1] + "IETH"
    else:
        last += "TH"
    return " ".join([*head, last])


def normalize_transcript(text: str) -> str:
    """Map Whisper output to the ASR alphabet: A-Z, apostrophe and single spaces.

    Integers below a billion are spelled out (``"1920"`` -> ``"ONE THOUSAND NINE HUNDRED
    TWENTY"``, ``"3rd"`` -> ``"THIRD"``; LibriSpeech spells numbers), hyphens become spaces, curly apostrophes become
    ``'``, everything else outside the alphabet is dropped.

    >>> normalize_transcript("Well, it's 42 o'clock—twenty-one.")
    "WELL IT'S FORTY TWO O'CLOCK TWENTY ONE"
    """
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = re.sub(r"(\d{1,9})(?:st|nd|rd|th)\b", lambda m: f" {_spell_ordinal(int(m[1]))} ",
                  text, flags=re.IGNORECASE)
    text = re.sub(r"\d+", lambda m: f" {_spell(int(m.group()))} " if len(m.group()) < 10
                  else " ", text)
    text = re.sub(r"[-\u2013\u2014/]", " ", text.upper())
    text = re.sub(r"[^A-Z' ]", "", text)
    text = re.sub(r"(?<![A-Z])'|'(?![A-Z])", "", text)  # quotes, not apostrophes
    return " ".join(text.split())


def speaker_of(path: Path) -> str:
    """LibriSpeech speaker id: the first ``-`` field of the file name when numeric
    (``103-1240-0000.flac`` -> ``"103"``), else the parent folder's name."""
    first = path.stem.split("-")[0]
    return first if first.isdigit() else path.parent.name


def iter_transcripts(
    files: list[Path],
    model_dir: str | Path,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 200,
    stats: dict | None = None,
) -> Iterator[dict]:
    """Transcribe ``files`` in order with a Whisper checkpoint, yielding one manifest row per
    file as soon as its batch is decoded (so a long job can be written as it goes, and resumed).

    Args:
        files: audio files (WAV/FLAC/OGG/MP3, any rate, down-mixed).
        model_dir: local ``WhisperForConditionalGeneration`` folder (loaded in float32).
        batch_size: files decoded together; a file longer than 30 s is cut into 30 s windows
            that are decoded in the same batch and joined.
        max_new_tokens: decoding cap per window.
        stats: if given, updated in place with ``files``, ``skipped``, ``audio_s``, ``wall_s``
            (decoding time) and ``real_time_factor``.

    Yields:
        ``{"path", "text", "raw_text", "speaker", "duration"}`` (absolute path, normalised
        text, Whisper's own text, speaker id, seconds). Unreadable files and empty transcripts
        are logged and skipped.

    Raises:
        OSError: ``model_dir`` cannot be loaded.
    """
    stats = {} if stats is None else stats
    stats.update(files=0, skipped=0, audio_s=0.0, wall_s=0.0, real_time_factor=None)
    processor = WhisperProcessor.from_pretrained(model_dir, trust_remote_code=False)
    model = WhisperForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, trust_remote_code=False).eval()
    for b in tqdm(range(0, len(files), batch_size), desc="whisper", unit="batch"):
        items = []
        for path in files[b : b + batch_size]:
            try:
                items.append((Path(path), load_audio(path)))
            except AudioError as err:
                logger.warning("skipping %s: %s", path, err)
                stats["skipped"] += 1
        if not items:
            continue
        windows = [(i, wav[s : s + WINDOW]) for i, (_, wav) in enumerate(items)
                   for s in range(0, len(wav), WINDOW)]
        tic = time.perf_counter()
        with torch.inference_mode():
            feats = processor.feature_extractor(
                [w for _, w in windows], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
            ids = model.generate(feats, num_beams=1, do_sample=False,
                                 max_new_tokens=max_new_tokens)
        stats["wall_s"] += time.perf_counter() - tic
        texts: list[list[str]] = [[] for _ in items]
        for (i, _), text in zip(windows, processor.batch_decode(ids, skip_special_tokens=True),
                                strict=True):
            texts[i].append(text.strip())
        for (path, wav), parts in zip(items, texts, strict=True):
            raw = " ".join(parts)
            text = normalize_transcript(raw)
            if not text:
                logger.warning("empty transcript for %s; skipped", path)
                stats["skipped"] += 1
                continue
            stats["files"] += 1
            stats["audio_s"] += len(wav) / SAMPLE_RATE
            stats["real_time_factor"] = round(stats["wall_s"] / stats["audio_s"], 4)
            yield {"path": str(path.resolve()), "text": text, "raw_text": raw,
                   "speaker": speaker_of(path), "duration": round(len(wav) / SAMPLE_RATE, 3)}


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring). An existing OUT is resumed: files already in it
    are not transcribed again and new rows are appended.

    Raises:
        SystemExit: no audio file under ``audio_dir``, bad arguments (argparse) or ``--help``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio_dir")
    parser.add_argument("out")
    parser.add_argument("--model", required=True, help="local Whisper folder (e.g. tiny.en)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N files of the folder (sorted)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest on a busy shared CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    files = list_audio_files(args.audio_dir)
    if not files:
        raise SystemExit(f"no audio files under {args.audio_dir}")
    files = files[: args.limit] if args.limit else files
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        done = {json.loads(line)["path"] for line in out.read_text().splitlines() if line.strip()}
    todo = [f for f in files if str(Path(f).resolve()) not in done]
    logger.info("%d files, %d already in %s, %d to transcribe", len(files), len(files) - len(todo),
                out, len(todo))
    stats: dict = {}
    with out.open("a", encoding="utf-8") as f:
        for row in iter_transcripts(todo, args.model, batch_size=args.batch_size, stats=stats):
            f.write(json.dumps(row) + "\n")
            f.flush()
    stats["audio_s"] = round(stats["audio_s"], 1)
    stats["wall_s"] = round(stats["wall_s"], 1)
    logger.info("wrote %s: %s", out, json.dumps(stats))


if __name__ == "__main__":
    main()
