"""When the table agent pokes a deltas partition (agents.tables.tail_behind)."""

from __future__ import annotations

from agents.tables import TAIL_IDLE_S, tail_behind


def test_a_partition_at_its_end_is_never_poked() -> None:
    assert not tail_behind(9, 10, idle_since=0.0, now=1e6)
    assert not tail_behind(None, 0, idle_since=0.0, now=1e6)  # empty partition
    assert not tail_behind(None, None, idle_since=0.0, now=1e6)  # end not known yet


def test_a_partition_behind_its_end_is_poked_only_after_an_idle_period() -> None:
    assert not tail_behind(7, 10, idle_since=100.0, now=100.0 + TAIL_IDLE_S - 0.1)
    assert tail_behind(7, 10, idle_since=100.0, now=100.0 + TAIL_IDLE_S)
    assert tail_behind(None, 3, idle_since=0.0, now=TAIL_IDLE_S)  # nothing applied at all
