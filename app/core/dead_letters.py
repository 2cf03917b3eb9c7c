"""The dead-letter topic: records that can never land, with the reason in headers.

Headers use Kafka Connect's names (``__connect.errors.*``) so tools that read a
Connect dead-letter queue read ours. The key and value are the original bytes,
untouched. The key of the dead letter's *position* -- source topic, partition
and offset -- is in the headers; a replay after a crash between publishing and
committing may publish the same record twice (at least once), and those
headers identify the duplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.errors import TransientError

__all__ = ["DeadLetter", "DeadLetterPublisher"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected record and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str  # short, stable: the metric label (not_utf8, not_json, invalid_record)
    error_class: str
    message: str

    def headers(self, connector: str) -> list[tuple[str, bytes]]:
        return [
            ("__connect.errors.topic", self.topic.encode()),
            ("__connect.errors.partition", str(self.partition).encode()),
            ("__connect.errors.offset", str(self.offset).encode()),
            ("__connect.errors.connector.name", connector.encode()),
            ("__connect.errors.stage", b"VALUE_CONVERTER"),
            ("__connect.errors.exception.class.name", self.error_class.encode()),
            ("__connect.errors.exception.message", self.message.encode()),
            ("txlake.errors.reason", self.reason.encode()),
        ]


class DeadLetterPublisher:
    """Publishes dead letters through a Faust/aiokafka-style producer (``send`` returns a future)."""

    def __init__(self, producer: Any, topic: str, connector: str = "txlake") -> None:
        self.producer = producer
        self.topic = topic
        self.connector = connector

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish all ``letters`` and wait until the broker acknowledged each.

        Raises :class:`TransientError` if any send failed; the caller retries the
        whole call (at least once: a retry may duplicate letters already sent).
        """
        try:
            futures = [
                await self.producer.send(
                    self.topic, letter.key, letter.value, None, None, letter.headers(self.connector)
                )
                for letter in letters
            ]
            await asyncio.gather(*futures)
        except Exception as exc:  # aiokafka raises KafkaError subclasses and asyncio errors
            raise TransientError(f"dead-letter publish to {self.topic} failed: {exc}") from exc
