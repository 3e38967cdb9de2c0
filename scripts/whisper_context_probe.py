"""Why a Whisper teacher's targets cannot be sliced out of a whole-utterance encoding.

Whisper adds an absolute position embedding to its input, so the frames of a crop encoded inside
its utterance differ from the same crop encoded alone (what the student, shown only the crop, is
asked to predict). For 2 s crops starting 2 s and 6 s into real utterances, this prints per
layer the mean frame cosine and L1 between the two encodings (the figures of docs/evidence.md,
"Why the teacher cache runs on chunks", and docs/performance.md section 1).

Usage: python scripts/whisper_context_probe.py [--shared ../shared] [--utterances 8]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from robustdistill.audio import SAMPLE_RATE, list_audio_files, load_audio
from robustdistill.upstream import Upstream


@torch.no_grad()
def encode(model: Upstream, wave: np.ndarray) -> list[torch.Tensor]:
    """Hidden states 1..L of one waveform, ``(frames, width)`` each."""
    x = torch.from_numpy(np.ascontiguousarray(wave)).float()[None]
    out = model(x, torch.tensor([x.shape[1]]))
    n = int(out.frame_lengths[0])
    return [h[0, :n].float() for h in out.hidden_states[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default="../shared")
    parser.add_argument("--utterances", type=int, default=8,
                        help="test-other utterances of at least 8 s (the first N by name)")
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--starts", type=float, nargs="+", default=[2.0, 6.0],
                        help="crop starts in seconds")
    args = parser.parse_args()
    shared = Path(args.shared)
    model = Upstream.from_pretrained(shared / "models" / "whisper-tiny.en")
    hop = model.samples_per_frame
    crop = round(args.crop_seconds * SAMPLE_RATE)
    waves = [w for w in (load_audio(f) for f in list_audio_files(
        shared / "data" / "librispeech-mini" / "test-other")) if w.size >= 8 * SAMPLE_RATE]
    waves = waves[: args.utterances]
    print(f"Whisper tiny.en, {len(waves)} test-other utterances >= 8 s, crops of "
          f"{args.crop_seconds:g} s; frame cosine (L1) of the crop's frames inside the whole "
          "utterance against the crop encoded alone")
    print("| start | " + " | ".join(f"layer {i + 1}" for i in range(model.num_layers)) + " |")
    print("|---" * (model.num_layers + 1) + "|")
    for start_s in args.starts:
        start = round(start_s * SAMPLE_RATE) // hop * hop  # on the frame grid
        cos = [[] for _ in range(model.num_layers)]
        l1 = [[] for _ in range(model.num_layers)]
        for wave in waves:
            whole, alone = encode(model, wave), encode(model, wave[start: start + crop])
            first = start // hop
            for i, (w, a) in enumerate(zip(whole, alone, strict=True)):
                n = min(a.shape[0], w.shape[0] - first)
                inside = w[first: first + n]
                cos[i].append(float(torch.cosine_similarity(inside, a[:n], dim=-1).mean()))
                l1[i].append(float((inside - a[:n]).abs().mean()))
        cells = [f"{np.mean(c):.2f} ({np.mean(d):.2f})" for c, d in zip(cos, l1, strict=True)]
        print(f"| {start_s:g} s | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
