"""Teacher cache behaviour that a second mutation audit found unpinned (session 13)."""

from __future__ import annotations

import torch

from robustdistill.data.cropped import content_key
from robustdistill.teacher_cache import TeacherFeatureCache
from robustdistill.upstream import Upstream


def test_loader_targets_of_another_shape_are_read_again_not_used(tmp_path, tiny_wavlm_dir):
    """A batch whose ``cached_targets`` were not read for this cache (another layer count)
    is read again from the entries, even with every row marked read."""
    teacher = Upstream.from_pretrained(tiny_wavlm_dir)
    cache = TeacherFeatureCache(tmp_path, teacher, [1, 2], dtype="float32")
    full = torch.randn(8000, generator=torch.Generator().manual_seed(0)) * 0.1
    key = content_key(full.numpy())
    assert cache.ensure(key, lambda: full)
    frames = int(teacher.frame_lengths(torch.tensor(8000)))
    batch = {"waveforms": full[None], "lengths": torch.tensor([8000]),
             "offsets": torch.tensor([0]), "keys": [key], "indices": torch.tensor([0]),
             "cached_targets": torch.zeros(1, 1, frames, teacher.hidden_size),  # one layer
             "cached_rows": torch.tensor([True])}
    out = cache.targets(batch)
    with torch.no_grad():
        whole = teacher(full[None], torch.tensor([8000])).hidden_states
    for layer in (1, 2):
        torch.testing.assert_close(out.hidden_states[layer][0], whole[layer][0, :frames])
    assert cache.lookups() == {"hits": 1, "hits_read_in_loader": 0, "misses": 0}
