"""Export a HuBERT-family student as a checkpoint that s3prl's own distiller upstream loads.

With the file written by :func:`export_s3prl_distiller`, the official SUPERB recipes run on our
student unchanged::

    python run_downstream.py -m train -u distiller_local -k student.ckpt -d asr -n my_run

``distiller_local`` (``s3prl/upstream/distiller/hubconf.py``) builds
``s3prl.upstream.distiller.expert.UpstreamExpert(ckpt)``, which reads ``ckpt["Config"]["distiller"]``
into a ``DistillerConfig`` and loads ``ckpt["Distiller"]`` strictly into a ``DistillerModel``
(DistilHuBERT: "DistilHuBERT: Speech Representation Learning by Layer-wise Distillation of
Hidden-unit BERT", arXiv:2110.01900). This module only writes that file; it does not need s3prl.

What maps exactly, and what cannot:

- The student must be a stock ``transformers`` ``HubertModel`` (DistilHuBERT is one) with
  ``feat_proj_layer_norm=False`` (s3prl's distiller has no layer norm between the CNN and
  ``post_extract_proj``), ``conv_bias=False``, ``conv_pos_batch_norm=False``, GELU activations,
  ``layer_norm_eps=1e-5`` and ``conv_dim[-1] != hidden_size`` (else s3prl drops the projection).
  Anything else raises ``ValueError`` instead of writing a checkpoint that computes something
  else. ``feat_extract_norm`` "group" maps to ``extractor_mode="default"``, "layer" to
  ``"layer_norm"``; ``do_stable_layer_norm`` maps to ``layer_norm_first``.
- Waveform normalisation: s3prl's distiller feeds raw waveforms. A student whose feature
  extractor normalises input (``do_normalize``, the convention for layer-norm CNNs) would see
  different input under s3prl, so export refuses unless ``allow_normalization_mismatch=True``.
- Hidden states: s3prl returns ``[post_extract_proj output] + [each layer's output] + [each
  prediction head output]``. Its layers ``1..L`` equal ours (``Upstream`` hidden states
  ``1..L``, post-LN models); its index 0 is the projected CNN features *before* the positional
  convolution, whereas ours is the input of the first transformer layer. For
  ``do_stable_layer_norm`` models our last hidden state has the encoder's final layer norm
  applied and s3prl's does not.
- Padding: s3prl always masks padded frames (zeroed before the positional convolution and
  excluded from attention); a HuBERT ``Upstream`` with a group-norm CNN passes no attention mask,
  so padded batches agree on real frames only with ``use_attention_mask=True``.
- Which ``-s`` to use in ``run_downstream.py`` (s3prl's distiller returns
  ``{"hidden_states": [projection] + layers + heads, "last_hidden_state": heads[-1],
  "paper": layers[-1]}``):

  * ``-s hidden_states`` (s3prl's default, SUPERB's weighted sum): fine; it includes s3prl's
    index 0 (the projected CNN features *before* the positional convolution, which differs from
    our index 0) and, with the default zero head, a trailing all-zero state that only takes
    softmax weight. ``-s hidden_states -l K`` picks one state: ``K = 1..L`` equal our layers.
  * ``-s paper``: the last transformer layer (DistilHuBERT's paper setting).
  * never ``-s last_hidden_state``: it is the prediction head's output, all zeros for the
    default zero head.

- Prediction heads: ``UpstreamExpert.forward`` always runs the distiller's prediction head. With
  ``heads=None`` one all-zero head is written (``n_tasks=1``, ``final_dim = hidden_size``): it
  adds one constant-zero hidden state at the end of s3prl's list. Pass trained heads as a dict
  (or a ``torch.save``'d file of one) ``{"pred_layer_id": [4, 8, 12], "state_dict": {...}}``
  whose state dict uses s3prl's ``output_layer`` layout (``0.weight`` ``(N*D, D)``, ``0.bias``,
  ``2.weight`` ``(N, D, F)``, ``2.bias`` ``(1, 1, N, F)``; for ``N == 1``: ``2.layer.weight``
  ``(F, D)``, ``2.layer.bias``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import HubertModel

from .files import atomic_path
from .messages import first_line
from .upstream import Upstream

logger = logging.getLogger(__name__)

__all__ = ["export_s3prl_distiller", "hubert_to_distiller_config", "hubert_to_distiller_state_dict",
           "main"]


def hubert_to_distiller_config(config, *, n_tasks: int = 1, final_dim: int | None = None,
                               pred_layer_id: list[int] | None = None) -> dict:
    """The ``Config["distiller"]`` section for a ``HubertConfig``.

    Args:
        config: a ``transformers.HubertConfig``.
        n_tasks: number of prediction heads ``N``.
        final_dim: output width ``F`` of each head (default: ``hidden_size``).
        pred_layer_id: the teacher layer each head predicts (default ``1..N``; informational).

    Raises:
        ValueError: a config that s3prl's ``DistillerModel`` cannot reproduce exactly.
    """
    _check_exportable(config)
    conv_layers = " + ".join(
        f"[({d}, {k}, {s})]"
        for d, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True)
    )
    return {
        "extractor_mode": "layer_norm" if config.feat_extract_norm == "layer" else "default",
        "extractor_conv_feature_layers": conv_layers,
        "extractor_dropout": 0.0,
        "feature_grad_mult": 1.0,
        "conv_pos": int(config.num_conv_pos_embeddings),
        "conv_pos_groups": int(config.num_conv_pos_embedding_groups),
        "encoder_layers": int(config.num_hidden_layers),
        "encoder_embed_dim": int(config.hidden_size),
        "encoder_ffn_embed_dim": int(config.intermediate_size),
        "encoder_attention_heads": int(config.num_attention_heads),
        "activation_fn": "gelu",
        "layer_norm_first": bool(config.do_stable_layer_norm),
        "attention_type": "original",
        "dropout": float(config.hidden_dropout),
        "attention_dropout": float(config.attention_dropout),
        "activation_dropout": float(config.activation_dropout),
        "encoder_layerdrop": 0.0,
        "final_dim": int(final_dim or config.hidden_size),
        "out_layer_type": "expand-last",
        "out_layer_inter_dim": -1,
        "n_tasks": int(n_tasks),
        "task_emb_type": "expand-last",
        "task_emb_size": 0,
        "layer_emb_size": 0,
        "pred_layer_id": list(pred_layer_id or range(1, n_tasks + 1)),
        "loss_type": "l1",
        "feat_pen_loss": 0.0,
        "cosine_loss": 1.0,
        "init_teacher_conv_layers": False,
        "init_teacher_encoder_layers": False,
    }


def _check_exportable(config) -> None:
    if getattr(config, "model_type", None) != "hubert":
        raise ValueError(
            f"s3prl's distiller holds HuBERT-family students only, got model_type="
            f"{getattr(config, 'model_type', None)!r}"
        )
    problems = []
    if getattr(config, "feat_proj_layer_norm", False):
        problems.append("feat_proj_layer_norm=True (s3prl's distiller has no layer norm before "
                        "post_extract_proj; DistilHuBERT students use False)")
    if getattr(config, "conv_bias", False):
        problems.append("conv_bias=True (s3prl's distiller CNN has no biases)")
    if getattr(config, "conv_pos_batch_norm", False):
        problems.append("conv_pos_batch_norm=True")
    if config.feat_extract_norm not in ("group", "layer"):
        problems.append(f"feat_extract_norm={config.feat_extract_norm!r}")
    for name in ("hidden_act", "feat_extract_activation"):
        if getattr(config, name, "gelu") != "gelu":
            problems.append(f"{name}={getattr(config, name)!r} (s3prl uses GELU)")
    if abs(config.layer_norm_eps - 1e-5) > 1e-12:
        problems.append(f"layer_norm_eps={config.layer_norm_eps} (s3prl uses 1e-5)")
    if config.conv_dim[-1] == config.hidden_size:
        problems.append("conv_dim[-1] == hidden_size (s3prl then drops post_extract_proj)")
    if problems:
        raise ValueError("cannot export to s3prl's distiller exactly: " + "; ".join(problems))


def hubert_to_distiller_state_dict(model: HubertModel) -> dict[str, torch.Tensor]:
    """Rename a ``HubertModel``'s parameters to s3prl's ``DistillerModel`` names (no head).

    Returns:
        A new dict of contiguous float32 CPU tensors, keys as in ``DistillerModel.state_dict()``
        minus ``output_layer.*``.

    Raises:
        ValueError: the model is not exportable (see :func:`hubert_to_distiller_config`) or a
            parameter is missing.
    """
    config = model.config
    _check_exportable(config)
    src = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}

    def take(src_key: str, dst_key: str) -> None:
        if src_key not in src:
            raise ValueError(f"HubertModel state dict has no {src_key!r}")
        out[dst_key] = src.pop(src_key)

    layer_mode = config.feat_extract_norm == "layer"
    for i in range(len(config.conv_dim)):
        take(f"feature_extractor.conv_layers.{i}.conv.weight", f"feature_extractor.conv_layers.{i}.0.weight")
        if layer_mode:
            norm = f"feature_extractor.conv_layers.{i}.2.1"
        elif i == 0:
            norm = "feature_extractor.conv_layers.0.2"
        else:
            continue
        for p in ("weight", "bias"):
            take(f"feature_extractor.conv_layers.{i}.layer_norm.{p}", f"{norm}.{p}")
    for p in ("weight", "bias"):
        take(f"feature_projection.projection.{p}", f"post_extract_proj.{p}")
    # Positional convolution with weight norm over dim 2: parametrizations (new) or weight_g/v.
    pos = "encoder.pos_conv_embed.conv"
    if f"{pos}.parametrizations.weight.original0" in src:
        take(f"{pos}.parametrizations.weight.original0", "encoder.pos_conv.0.weight_g")
        take(f"{pos}.parametrizations.weight.original1", "encoder.pos_conv.0.weight_v")
    else:
        take(f"{pos}.weight_g", "encoder.pos_conv.0.weight_g")
        take(f"{pos}.weight_v", "encoder.pos_conv.0.weight_v")
    take(f"{pos}.bias", "encoder.pos_conv.0.bias")
    for p in ("weight", "bias"):
        take(f"encoder.layer_norm.{p}", f"encoder.layer_norm.{p}")
    names = {
        "attention.q_proj": "self_attn.q_proj",
        "attention.k_proj": "self_attn.k_proj",
        "attention.v_proj": "self_attn.v_proj",
        "attention.out_proj": "self_attn.out_proj",
        "layer_norm": "self_attn_layer_norm",
        "feed_forward.intermediate_dense": "fc1",
        "feed_forward.output_dense": "fc2",
        "final_layer_norm": "final_layer_norm",
    }
    for i in range(config.num_hidden_layers):
        for hf, s3 in names.items():
            for p in ("weight", "bias"):
                take(f"encoder.layers.{i}.{hf}.{p}", f"encoder.layers.{i}.{s3}.{p}")
    leftover = [k for k in src if k != "masked_spec_embed"]
    if leftover:
        raise ValueError(f"HubertModel parameters with no s3prl counterpart: {leftover}")
    return out


def _zero_heads(hidden: int, n_tasks: int, final_dim: int) -> dict[str, torch.Tensor]:
    head = {"0.weight": torch.zeros(n_tasks * hidden, hidden), "0.bias": torch.zeros(n_tasks * hidden)}
    if n_tasks == 1:
        head.update({"2.layer.weight": torch.zeros(final_dim, hidden),
                     "2.layer.bias": torch.zeros(final_dim)})
    else:
        head.update({"2.weight": torch.zeros(n_tasks, hidden, final_dim),
                     "2.bias": torch.zeros(1, 1, n_tasks, final_dim)})
    return head


def _load_heads(heads, hidden: int) -> tuple[list[int], dict[str, torch.Tensor], int]:
    if isinstance(heads, str | Path):
        try:
            heads = torch.load(heads, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - torch.load of a foreign file raises anything
            raise ValueError(f"heads {heads}: not a torch.save'd heads file "
                             f"({type(err).__name__}: {first_line(err)[:200]})") from err
    if not isinstance(heads, Mapping) or "pred_layer_id" not in heads or "state_dict" not in heads:
        raise ValueError("heads must be a dict {'pred_layer_id': [...], 'state_dict': {...}}")
    layers = [int(i) for i in heads["pred_layer_id"]]
    state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in heads["state_dict"].items()}
    n = len(layers)
    key = "2.layer.weight" if n == 1 else "2.weight"
    if key not in state or "0.weight" not in state:
        raise ValueError(f"heads state_dict needs '0.weight' and {key!r}, got {sorted(state)}")
    if tuple(state["0.weight"].shape) != (n * hidden, hidden):
        raise ValueError(f"heads '0.weight' must be ({n * hidden}, {hidden}), "
                         f"got {tuple(state['0.weight'].shape)}")
    final_dim = state[key].shape[0] if n == 1 else state[key].shape[-1]
    return layers, state, int(final_dim)


def export_s3prl_distiller(
    student_dir_or_model: str | Path | HubertModel | Upstream,
    out_ckpt_path: str | Path,
    heads: Mapping | str | Path | None = None,
    *,
    allow_normalization_mismatch: bool = False,
) -> Path:
    """Write a HuBERT-family student as an s3prl distiller checkpoint.

    Args:
        student_dir_or_model: a local folder written by ``save_pretrained`` (or hub id), a
            ``HubertModel``, or an :class:`~robustdistill.upstream.Upstream` wrapping one.
        out_ckpt_path: the ``.ckpt`` file to write (parent folders are created); written to a
            temporary file in the same folder and renamed over it when whole
            (:func:`~robustdistill.files.atomic_path`), so a failed write leaves an existing
            file as it was.
        heads: trained prediction heads in s3prl's ``output_layer`` layout (see module
            docstring), or a path to a ``torch.save``'d dict of them; None writes one zero head.
        allow_normalization_mismatch: export a student that expects normalised waveforms even
            though s3prl will feed it raw ones (logged as a warning).

    Returns:
        ``out_ckpt_path`` as a ``Path``. Load it with ``run_downstream.py -u distiller_local -k``.

    Raises:
        ValueError: not a HuBERT model, an architecture s3prl's distiller cannot reproduce,
            a student that expects normalised input, or badly shaped heads, or a heads path
            that ``torch.load`` cannot read (named).
        OSError: the folder cannot be read.
    """
    upstream = student_dir_or_model
    if isinstance(upstream, str | Path):
        upstream = Upstream.from_pretrained(upstream)
    if isinstance(upstream, Upstream):
        normalize, model = upstream.normalize, upstream.model
    else:
        model = upstream
        normalize = getattr(model.config, "feat_extract_norm", "group") == "layer"
    if not isinstance(model, HubertModel) and isinstance(getattr(model, "hubert", None),
                                                        HubertModel):
        model = model.hubert  # e.g. HubertForCTC: keep the encoder
    if normalize:
        msg = ("the student expects zero-mean unit-variance waveforms, but s3prl's distiller "
               "upstream feeds raw waveforms")
        if not allow_normalization_mismatch:
            raise ValueError(msg + "; pass allow_normalization_mismatch=True to export anyway")
        logger.warning("%s: its s3prl features will differ from ours", msg)
    state = hubert_to_distiller_state_dict(model)
    hidden = model.config.hidden_size
    if heads is None:
        layers, final_dim = [model.config.num_hidden_layers], hidden
        head_state = _zero_heads(hidden, 1, final_dim)
    else:
        layers, head_state, final_dim = _load_heads(heads, hidden)
    state.update({f"output_layer.{k}": v for k, v in head_state.items()})
    distiller = hubert_to_distiller_config(
        model.config, n_tasks=len(layers), final_dim=final_dim, pred_layer_id=layers
    )
    checkpoint = {
        "Distiller": state,
        "Config": {"distiller": distiller},
        "Upstream_Config": {"distiller": distiller},
        "robustdistill": {
            "hf_config": model.config.to_dict(),
            "zero_heads": heads is None,
            "note": "exported by robustdistill.s3prl_export; s3prl hidden_states[0] is the "
                    "projected CNN output before the positional convolution",
        },
    }
    out = Path(out_ckpt_path)
    # a temporary file beside out, renamed over it once whole: a failed write (a full disk, an
    # interrupt) leaves an earlier export as it was, never a cut one
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    logger.info("wrote s3prl distiller checkpoint %s (%d layers, %d heads)", out,
                model.config.num_hidden_layers, len(layers))
    return out


def main(argv: list[str] | None = None) -> int:
    """``robustdistill export-s3prl --student DIR --out FILE.ckpt [--overwrite] [--heads FILE]
    [--allow-normalization-mismatch]``: write the s3prl distiller checkpoint of a HuBERT-family
    student folder and print the ``run_downstream.py`` flags to use with it.

    Returns:
        0 on success; exits with status 2 and a one-line message, before anything is written,
        for a student s3prl cannot reproduce, a missing folder, an ``--out`` that is a folder,
        an ``--out`` that exists without ``--overwrite`` (as ``export``, ``create-student`` and
        ``make-teacher`` refuse an output that holds files), an ``--out`` that would overwrite
        an input even with ``--overwrite`` (inside ``--student``, ``--heads`` itself, or the
        same file as one of their files through a hard link), or ``--heads`` that is missing or
        not a ``torch.save``'d file. ``--overwrite`` writes a temporary file beside ``--out`` and
        renames it over the old one when whole: an export that fails leaves the old file as it
        was.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="robustdistill export-s3prl",
        description="Export a HuBERT-family student (e.g. a run's student/ folder) as a "
        "checkpoint for s3prl's distiller upstream: run_downstream.py -u distiller_local -k CKPT "
        "-s hidden_states (weighted sum) or -s paper (last layer); never -s last_hidden_state "
        "(the zero prediction head).")
    parser.add_argument("--student", required=True, help="student folder (save_pretrained)")
    parser.add_argument("--out", required=True,
                        help="the .ckpt file to write: a new file (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file instead of refusing it (never one "
                             "of the inputs)")
    parser.add_argument("--heads", help="torch.save'd trained prediction heads (s3prl layout); "
                        "default: one all-zero head")
    parser.add_argument("--allow-normalization-mismatch", action="store_true",
                        help="export a student that expects normalised waveforms anyway")
    args = parser.parse_args(argv)
    if not Path(args.student).is_dir():
        parser.error(f"student folder not found: {args.student}")
    if Path(args.out).is_dir():  # torch.save would fail with a RuntimeError traceback
        parser.error(f"--out {args.out} is a folder: give the .ckpt file to write")
    if (clash := _input_clash(args.out, args.student, args.heads)) is not None:
        parser.error(f"--out {args.out} would overwrite an input: it {clash}; give another "
                     "file, outside --student")
    if Path(args.out).expanduser().exists() and not args.overwrite:
        parser.error(f"--out {args.out} exists; give a new file, or --overwrite to replace it")
    try:
        path = export_s3prl_distiller(args.student, args.out, args.heads,
                                      allow_normalization_mismatch=args.allow_normalization_mismatch)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    print(f"wrote {path}\n"
          f"use: python run_downstream.py -m train -u distiller_local -k {path} -d TASK -n NAME "
          "-s hidden_states   (or -s paper for the last layer; not -s last_hidden_state: zeros)")
    return 0


def _input_clash(out: str, student: str, heads: str | None) -> str | None:
    """How writing ``out`` would overwrite an input of ``export-s3prl``, or None.

    Returns ``"is inside --student DIR"`` (by its resolved path, symbolic links followed),
    ``"is --heads FILE"``, or ``"is the same file as FILE (a hard link)"`` for a
    file of ``student`` or ``heads`` that ``out`` names through another directory entry."""
    out_path = Path(out).expanduser().resolve()
    student_path = Path(student).expanduser().resolve()
    if student_path in out_path.parents:
        return f"is inside --student {student}"
    heads_path = Path(heads).expanduser() if heads else None
    if heads_path is not None and out_path == heads_path.resolve():
        return f"is --heads {heads}"
    if not out_path.is_file():
        return None
    inputs = [f for f in student_path.rglob("*") if f.is_file()] + (
        [heads_path] if heads_path is not None and heads_path.is_file() else [])
    same = next((f for f in inputs if out_path.samefile(f)), None)
    return None if same is None else f"is the same file as {same} (a hard link)"
