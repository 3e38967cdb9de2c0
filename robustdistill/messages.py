"""One-line messages from exceptions, for the commands' one-line errors and logged skips.

Third-party exceptions (torch, transformers, safetensors, PyYAML) often carry a multi-line
message (a traceback of their own, a list of every backend); a command's error line names the
input and keeps only the first line of what went wrong.
"""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(err: BaseException) -> str:
    """The first line of ``str(err)`` with surrounding blank space removed; ``""`` when the
    message is empty (``KeyboardInterrupt()``, a bare ``RuntimeError()``): callers that need a
    word then write ``first_line(err) or type(err).__name__``.

    Raises:
        Nothing: an exception whose ``__str__`` itself fails gives its type name.
    """
    try:
        text = str(err).strip()
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error being reported
        return type(err).__name__
    return text.splitlines()[0] if text else ""
