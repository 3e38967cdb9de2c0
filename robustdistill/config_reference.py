"""Every key of a distillation config, with its type, default and meaning.

Generated from the config dataclasses' field metadata (:class:`robustdistill.config.
DistillConfig` and its sections), so it cannot drift from what :func:`~robustdistill.config.
load_config` accepts: ``robustdistill distill --help`` prints it as text, and
``docs/config.md`` is its Markdown form (``python -m robustdistill.config_reference >
docs/config.md``; a test checks that the file is current).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from typing import Any

from .config import _SECTIONS, DistillConfig

__all__ = ["config_keys", "config_reference"]

_HEADER = """# Configuration reference

Every key of a distillation recipe (`robustdistill distill --config RECIPE.yaml`,
`accelerate launch distill.py --config ...`), with its type, default and meaning. A recipe
sets any of them in its YAML section; the command line overrides one with `--section.key value`
(values read as YAML 1.2: `200` an int, `[4, 8]` a list, `null` None). An unknown key is an
error naming the closest known one. The objectives' own options are in `docs/objectives.md`.

Generated from the config dataclasses (`python -m robustdistill.config_reference >
docs/config.md`); `tests/test_config_reference.py` fails when this file is out of date.
"""


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return json.dumps(value)  # JSON is YAML: true, null, [0.9, 0.98]


def _type(cls: type, f: dataclasses.Field) -> str:
    """The field's annotation as written in the source (``int``, ``str | None``): ``f.type``
    itself is replaced by the resolved type once ``HfArgumentParser`` has seen the class."""
    for klass in cls.__mro__:
        annotation = vars(klass).get("__annotations__", {}).get(f.name)
        if annotation is not None:
            return annotation if isinstance(annotation, str) else getattr(
                annotation, "__name__", str(annotation))
    return str(f.type)


def config_keys() -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """The config's keys by section.

    Returns:
        ``[(section, [(key, type, default, help), ...]), ...]``: section ``""`` holds the
        top-level keys; keys appear in their dataclass's order, defaults as JSON (YAML).
    """
    top = [(f.name, _type(DistillConfig, f), _default(f), f.metadata.get("help", ""))
           for f in dataclasses.fields(DistillConfig) if f.name not in _SECTIONS]
    sections = [("", top)]
    for name, cls in _SECTIONS.items():
        sections.append((name, [(f"{name}.{f.name}", _type(cls, f), _default(f),
                                 f.metadata.get("help", "")) for f in dataclasses.fields(cls)]))
    return sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_reference(markdown: bool = False) -> str:
    """:func:`config_keys` as text: ``--key (type, default D): help`` lines (``markdown=False``,
    for ``--help``) or one Markdown table per section (``docs/config.md``)."""
    out: list[str] = [_HEADER] if markdown else []
    for section, keys in config_keys():
        title = f"`{section}`" if section else "top level"
        if markdown:
            out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
            out += [f"| `{key}` | `{_cell(kind)}` | `{_cell(default)}` | {_cell(help_)} |"
                    for key, kind, default, help_ in keys]
            out.append("")
        else:
            out.append(f"{title}:")
            for key, kind, default, help_ in keys:
                value = "required" if default == "required" else f"default {default}"
                out.append(f"  --{key} ({kind}, {value})")
                out += textwrap.wrap(help_, width=96, initial_indent="      ",
                                     subsequent_indent="      ")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: Any = None) -> int:
    """Print the Markdown reference (``docs/config.md``)."""
    sys.stdout.write(config_reference(markdown=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
