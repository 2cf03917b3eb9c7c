"""The snapshot schedule: which cron fire time a call belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter

__all__ = ["fire_time"]

# Faust's crontab sleeps until the fire time; the wake-up can be a little early or late.
_EARLY_WAKE_UP = timedelta(seconds=5)


def fire_time(cron: str, now: datetime) -> datetime:
    """The fire time of ``cron`` (UTC) that a call at ``now`` serves.

    A call up to 5 s before a fire time serves that fire time; otherwise the latest one at or
    before ``now``. Every worker computing this for the same wake-up gets the same instant, hence
    the same trigger key (``schedule:<fire time>``) and one version.
    """
    reference = (now.astimezone(UTC) + _EARLY_WAKE_UP).replace(microsecond=0)
    return croniter(cron, reference + timedelta(seconds=1)).get_prev(datetime).astimezone(UTC)
