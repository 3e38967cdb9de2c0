"""The How to use section of a model card: loading code for each kind of student
(``transformers`` ``AutoModel``, or this library's SE and speaker classes) and for the ONNX
graph when the folder has one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

__all__ = ["load_snippets", "onnx_inputs"]

logger = logging.getLogger(__name__)


def onnx_inputs(onnx_file: Path, model_dir: Path) -> list[str]:
    """The input names of the exported graph; when the file cannot be read, those
    :func:`~robustdistill.publish.onnx.export_onnx` gives it (``attention_mask`` too when
    ``preprocessor_config.json`` has ``return_attention_mask``)."""
    try:
        import onnx

        graph = onnx.load(str(onnx_file), load_external_data=False).graph
        weights = {init.name for init in graph.initializer}
        return [i.name for i in graph.input if i.name not in weights]
    except Exception as err:  # onnx absent, or not a readable graph
        logger.warning("could not read the inputs of %s (%s): assuming export_onnx's",
                       onnx_file, err)
    config = model_dir / "preprocessor_config.json"
    extractor = json.loads(config.read_text()) if config.is_file() else {}
    return ["input_values"] + (["attention_mask"] if extractor.get("return_attention_mask")
                               else [])


def load_snippets(ref: str, library_transformers: bool,
                  graph_inputs: Sequence[str] | None, kind: str = "ssl") -> tuple[str, str]:
    """The card's loading code, as two Markdown code blocks.

    Args:
        ref: the Hub id or local folder the code loads.
        library_transformers: the folder is a ``transformers`` model (``AutoModel``).
        graph_inputs: the ONNX graph's input names (:func:`onnx_inputs`); None when the folder
            has no ``onnx/model.onnx``.
        kind: ``ssl``, ``se`` or ``speaker`` (the SE and speaker students load with this
            library's classes unless they are ``transformers`` models).

    Returns:
        ``(load, onnx)``: the PyTorch block, and the onnxruntime block ("" without a graph).
    """
    if kind in ("se", "speaker") and not library_transformers:
        local = Path(ref).is_dir() or ref.startswith(("/", "."))
        get = f'folder = "{ref}"' if local else f'folder = snapshot_download("{ref}")'
        imports = "" if local else "from huggingface_hub import snapshot_download\n"
        if kind == "se":
            load = (
                "```python\nimport torch\n" + imports
                + "from robustdistill.se.students import GRUMaskStudent\n\n"
                + get + "\n"
                "model = GRUMaskStudent.from_pretrained(folder)  # eval mode\n"
                "noisy = torch.zeros(1, 16000)  # (batch, samples) of 16 kHz mono audio\n"
                "with torch.no_grad():\n"
                "    enhanced = model(noisy).enhanced  # (batch, samples)\n```\n\n"
                "Or on files and folders (any sample rate and channel count, written back the "
                "same):\n\n"
                "```bash\nrobustdistill enhance noisy.wav enhanced.wav --model FOLDER\n```")
        else:
            load = (
                "```python\nimport torch\n" + imports
                + "from robustdistill.speaker.models import SpeakerEmbedder\n\n"
                + get + "\n"
                "model = SpeakerEmbedder.from_pretrained(folder)  # eval mode\n"
                "a, b = torch.zeros(1, 32000), torch.zeros(1, 32000)  # 2 s of 16 kHz mono audio\n"
                "with torch.no_grad():\n"
                "    score = torch.cosine_similarity(model(a), model(b))  # (batch,); higher: "
                "same speaker\n```")
    elif library_transformers:
        load = (
            "```python\nimport numpy as np\n"
            "from transformers import AutoFeatureExtractor, AutoModel\n\n"
            f'model = AutoModel.from_pretrained("{ref}").eval()\n'
            f'extractor = AutoFeatureExtractor.from_pretrained("{ref}")\n'
            "waveform = np.zeros(16000, dtype=np.float32)  # 1 s of 16 kHz mono audio\n"
            'inputs = extractor(waveform, sampling_rate=16000, return_tensors="pt")\n'
            "hidden_states = model(**inputs, output_hidden_states=True).hidden_states\n"
            "# a tuple of num_layers + 1 tensors of shape (batch, frames, width)\n```")
    else:
        load = ("```python\nfrom safetensors.torch import load_file\n\n"
                'state = load_file("model.safetensors")  # see config.json for the shapes\n```')
    onnx = ""
    if graph_inputs is not None:
        feed = '{"input_values": waveform}'
        mask = ""
        if "attention_mask" in graph_inputs:
            feed = '{"input_values": waveform, "attention_mask": attention_mask}'
            mask = ("attention_mask = np.ones((1, 16000), dtype=np.int64)  # 1 on real samples, "
                    "0 on padding\n")
        onnx = ("```python\nimport numpy as np\nimport onnxruntime as ort\n\n"
                'session = ort.InferenceSession("onnx/model.onnx")\n'
                "waveform = np.zeros((1, 16000), dtype=np.float32)  # (batch, samples), 16 kHz,\n"
                "# after the feature extractor (see preprocessor_config.json)\n"
                f"{mask}last, hidden_states = session.run(None, {feed})\n"
                "# hidden_states: (num_layers + 1, batch, frames, width)\n```")
    return load, onnx
