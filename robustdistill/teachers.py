"""The run's teacher, and randomly initialised teachers of real shapes.

:func:`load_teacher` loads a run's frozen teacher, the one rule shared by training and
``cache-teacher`` (so a cache is built from exactly the teacher that trains with it).

For offline demos, tests and benchmarks: no pretrained WavLM/HuBERT/wav2vec 2.0 weights can be downloaded here, so recipes that run
offline point the teacher at a folder written by :func:`make_random_teacher`. Presets:
``base`` is the real Base shape (``WavLMConfig()``: 12 layers, 768 wide, 94.4 M parameters for
WavLM Base+), ``small`` a 4-layer, 256-wide model for minute-long CPU demos, ``tiny`` a
2-layer, 32-wide model for unit tests.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

from .upstream import CustomCodeError, ModelFolderError, Upstream, has_layer_norm_cnn

if TYPE_CHECKING:
    from .config import DistillConfig

logger = logging.getLogger(__name__)

__all__ = ["PRESETS", "load_teacher", "make_random_teacher", "prepare_teacher"]

PRESETS: dict[str, dict] = {
    "base": {},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 1024, "conv_dim": (256,) * 7},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "conv_dim": (32, 32, 32), "conv_kernel": (8, 8, 8),
             "conv_stride": (4, 4, 4), "num_conv_pos_embeddings": 16,
             "num_conv_pos_embedding_groups": 2},
}


def load_teacher(cfg: DistillConfig) -> Upstream:
    """The run's frozen teacher, on the CPU.

    ``cfg.teacher`` by hub id or folder, with ``cfg.trust_remote_code``; a Whisper teacher
    places its frames as ``cfg.whisper_teacher_frames`` says.

    Raises:
        ConfigError: a local teacher folder that cannot be read (named), or whose model needs
            code of its own (:class:`~robustdistill.upstream.CustomCodeError`) while
            ``cfg.trust_remote_code`` is off.
        OSError / ValueError: as :meth:`Upstream.from_pretrained`.
    """
    from .config import ConfigError

    try:
        return Upstream.from_pretrained(cfg.teacher, frozen=True,
                                        trust_remote_code=cfg.trust_remote_code,
                                        whisper_frames=cfg.whisper_teacher_frames)
    except ModelFolderError as err:  # a message at start-up, not a traceback
        allow = (" (allowed: trust_remote_code: true, to run that code if you trust it)"
                 if isinstance(err, CustomCodeError) and err.has_code else "")
        raise ConfigError(f"teacher {err}{allow}") from err


def prepare_teacher(teacher: str, make_teacher: str | None) -> None:
    """Write the teacher when ``make_teacher`` (``FAMILY/PRESET``) asks for it and its folder
    is missing (a random teacher, seed 0: :func:`make_random_teacher`); then fail with a clear
    message for a local-looking teacher folder that is missing. Every command that reads a
    recipe's teacher (``distill``, ``cache-teacher``) calls it first, on the main process
    before the others.

    Raises:
        FileNotFoundError: ``teacher`` looks local, is not a folder and ``make_teacher`` is
            not set; the message says how to make it.
    """
    from .config import check_model_path

    if make_teacher and not Path(teacher).expanduser().is_dir():
        family, _, preset = make_teacher.partition("/")
        logger.info("teacher folder %s is missing: writing a random %s %s teacher there "
                    "(make_teacher)", teacher, family, preset)
        make_random_teacher(family, preset, Path(teacher).expanduser(), seed=0)
    check_model_path(teacher, "teacher",
                     f"robustdistill make-teacher --family wavlm --preset small --out "
                     f"{teacher} (a random teacher; scripts/demo.sh does this for the demo), "
                     f"or set make_teacher: FAMILY/PRESET in the config, or use a hub id")


def make_random_teacher(family: str, preset: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised encoder and its feature extractor with ``save_pretrained``.

    Args:
        family: ``transformers`` model type: ``wavlm``, ``hubert``, ``wav2vec2`` or
            ``data2vec-audio``.
        preset: a key of :data:`PRESETS`.
        out_dir: folder to write.
        seed: torch seed for the random weights, drawn from a forked CPU generator: the
            caller's torch random state is left as it was (``distill`` with ``make_teacher``
            makes the teacher after seeding its run, on the main process only; a reseeded
            global generator made that run differ from the same command with the teacher
            already written, and the main process's stream from the others').

    Raises:
        KeyError: unknown preset.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    config = AutoConfig.for_model(family, **PRESETS[preset])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    layer_norm = has_layer_norm_cnn(config)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=layer_norm, return_attention_mask=layer_norm)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    return out_dir
