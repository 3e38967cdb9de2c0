"""Teacher cache behaviour that mutation testing found unpinned: what the teacher fingerprint
covers (preprocessing, attention mask, config, feature extractor), chunk entries of
utterances that are an exact multiple of the crop or shorter than it, a crop beyond its entry
is a ValueError, and the max_utterance_s boundary."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robustdistill.data.cropped import _crop_at, content_key
from robustdistill.teacher_cache import TeacherFeatureCache, teacher_fingerprint
from robustdistill.upstream import Upstream


@pytest.fixture(scope="module")
def teacher(tiny_wavlm_dir):
    return Upstream.from_pretrained(tiny_wavlm_dir)


def test_fingerprint_and_folder_change_with_normalisation_mask_config_and_extractor(
        tmp_path, tiny_wavlm_dir, teacher):
    """The same weights with other preprocessing compute other targets: another folder."""
    base = teacher_fingerprint(teacher)
    flipped_norm = Upstream(teacher.model, normalize=not teacher.normalize,
                            use_attention_mask=teacher.use_attention_mask)
    flipped_mask = Upstream(teacher.model, normalize=teacher.normalize,
                            use_attention_mask=not teacher.use_attention_mask)
    assert len({base, teacher_fingerprint(flipped_norm), teacher_fingerprint(flipped_mask)}) == 3
    paths = {TeacherFeatureCache(tmp_path, t, [1]).path
             for t in (teacher, flipped_norm, flipped_mask)}
    assert len(paths) == 3
    # Same weights, another activation in config.json: other targets, another fingerprint.
    moved = shutil.copytree(tiny_wavlm_dir, tmp_path / "relu")
    config = json.loads((moved / "config.json").read_text())
    assert config["hidden_act"] != "relu"
    (moved / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    relu = Upstream.from_pretrained(moved)
    assert teacher_fingerprint(relu) != base
    # The (Whisper) feature extractor's settings are part of it.
    from transformers import WhisperFeatureExtractor

    with_fe = Upstream(teacher.model, normalize=teacher.normalize,
                       use_attention_mask=teacher.use_attention_mask)
    with_fe.feature_extractor = WhisperFeatureExtractor()
    a = teacher_fingerprint(with_fe)
    with_fe.feature_extractor = WhisperFeatureExtractor(padding_value=0.5)
    assert teacher_fingerprint(with_fe) != a


def test_chunks_of_an_exact_multiple_and_of_a_short_utterance_are_all_built(tmp_path,
                                                                             teacher):
    """Every crop a chunked dataset can draw has its entry: both chunks of a 2-chunk
    utterance, and the whole of an utterance shorter than one chunk."""
    chunk = 50 * teacher.samples_per_frame
    cache = TeacherFeatureCache(tmp_path, teacher, [1, 2], context="crop",
                                crop_starts="chunks", dtype="float32")
    rng = np.random.default_rng(0)
    long = rng.standard_normal(2 * chunk).astype(np.float32) * 0.1
    short = rng.standard_normal(chunk // 2 + 7).astype(np.float32) * 0.1
    for wave, expected, starts in ((long, (2, 2), {0, chunk}), (short, (1, 1), {0})):
        key = content_key(wave)
        assert cache.ensure_chunks(key, wave, chunk) == expected
        drawn = {_crop_at(wave, chunk, np.random.default_rng(s), grid=chunk)[1]
                 for s in range(30)}
        assert drawn == starts  # the crops training draws
        for start in drawn:
            assert cache.entry_path(key, start, min(chunk, len(wave) - start)).exists(), start
        assert cache.ensure_chunks(key, wave, chunk) == (0, expected[1])
    second = cache.entry_path(content_key(long), chunk, chunk)
    stored = cache.compute(torch.from_numpy(long[chunk:]))
    assert torch.equal(load_file(str(second))["layers"], stored)


def test_a_crop_beyond_its_entry_is_a_value_error_in_the_step_and_the_reader(tmp_path,
                                                                               teacher):
    """An entry one frame short of what the crop needs (audio and key disagree) is refused
    with a ValueError naming the mismatch, never a partial read."""
    cache = TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="float32")
    n = 4000
    wave = torch.randn(n) * 0.1
    key = content_key(wave.numpy())
    cache.write(cache.entry_path(key), cache.compute(wave))
    grid = teacher.samples_per_frame
    batch = {"waveforms": wave[None], "lengths": torch.tensor([n]),
             "offsets": torch.tensor([grid]), "keys": [key], "indices": torch.tensor([0])}
    with pytest.raises(ValueError, match="does not match its key"):
        cache.targets(batch)
    with pytest.raises(ValueError, match="does not match its key"):
        cache.reader(n).read(batch)
    batch["offsets"] = torch.tensor([0])  # the whole utterance: fine
    assert cache.reader(n).read(batch)["cached_rows"].tolist() == [True]


def test_max_utterance_s_is_an_inclusive_limit(tmp_path, teacher):
    cache = TeacherFeatureCache(tmp_path, teacher, [1], max_utterance_s=0.25)
    cache.check_utterance_lengths(SimpleNamespace(lengths=np.array([100, 4000])))
    with pytest.raises(ValueError, match="1 utterances are longer"):
        cache.check_utterance_lengths(SimpleNamespace(lengths=np.array([100, 4001])))


def test_crops_of_one_utterance_at_one_start_with_other_lengths_have_their_own_entries(
        tmp_path, teacher):
    """Context crop: the teacher sees exactly the crop, so a crop of 8000 samples and one of
    4000 at the same start have different targets (the convolutions and attention see other
    samples); each has its own entry, ``<kk>/<key>_<start>_<length>.safetensors``, and a lookup
    never reads the other's."""
    cache = TeacherFeatureCache(tmp_path, teacher, [2], context="crop", dtype="float32")
    wave = torch.from_numpy((np.random.default_rng(3).standard_normal(8000) * 0.1)
                            .astype(np.float32))
    key = content_key(wave.numpy())
    assert cache.entry_path(key, 320, 4000) == cache.path / key[:2] / f"{key}_320_4000.safetensors"
    for n in (8000, 4000):  # the longer crop first: its entry has frames enough for the other
        batch = {"waveforms": wave[None, :n], "lengths": torch.tensor([n]),
                 "offsets": torch.tensor([0]), "keys": [key], "indices": torch.tensor([0])}
        got = cache.targets(batch).hidden_states[2][0]
        with torch.no_grad():
            direct = teacher(wave[None, :n], torch.tensor([n])).hidden_states[2][0]
        torch.testing.assert_close(got, direct)
    assert (cache.misses, cache.hits) == (2, 0)
    assert cache.entry_path(key, 0, 8000).exists() and cache.entry_path(key, 0, 4000).exists()


def test_restored_lookup_counts_go_on_from_the_checkpoints(tmp_path, teacher):
    """A resumed run starts counting from the counts its checkpoint saved (all three), so its
    totals are the whole run's."""
    cache = TeacherFeatureCache(tmp_path, teacher, [2], dtype="float32")
    saved = {"hits": 5, "hits_read_in_loader": 2, "misses": 3}
    cache.restore_lookups(saved)
    assert cache.lookups() == saved
    wave = (np.random.default_rng(4).standard_normal(4000) * 0.1).astype(np.float32)
    batch = {"waveforms": torch.from_numpy(wave)[None], "lengths": torch.tensor([4000]),
             "offsets": torch.tensor([0]), "keys": [content_key(wave)],
             "indices": torch.tensor([0])}
    cache.targets(batch, full_waveform=lambda i: wave)  # a miss (computed), then a hit
    cache.targets(batch, full_waveform=lambda i: wave)
    assert cache.lookups() == {"hits": 6, "hits_read_in_loader": 2, "misses": 4}
    cache.restore_lookups({})  # a checkpoint from before the cache counted: zeros
    assert cache.lookups() == {"hits": 0, "hits_read_in_loader": 0, "misses": 0}
