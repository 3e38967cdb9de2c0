"""Every key of a trainer's config, with its type, default and meaning.

Generated from the config dataclasses (:class:`robustdistill.config.DistillConfig`,
:class:`robustdistill.se.train.SETrainConfig`, :class:`robustdistill.speaker.train.
SpeakerKDConfig` and the dataclasses they nest), so it cannot drift from what the loaders
accept: each field's help is its ``metadata["help"]`` or, failing that, its entry in its class
docstring's ``Attributes:`` section. ``robustdistill distill --help`` (and ``train-se``,
``train-speaker``) print it as text; ``docs/config.md`` is its Markdown form
(``python -m robustdistill.config_reference > docs/config.md``; a test checks the file is
current).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
import sys
import textwrap
from typing import Any

__all__ = ["COMMANDS", "config_keys", "config_reference", "reference_document"]

#: command -> (module, root config class, title) of each trainer's reference.
COMMANDS = {
    "distill": ("robustdistill.config", "DistillConfig",
                "Distillation: `robustdistill distill`, `accelerate launch distill.py`"),
    "train-se": ("robustdistill.se.train", "SETrainConfig",
                 "Speech enhancement students: `robustdistill train-se`"),
    "train-speaker": ("robustdistill.speaker.train", "SpeakerKDConfig",
                      "Speaker students (IML-KD): `robustdistill train-speaker`"),
}

_HEADER = """# Configuration reference

Every key of each trainer's recipe, with its type, default and meaning. A recipe sets any of
them in its YAML section; the command line overrides one with `--section.key value` (values
read as YAML: `200` an int, `[4, 8]` a list, `null` None). An unknown key is an error naming
the closest known one. The distillation objectives' own options are in `docs/objectives.md`.

Generated from the config dataclasses (`python -m robustdistill.config_reference >
docs/config.md`); `tests/test_config_reference.py` fails when this file is out of date.
"""

_ATTRIBUTE = re.compile(r"^    (\w+(?:, \w+)*)(?: \([^)]*\))?: (.*)$")


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the class docstring's Google-style ``Attributes:`` section."""
    docs: dict[str, str] = {}
    current: list[str] = []
    inside = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
        elif inside and line and not line.startswith(" "):
            break  # the next section
        elif inside and (match := _ATTRIBUTE.match(line)):
            current = [name.strip() for name in match.group(1).split(",")]
            docs.update({name: match.group(2).strip() for name in current})
        elif inside and current and line.startswith("        "):
            for name in current:
                docs[name] += " " + line.strip()
    return docs


def _plain(text: str) -> str:
    """reST markup of docstrings as Markdown: ``:class:`~a.B``` -> `` `B` ``, double backquotes
    -> single ones."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([^`.]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _type(cls: type, f: dataclasses.Field) -> str:
    """The field's annotation as written in the source (``int``, ``str | None``): ``f.type``
    itself is replaced by the resolved type once ``HfArgumentParser`` has seen the class."""
    for klass in cls.__mro__:
        annotation = vars(klass).get("__annotations__", {}).get(f.name)
        if annotation is not None:
            return annotation if isinstance(annotation, str) else getattr(
                annotation, "__name__", str(annotation))
    return str(f.type)


def _default_value(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _json(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)  # JSON is YAML: true, null, [0.9, 0.98]


def config_keys(root: type) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """The keys of the config dataclass ``root``, by section.

    A field whose default is a dataclass is a section (its fields are ``section.key``, nested
    sections ``a.b.key``); every other field is a key.

    Returns:
        ``[(section, [(key, type, default, help), ...]), ...]``: section ``""`` holds the
        top-level keys; keys appear in their dataclass's order, defaults as JSON (YAML) or
        ``"required"``, help ``""`` when the field has none.
    """
    sections: list[tuple[str, list[tuple[str, str, str, str]]]] = []

    def walk(cls: type, prefix: str) -> None:
        docs = _attribute_docs(cls)
        keys, nested = [], []
        for f in dataclasses.fields(cls):
            value = _default_value(f)
            if dataclasses.is_dataclass(value):
                nested.append((type(value), f"{prefix}{f.name}."))
                continue
            default = "required" if value is dataclasses.MISSING else _json(value)
            keys.append((prefix + f.name, _type(cls, f), default,
                         _plain(f.metadata.get("help") or docs.get(f.name, ""))))
        sections.append((prefix.rstrip("."), keys))
        for cls_, prefix_ in nested:
            walk(cls_, prefix_)

    walk(root, "")
    return [(name, keys) for name, keys in sections if keys]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_reference(root: type, markdown: bool = False, level: int = 2) -> str:
    """:func:`config_keys` of ``root`` as text: ``--key (type, default D)`` lines with the help
    below (``markdown=False``, for ``--help``) or one Markdown table per section under
    headings of ``level``."""
    out: list[str] = []
    for section, keys in config_keys(root):
        title = f"`{section}`" if section else "top level"
        if markdown:
            out += [f"{'#' * level} {title}", "", "| key | type | default | meaning |",
                    "|---|---|---|---|"]
            out += [f"| `{key}` | `{_cell(kind)}` | `{_cell(default)}` | {_cell(help_)} |"
                    for key, kind, default, help_ in keys]
        else:
            out.append(f"{title}:")
            for key, kind, default, help_ in keys:
                value = "required" if default == "required" else f"default {default}"
                out.append(f"  --{key} ({kind}, {value})")
                out += textwrap.wrap(help_, width=96, initial_indent="      ",
                                     subsequent_indent="      ")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def root_config(command: str) -> type:
    """The root config dataclass of ``command`` (a key of :data:`COMMANDS`)."""
    module, name, _ = COMMANDS[command]
    return getattr(importlib.import_module(module), name)


def reference_document() -> str:
    """``docs/config.md``: every trainer's :func:`config_reference` in Markdown."""
    parts = [_HEADER]
    for command, (_, _, title) in COMMANDS.items():
        parts += [f"## {title}", "", config_reference(root_config(command), markdown=True,
                                                      level=3)]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Any = None) -> int:
    """Print :func:`reference_document` (``docs/config.md``)."""
    sys.stdout.write(reference_document())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
