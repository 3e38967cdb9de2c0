"""Room impulse responses that are not: ``RirBank.from_folder`` took any readable audio as a
RIR (a noise recording, a speech utterance, 100 samples of speech). Now a file that does not
peak near its direct path and decay (:func:`robustdistill.augment.rir_implausibility`) is
skipped by name with a count, and a folder with none left is a one-line error."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from robustdistill.audio import AudioError, load_audio
from robustdistill.augment import RirBank, prepare_rir, rir_implausibility, simulate_rir_bank

SR = 16_000
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not all((SHARED / d).is_dir() for d in ("rir", "noise", "librispeech-mini")),
    reason="../shared/data (rir, noise, librispeech-mini) is not available")


def test_the_two_conditions_by_hand() -> None:
    # direct path (0.5) at 0, the largest sample 960 samples (60 ms) later
    late = np.zeros(4000)
    late[0], late[960] = 0.5, 1.0
    assert rir_implausibility(late) == ("its largest sample is 60.0 ms after its direct path "
                                        "(a room impulse response peaks within 50 ms)")
    # a tail of 0.05 over the last 100 of 1000 samples: mean power 2.5e-3 against the largest
    # sample's 1: 10 log10(2.5e-3) = -26.0 dB, not 30 dB down
    flat_tail = np.zeros(1000)
    flat_tail[0], flat_tail[900:] = 1.0, 0.05
    assert rir_implausibility(flat_tail) == ("its last tenth is only 26.0 dB below its largest "
                                             "sample (a room impulse response decays by at "
                                             "least 30 dB)")
    flat_tail[900:] = 0.03  # 10 log10(9e-4) = -30.5 dB: decays
    assert rir_implausibility(flat_tail) is None
    # the direct path is found as prepare_rir finds it: a leading delay changes nothing
    assert rir_implausibility(np.r_[np.zeros(5000), flat_tail]) is None
    assert rir_implausibility(np.ones(100)).startswith("its last tenth is only 0.0 dB below")


def _decaying_noise(rt60_s: float, drr_db: float, length_s: float, noise_floor_db=None,
                    seed: int = 0) -> np.ndarray:
    """A direct impulse at 0 then Gaussian noise decaying by 60 dB per ``rt60_s``, the
    impulse's energy ``drr_db`` above the whole (uncut) tail's, cut to ``length_s``; plus a
    noise floor ``noise_floor_db`` under the impulse."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(length_s * SR)) / SR
    h = rng.standard_normal(t.size) * 10.0 ** (-3.0 * t / rt60_s)
    tail_energy = 1.0 / (1.0 - 10.0 ** (-6.0 / (rt60_s * SR)))  # sum over the uncut tail
    h[0] = np.sqrt(10.0 ** (drr_db / 10.0) * tail_energy)
    if noise_floor_db is not None:
        h = h + h[0] * 10.0 ** (noise_floor_db / 20.0) * rng.standard_normal(t.size)
    return h


@pytest.mark.parametrize(("rt60_s", "drr_db", "length_s", "noise_floor_db"), [
    (0.6, 0.0, 1.0, -30.0),  # measured with a noise floor 30 dB under the direct path
    (1.0, -10.0, 0.25, None),  # far field (direct 10 dB under the reverberation), cut short
    (3.0, -10.0, 0.5, None),  # a hall, far field, cut to 0.5 s
    (8.0, -10.0, 0.25, None),
])
def test_a_noisy_or_far_field_response_cut_short_is_a_room_impulse_response(
        rt60_s, drr_db, length_s, noise_floor_db) -> None:
    """Refused before: the tail was compared with the mean power of the 5 ms around the
    largest sample, ~19 dB under that sample for a sparse direct path (here 14-20 dB "below
    its peak", under the 20 dB asked)."""
    h = _decaying_noise(rt60_s, drr_db, length_s, noise_floor_db)
    assert rir_implausibility(h) is None


def test_a_response_over_a_noise_floor_20_db_down_or_with_a_dc_offset_is_refused() -> None:
    assert rir_implausibility(_decaying_noise(0.6, 0.0, 1.0, -20.0)).startswith(
        "its last tenth is only 20.")
    h = _decaying_noise(0.6, 0.0, 1.0)
    assert rir_implausibility(h / np.abs(h).max() + 0.1).startswith(
        "its last tenth is only 20.")


def test_simulated_rooms_are_room_impulse_responses() -> None:
    bank = simulate_rir_bank(12, (0.1, 3.0), seed=1)
    assert [rir_implausibility(h) for h in bank.rirs] == [None] * 12


@needs_shared
@pytest.mark.parametrize("channels", ["mean", "one"])
def test_every_real_rir_is_kept(channels) -> None:
    for folder in (SHARED / "rir",):
        assert len(RirBank.from_folder(folder, channels=channels)) == 4


@needs_shared
def test_noise_recordings_as_rirs_are_one_line(caplog) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(AudioError) as info:
        RirBank.from_folder(SHARED / "noise")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{SHARED / 'noise'}: none of the 4 usable RIR files looks like a "
                              "room impulse response (augment.rooms.rir_implausibility; "
                              "check=False turns the check off); first: ")
    assert "doing_the_dishes.wav: its largest sample is" in message
    assert caplog.text.count("skipping RIR file that is not a room impulse response") == 4


@needs_shared
@pytest.mark.parametrize("channels", ["mean", "one"])
def test_speech_and_noise_among_real_rirs_are_skipped_by_name_with_a_count(
        tmp_path, caplog, channels) -> None:
    folder = tmp_path / "rirs"
    folder.mkdir()
    for name in ("hall.wav", "small_room.wav"):
        (folder / name).symlink_to(SHARED / "rir" / name)
    (folder / "tap.wav").symlink_to(SHARED / "noise" / "running_tap.wav")
    speech = sorted((SHARED / "librispeech-mini" / "test-other").rglob("*.flac"))[0]
    (folder / "speech.flac").symlink_to(speech)
    sf.write(folder / "speech100.wav", load_audio(speech)[20_000:20_100], SR)
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment.rooms"):
        bank = RirBank.from_folder(folder, channels=channels)
    assert [Path(n).name for n in bank.names] == ["hall.wav", "small_room.wav"]
    skipped = [r.getMessage() for r in caplog.records if "skipping RIR file" in r.getMessage()]
    assert sorted(Path(m.split(": ")[1]).name for m in skipped) == [
        "speech.flac", "speech100.wav", "tap.wav"]
    assert (f"skipped 3 of 5 RIR files in {folder} that are not room impulse responses; "
            "kept 2") in caplog.text


def _balcony_hall(folder: Path) -> np.ndarray:
    """A hall (RT60 3 s, 1 s long) whose strongest reflection (a balcony echo, 1.5 x the
    direct path) comes 60 ms after the direct path: a room impulse response the check refuses.
    Written to ``folder/hall.wav``; returns the response."""
    folder.mkdir()
    h = _decaying_noise(3.0, 0.0, 1.0)
    h[960] = 1.5 * h[0]
    h = (0.9 * h / np.abs(h).max()).astype(np.float32)
    sf.write(folder / "hall.wav", h, SR)
    return h


@pytest.mark.parametrize("channels", ["mean", "one"])
def test_the_check_can_be_turned_off_for_a_hall_with_a_late_reflection(tmp_path,
                                                                        channels) -> None:
    """There was no way to keep a legitimate response the check refuses; ``check=False`` keeps
    it (aligned on its direct path, not on the echo), and the one-line error of a folder the
    check empties names the caller's option."""
    h = _balcony_hall(tmp_path / "rirs")
    assert rir_implausibility(h).startswith("its largest sample is 60.0 ms after")
    with pytest.raises(AudioError) as info:
        RirBank.from_folder(tmp_path / "rirs", channels=channels,
                            check_option="augmentation.rir_check: false")
    assert "\n" not in str(info.value)
    assert ("(augment.rooms.rir_implausibility; augmentation.rir_check: false turns the check "
            "off); first: ") in str(info.value)
    bank = RirBank.from_folder(tmp_path / "rirs", channels=channels, check=False)
    assert [Path(n).name for n in bank.names] == ["hall.wav"]
    expected = prepare_rir(load_audio(tmp_path / "rirs" / "hall.wav"))
    np.testing.assert_allclose(bank.rirs[0], expected, rtol=1e-5, atol=1e-7)
    assert bank.rirs[0].size == h.size  # the direct path at sample 0 stays the onset


def test_augmentation_rir_check_reaches_the_corruptor(tmp_path) -> None:
    from robustdistill.augment import AugmentationConfig, Corruptor

    _balcony_hall(tmp_path / "rirs")
    with pytest.raises(AudioError, match="augmentation.rir_check: false turns the check off"):
        Corruptor.from_config(AugmentationConfig(rir_dir=str(tmp_path / "rirs")))
    corruptor = Corruptor.from_config(AugmentationConfig(rir_dir=str(tmp_path / "rirs"),
                                                         rir_check=False))
    assert [Path(n).name for n in corruptor.rir_bank.names] == ["hall.wav"]


def test_data_rir_check_reaches_train_se_pairs(tmp_path) -> None:
    from conftest import write_se_data

    from robustdistill.se.data import PairConfig, PairMaker

    write_se_data(tmp_path)
    _balcony_hall(tmp_path / "rirs")

    def config(**kw) -> PairConfig:
        return PairConfig(speech_dir=str(tmp_path / "speech"), noise_dir=str(tmp_path / "noise"),
                          rir_dir=str(tmp_path / "rirs"), reverb_prob=1.0, crop_seconds=0.5,
                          **kw)

    with pytest.raises(AudioError, match="data.rir_check: false turns the check off"):
        PairMaker(config())
    assert [Path(n).name for n in PairMaker(config(rir_check=False)).rirs.names] == ["hall.wav"]


def test_no_test_rir_check_reaches_evaluate(tmp_path) -> None:
    from downstream.cli import _evaluate_parser
    from downstream.conditions import TestCorruptor

    _balcony_hall(tmp_path / "rirs")
    base = ["--task", "ks", "--upstream", "fbank", "--config", "c.yaml", "--out", "o"]
    assert _evaluate_parser().parse_args(base).test_rir_check is True
    assert _evaluate_parser().parse_args([*base, "--no-test-rir-check"]).test_rir_check is False
    with pytest.raises(AudioError, match="; --no-test-rir-check turns the check off"):
        TestCorruptor.from_dirs(None, tmp_path / "rirs")
    corruptor = TestCorruptor.from_dirs(None, tmp_path / "rirs", rir_check=False)
    assert [Path(n).name for n in corruptor.rir_bank.names] == ["hall.wav"]


def test_train_rir_check_reaches_the_downstream_se_task(tmp_path) -> None:
    from downstream.data import DataConfig, SourceConfig
    from downstream.tasks.speech_enhancement.task import (
        SpeechEnhancementConfig,
        SpeechEnhancementTask,
    )

    _balcony_hall(tmp_path / "rirs")

    def task(**kw) -> SpeechEnhancementTask:
        return SpeechEnhancementTask(SpeechEnhancementConfig(
            DataConfig(SourceConfig(root="x")), train_rir_dir=str(tmp_path / "rirs"),
            train_reverb_prob=1.0, **kw))

    with pytest.raises(AudioError, match="; train_rir_check: false turns the check off"):
        task().setup({})
    kept = task(train_rir_check=False)
    kept.setup({})
    assert [Path(n).name for n in kept.rir_bank.names] == ["hall.wav"]
