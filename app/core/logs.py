"""Structured logs: one JSON object per line (for log shippers), or plain text when run by hand.

Kafka coordinates passed as ``extra={"topic": …, "partition": …, "offset": …}`` (or
``first_offset``/``last_offset``) become fields of the JSON line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "logging_config"]

_CONTEXT_FIELDS = ("feed", "topic", "partition", "offset", "first_offset", "last_offset", "sink")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", [context], ["exception"]}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for Faust's worker; ``None`` keeps Faust's plain text."""
    if log_format == "text":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": level, "handlers": ["stdout"]},
    }
