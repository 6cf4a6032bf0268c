"""gcpause.paused: the collector is off inside a stage and back on after it, and what the stage
kept is not walked by the collector as young objects at the next allocation."""
from __future__ import annotations

import gc

from launcher.core.gcpause import paused


@paused
def _build(n: int) -> list[dict[str, int]]:
    assert not gc.isenabled()
    return [{"i": i} for i in range(n)]


@paused
def _outer() -> tuple[bool, list[dict[str, int]]]:
    kept = _build(10)
    return gc.isenabled(), kept


def test_the_collector_is_back_on_and_the_young_generation_empty():
    assert gc.isenabled()
    kept = _build(50_000)
    assert gc.isenabled()
    assert gc.get_count()[0] < 1000, gc.get_count()  # promoted, not left young for the next collection
    assert len(kept) == 50_000


def test_a_nested_stage_leaves_the_collector_to_the_outermost():
    enabled_inside, _ = _outer()
    assert not enabled_inside
    assert gc.isenabled()


def test_objects_someone_froze_stay_frozen():
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        _build(1000)
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()
