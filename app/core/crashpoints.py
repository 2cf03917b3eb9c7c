"""Test-only crash points: the process SIGKILLs itself at a named point of a protocol.

``TXLAKE_TEST_CRASH_AT=<point>[:<n>]`` makes the *n*-th arrival (default the first) at ``<point>``
send SIGKILL to the process itself -- no shutdown code runs, exactly as an OOM kill or a node
failure at that instruction. The tests use it to kill where a random kill would rarely land (after
the broker acknowledged a flush and before the flush was acked, for instance). Unset (always, in
production) a crash point costs one comparison. The points are named where they are placed:
``grep -rn "crash_point(" app agents``.
"""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["crash_point"]

ENV = "TXLAKE_TEST_CRASH_AT"


def _armed() -> tuple[str | None, int]:
    spec = os.environ.get(ENV, "")
    if not spec:
        return None, 0
    point, _, count = spec.partition(":")
    return point, int(count or 1)


_POINT, _REMAINING = _armed()


def crash_point(point: str) -> None:
    """SIGKILL this process if ``TXLAKE_TEST_CRASH_AT`` arms ``point`` and this is its n-th arrival."""
    global _REMAINING
    if point != _POINT:
        return
    _REMAINING -= 1
    if _REMAINING == 0:
        logging.getLogger(__name__).critical("crash point %s reached: SIGKILL (%s)", point, ENV)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
