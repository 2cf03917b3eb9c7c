"""Retry with exponential backoff and full jitter, for transient failures only."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from app.core.errors import TransientError

__all__ = ["Backoff", "retry_transient"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits ``first_s · 2^attempt`` capped at ``max_s``, drawn uniformly from [half, full]."""

    first_s: float = 0.2
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.first_s * (2 ** min(attempt, 30)))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    on_retry: Callable[[TransientError], None] | None = None,
) -> T:
    """Run ``operation`` until it succeeds, sleeping between :class:`TransientError` failures.

    There is no attempt limit: a sink that cannot land must hold the batch (and
    the partition's progress) rather than skip it. Any other exception, and
    cancellation, propagate at once.
    """
    attempt = 0
    while True:
        try:
            return await operation()
        except TransientError as exc:
            wait = backoff.delay(attempt)
            attempt += 1
            logger.warning("%s failed (attempt %d), retrying in %.2fs: %s", what, attempt, wait, exc)
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(wait)
