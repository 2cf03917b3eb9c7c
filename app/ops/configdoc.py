"""docs/configuration.md, generated from the settings' own field descriptions.

    python -m app.ops.configdoc > docs/configuration.md        (or: make configdoc)

One source of truth: every field of :class:`~app.core.settings.Settings` (and of its sections)
carries its description, constraints and default; this module renders them as one Markdown page,
a section per settings section, a row per field, with the environment variable that sets it
(``TXLAKE_<SECTION>__<FIELD>``), its type, its default and, for secrets, the file name it is read
from in ``TXLAKE_SECRETS_DIR``. ``tests/unit/test_configdoc.py`` fails when the page in the
repository differs from what :func:`render` gives, and when a field has no description.

Secret defaults are never printed (only that a local demo value exists).
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from inspect import cleandoc
from pathlib import PurePath
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from app.core.settings import DEFAULT_SECRETS_DIR, Settings

__all__ = ["SettingDoc", "main", "render", "settings_docs"]

ENV_PREFIX = "TXLAKE_"
NESTED = "__"


@dataclass(frozen=True)
class SettingDoc:
    """One setting as the page shows it."""

    section: str | None  # None: a top-level field of Settings
    name: str
    type: str
    default: str
    secret: bool
    description: str | None

    @property
    def env_var(self) -> str:
        path = self.name if self.section is None else f"{self.section}{NESTED}{self.name}"
        return f"{ENV_PREFIX}{path.upper()}"

    @property
    def secret_file(self) -> str:
        """The file name read from ``TXLAKE_SECRETS_DIR`` (pydantic-settings' nested secrets)."""
        return self.name if self.section is None else f"{self.section}{NESTED}{self.name}"


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _without_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``None``, whether ``None`` was allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        inner: Any = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007 - runtime construction
        return inner, optional
    return annotation, False


def _type_name(annotation: Any) -> str:
    inner, optional = _without_none(annotation)
    if typing.get_origin(inner) is Literal:
        name = "one of " + ", ".join(f"`{value}`" for value in typing.get_args(inner))
    elif isinstance(inner, types.UnionType) or typing.get_origin(inner) is typing.Union:
        name = " or ".join(_type_name(arg) for arg in typing.get_args(inner))
    elif typing.get_origin(inner) in (frozenset, set, list, tuple):
        (item, *_) = typing.get_args(inner) or (str,)
        name = f"JSON list of {_type_name(item)}s"
    elif inner is SecretStr:
        name = "string"
    elif isinstance(inner, type) and issubclass(inner, PurePath):
        name = "path"
    else:
        name = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{name}, optional" if optional else name


def _bounds(field: FieldInfo) -> str:
    words = []
    for rule in field.metadata:
        if isinstance(rule, Ge):
            words.append(f"≥ {rule.ge:,}")
        elif isinstance(rule, Gt):
            words.append(f"> {rule.gt:,}")
        elif isinstance(rule, Le):
            words.append(f"≤ {rule.le:,}")
        elif isinstance(rule, Lt):
            words.append(f"< {rule.lt:,}")
    return f" ({', '.join(words)})" if words else ""


def _default(value: Any, secret: bool) -> str:
    if value is None:
        return "unset"
    if secret:
        return "a local demo value"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, frozenset | set | list | tuple):
        return "`[]`" if not value else "`" + str(sorted(value)).replace("'", '"') + "`"
    if value == "":
        return "empty"
    return f"`{value}`"


def _is_secret(annotation: Any) -> bool:
    return _without_none(annotation)[0] is SecretStr


def _fields(model: type[BaseModel], section: str | None) -> Iterator[SettingDoc]:
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):  # listed as its own section
            continue
        secret = _is_secret(field.annotation)
        yield SettingDoc(
            section=section,
            name=name,
            type=_type_name(field.annotation) + _bounds(field),
            default=_default(field.get_default(call_default_factory=True), secret),
            secret=secret,
            description=field.description,
        )


def sections() -> Iterator[tuple[str | None, type[BaseModel]]]:
    """(section path, model) for every nested section of Settings, depth first (a section inside a
    section is ``lake__compaction``), then (None, Settings) for the top level."""
    yield from _sections(Settings, None)
    yield None, Settings


def _sections(model: type[BaseModel], parent: str | None) -> Iterator[tuple[str, type[BaseModel]]]:
    for name, field in model.model_fields.items():
        if _is_section(field.annotation):
            path = name if parent is None else f"{parent}{NESTED}{name}"
            section = typing.cast(type[BaseModel], field.annotation)
            yield path, section
            yield from _sections(section, path)


def settings_docs() -> list[SettingDoc]:
    """Every setting, in the order the page lists them."""
    return [doc for section, model in sections() for doc in _fields(model, section)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(doc: SettingDoc) -> str:
    variable = f"`{doc.env_var}`"
    if doc.secret:
        variable += f" (secret; file `{doc.secret_file}`)"
    return f"| {variable} | {_cell(doc.type)} | {_cell(doc.default)} | {_cell(doc.description or '')} |"


def _summary(model: type[BaseModel]) -> str:
    doc = cleandoc(model.__doc__ or "")
    return " ".join(doc.split("\n\n", 1)[0].split())


HEADER = f"""\
# Configuration

<!-- Generated by `python -m app.ops.configdoc` from app/core/settings.py: do not edit by hand.
     `make configdoc` rewrites this page; tests/unit/test_configdoc.py fails when it is out of step. -->

txlake reads one frozen `Settings` object at start. Sources, highest priority first:

1. environment variables `TXLAKE_<SECTION>__<FIELD>` (names are case-insensitive; lists are JSON,
   e.g. `TXLAKE_BLACKLIST__COUNTRIES='["RU"]'`);
2. a `.env` file in the working directory, same names;
3. secret files, one value per file, named `<section>__<field>` (lower case, no prefix) in the
   directory `TXLAKE_SECRETS_DIR` (default `{DEFAULT_SECRETS_DIR}`, how Kubernetes mounts a Secret);
4. the defaults below, which work with the local services of `scripts/infra` (`make up`).

Secrets are `SecretStr`: `txlake settings` prints the effective settings with secrets masked, and
they are never logged. The worker warns at start about each secret still at its local demo value.
"""


def render() -> str:
    """The whole page."""
    lines = [HEADER.rstrip("\n")]
    for section, model in sections():
        title = f"`{section.replace(NESTED, '.')}`" if section else "Top level"
        lines += ["", f"## {title}", "", _summary(model) if section else "Settings outside any section.", ""]
        lines += ["| variable | type | default | description |", "|---|---|---|---|"]
        lines += [_row(doc) for doc in _fields(model, section)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
