"""Speech enhancement (SE) distillation: real causal SE teachers, tiny causal students.

Modules (one job each):

- :mod:`.stft`: causal framing, analysis/synthesis windows and overlap-add.
- :mod:`.teachers`: NSNet2 and DTLN ported from the ONNX weights shipped in registry packages,
  and :class:`~.teachers.base.HookedTeacher` to use any torch SE model as a teacher.
- :mod:`.students`: the causal mask-based GRU student family (16x / 32x / 63x smaller).
- :mod:`.streaming`: frame-by-frame inference with carried state.
- :mod:`.data`: noisy/clean pairs made on the fly from speech, noise and rooms.
- :mod:`.losses`: supervised signal losses and the KD recipes.
- :mod:`.train`: the training loop (accelerate, exact resume, metrics.jsonl, TensorBoard).
- :mod:`.config`: a ``train-se`` recipe (its sections, YAML plus overrides).
- :mod:`.run_checkpoints`, :mod:`.resume_settings`: a run's checkpoints, and whether a resume
  may continue from the newest one.
- :mod:`.stops`: non-finite steps skipped and counted; the stops for them and for a SIGTERM.
- :mod:`.final_state`: ``student/`` and ``final_state.json`` at the end of a run.
- :mod:`.enhance`: the ``robustdistill enhance`` command.
- :mod:`.onnx`: ONNX export of a student with an onnxruntime parity check.
- :mod:`.evaluate`: SI-SDR / PESQ / STOI on held-out speech and noise; the comparison table.

Papers: two-step KD (arXiv 2309.08144), I2RF-TFCKD (arXiv 2506.13127), cosine alignment with
a linear inverted bottleneck (arXiv 2505.03442); NSNet2 (Braun et al., "Towards efficient
models for real-time deep noise suppression", arXiv 2101.09249); DTLN (Westhausen and Meyer,
"Dual-signal transformation LSTM network for real-time noise suppression", arXiv 2005.07551).
"""
