"""One cache spec's folder under the cache root (``teacher_cache.dir``): named by the spec's
hash, its ``manifest.json`` written on first use and compared with the spec on every later
open; a root that is itself one spec's folder, or (``missing: error``) that holds no folder of
this spec, is refused with a message saying what to give instead.

Part of :mod:`robustdistill.teacher_cache`, whose docstring describes the layout on disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import atomic_write_text


def open_spec_folder(root: str | Path, spec: dict, missing: str) -> Path:
    """The folder of ``spec`` under the cache root ``root``: ``root/<first 16 hex digits of
    the spec's SHA-256>``, created with its manifest unless there (``missing: "compute"``).

    Args:
        root: the cache root (``teacher_cache.dir``).
        spec: the cache spec, what the manifest holds (format version, teacher
            fingerprint, layers, context, dtype, ...; JSON-serialisable).
        missing: ``"compute"`` or ``"error"``.

    Raises:
        ValueError: ``root`` is itself one spec's folder (it holds ``manifest.json``: the
            ``path`` that ``cache-teacher`` prints), the folder's manifest describes another
            spec, or ``missing: "error"`` and ``root`` holds no folder of this spec (the
            message says what the folders there differ in).
    """
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    if (Path(root) / "manifest.json").exists():  # the "path" cache-teacher prints
        raise ValueError(f"{root} is the folder of one cache spec (it holds manifest.json), "
                         f"not a cache root: give its parent {Path(root).parent} as "
                         "teacher_cache.dir (a cache inside it would be built anew)")
    path = Path(root) / spec_hash[:16]
    manifest = path / "manifest.json"
    if missing == "error" and not manifest.exists():
        raise ValueError(_no_such_cache(Path(root), spec))
    path.mkdir(parents=True, exist_ok=True)
    if manifest.exists():
        found = json.loads(manifest.read_text())
        if found != spec:
            raise ValueError(f"{manifest} describes another cache ({found}); expected "
                             f"{spec}: remove the folder")
    else:
        atomic_write_text(manifest, json.dumps(spec, indent=2, sort_keys=True))
    return path


def _no_such_cache(root: Path, expected: dict) -> str:
    """The message for ``missing: error`` when ``root`` holds no folder of the spec
    ``expected``: what differs in each folder it does hold (another teacher, layers, ...)."""
    others = []
    for found in sorted(root.glob("*/manifest.json")):
        try:
            spec = json.loads(found.read_text())
        except (OSError, ValueError):
            continue
        differ = [key for key in sorted({*spec, *expected})
                  if spec.get(key) != expected.get(key)]
        others.append(f"{found.parent.name} (other {', '.join(differ)})")
    held = f"it holds {'; '.join(others)}" if others else "it holds no cache"
    return (f"{root} has no cache for this teacher, layers {expected['layers']}, context "
            f"{expected['context']} and dtype {expected['dtype']} (missing: error, so every "
            f"lookup would miss); {held}: build it with `robustdistill cache-teacher` and "
            "the run's settings, or set teacher_cache.missing compute")
