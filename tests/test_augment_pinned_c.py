"""Augmentation boundaries that the earlier tests let move (mutation audit, session 21): the
loop warning at a recording exactly as long as the segment, the RIR tail threshold between
29 and 30 dB, the speech/noise power of very quiet float32 audio."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from robustdistill.augment import mix_at_snr, rir_implausibility
from robustdistill.augment.noise import _SAID_LOOPED, NoiseBank


def test_a_recording_exactly_as_long_as_the_segment_is_not_said_to_loop(caplog):
    """N == length: one contiguous segment (the whole recording), nothing looped, no warning;
    N == length - 1 is looped and said."""
    exact = np.arange(1, 9, dtype=np.float32)  # 8 samples
    bank = NoiseBank((exact,), ("exact_c.wav",))
    _SAID_LOOPED.discard("exact_c.wav")
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment.noise"):
        segment, index = bank.draw(8, np.random.default_rng(0))
    assert index == 0
    np.testing.assert_array_equal(segment, exact)
    assert not [r for r in caplog.records if "looped" in r.getMessage()]
    _SAID_LOOPED.discard("exact_c.wav")
    with caplog.at_level(logging.WARNING, logger="robustdistill.augment.noise"):
        bank.draw(9, np.random.default_rng(0))
    assert [r.getMessage() for r in caplog.records if "looped" in r.getMessage()] == [
        "noise exact_c.wav (8 samples) is shorter than the 9-sample segment drawn: looped "
        "(said once per file; a longer recording, or none this short, is better)"]
    _SAID_LOOPED.discard("exact_c.wav")


def test_a_tail_29_5_db_down_is_refused_and_30_5_db_down_kept():
    """A unit direct path, then the last 100 of 1000 samples at amplitude a: the tail is
    20 log10(a) dB under the largest sample. The threshold is 30 dB: -29.5 dB is refused with
    the measured value, -30.5 dB kept."""
    h = np.zeros(1000)
    h[0], h[900:] = 1.0, 10.0 ** (-29.5 / 20.0)
    assert rir_implausibility(h) == ("its last tenth is only 29.5 dB below its largest sample "
                                     "(a room impulse response decays by at least 30 dB)")
    h[900:] = 10.0 ** (-30.5 / 20.0)
    assert rir_implausibility(h) is None


def test_mix_at_snr_of_very_quiet_float32_audio_is_exact():
    """Powers are computed in float64: float32 samples of 1e-24 square to 1e-48, zero in
    float32, which would call the noise silent (an AudioError) and the speech silent
    (returned without noise)."""
    rng = np.random.default_rng(0)
    clean = (1e-24 * rng.standard_normal(4000)).astype(np.float32)
    noise = (1e-24 * rng.standard_normal(4000)).astype(np.float32)
    loud = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    for speech, noise_in, snr in ((loud, noise, 5.0), (clean, loud, -3.0)):
        mixed = mix_at_snr(speech, noise_in, snr).astype(np.float64)
        added = mixed - speech.astype(np.float64)
        measured = 10 * math.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added**2))
        assert measured == pytest.approx(snr, abs=1e-3)


def test_simulated_rooms_keep_their_geometry_and_image_order_cap(monkeypatch):
    """Every simulated room, as pyroomacoustics is asked for it: dimensions within [3, 10] x
    [3, 8] x [2.5, 4] m, source and microphone at least 0.5 m from the walls and from each
    other, image order min(Sabine's order, max_order). A stand-in ShoeBox records the
    requests (and returns an impulse), so 400 rooms take milliseconds: enough for the ~1 % of
    draws that put the microphone within 0.5 m of the source to occur."""
    from robustdistill.augment import rooms

    made, sabine = [], []
    inverse_sabine = rooms.pra.inverse_sabine

    def recorded_sabine(rt60, dims):
        sabine.append(inverse_sabine(rt60, dims)[1])  # raises as before for too large rooms
        return inverse_sabine(rt60, dims)

    class ShoeBox:
        def __init__(self, dims, fs, materials, max_order):
            self.dims, self.fs, self.max_order = np.asarray(dims), fs, max_order
            self.sabine_order = sabine[-1]  # the order of the call that gave these walls
            made.append(self)

        def add_source(self, position):
            self.source = np.asarray(position)

        def add_microphone(self, position):
            self.mic = np.asarray(position)

        def compute_rir(self):
            self.rir = [[np.r_[1.0, np.zeros(99)]]]

    monkeypatch.setattr(rooms.pra, "ShoeBox", ShoeBox)
    monkeypatch.setattr(rooms.pra, "inverse_sabine", recorded_sabine)
    bank = rooms.simulate_rir_bank(400, (0.2, 1.0), seed=0, max_order=40)
    assert len(made) == len(bank) == 400
    distances = [float(np.linalg.norm(r.source - r.mic)) for r in made]
    assert min(distances) >= 0.5
    for room, name, distance in zip(made, bank.names, distances, strict=True):
        assert np.all(room.dims >= [3.0, 3.0, 2.5]) and np.all(room.dims <= [10.0, 8.0, 4.0])
        for point in (room.source, room.mic):
            assert np.all(point >= 0.5) and np.all(point <= room.dims - 0.5)
        assert room.max_order == min(int(room.sabine_order), 40) and room.fs == 16_000
        assert name.endswith(f"distance {distance:.2f} m")
    # both branches of the cap are taken (Sabine's order is about 20-30 at RT60 0.2 s, over
    # 100 at 1 s)
    assert {room.max_order == 40 for room in made} == {True, False}
