"""Keep access tokens out of logs and error messages.

The library never takes a token as a config key or argument: ``huggingface_hub`` reads
``HF_TOKEN`` (or ``huggingface-cli login``'s file) itself, so tokens are not in
``config.yaml``, ``metrics.jsonl``, model cards or ``final_state.json``. What could still
echo one is a message built from something that holds it (a URL with credentials, a
third-party exception). :class:`RedactingFilter` (installed by :func:`install`, which the
``robustdistill`` command calls, on the root logging handlers and those ``transformers``,
``datasets`` and ``huggingface_hub`` attach to their own loggers; ``warnings`` are routed
through logging) replaces, in every log record and in uncaught exceptions' tracebacks:

* the values of the environment variables in :data:`TOKEN_ENV_VARS`;
* anything shaped like a Hugging Face token (``hf_`` followed by 30+ letters/digits);
* the password of ``scheme://user:password@host`` URLs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback

__all__ = ["MASK", "TOKEN_ENV_VARS", "RedactingFilter", "install", "redact"]

#: Environment variables whose values are secrets.
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN",
                  "WANDB_API_KEY", "COMET_API_KEY", "NEPTUNE_API_TOKEN")
#: What a secret is replaced with.
MASK = "***"

_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+(?=@)"),
)


def redact(text: str) -> str:
    """``text`` with every secret (see the module docstring) replaced by :data:`MASK`."""
    for name in TOKEN_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 8:  # a short value would mask ordinary words
            text = text.replace(value, MASK)
    text = _PATTERNS[0].sub(MASK, text)
    return _PATTERNS[1].sub(lambda m: f"{m.group(1)}:{MASK}", text)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts the formatted message (and exception text) of records."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place and keep it (always returns True).

        A message that contained a secret is replaced by its formatted, redacted text
        (``args`` cleared); an attached exception is formatted, redacted into ``exc_text``
        and its ``exc_info`` dropped.
        """
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text, record.exc_info = redact(text).rstrip("\n"), None
        return True


def _excepthook(kind, value, tb) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


#: Libraries that attach a handler of their own to their root logger (printed before the
#: record reaches the root handlers).
LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub")


def _configure_library_loggers() -> None:
    """Make each library create its own handler now (they do on first use), so it is there to
    be filtered."""
    import importlib

    for name in LIBRARY_LOGGERS:
        try:
            importlib.import_module(f"{name}.utils.logging").get_logger()
        except (ImportError, AttributeError):  # not installed, or no such helper
            continue


def install() -> None:
    """Add :class:`RedactingFilter` to every root handler and to the handlers of
    :data:`LIBRARY_LOGGERS`, route ``warnings`` through logging (``logging.captureWarnings``),
    and redact uncaught tracebacks."""
    _configure_library_loggers()
    for name in ("", *LIBRARY_LOGGERS):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
    logging.captureWarnings(True)
    sys.excepthook = _excepthook
