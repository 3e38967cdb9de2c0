"""Every key of a trainer's config, with its type, default and meaning.

Generated from the config dataclasses (:class:`robustdistill.config.DistillConfig`,
:class:`robustdistill.se.train.SETrainConfig`, :class:`robustdistill.speaker.config.
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
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "Section", "config_keys", "config_reference", "downstream_tasks",
           "reference_document", "root_config"]

#: command -> (module, root config class, title) of each trainer's reference.
COMMANDS = {
    "distill": ("robustdistill.config", "DistillConfig",
                "Distillation: `robustdistill distill`, `accelerate launch distill.py`"),
    "train-se": ("robustdistill.se.train", "SETrainConfig",
                 "Speech enhancement students: `robustdistill train-se`"),
    "train-speaker": ("robustdistill.speaker.config", "SpeakerKDConfig",
                      "Speaker students (IML-KD): `robustdistill train-speaker`"),
}

_HEADER = """# Configuration reference

Every key of each trainer's recipe and of each downstream task's config, with its type,
default and meaning. A recipe sets any of them in its YAML section; the trainers' command
lines override one with `--section.key value`, `robustdistill evaluate` with `-o
section.key=value` (values read as YAML: `200` an int, `[4, 8]` a list, `null` None). An unknown key is an error naming
the closest known one. The distillation objectives' own options are in `docs/objectives.md`.

A trainer's `--key value` sets that key as its line in the YAML would: a mapping given as the
value replaces the key's whole mapping (`--objectives '{layerwise: {teacher_layers: [4, 8]}}'`
leaves no other objective; `--training '{max_steps: 5}'` gives every other `training` key its
default), and a dotted key changes one entry and keeps the rest
(`--objectives.layerwise.teacher_layers [4, 8]`, `--training.max_steps 5`); the later of two
overrides of one key wins. `--objectives.NAME null` removes objective NAME, also from an earlier
`--objectives '{...}'` value (an unknown or absent NAME is an error naming the choices); inside a
mapping, as in a YAML file, `NAME: null` or `NAME: {}` is the objective with its default options.

Generated from the config dataclasses (`python -m robustdistill.config_reference >
docs/config.md`); `tests/test_config_reference.py` fails when this file is out of date.
"""

_ENTRY = re.compile(r"^(\w+(?:\s*[,/]\s*\w+)*)(?: \([^)]*\))?: (.*)$")


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: text}`` from the Google-style ``Attributes:`` sections of the docstrings of
    ``cls`` and its bases (the class's own entry wins). ``a / b: text`` and ``a, b: text``
    document both fields."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__doc__:
            docs.update(_docstring_attributes(klass.__doc__))
    return docs


def _docstring_attributes(docstring: str) -> dict[str, str]:
    lines = inspect.cleandoc(docstring).splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip().endswith("Attributes:")]
    if not starts:
        return {}
    docs: dict[str, str] = {}
    current: list[str] = []
    indent = None
    for line in lines[starts[0] + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        match = _ENTRY.match(line.strip()) if depth == indent else None
        if match:
            current = re.split(r"\s*[,/]\s*", match.group(1))
            docs.update({name: match.group(2).strip() for name in current})
        elif current and depth > indent:
            for name in current:
                docs[name] += " " + line.strip()
        else:
            break  # the next section, or text after the entries
    return docs


def _type_hints(cls: type) -> dict[str, Any]:
    """The class's resolved annotations; ``{}`` when one does not resolve."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def _section_class(f: dataclasses.Field, hints: dict[str, Any]) -> type | None:
    """The dataclass a field holds (its default's, or its annotation's, ``X | None`` too)."""
    value = _default_value(f)
    if dataclasses.is_dataclass(value):
        return type(value)
    hint = hints.get(f.name)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(
        hint) in (typing.Union, types.UnionType) else [hint]
    if len(options) == 1 and dataclasses.is_dataclass(options[0]):
        return options[0]
    return None


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


class Section(typing.NamedTuple):
    """One section of a config: its dotted name (``""``: top level), its keys as
    ``(key, type, default, help)`` (defaults as JSON, which is YAML, or ``"required"``), and
    a note (``"required"``, ``"optional: null leaves it out"``, or that it has the keys of an
    earlier section, whose keys are then not repeated)."""

    name: str
    keys: list[tuple[str, str, str, str]]
    note: str = ""


def config_keys(root: type) -> list[Section]:
    """The keys of the config dataclass ``root``, by section.

    A field that holds a dataclass (its default is one, or its annotation is ``X`` or
    ``X | None`` for a dataclass ``X``) is a section: its fields are ``section.key``, nested
    ones ``a.b.key``. Every other field is a key. A second section of an already listed class
    gets a note instead of its keys.
    """
    sections: list[Section] = []
    seen: dict[type, str] = {}

    def walk(cls: type, name: str, note: str) -> None:
        if cls in seen:
            sections.append(Section(name, [], "; ".join(
                filter(None, [note, f"the keys of `{seen[cls]}`"]))))
            return
        seen[cls] = name
        docs, hints = _attribute_docs(cls), _type_hints(cls)
        keys, nested = [], []
        prefix = f"{name}." if name else ""
        for f in dataclasses.fields(cls):
            value = _default_value(f)
            section = _section_class(f, hints)
            if section is not None:
                sub_note = ("required" if value is dataclasses.MISSING else
                            "optional: null leaves it out" if value is None else "")
                nested.append((section, prefix + f.name, sub_note))
                continue
            default = "required" if value is dataclasses.MISSING else _json(value)
            keys.append((prefix + f.name, _type(cls, f), default,
                         _plain(f.metadata.get("help") or docs.get(f.name, ""))))
        sections.append(Section(name, keys, note))
        for args in nested:
            walk(*args)

    walk(root, "", "")
    return [s for s in sections if s.keys or s.note]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_reference(root: type, markdown: bool = False, level: int = 2) -> str:
    """:func:`config_keys` of ``root`` as text: ``--key (type, default D)`` lines with the help
    below (``markdown=False``, for ``--help``) or one Markdown table per section under
    headings of ``level``."""
    out: list[str] = []
    for section, keys, note in config_keys(root):
        title = (f"`{section}`" if section else "top level") + (f" ({note})" if note else "")
        if markdown:
            out += [f"{'#' * level} {title}", ""]
            if keys:
                out += ["| key | type | default | meaning |", "|---|---|---|---|"]
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


def downstream_tasks() -> dict[str, type]:
    """``{task folder name: its config class}`` of every task under ``downstream/tasks/``."""
    import downstream.tasks
    from downstream.base import get_task

    folder = Path(downstream.tasks.__file__).parent
    return {path.parent.name: get_task(path.parent.name).config_class
            for path in sorted(folder.glob("*/__init__.py"))}


def reference_document() -> str:
    """``docs/config.md``: every trainer's and downstream task's :func:`config_reference` in
    Markdown."""
    parts = [_HEADER]
    for command, (_, _, title) in COMMANDS.items():
        parts += [f"## {title}", "", config_reference(root_config(command), markdown=True,
                                                      level=3)]
    for task, config_class in downstream_tasks().items():
        parts += [f"## Downstream task `{task}`: `robustdistill evaluate --task {task}`", "",
                  "Overrides: `-o key=value` (e.g. `-o training.steps=200`); a mapping "
                  "value replaces the config's mapping, as in a YAML file; a dotted key "
                  "(`-o a.x=1`) changes one entry.", "",
                  config_reference(config_class, markdown=True, level=3)]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Any = None) -> int:
    """Print :func:`reference_document` (``docs/config.md``)."""
    sys.stdout.write(reference_document())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
