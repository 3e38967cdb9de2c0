"""IML-KD for speaker verification (arXiv:2409.09389): a GE2E teacher (:mod:`.ge2e`), speaker
models (:mod:`.models`), Integrated-Gradients maps with a disk cache (:mod:`.attribution`),
losses (:mod:`.losses`), speaker data (:mod:`.data`), and ``robustdistill train-speaker``:
the recipe (:mod:`.config`), its inputs (:mod:`.inputs`), the teacher's targets
(:mod:`.targets`), training (:mod:`.train`, its run folder :mod:`.run_folder`), evaluation
(:mod:`.evaluation`), the comparison table (:mod:`.table`), the ``cache`` and ``gap`` commands
(:mod:`.ig`) and the command line (:mod:`.cli`)."""
