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
from robustdistill.augment import RirBank, rir_implausibility, simulate_rir_bank

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
    # a tail of 0.03 over the last 100 of 1000 samples: mean power 9e-4 against 1 / 41 within
    # +-40 samples (2.5 ms) of the peak at 0: 10 log10(3.69e-2) = -14.3 dB, not 20 dB down
    flat_tail = np.zeros(1000)
    flat_tail[0], flat_tail[900:] = 1.0, 0.03
    assert rir_implausibility(flat_tail) == ("its last tenth is only 14.3 dB below its peak (a "
                                             "room impulse response decays by at least 20 dB)")
    flat_tail[900:] = 0.01  # 10 log10(1e-4 * 41) = -23.9 dB: decays
    assert rir_implausibility(flat_tail) is None
    # the direct path is found as prepare_rir finds it: a leading delay changes nothing
    assert rir_implausibility(np.r_[np.zeros(5000), flat_tail]) is None
    assert rir_implausibility(np.ones(100)).startswith("its last tenth is only 0.0 dB below")


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
                              "room impulse response (augment.rooms.rir_implausibility); first: ")
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
