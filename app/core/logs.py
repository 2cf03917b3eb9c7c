"""Structured logs: one JSON object per line (for log shippers), or plain text when run by hand.

Kafka coordinates passed as ``extra={"topic": …, "partition": …, "offset": …}`` (or
``first_offset``/``last_offset``) become fields of the JSON line.

:func:`quiet_expected_noise` lowers a few library lines that sound alarming but announce an
expected, self-healing event (see :data:`EXPECTED_NOISE`): they stay visible at their new level.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["EXPECTED_NOISE", "JsonFormatter", "Lower", "logging_config", "quiet_expected_noise"]

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


EXPECTED_NOISE: dict[str, tuple[tuple[str, int], ...]] = {
    # Faust's conductor waits whenever its producer buffer holds more than 100 messages, and says so
    # at WARNING before every wait. The table agent sends a table update and a changelog entry per
    # key of a delta message (thousands), so the wait -- Faust's own back-pressure -- happens for
    # nearly every message. The buffer's size is the gauge txlake_producer_buffer_messages.
    "faust.transport.producer": (("producer buffer full", logging.DEBUG), ("producer flush took", logging.DEBUG)),
    # aiokafka logs a failed group-coordinator lookup at ERROR and retries it. On a fresh broker
    # the first lookup of a group always fails (GroupCoordinatorNotAvailableError) while Kafka
    # creates __consumer_offsets; a coordinator that stays away shows up as lag and /readyz.
    "aiokafka.consumer.group_coordinator": (
        ("Group Coordinator Request failed", logging.INFO),
        ("Marking the coordinator dead", logging.INFO),
    ),
}
"""Per logger: (message prefix, level) of lines that announce an expected event, and the level they get."""


class Lower(logging.Filter):
    """Gives records whose message starts with a known prefix a lower level (dropped below the logger's level)."""

    def __init__(self, rules: tuple[tuple[str, int], ...]) -> None:
        super().__init__()
        self.rules = rules

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        for prefix, level in self.rules:
            if message.startswith(prefix) and level < record.levelno:
                record.levelno, record.levelname = level, logging.getLevelName(level)
                return logging.getLogger(record.name).isEnabledFor(level)
        return True


def quiet_expected_noise() -> None:
    """Install :class:`Lower` on the loggers of :data:`EXPECTED_NOISE` (idempotent)."""
    for name, rules in EXPECTED_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, Lower) for existing in logger.filters):
            logger.addFilter(Lower(rules))
