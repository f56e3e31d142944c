"""The configuration reference (``docs/configuration.md``), generated from ``Settings``.

Everything comes from the class itself: names, types, defaults and constraints from pydantic's
field information, descriptions from ``Field(description=...)``, and the sections from the
``# -- title ---`` comments that divide the class body in ``settings.py``. The document is
committed so it can be read on the forge; ``tests/test_config_docs.py`` regenerates it and
fails when the two differ, so it cannot drift from the code.
"""

from __future__ import annotations

import enum
import inspect
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Final

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

#: The command that writes the committed document (in its header, and in the test's message).
COMMAND: Final = "openclaw config docs --out docs/configuration.md"
#: The committed document, relative to the repository's root.
DOCUMENT: Final = Path("docs/configuration.md")

# A section comment in the class body: ``# -- the HTTP service (openclaw serve) -----``.
_SECTION = re.compile(r"^\s*#\s*--\s*(?P<title>.*?)\s*-*\s*$")
# Fields above the first section comment.
_FIRST_SECTION: Final = "General"


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One field, as the reference shows it."""

    name: str
    env: str
    type: str
    default: str
    constraints: str
    description: str


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    settings: tuple[SettingDoc, ...]

    @property
    def anchor(self) -> str:
        """The id GitHub gives the section's heading."""
        return re.sub(r"[^\w\- ]", "", self.title.lower()).replace(" ", "-")


# -- reading the class ---------------------------------------------------------------------


def _section_titles(cls: type[BaseModel]) -> dict[str, str]:
    """Field name -> the title of the section comment above it in the class's source.

    A class without readable source (built at run time) gets one section."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    titles: dict[str, str] = {}
    current = _FIRST_SECTION
    field = re.compile(r"^    (?P<name>[a-z_][a-z0-9_]*)\s*:")
    for line in source.splitlines():
        section = _SECTION.match(line)
        if section and section.group("title"):
            title = section.group("title")
            current = title[0].upper() + title[1:]
            continue
        match = field.match(line)
        if match and match.group("name") in cls.model_fields:
            titles.setdefault(match.group("name"), current)
    return titles


# Checked in order: bool before int (a bool is an int), anything else by its class name.
_SCALARS: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (PurePath, "path"),
    (SecretStr, "secret string"),
)


def _type_name(annotation: Any) -> str:
    """The field's type in words a reader of environment variables needs."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    is_enum = isinstance(annotation, type) and issubclass(annotation, enum.Enum)
    if origin is typing.Literal or is_enum:
        choices = [m.value for m in annotation] if is_enum else list(args)
        return "one of " + ", ".join(f"`{c}`" for c in choices)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        name = " or ".join(_type_name(a) for a in kept)
        return f"{name}, optional" if len(kept) < len(args) else name
    if origin in (tuple, list, set, frozenset):
        return f"list of {_type_name(args[0] if args else Any)} (JSON)"
    if origin is dict:
        return "object (JSON)"
    if isinstance(annotation, type):
        found = (name for kind, name in _SCALARS if issubclass(annotation, kind))
        return next(found, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _value(value: Any) -> str:
    """A value as it would be written in the environment."""
    text = str(value)
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    elif isinstance(value, enum.Enum):
        text = str(value.value)
    elif isinstance(value, tuple | list):
        text = "[" + ", ".join(_value(v) for v in value) + "]"
    elif isinstance(value, SecretStr):
        text = "(secret)"
    return text


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        factory: Any = info.default_factory
        try:
            value = factory()
        except TypeError:  # a factory of the validated data
            return "computed"
    elif info.is_required():
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    return f"`{_value(value)}`"


#: annotated_types constraints: the attribute holding the bound, and how the table says it.
_BOUNDS: tuple[tuple[type, str, str], ...] = (
    (annotated_types.Gt, "gt", "> {}"),
    (annotated_types.Ge, "ge", ">= {}"),
    (annotated_types.Lt, "lt", "< {}"),
    (annotated_types.Le, "le", "<= {}"),
    (annotated_types.MultipleOf, "multiple_of", "a multiple of {}"),
    (annotated_types.MinLen, "min_length", "length >= {}"),
    (annotated_types.MaxLen, "max_length", "length <= {}"),
)


def _constraints(info: FieldInfo) -> str:
    parts: list[str] = []
    for meta in info.metadata:
        bound = next((b for b in _BOUNDS if isinstance(meta, b[0])), None)
        if bound is not None:
            parts.append(bound[2].format(_value(getattr(meta, bound[1]))))
        else:
            # pydantic keeps pattern and allow_inf_nan in a private metadata class; read them
            # by attribute so a rename there drops a constraint rather than crashing.
            pattern = getattr(meta, "pattern", None)
            if pattern is not None:
                parts.append(f"matches `{pattern}`")
            if getattr(meta, "allow_inf_nan", None) is False:
                parts.append("finite")
    return ", ".join(parts)


def _env_name(cls: type[BaseModel], name: str, info: FieldInfo) -> str:
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    if alias:
        return alias.upper()
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def sections(cls: type[BaseModel]) -> tuple[Section, ...]:
    """Every field of ``cls``, in source order, grouped by its section comment."""
    titles = _section_titles(cls)
    grouped: dict[str, list[SettingDoc]] = {}
    for name, info in cls.model_fields.items():
        doc = SettingDoc(
            name=name,
            env=_env_name(cls, name, info),
            type=_type_name(info.annotation),
            default=_default(info),
            constraints=_constraints(info),
            description=" ".join((info.description or "").split()),
        )
        grouped.setdefault(titles.get(name, _FIRST_SECTION), []).append(doc)
    return tuple(Section(title, tuple(docs)) for title, docs in grouped.items())


# -- writing the document ------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


INTRO: Final = """\
Every setting of OpenClaw is a field of one class, `openclaw.settings.Settings`, and is read
from an environment variable: `OPENCLAW_` and the field's name in capitals (for example
`store_url` is `OPENCLAW_STORE_URL`; the case of the variable does not matter). Nothing else
reads the environment. Options on the command line (`openclaw serve --port ...`) win over the
variables. Booleans are `true` or `false` (also `1`/`0`, `yes`/`no`); lists are JSON
(`OPENCLAW_TRAIN_HIDDEN='[128, 64]'`); paths are relative to the working directory unless
absolute. In Python, `Settings(store_url=...)` takes the same names in lower case.
"""


def render(cls: type[BaseModel]) -> str:
    """The Markdown reference of ``cls``."""
    groups = sections(cls)
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from {cls.__module__}.{cls.__qualname__} by `{COMMAND}`. "
        "Do not edit: tests/test_config_docs.py fails when this file and the class differ. -->",
        "",
        INTRO.rstrip("\n"),
        "",
        f"{sum(len(s.settings) for s in groups)} settings in {len(groups)} sections:",
        "",
    ]
    lines += [f"- [{s.title}](#{s.anchor}) ({len(s.settings)})" for s in groups]
    for section in groups:
        lines += [
            "",
            f"## {section.title}",
            "",
            "| variable | setting | type | default | constraints | meaning |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for s in section.settings:
            cells = (f"`{s.env}`", f"`{s.name}`", s.type, s.default, s.constraints, s.description)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def settings_reference() -> str:
    """The reference of the project's ``Settings``: what ``docs/configuration.md`` holds."""
    from openclaw.settings import Settings

    return render(Settings)
