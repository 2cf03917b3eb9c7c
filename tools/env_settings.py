"""Settings from a ``TXLAKE_*`` mapping without touching ``os.environ`` (tests and benchmarks).

A test or a benchmark run builds several deployments in one process, each with its own variables;
:func:`settings_from_env` reads them the way the settings read the environment: nested sections
split on ``__``, a value that starts with ``[`` or ``{`` parsed as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.core.settings import Settings

__all__ = ["settings_from_env", "settings_kwargs"]


def settings_kwargs(env: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of :class:`Settings` that ``env`` (``TXLAKE_*`` names) stands for."""
    kwargs: dict[str, Any] = {}
    for name, value in env.items():
        parts = name.removeprefix("TXLAKE_").lower().split("__")
        target = kwargs
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        try:
            target[parts[-1]] = json.loads(value) if value.startswith(("[", "{")) else value
        except ValueError:
            target[parts[-1]] = value
    return kwargs


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """:class:`Settings` of ``env`` (the process's own environment and ``.env`` still apply underneath)."""
    return Settings(**settings_kwargs(env))
