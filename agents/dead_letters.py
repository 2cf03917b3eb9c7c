"""The dead-letter monitor: counts what sits in the dead-letter topic, by source topic and reason.

Every worker counts what *it* dead-letters (``txlake_dead_letters_total``); this agent reads
the dead-letter topic itself, so the group as a whole also exports what the topic holds --
including letters written by workers that have since gone. Each worker reads a share of the
topic's partitions: sum over workers in Prometheus.

With split roles (``txlake worker --role streams|tables``) each role's Faust app reads the whole
topic in its own group and counts only the letters of its own feeds (``source_topics``): summed over
both Deployments, every letter still counts once. (A tables-role worker needs the agent anyway:
Faust's consumer refuses to start with no topic to subscribe to.)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import faust

from app.core import metrics

__all__ = ["register_dead_letter_monitor"]


def register_dead_letter_monitor(app: faust.App, topic_name: str, source_topics: Collection[str] | None = None) -> Any:
    """Count the records of ``topic_name`` by source topic and reason; only those of ``source_topics`` if given."""
    counted = None if source_topics is None else frozenset(source_topics)
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    async def count_dead_letters(stream: faust.StreamT) -> None:
        async for event in stream.events():
            headers = dict(event.headers or {})
            source = headers.get("__connect.errors.topic", b"?").decode(errors="replace")
            if counted is not None and source not in counted:
                continue
            reason = headers.get("txlake.errors.reason", b"?").decode(errors="replace")
            metrics.DEAD_LETTER_TOPIC_RECORDS.labels(source, reason).inc()

    return app.agent(topic, name="txlake.dead_letter_monitor")(count_dead_letters)
