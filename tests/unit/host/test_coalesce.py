"""The agent's poll after process state events: a burst is one poll, and no event is ever missed."""
from __future__ import annotations

import threading

from launcher.host.coalesce import Coalescer

WAIT = 10.0  # generous: only a broken coalescer ever waits this long


class Job:
    """A job that can be held inside a run, counting runs and what each one saw."""

    def __init__(self) -> None:
        self.runs = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.state = 0        # what a real poll reads (the process table)
        self.seen: list[int] = []

    def __call__(self) -> None:
        self.runs += 1
        self.seen.append(self.state)
        self.entered.set()
        assert self.release.wait(WAIT)


def test_triggers_during_a_run_cost_one_more_run_which_sees_the_last_state() -> None:
    job = Job()
    job.release.clear()
    c = Coalescer(job)
    c.trigger()
    assert job.entered.wait(WAIT)  # the first run is under way, held
    for state in range(1, 6):     # a gang stopping: STOPPING, STOPPED, ... while the poll runs
        job.state = state
        c.trigger()
    job.release.set()
    assert c.wait_idle(WAIT)
    assert job.runs == 2
    assert job.seen == [0, 5]      # the second run saw the last change


def test_a_trigger_after_an_idle_spell_gets_its_own_run() -> None:
    job = Job()
    c = Coalescer(job)
    c.trigger()
    assert c.wait_idle(WAIT)
    job.state = 7
    c.trigger()
    assert c.wait_idle(WAIT)
    assert job.runs == 2 and job.seen[-1] == 7


def test_a_failing_run_is_reported_and_the_next_trigger_still_runs() -> None:
    errors: list[Exception] = []
    calls: list[int] = []

    def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("supervisord not answering")
    c = Coalescer(job, on_error=errors.append)
    c.trigger()
    assert c.wait_idle(WAIT)
    c.trigger()
    assert c.wait_idle(WAIT)
    assert len(calls) == 2
    assert [str(e) for e in errors] == ["supervisord not answering"]


def test_nothing_runs_without_a_trigger() -> None:
    job = Job()
    c = Coalescer(job)
    assert c.wait_idle(0)
    assert job.runs == 0
