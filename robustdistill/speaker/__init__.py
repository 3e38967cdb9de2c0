"""IML-KD for speaker verification (arXiv:2409.09389): a GE2E teacher (:mod:`.ge2e`), speaker
models (:mod:`.models`), Integrated-Gradients maps with a disk cache (:mod:`.attribution`),
losses (:mod:`.losses`), speaker data (:mod:`.data`) and training (:mod:`.train`)."""
