"""Strict YAML configs for downstream tasks: dataclasses, unknown keys are errors.

A task's config is a dataclass (subclass of :class:`downstream.base.TaskConfig`); the YAML file
is read as YAML (1.2 booleans, :func:`robustdistill.config.read_yaml`) and turned into that dataclass by :func:`from_dict`. A key the
dataclass does not have raises :class:`ConfigError` naming the full dotted key and the closest
valid name, so a typo never silently creates a new setting (s3prl's most common complaint).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from robustdistill.config import ConfigError, merge_config, read_config_file

__all__ = ["ConfigError", "from_dict", "load_config", "to_dict"]

#: The ``dataclasses.field`` metadata key of a float setting for which ``.inf`` is a value,
#: mapped to what it means (``train-speaker``'s ``training.max_grad_norm``: no clipping); every
#: other float must be finite, and ``.nan`` and ``-.inf`` are refused everywhere.
INFINITE_OK = "infinite_ok"

T = TypeVar("T")


def load_config(path: str | Path, config_class: type[T], overrides: dict | None = None) -> T:
    """Read a YAML file into ``config_class``.

    Args:
        path: the YAML file.
        config_class: a dataclass type.
        overrides: optional nested dict merged over the file's content before conversion.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: invalid YAML (naming the line), an empty file, not a mapping
            (:func:`robustdistill.config.read_config_file`), unknown key (named, with a
            suggestion), wrong value type.
    """
    path = Path(path)
    raw = read_config_file(path)
    if overrides:
        raw = merge_config(raw, overrides)
    try:
        return from_dict(config_class, raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def from_dict(config_class: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a (nested) dataclass from a dict; every key must be a field.

    Nested dataclass fields, ``X | None``, ``list[X]`` and ``dict[str, X]`` are converted
    recursively; ints are accepted for float fields, which must be finite (YAML's ``.nan``
    and ``.inf`` are refused), but for a field whose metadata has :data:`INFINITE_OK`, which
    also takes ``.inf``.

    Raises:
        ConfigError: unknown key (with the dotted path and the closest valid key), or a value
            of the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    hints = typing.get_type_hints(config_class)
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else ""
        raise ConfigError(
            f"unknown config key '{_join(prefix, key)}'{hint}; valid keys: {', '.join(fields)}"
        )
    kwargs = {name: _convert(hints[name], value, _join(prefix, name),
                             INFINITE_OK in fields[name].metadata)
              for name, value in data.items()}
    try:
        return config_class(**kwargs)
    except (TypeError, ValueError) as err:  # missing required field, __post_init__ checks
        raise ConfigError(f"{prefix or 'config'}: {err}") from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _convert(hint: Any, value: Any, where: str, infinite_ok: bool = False) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where, infinite_ok)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(hint) or (str, Any)
        return {k: _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(hint)}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if hint is float and isinstance(value, float) and not math.isfinite(value) \
            and not (infinite_ok and value == math.inf):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")  # .nan, .inf
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain, JSON-serialisable dict (for results.json)."""
    return dataclasses.asdict(config)
