"""The settings as the environment sees them: variable names, secret fields, typos, list values.

Derived from the :class:`~app.core.settings.Settings` model itself, so a new field needs no second list:

* :func:`setting_variables` -- every ``TXLAKE_…`` variable that sets a field
  (``TXLAKE_LOG_LEVEL``, ``TXLAKE_MYSQL__PORT``, and ``TXLAKE_MYSQL`` for a whole section as JSON);
* :func:`secret_settings` -- the fields typed :class:`~pydantic.SecretStr` (the Helm chart's
  guard against secrets in its ConfigMap is generated from it, see ``tools/chart_secrets.py``);
* :func:`unknown_variables` -- ``TXLAKE_`` variables that set nothing (``TXLAKE_MYSQL_PORT``, one
  underscore, is silently ignored by pydantic-settings), each with the closest real name;
* :class:`ListFriendlyEnvSource` / :class:`ListFriendlyDotEnvSource` -- the environment sources
  of the settings, except that a list setting also takes comma-separated values, as Kafka
  Connect's list configs do: ``TXLAKE_BLACKLIST__COUNTRIES=RU,BY``. A value starting with ``[``
  is JSON (``["RU", "BY"]``); anything else is split at commas. Unambiguous, and the only way
  to write an item that itself contains a comma is JSON.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource

__all__ = [
    "ENV_PREFIX",
    "NON_SETTING_VARIABLES",
    "ListFriendlyDotEnvSource",
    "ListFriendlyEnvSource",
    "UnknownVariable",
    "secret_settings",
    "setting_variables",
    "unknown_variables",
    "variable_name",
]

ENV_PREFIX = "TXLAKE_"
NESTED = "__"

NON_SETTING_VARIABLES = frozenset({
    "TXLAKE_SECRETS_DIR",  # where the settings read secret files (app.core.settings)
    "TXLAKE_KAFKA_PORT",  # the local broker's port (scripts/infra/kafka.sh)
    "TXLAKE_KAFKA_VERSION",  # the local broker's version (scripts/infra/kafka.sh)
})
"""``TXLAKE_`` variables that are read by txlake but are not settings fields."""

_COLLECTIONS = (list, set, frozenset, tuple)


def variable_name(path: tuple[str, ...] | str) -> str:
    """The environment variable of a dotted setting path: ``mysql.port`` -> ``TXLAKE_MYSQL__PORT``."""
    parts = path.split(".") if isinstance(path, str) else path
    return ENV_PREFIX + NESTED.join(part.upper() for part in parts)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every field of ``model`` and of its nested models, with its path, sections before their fields."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path, field
        section = _section_model(field.annotation)
        if section is not None:
            yield from _fields(section, path)


def setting_variables(settings_cls: type[BaseModel]) -> dict[str, str]:
    """Every variable that sets something, upper case, mapped to its dotted path (``TXLAKE_MYSQL__PORT`` -> ``mysql.port``)."""
    return {variable_name(path): ".".join(path) for path, _ in _fields(settings_cls)}


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def secret_settings(settings_cls: type[BaseModel]) -> list[str]:
    """The dotted paths of the secret fields (``SecretStr``, optional or not), sorted: ``["kafka.sasl_password", …]``."""
    return sorted(".".join(path) for path, field in _fields(settings_cls) if _is_secret(field.annotation))


@dataclass(frozen=True)
class UnknownVariable:
    """A ``TXLAKE_`` variable that sets nothing, the closest variable that would, and where it was found."""

    name: str
    suggestion: str | None
    source: str = "environment"

    def warning(self) -> str:
        hint = f"; did you mean {self.suggestion}?" if self.suggestion else " (see `txlake settings` for the names)"
        where = "" if self.source == "environment" else f" (in {self.source})"
        return f"{self.name}{where} matches no setting and is ignored{hint}"


def unknown_variables(
    settings_cls: type[BaseModel], environ: Mapping[str, str | None], source: str = "environment"
) -> list[UnknownVariable]:
    """The ``TXLAKE_`` names in ``environ`` that are neither a setting nor one of :data:`NON_SETTING_VARIABLES`.

    Names compare case-insensitively, like the settings do. The suggestion is the closest known
    name by :func:`difflib.get_close_matches` (None when nothing is close).
    """
    known = sorted(setting_variables(settings_cls))
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in NON_SETTING_VARIABLES:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        unknown.append(UnknownVariable(name, close[0] if close else None, source))
    return unknown


def dotenv_variables(path: Path) -> dict[str, str | None]:
    """The variables of a ``.env`` file (empty when there is none)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return dict(dotenv_values(path))


def _is_scalar_list(field: FieldInfo | None) -> bool:
    """Whether ``field`` holds a list, set or tuple of plain values (str, int, …)."""
    if field is None:
        return False
    annotation = field.annotation
    if typing.get_origin(annotation) not in _COLLECTIONS:
        return False
    return all(arg in (str, int, float, Ellipsis) for arg in typing.get_args(annotation))


class _CommaLists:
    """Mixin for the environment sources: list settings take ``a,b,c`` as well as JSON."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        if isinstance(value, str) and _is_scalar_list(field):
            if not value.lstrip().startswith("["):
                return [item.strip() for item in value.split(",") if item.strip()]
            try:
                return json.loads(value)
            except ValueError as exc:  # JSONDecodeError, or an integer beyond Python's digit limit
                detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ValueError(
                    f"{field_name}: {value!r} starts like a JSON list but is not one ({detail}); "
                    f'write ["a", "b"] or comma-separated values a,b'
                ) from None
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[misc]
        except ValueError as exc:
            raise ValueError(f"{field_name}: {value!r} is not valid JSON ({exc})") from None


class ListFriendlyEnvSource(_CommaLists, EnvSettingsSource):
    """Environment variables, with comma-separated list values (see the module docstring)."""


class ListFriendlyDotEnvSource(_CommaLists, DotEnvSettingsSource):
    """The ``.env`` file, with comma-separated list values (see the module docstring)."""
