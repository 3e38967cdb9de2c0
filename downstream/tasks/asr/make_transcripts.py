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
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from robustdistill.audio import SAMPLE_RATE, AudioError, list_audio_files, load_audio

logger = logging.getLogger(__name__)

__all__ = ["normalize_transcript", "speaker_of", "transcribe_folder", "main"]

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


def transcribe_folder(
    audio_dir: str | Path,
    model_dir: str | Path,
    *,
    batch_size: int = 8,
    limit: int | None = None,
    max_new_tokens: int = 200,
) -> tuple[list[dict], dict]:
    """Transcribe every audio file under ``audio_dir`` (sorted) with a Whisper checkpoint.

    Args:
        audio_dir: folder searched recursively (WAV/FLAC/OGG/MP3, any rate, down-mixed).
        model_dir: local ``WhisperForConditionalGeneration`` folder (loaded in float32).
        batch_size: 30 s windows decoded together.
        limit: transcribe only the first ``limit`` files (sorted order).
        max_new_tokens: decoding cap per window.

    Returns:
        ``(rows, stats)``: manifest rows ``{"path", "text", "raw_text", "speaker", "duration"}``
        and ``{"files", "skipped", "audio_s", "wall_s", "real_time_factor"}``. Unreadable files
        are logged and skipped.

    Raises:
        FileNotFoundError: ``audio_dir`` has no audio files.
        OSError: ``model_dir`` cannot be loaded.
    """
    files = list_audio_files(audio_dir)
    if not files:
        raise FileNotFoundError(f"no audio files under {audio_dir}")
    files = files[:limit] if limit else files
    processor = WhisperProcessor.from_pretrained(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    items, skipped = [], 0
    for path in files:
        try:
            items.append((Path(path), load_audio(path)))
        except AudioError as err:
            logger.warning("skipping %s: %s", path, err)
            skipped += 1
    windows = [(i, wav[s : s + WINDOW]) for i, (_, wav) in enumerate(items)
               for s in range(0, len(wav), WINDOW)]
    texts: list[list[str]] = [[] for _ in items]
    start = time.perf_counter()
    with torch.inference_mode():
        for b in tqdm(range(0, len(windows), batch_size), desc="whisper", unit="batch"):
            chunk = windows[b : b + batch_size]
            feats = processor.feature_extractor(
                [w for _, w in chunk], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
            ids = model.generate(feats, num_beams=1, do_sample=False,
                                 max_new_tokens=max_new_tokens)
            for (i, _), text in zip(chunk, processor.batch_decode(ids, skip_special_tokens=True),
                                    strict=True):
                texts[i].append(text.strip())
    wall = time.perf_counter() - start
    rows = []
    for (path, wav), parts in zip(items, texts, strict=True):
        raw = " ".join(parts)
        text = normalize_transcript(raw)
        if not text:
            logger.warning("empty transcript for %s; skipped", path)
            skipped += 1
            continue
        rows.append({"path": str(path.resolve()), "text": text, "raw_text": raw,
                     "speaker": speaker_of(path), "duration": round(len(wav) / SAMPLE_RATE, 3)})
    audio_s = sum(len(w) for _, w in items) / SAMPLE_RATE
    stats = {"files": len(rows), "skipped": skipped, "audio_s": round(audio_s, 1),
             "wall_s": round(wall, 1), "real_time_factor": round(wall / max(audio_s, 1e-9), 4)}
    return rows, stats


def main(argv: list[str] | None = None) -> None:
    """Command line: ``AUDIO_DIR OUT.jsonl --model DIR [--limit N] [--batch-size B]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audio_dir")
    parser.add_argument("out")
    parser.add_argument("--model", required=True, help="local Whisper folder (e.g. tiny.en)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest on a busy shared CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    rows, stats = transcribe_folder(args.audio_dir, args.model, batch_size=args.batch_size,
                                    limit=args.limit)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    logger.info("wrote %s: %s", out, json.dumps(stats))


if __name__ == "__main__":
    main()
