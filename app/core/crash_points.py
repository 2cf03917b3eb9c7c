"""Test-only crash points: make the process SIGKILL itself at a named point of a commit protocol.

``TXLAKE_TEST_CRASH_AT=<point>[:<n>]`` kills the process (SIGKILL: no ``finally``, no shutdown code,
like an OOM kill or a node failure) the ``n``-th time it passes ``<point>`` (default: the first
time). Unset -- always, outside tests -- :func:`crash_point` is one comparison. The tests use it to
hit the narrow windows a random SIGKILL rarely lands in (``tests/integration/test_derived_streams.py``,
``tests/integration/test_tables.py``).

Points (``grep -rn "crash_point(" app agents``):

* ``derived_streams.sent`` -- the derived records of a batch are acknowledged by the broker,
  inside an open Kafka transaction, before its position is added to the transaction;
* ``derived_streams.before_commit`` -- records and position are in the transaction, before
  ``commit_transaction``;
* ``tables.produced`` -- a table flush's changelog and table records are acknowledged, before its
  progress records (:mod:`agents.tables`);
* ``tables.progressed`` -- the progress records are acknowledged, before the deltas are acked.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["ENV", "crash_point"]

ENV = "TXLAKE_TEST_CRASH_AT"

logger = logging.getLogger(__name__)


def _target(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, nth = spec.partition(":")
    return point, int(nth) if nth else 1


_TARGET = _target(os.environ.get(ENV))
_passes: dict[str, int] = {}


def crash_point(point: str) -> None:
    """SIGKILL this process here if ``TXLAKE_TEST_CRASH_AT`` names ``point`` and this is its n-th pass."""
    if _TARGET is None or _TARGET[0] != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] == _TARGET[1]:
        logger.critical("crash point %s reached (pass %d): SIGKILL", point, _passes[point])
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
