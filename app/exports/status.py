"""An export's progress, as ``GET /exports/{id}`` and the CLI's ``--progress json`` report it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ExportStatus", "State"]

State = Literal["running", "succeeded", "failed", "cancelled"]
MAX_ERRORS = 20


@dataclass
class ExportStatus:
    """Counters grow while the export runs; ``result`` says what became visible when it succeeded."""

    id: str
    source: str
    kind: str
    state: State = "running"
    phase: str = "starting"
    rows: int = 0
    skipped_rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    errors: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)

    def error(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def finish(self, state: State, error: str | None = None) -> None:
        self.state = state
        self.finished = time.time()
        if error:
            self.error(error)

    @property
    def elapsed_s(self) -> float:
        return round((self.finished or time.time()) - self.started, 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "source": self.source, "kind": self.kind, "state": self.state, "phase": self.phase,
            "rows": self.rows, "skipped_rows": self.skipped_rows, "bytes": self.bytes,
            "elapsed_s": self.elapsed_s, "errors": self.errors, "result": self.result,
        }

    def update(self, data: dict[str, Any]) -> None:
        """Take the fields of a ``to_json`` line (the CLI subprocess's progress)."""
        for name in ("state", "phase", "rows", "skipped_rows", "bytes", "errors", "result"):
            if name in data:
                setattr(self, name, data[name])
        if data.get("state") not in (None, "running") and self.finished is None:
            self.finished = time.time()
