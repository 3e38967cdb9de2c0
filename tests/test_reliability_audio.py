"""Bad audio: a generated corpus of broken and unusual files, alone and mixed into real audio.

:func:`write_bad_corpus` is also used by the other ``test_reliability_*`` files. Broken files
(skipped, each with its reason) and unusual-but-valid ones (converted and used) follow
``robustdistill.audio``'s rules (issue 14).
"""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SHARED_DATA, require_shared_data

import robustdistill.audio as audio_module
from robustdistill.audio import SAMPLE_RATE, AudioError, load_audio, probe_audio
from robustdistill.data import AudioFileDataset, build_dataloader, collate_waveforms

#: name -> the reason it is skipped (None: unusual but valid, it must be used).
BAD_KINDS: dict[str, str | None] = {
    "truncated.flac": "unreadable",  # a FLAC cut in the middle of a frame
    "truncated.wav": "unreadable",  # a WAV cut in half (libsndfile shrinks its frame count)
    "empty_file.wav": "empty",  # 0 bytes
    "zero_samples.wav": "too short",  # a valid header with no data (0 s < min_length_s)
    "not_audio.wav": "unreadable",  # a text file named .wav
    "random_bytes.flac": "unreadable",  # noise bytes named .flac
    "nan.wav": "non-finite",  # float WAV with NaN samples
    "inf.wav": "non-finite",  # float WAV with +Inf samples
    "all_zero.wav": "silent",  # digital silence
    "one_sample.wav": "too short",  # a single sample
    "unreadable.wav": "permission denied",  # mode 000
    "pcm_u8.wav": None,  # 8-bit unsigned PCM
    "hires_96k.wav": None,  # 96 kHz, resampled to 16 kHz
    "six_channels.wav": None,  # 5.1 layout, averaged to mono
    "hour_long.wav": None,  # an hour of 16 kHz PCM
}


def _tone(seconds: float, sr: int, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_bad_corpus(folder: Path, hour: bool = True) -> dict[str, str | None]:
    """Write :data:`BAD_KINDS` into ``folder`` (2 s each unless said otherwise).

    Args:
        folder: created if missing.
        hour: include ``hour_long.wav`` (115 MB, written in about a second).

    Returns:
        ``{file name: reason or None}`` of the files written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sr = SAMPLE_RATE
    tone = _tone(2.0, sr)
    sf.write(folder / "full.flac", tone, sr)
    data = (folder / "full.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(data[: len(data) // 2])
    (folder / "full.flac").unlink()
    sf.write(folder / "full.wav", tone, sr)
    data = (folder / "full.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(data[: len(data) // 2])
    (folder / "full.wav").unlink()
    (folder / "empty_file.wav").write_bytes(b"")
    sf.write(folder / "zero_samples.wav", np.zeros(0, np.float32), sr)
    (folder / "not_audio.wav").write_text("this is not audio, just a text file named .wav\n" * 20)
    (folder / "random_bytes.flac").write_bytes(np.random.default_rng(0).bytes(4096))
    nan = tone.copy()
    nan[1000:1100] = np.nan
    sf.write(folder / "nan.wav", nan, sr, subtype="FLOAT")
    inf = tone.copy()
    inf[5000] = np.inf
    sf.write(folder / "inf.wav", inf, sr, subtype="FLOAT")
    sf.write(folder / "all_zero.wav", np.zeros_like(tone), sr)
    sf.write(folder / "one_sample.wav", tone[:1] + 0.1, sr)
    sf.write(folder / "unreadable.wav", tone, sr)
    os.chmod(folder / "unreadable.wav", 0)
    sf.write(folder / "pcm_u8.wav", tone, sr, subtype="PCM_U8")
    sf.write(folder / "hires_96k.wav", _tone(2.0, 96_000), 96_000, subtype="PCM_24")
    six = np.stack([_tone(2.0, sr, 110.0 * (c + 1), 0.1) for c in range(6)], axis=1)
    sf.write(folder / "six_channels.wav", six, sr)
    kinds = dict(BAD_KINDS)
    if hour:
        second = (0.1 * np.random.default_rng(1).standard_normal(sr)).astype(np.float32)
        sf.write(folder / "hour_long.wav", np.tile(second, 3600), sr, subtype="PCM_16")
    else:
        del kinds["hour_long.wav"]
    return kinds


@pytest.fixture
def deny_unreadable(monkeypatch):
    """Make mode-000 files unreadable for this process even as root (root ignores the mode
    bits; the kernel would refuse any other user with the same ``PermissionError``)."""
    if os.geteuid() != 0:
        return
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if not isinstance(path, int) and stat.S_IMODE(os.stat(path).st_mode) & 0o444 == 0:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(audio_module, "open", guarded_open, raising=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("bad_audio")
    return folder, write_bad_corpus(folder)


@pytest.mark.parametrize("name", [n for n, r in BAD_KINDS.items() if r not in (None, "too short")])
def test_each_broken_file_raises_audio_error_with_its_reason(corpus, deny_unreadable, name):
    folder, kinds = corpus
    with pytest.raises(AudioError) as info:
        load_audio(folder / name)
    assert info.value.reason == kinds[name]
    assert name in str(info.value)  # the message names the file


@pytest.mark.parametrize("fmt", ["WAV", "AIFF"])
def test_a_cut_wav_or_aiff_is_refused_but_a_length_unknown_placeholder_is_not(tmp_path, fmt):
    # libsndfile reports a cut WAV/AIFF as a shorter, valid file (frames = bytes present);
    # only its header report shows the sample chunk announcing more bytes than it holds.
    tone = _tone(2.0, SAMPLE_RATE)
    buffer = io.BytesIO()
    sf.write(buffer, tone, SAMPLE_RATE, format=fmt, subtype="PCM_16")
    data = buffer.getvalue()
    assert len(load_audio(data)) == len(tone)  # the whole file is fine
    for cut in (data[: len(data) // 2], data[:-1]):
        for read in (load_audio, probe_audio):
            with pytest.raises(AudioError, match="truncated") as info:
                read(cut)
            assert info.value.reason == "unreadable"
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated"):
        audio_module.load_audio_window(path, 0, 100)
    if fmt == "WAV":
        # Streaming writers that cannot seek back announce 0xFFFFFFFF ("length unknown"):
        # the audio present is the file, nothing is cut.
        chunk = data.find(b"data")
        unknown = bytearray(data)
        unknown[4:8] = unknown[chunk + 4: chunk + 8] = (0xFFFF_FFFF).to_bytes(4, "little")
        assert np.array_equal(load_audio(bytes(unknown)), load_audio(data))
        assert probe_audio(bytes(unknown)).frames == len(tone)


def test_zero_samples_and_one_sample_decode_to_what_they_hold(corpus):
    folder, _ = corpus
    with pytest.raises(AudioError) as info:
        load_audio(folder / "zero_samples.wav")
    assert info.value.reason == "empty"
    one = load_audio(folder / "one_sample.wav")
    assert one.shape == (1,) and one[0] == pytest.approx(0.1, abs=1e-4)


def test_unusual_but_valid_files_are_converted_exactly(corpus):
    folder, _ = corpus
    reference = _tone(2.0, SAMPLE_RATE)
    u8 = load_audio(folder / "pcm_u8.wav")  # 8-bit: quantisation step 1/128
    assert u8.shape == reference.shape and np.abs(u8 - reference).max() <= 1 / 128 + 1e-6
    hires = load_audio(folder / "hires_96k.wav")  # 96 kHz -> 16 kHz, a 220 Hz tone survives
    assert hires.shape == (2 * SAMPLE_RATE,)
    assert np.abs(hires[1000:-1000] - reference[1000:-1000]).max() < 1e-3
    six = load_audio(folder / "six_channels.wav")  # the mean of the six channels
    channels, _ = sf.read(folder / "six_channels.wav", dtype="float32")
    assert six.shape == (2 * SAMPLE_RATE,) and np.allclose(six, channels.mean(axis=1), atol=1e-7)
    info = probe_audio(folder / "six_channels.wav")
    assert (info.frames, info.sample_rate, info.channels) == (2 * SAMPLE_RATE, SAMPLE_RATE, 6)
    hour = probe_audio(folder / "hour_long.wav")
    assert hour.frames == 3600 * SAMPLE_RATE


def test_in_memory_arrays_get_the_same_checks():
    with pytest.raises(AudioError, match="NaN or Inf") as info:
        audio_module.prepare_waveform(np.array([0.1, np.nan], np.float32), SAMPLE_RATE)
    assert info.value.reason == "non-finite"
    with pytest.raises(AudioError, match="silence"):
        audio_module.prepare_waveform(np.zeros(100, np.float32), SAMPLE_RATE)
    assert audio_module.prepare_waveform(np.zeros(4, np.float32), SAMPLE_RATE,
                                         allow_silence=True).tolist() == [0.0] * 4
    # Unsigned 8-bit PCM is centred on 128 (128 -> 0, 0 -> -1, 192 -> 0.5).
    assert audio_module.prepare_waveform(np.array([128, 0, 192], np.uint8),
                                         SAMPLE_RATE).tolist() == [0.0, -1.0, 0.5]
    with pytest.raises(AudioError, match="empty") as info:
        audio_module.load_audio(b"")
    assert info.value.reason == "empty"
    with pytest.raises(ValueError, match="unknown AudioError reason"):
        AudioError("x", "bad reason")


def _mixed_folder(tmp_path: Path, corpus_dir: Path, n_real: int = 6) -> list[Path]:
    """Real LibriSpeech utterances (symlinks) and the bad corpus in one folder."""
    real = sorted((SHARED_DATA / "librispeech-mini" / "train-clean-100").glob("*.flac"))[:n_real]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in [*real, *corpus_dir.iterdir()]:
        (folder / path.name).symlink_to(path)
    return [folder / p.name for p in real]


def test_dataset_over_real_and_bad_audio_uses_every_good_file_and_names_each_bad_one(
        tmp_path, corpus, deny_unreadable, caplog):
    require_shared_data()
    folder, kinds = corpus
    real = _mixed_folder(tmp_path, folder)
    files = sorted(tmp_path.joinpath("mixed").iterdir())
    with caplog.at_level(logging.INFO, logger="robustdistill.data"):
        dataset = AudioFileDataset(files, max_length_s=1.0, min_length_s=0.5, seed=0)
        batches = list(build_dataloader(dataset, batch_size=4))
    usable = {p.name for p in real} | {n for n, r in kinds.items() if r is None}
    read_time = {n for n, r in kinds.items() if r in ("non-finite", "silent")} | {
        "truncated.flac"}
    # Every good file was read and returned; every bad one was skipped exactly once.
    returned = {Path(dataset.names[int(i)]).name for b in batches for i in b["indices"]}
    assert returned == usable
    assert {Path(n).name: r for n, r in dataset.skipped.items()} == {
        n: r for n, r in kinds.items() if r is not None}
    for name in kinds.keys() - usable:
        logged = [r for r in caplog.records if f"{name} [" in r.getMessage()]
        assert len(logged) == 1, name  # logged once, with its reason
        assert f"[{kinds[name]}]" in logged[0].getMessage()
    # Read-time failures travel with the batches (so a trainer can count them, workers too).
    carried = {Path(n).name: r for b in batches for n, r in b.get("skipped", [])}
    assert carried == {n: kinds[n] for n in read_time}
    # Non-finite or silent audio never reaches a batch.
    for batch in batches:
        assert np.isfinite(batch["waveforms"].numpy()).all()
        for wave, length in zip(batch["waveforms"], batch["lengths"], strict=True):
            assert wave[:length].abs().max() > 0
    # A second epoch skips the known-bad files silently and still returns every good one.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="robustdistill.data"):
        again = {Path(dataset.names[int(i)]).name
                 for b in build_dataloader(dataset, batch_size=4) for i in b["indices"]}
    assert again == usable and not [r for r in caplog.records if "skipping" in r.getMessage()]


def test_a_folder_with_no_usable_audio_fails_at_start_up_naming_the_reasons(
        tmp_path, deny_unreadable):
    kinds = write_bad_corpus(tmp_path, hour=False)
    # Every file whose header already tells it is unusable (the others fail at read time).
    bad = [tmp_path / n for n in ("empty_file.wav", "zero_samples.wav", "not_audio.wav",
                                  "random_bytes.flac", "one_sample.wav", "unreadable.wav")]
    assert set(kinds) >= {p.name for p in bad}
    with pytest.raises(ValueError, match="none of the 6 items is usable") as info:
        AudioFileDataset(bad, max_length_s=1.0, min_length_s=0.5)
    for reason in ("2 unreadable", "2 too short", "1 empty", "1 permission denied"):
        assert reason in str(info.value)


def test_collate_carries_skipped_pairs_only_when_there_are_some():
    items = [{"waveform": np.ones(3, np.float32), "index": 0},
             {"waveform": np.ones(2, np.float32), "index": 5, "skipped": [("a.wav", "silent")]}]
    batch = collate_waveforms(items)
    assert batch["skipped"] == [("a.wav", "silent")]
    assert "skipped" not in collate_waveforms(items[:1])


def test_long_files_are_read_crop_by_crop_with_the_same_crops(corpus, monkeypatch):
    """The hour-long file is never decoded whole by a dataset; its crops are exactly those of
    the whole-file path (16 kHz: the same samples, the same crop starts)."""
    import robustdistill.data.files as files_module
    from robustdistill.audio import load_audio_window

    folder, _ = corpus
    path = folder / "hour_long.wav"
    full = load_audio(path)
    dataset = AudioFileDataset([path], max_length_s=2.0, min_length_s=1.0, seed=3)
    monkeypatch.setattr(files_module, "load_audio",
                        lambda *a, **k: pytest.fail("the whole hour was decoded"))
    for epoch in range(3):
        rng = np.random.default_rng([3, epoch, 0])
        start = int(rng.integers(0, len(full) - 2 * SAMPLE_RATE + 1))
        item = dataset[(0, epoch)]
        assert np.array_equal(item["waveform"], full[start: start + 2 * SAMPLE_RATE])
    # At another rate the window is resampled with context: equal up to edge effects.
    sf.write(folder.parent / "long_44k.wav", np.tile(_tone(1.0, 44_100), 130), 44_100)
    whole = load_audio(folder.parent / "long_44k.wav")
    window = load_audio_window(folder.parent / "long_44k.wav", 1_000_003, 16_000)
    assert np.abs(window - whole[1_000_003: 1_016_003]).max() < 1e-4
    with pytest.raises(AudioError, match="truncated") as info:
        load_audio_window(path, len(full) - 10, 100)
    assert info.value.reason == "unreadable"


def test_anti_phase_stereo_is_named_as_cancelling_channels_not_as_silence():
    from robustdistill.audio import AudioError, prepare_waveform

    tone = np.sin(np.linspace(0, 100, 1600)).astype(np.float32)
    with pytest.raises(AudioError, match="channels cancel") as err:
        prepare_waveform(np.stack([tone, -tone], axis=1), 16000, 16000, name="anti.wav")
    assert err.value.reason == "silent"
    with pytest.raises(AudioError, match="digital silence"):
        prepare_waveform(np.zeros((1600, 2), np.float32), 16000, 16000, name="zero.wav")


@pytest.mark.parametrize("kind", ["whole", "window"])
def test_ctrl_c_during_a_decode_reaches_the_caller(tmp_path, kind):
    """A SIGINT (Ctrl-C) while libsndfile decodes raises ``KeyboardInterrupt`` out of the read.
    The file used to be read through Python callbacks, where cffi swallowed it ("Exception
    ignored from cffi callback"): ``cache-teacher`` interrupted twice ran on to its end."""
    import signal
    import threading
    import time

    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(SAMPLE_RATE * 600)).astype(np.float32),
             SAMPLE_RATE, subtype="PCM_16")  # 10 minutes: a decode of a few tenths of a second
    read = {"whole": lambda: load_audio(path),
            "window": lambda: audio_module.load_audio_window(path, 0, SAMPLE_RATE * 590)}[kind]
    # Python's own SIGINT handler: a shell starting pytest in the background (`cmd &`, no job
    # control) hands it SIGINT ignored, and the signal would never arrive
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = 0
    try:
        for _ in range(3):
            timer = threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGINT))
            started = time.perf_counter()
            timer.start()
            try:
                read()
            except KeyboardInterrupt:
                interrupted += 1
            finally:
                timer.join()
            assert time.perf_counter() - started > 0.02  # the signal came during the read
    finally:
        signal.signal(signal.SIGINT, previous)
    assert interrupted == 3
