"""Check that a run's exported student is exactly the trained student.

Loads ``RUN/student`` with ``AutoModel.from_pretrained`` (stock transformers, no custom code)
and the trained student from the run's newest checkpoint (``student_init`` config + the
checkpoint's ``student.model.*`` weights), runs both on real audio, and prints the largest
absolute difference of every hidden state (0.0 means identical).

Usage: python scripts/verify_export.py RUN_DIR AUDIO_FILE [AUDIO_FILE ...]
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from robustdistill.audio import load_audio
from robustdistill.upstream import Upstream


def main(run_dir: str, *audio_files: str) -> None:
    run = Path(run_dir)
    checkpoint = sorted((run / "checkpoints").glob("checkpoint_*"),
                        key=lambda p: int(p.name.split("_")[-1]))[-1]
    state = load_file(str(checkpoint / "model.safetensors"))
    trained = AutoModel.from_config(AutoConfig.from_pretrained(run / "student_init",
                                                                trust_remote_code=False))
    trained.load_state_dict({k[len("student.model."):]: v for k, v in state.items()
                             if k.startswith("student.model.")})
    exported = Upstream.from_pretrained(run / "student")
    reference = Upstream(trained.eval(), normalize=exported.normalize,
                         use_attention_mask=exported.use_attention_mask)
    print(f"{type(exported.model).__name__} from {run / 'student'} vs {checkpoint.name}")
    for path in audio_files:
        wave = torch.from_numpy(load_audio(path))[None]
        lengths = torch.tensor([wave.shape[1]])
        a = exported(wave, lengths).hidden_states
        b = reference(wave, lengths).hidden_states
        diffs = [float((x - y).abs().max()) for x, y in zip(a, b, strict=True)]
        print(f"{Path(path).name}: {wave.shape[1] / 16000:.2f} s, {len(a)} hidden states of "
              f"{tuple(a[-1].shape)}, max |diff| per layer {diffs}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
