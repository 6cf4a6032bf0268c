"""The cyclic garbage collector paused while a stage of the pipeline builds its result.

Parsing, modelling, validating, expanding and rendering a large topology allocate millions of
objects and free few of them until the stage ends: CPython's cyclic collector, triggered by those
allocations, walks the ever larger heap again and again (on 2048 hosts x 8 NPUs, a third of the
whole compile). Reference counting still frees what each stage drops, and the values the stages
build hold no reference cycles the collector would be needed for; it runs again, as before, once
the outermost paused stage returns, with what the stage kept counted as old (_promote). Nested
stages leave it to the outermost one.
"""
from __future__ import annotations

import functools
import gc
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def paused(fn: F) -> F:
    @functools.wraps(fn)
    def run(*args, **kwargs):
        was = gc.isenabled()
        if was:
            gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                _promote()
                gc.enable()
    return run  # type: ignore[return-value]


def _promote() -> None:
    """Move what the stage left into the collector's oldest generation without walking it.

    Re-enabled as is, the collector would run at the next allocation and walk every object the
    stage allocated and kept (all still "young": none was collected while paused): 0.1-0.4 s
    per stage boundary at 16k ranks, the plan being the stage's result, not garbage. freeze()
    then unfreeze() moves every tracked object to the oldest generation and clears the young
    generation's count; a full collection still visits them, when its own threshold says.
    Skipped when something else froze objects (gc.freeze before a fork): unfreeze would undo it."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()
