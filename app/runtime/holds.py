"""Held partitions: a batch that cannot land waits and is retried -- never skipped -- and says so loudly.

The landing holds a partition (its ledger and committed offset stay where they are; the other
partitions and feeds go on) when

* a record txlake derived itself does not decode (:data:`OWN_RECORD_INVALID`): a changelog record
  the table agent wrote (it carries the header :data:`models.tables.DERIVED_HEADER`) that its own
  value model rejects. Dead-lettering it would drop txlake's output and leave the fact at an older
  value for good; holding keeps the record, and a fixed worker lands it on restart;
* a sink cannot store a value (:data:`VALUE_NOT_STORABLE`,
  :class:`~app.core.errors.UnstorableValueError`): e.g. a warehouse whose columns are narrower than
  ``sql/`` defines them; it lands once the schema admits it (``sql/06_…`` migration).

While a partition is held, every failed attempt is logged at ERROR with what to do, the gauge
``txlake_partition_held{feed, partition}`` is 1 (alert on ``max(txlake_partition_held) > 0``), and
``txlake_partition_holds_total{feed, reason}`` counted the hold once when it started. When the
batch lands the gauge returns to 0 and the release is logged. Back-pressure then works as for any
slow partition: the fetcher pauses the feed once too many of its batches wait behind the held one.
"""

from __future__ import annotations

import logging

from app.core import metrics

__all__ = ["OWN_RECORD_INVALID", "VALUE_NOT_STORABLE", "PartitionHolds"]

logger = logging.getLogger(__name__)

OWN_RECORD_INVALID = "own_record_invalid"
VALUE_NOT_STORABLE = "value_not_storable"

_ADVICE = {
    OWN_RECORD_INVALID: "txlake derived this record itself and never dead-letters its own output; "
    "a worker with the fix lands it on restart",
    VALUE_NOT_STORABLE: "the warehouse's columns are narrower than sql/ defines them: apply the migrations "
    "(sql/06_migrate_exact_keys_and_wide_money.sql); the batch lands on the next retry after",
}


class PartitionHolds:
    """The held partitions of one feed, with their metrics and log lines."""

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self._held: dict[int, str] = {}  # partition -> reason

    def hold(self, partition: int, reason: str, what: str, attempt: int) -> None:
        """Report that ``partition`` is held for ``reason`` (``what``: the batch and the error)."""
        if self._held.get(partition) != reason:
            self._held[partition] = reason
            metrics.PARTITION_HOLDS.labels(self.feed, reason).inc()
            metrics.PARTITION_HELD.labels(self.feed, str(partition)).set(1)
        logger.error(
            "HOLDING %s partition %d (attempt %d, %s): %s. Nothing is skipped: %s.",
            self.feed, partition, attempt, reason, what, _ADVICE[reason],
            extra={"feed": self.feed, "partition": partition, "reason": reason},
        )

    def release(self, partition: int) -> None:
        """The partition's batch landed: it is no longer held."""
        reason = self._held.pop(partition, None)
        if reason is not None:
            metrics.PARTITION_HELD.labels(self.feed, str(partition)).set(0)
            logger.warning("released %s partition %d (held for %s): its batch landed", self.feed, partition, reason)

    def is_held(self, partition: int) -> bool:
        return partition in self._held
