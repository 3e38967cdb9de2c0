"""The per-utterance corruptor the trainer uses (:class:`Corruptor`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..audio import AudioError
from .config import KINDS, AugmentationConfig, CorruptionInfo
from .noise import NoiseBank, mix_at_snr, white_if_silent
from .rooms import PreparedRirConvolver, RirBank, simulate_rir_bank
from .signals import _check_signal, _power

logger = logging.getLogger(__name__)


class Corruptor:
    """Corrupt the student's input per utterance (RobustDistiller, arXiv 2302.09437 / 2403.08654).

    Build with :meth:`from_config`. All randomness comes from the ``rng`` given to
    :meth:`corrupt` / :meth:`corrupt_batch`; the banks are fixed at construction.

    Curriculum (``curriculum_steps > 0``): with progress ``t = min(step / curriculum_steps, 1)``,
    the SNR is drawn uniformly in ``[snr_max + t * (snr_min - snr_max), snr_max]`` and the
    reverberation probabilities are scaled by ``t``, the mass taken from ``"reverb"`` going to
    ``"none"`` and that from ``"noise+reverb"`` going to ``"noise"``: the probability of noise
    stays ``p_noise + p_noise_reverb`` throughout, that of reverberation grows from 0.
    """

    def __init__(
        self,
        config: AugmentationConfig,
        noise_bank: NoiseBank | None = None,
        rir_bank: RirBank | None = None,
    ) -> None:
        """Use given banks; ``rir_bank`` is required when enabled and reverberation can occur.

        Raises:
            ValueError: reverberation is possible but no ``rir_bank`` was given.
        """
        if config.enabled and rir_bank is None and config.p_reverb + config.p_noise_reverb > 0:
            raise ValueError("a rir_bank is needed when p_reverb or p_noise_reverb is > 0")
        self.config = config
        self.noise_bank = noise_bank
        # Every RIR aligned and normalised once, with this config's settings, so convolution
        # reuses them (and their spectra) as they are.
        self.rir_bank = (rir_bank.prepared(config.rir_normalization, config.rir_direct_path_db)
                         if rir_bank is not None else None)
        self.convolver = PreparedRirConvolver()

    @classmethod
    def from_config(cls, config: AugmentationConfig, seed: int = 0) -> Corruptor:
        """Load the noise and RIR folders once, or simulate the room bank (seeded by ``seed``).

        Raises:
            FileNotFoundError: a configured folder does not exist or holds no audio file.
            AudioError: no file of a configured folder could be used.
        """
        if not config.enabled:
            return cls(config)
        noise_bank = NoiseBank.from_folder(config.noise_dir) if config.noise_dir else None
        rir_bank = None
        if config.p_reverb + config.p_noise_reverb > 0:
            if config.rir_dir:
                rir_bank = RirBank.from_folder(
                    config.rir_dir,
                    config.rir_normalization,
                    config.rir_direct_path_db,
                    channels=config.rir_channels,
                    check=config.rir_check,
                    check_option="augmentation.rir_check: false",
                )
            else:
                rir_bank = simulate_rir_bank(
                    config.num_simulated_rooms,
                    (config.rt60_min, config.rt60_max),
                    seed=seed,
                    max_order=config.room_max_order,
                    normalization=config.rir_normalization,
                    direct_path_db=config.rir_direct_path_db,
                )
        return cls(config, noise_bank, rir_bank)

    # ---- schedule ----------------------------------------------------------------------------

    @property
    def target_step(self) -> int:
        """A step at which the schedule has reached the configured (target) distribution:
        ``curriculum_steps`` (0 without a curriculum). Validation corrupts at this step so
        its losses are comparable across the run and never depend on the training step."""
        return self.config.curriculum_steps

    def _progress(self, step: int | None) -> float:
        steps = self.config.curriculum_steps
        if steps == 0:
            return 1.0
        if step is None:
            raise ValueError("curriculum_steps > 0: pass the training step")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return min(step / steps, 1.0)

    def probabilities(self, step: int | None = None) -> tuple[float, float, float, float]:
        """Probabilities of :data:`KINDS` at ``step`` (the configured ones without curriculum),
        divided by their sum: the configuration accepts sums within 1e-6 of 1, numpy's
        ``Generator.choice`` only within about 1e-8.

        Raises:
            ValueError: the curriculum is on and ``step`` is None or negative.
        """
        c, t = self.config, self._progress(step)
        total = c.p_noise + c.p_reverb + c.p_noise_reverb + c.p_none
        return (
            (c.p_noise + (1.0 - t) * c.p_noise_reverb) / total,
            t * c.p_reverb / total,
            t * c.p_noise_reverb / total,
            (c.p_none + (1.0 - t) * c.p_reverb) / total,
        )

    def snr_range(self, step: int | None = None) -> tuple[float, float]:
        """``(low, high)`` of the uniform SNR draw in dB at ``step``.

        Raises:
            ValueError: the curriculum is on and ``step`` is None or negative.
        """
        c, t = self.config, self._progress(step)
        return c.snr_max + t * (c.snr_min - c.snr_max), c.snr_max

    # ---- corruption --------------------------------------------------------------------------

    def _add_noise(
        self, x: np.ndarray, rng: np.random.Generator, step: int | None
    ) -> tuple[np.ndarray, float | None, int | None]:
        low, high = self.snr_range(step)
        use_file = self.noise_bank is not None and rng.random() < self.config.noise_file_prob
        snr_db = float(rng.uniform(low, high))
        index = None
        if use_file:
            noise, index = self.noise_bank.draw(x.size, rng)
            noise, replaced = white_if_silent(noise, rng, self.noise_bank.names[index])
            if replaced:
                index = None
        else:
            noise = rng.standard_normal(x.size, dtype=np.float32)
        if _power(x) == 0.0:
            logger.debug("silent speech (zero power): no noise added")
            return x.astype(np.float32, copy=True), None, None
        return mix_at_snr(x, noise, snr_db), snr_db, index

    def corrupt(
        self, waveform: np.ndarray, rng: np.random.Generator, step: int | None = None
    ) -> tuple[np.ndarray, CorruptionInfo]:
        """Corrupt one utterance.

        Args:
            waveform: ``(S,)`` clean speech at 16 kHz.
            rng: the source of every random choice, consumed in this order: kind, RIR index
                (and channel, for a multi-channel file with ``rir_channels="one"``),
                recording-or-white, SNR, then recording index and offset or white noise. The
                same draws serve both ``noise_reverb_order`` values.
            step: the training step; required when the curriculum is on.

        Returns:
            ``(noisy, info)``: ``(S,)`` float32 corrupted speech, time-aligned with the input,
            and a :class:`CorruptionInfo`.

        Raises:
            AudioError: empty, non-1-D or non-finite waveform.
            ValueError: curriculum on and ``step`` missing.
        """
        x = _check_signal(waveform, "speech")
        if not self.config.enabled:
            return x.astype(np.float32, copy=True), CorruptionInfo("none")
        kind = KINDS[int(rng.choice(len(KINDS), p=self.probabilities(step)))]
        rir = rir_index = rir_channel = snr_db = noise_index = None
        if kind in ("reverb", "noise+reverb"):
            rir, rir_index, rir_channel = self.rir_bank.draw(rng)
        noise_first = self.config.noise_reverb_order == "noise_first"
        room = (rir_index, rir_channel)
        if rir is not None and not noise_first:
            x = self.convolver.convolve(x, rir, room)
        if kind in ("noise", "noise+reverb"):
            x, snr_db, noise_index = self._add_noise(x, rng, step)
        if rir is not None and noise_first:  # the room reverberates speech and noise alike
            x = self.convolver.convolve(x, rir, room)
        return x.astype(np.float32, copy=False), CorruptionInfo(
            kind, snr_db, rir_index, noise_index, rir_channel
        )

    def corrupt_batch(
        self,
        waveforms: torch.Tensor,
        lengths: torch.Tensor | Sequence[int],
        rng: np.random.Generator | Sequence[np.random.Generator],
        step: int | None = None,
    ) -> tuple[torch.Tensor, list[CorruptionInfo]]:
        """Corrupt a padded batch, each utterance on its real samples only.

        Args:
            waveforms: ``(B, S)`` floating tensor of clean speech at 16 kHz, zero-padded.
            lengths: ``(B,)`` real lengths in samples, each in ``[0, S]``.
            rng: the source of every random choice: one generator, which the utterances
                consume in batch order (a row's corruption depends on the rows before it), or
                ``B`` generators, row ``b`` drawing from ``rng[b]`` alone (a row's corruption
                then depends on its own generator only, whatever the batch: validation keys
                them by dataset index).
            step: the training step; required when the curriculum is on.

        Returns:
            ``(noisy, infos)``: ``(B, S)`` tensor of ``waveforms``' dtype and device whose
            padding (samples at or after each length) is exactly zero, and one
            :class:`CorruptionInfo` per utterance (``kind="none"`` for zero-length rows).

        Raises:
            ValueError: bad shapes, dtype or lengths; not ``B`` generators; curriculum on and
                ``step`` missing.
            AudioError: NaN/Inf in an utterance's real samples.
        """
        if waveforms.ndim != 2 or not waveforms.is_floating_point():
            raise ValueError(
                f"waveforms must be a floating (B, S) tensor, got {tuple(waveforms.shape)} "
                f"{waveforms.dtype}"
            )
        batch, samples = waveforms.shape
        lens = np.asarray(
            lengths.detach().cpu().numpy() if isinstance(lengths, torch.Tensor) else lengths
        )
        if lens.shape != (batch,) or (lens.size and lens.dtype.kind not in "iu"):
            raise ValueError(f"lengths must be ({batch},) integers, got {lens.shape} {lens.dtype}")
        if lens.size and (lens.min() < 0 or lens.max() > samples):
            raise ValueError(f"lengths must be in [0, {samples}], got {lens.tolist()}")
        rngs = [rng] * batch if isinstance(rng, np.random.Generator) else list(rng)
        if len(rngs) != batch:
            raise ValueError(f"rng must be one generator or {batch} (one per row), got "
                             f"{len(rngs)}")
        clean = waveforms.detach().to(device="cpu", dtype=torch.float32).numpy()
        noisy = np.zeros((batch, samples), dtype=np.float32)
        infos = []
        for b, n in enumerate(lens.tolist()):
            if n == 0:
                infos.append(CorruptionInfo("none"))
                continue
            try:
                noisy[b, :n], info = self.corrupt(clean[b, :n], rngs[b], step)
            except AudioError as err:
                raise AudioError(f"batch row {b}: {err}") from err
            infos.append(info)
        out = torch.from_numpy(noisy).to(device=waveforms.device, dtype=waveforms.dtype)
        return out, infos


#: Key of the loader's random stream, so it never coincides with a dataset's crop stream
#: ``default_rng([seed, epoch, index])``.
LOADER_STREAM = 0x5EED


class LoaderCorruption:
    """A ``DataLoader`` collate function that also corrupts every crop: the student's input
    made in the workers, off the training step's critical path (``augmentation.in_loader``).

    Calls ``collate`` (default :func:`robustdistill.data.collate_waveforms`), then adds
    ``"noisy"``: ``(B, S)`` float32, row ``b`` = :meth:`Corruptor.corrupt` of the real samples
    of row ``b`` with ``np.random.default_rng([seed, LOADER_STREAM, epoch_b, index_b])``, zero
    past each length. The randomness is a pure function of the item and its epoch: the same
    for any number of workers, and replayed exactly by a resumed run.

    Args:
        corruptor: a :class:`Corruptor` without curriculum.
        seed: the run's seed.
        collate: the collate function to extend.

    Raises:
        ValueError: in ``__init__``, a corruptor with a curriculum; in ``__call__``, items
            without ``"epoch"`` (a streaming dataset).
        AudioError: a non-finite crop (the datasets refuse such audio first).
    """

    def __init__(self, corruptor: Corruptor, seed: int, collate=None) -> None:
        if corruptor.config.curriculum_steps:
            raise ValueError("LoaderCorruption needs a corruptor without curriculum "
                             "(the workers do not know the training step)")
        self.corruptor = corruptor
        self.seed = int(seed)
        self.collate = collate

    def __call__(self, items) -> dict:
        from ..data.batching import collate_waveforms

        if any("epoch" not in item for item in items):
            raise ValueError("augmentation.in_loader needs items with an 'epoch' (a map-style "
                             "dataset); a streaming dataset is corrupted in the step")
        batch = (self.collate or collate_waveforms)(items)
        clean = batch["waveforms"].numpy()
        noisy = np.zeros_like(clean)
        for b, (item, n) in enumerate(zip(items, batch["lengths"].tolist(), strict=True)):
            if n == 0:
                continue
            rng = np.random.default_rng([self.seed, LOADER_STREAM, int(item["epoch"]),
                                         int(batch["indices"][b])])
            noisy[b, :n], _ = self.corruptor.corrupt(clean[b, :n], rng)
        batch["noisy"] = torch.from_numpy(noisy)
        return batch
