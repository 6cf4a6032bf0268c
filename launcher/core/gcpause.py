"""The cyclic garbage collector paused while a stage of the pipeline builds its result.

Parsing, modelling, validating, expanding and rendering a large topology allocate millions of
objects and free few of them until the stage ends: CPython's cyclic collector, triggered by those
allocations, walks the ever larger heap again and again (on 2048 hosts x 8 NPUs, a third of the
whole compile). Reference counting still frees what each stage drops, and the values the stages
build hold no reference cycles the collector would be needed for; it runs again, as before, once
the outermost paused stage returns. Nested stages leave it to the outermost one.
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
                gc.enable()
    return run  # type: ignore[return-value]
