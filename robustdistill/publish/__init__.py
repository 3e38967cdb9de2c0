"""Publishing students: model cards from real results, one-commit Hub push, ONNX export.

* :mod:`.card` — ``robustdistill card``: ``DIR/README.md`` with ``huggingface_hub.ModelCard``
  (templates in ``templates/``, the repository's ``hub_cards/``).
* :mod:`.results` — downstream ``results.json`` files read for a card (old and new forms).
* :mod:`.provenance` — the run, teacher, data, size and speed the card reports.
* :mod:`.push` — ``robustdistill push``: one ``HfApi.upload_folder`` commit, ``--dry-run``.
* :mod:`.onnx` — ``robustdistill export --onnx``: ONNX graph and onnxruntime parity.

Submodules are imported on use, so ``import robustdistill.publish`` stays cheap.
"""
