"""Mutation-testing additions for robustdistill.audio: PCM scaling, the NaN count in the
message, overflow in resampling, truncated compressed files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from robustdistill.audio import SAMPLE_RATE, AudioError, load_audio, prepare_waveform


def test_integer_pcm_is_scaled_by_two_to_the_bits_minus_one() -> None:
    """16- and 32-bit PCM map to [-1, 1): the most negative code is exactly -1, half scale
    exactly 0.5 (a scale of 2**(b-1) - 1 would give -1.00003 and 0.50002)."""
    pcm16 = np.array([-32768, -16384, 0, 16384, 32767], np.int16)
    out = prepare_waveform(pcm16, SAMPLE_RATE)
    assert out.dtype == np.float32
    assert out.tolist() == [-1.0, -0.5, 0.0, 0.5, 32767 / 32768]
    pcm32 = np.array([-(2**31), 2**30], np.int32)
    assert prepare_waveform(pcm32, SAMPLE_RATE).tolist() == [-1.0, 0.5]


def test_non_finite_input_is_refused_before_resampling_naming_the_count() -> None:
    """NaN/Inf input is refused by the input check, whose message counts the bad samples."""
    wave = np.array([0.1, np.nan, 0.2, np.inf], np.float32)
    for rate in (SAMPLE_RATE, 8_000):
        with pytest.raises(AudioError, match="2 of 4 samples are NaN or Inf") as info:
            prepare_waveform(wave, rate)
        assert info.value.reason == "non-finite"


def test_resampling_that_overflows_float32_is_refused() -> None:
    """Huge but finite samples can overflow float32 in the resampler's filter: the output
    check refuses the Inf it produces instead of passing it on."""
    huge = np.full(4_000, 3.0e38, np.float32)
    assert np.isfinite(huge).all()
    with pytest.raises(AudioError, match="resampling produced NaN or Inf") as info:
        prepare_waveform(huge, 8_000, name="huge")
    assert info.value.reason == "non-finite"


def test_truncated_mp3_is_refused_as_unreadable() -> None:
    """An MP3 cut in half decodes without a libsndfile error but to fewer frames than its
    header announces: refused as truncated, not returned short."""
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE))
    buffer = io.BytesIO()
    sf.write(buffer, tone.astype(np.float32), SAMPLE_RATE, format="MP3")
    data = buffer.getvalue()
    assert load_audio(data).shape[0] >= 2 * SAMPLE_RATE - 2_000  # the whole file is fine
    with pytest.raises(AudioError, match="truncated") as info:
        load_audio(data[: len(data) // 2])
    assert info.value.reason == "unreadable"
