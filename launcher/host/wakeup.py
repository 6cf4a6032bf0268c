"""supervisord acts at once on a child's exit, an event and a waiting RPC, not at its next 1 s poll.

supervisord's main loop sleeps in poll() for up to 1 s; each wake it handles I/O, moves its
processes on, reaps children, then polls again. Three things waited for the next wake:
- a child's exit: the SIGCHLD handler only records the signal and Python retries an
  interrupted poll() (PEP 475), so a program that became a zombie just after the wake its
  pipe's EOF caused stayed RUNNING until the next one;
- an event (the agent's PROCESS_STATE): queued at the end of a wake, sent to the listener
  at the next;
- an RPC that waits (stopProcessGroup with wait): re-checked only after `delay` (50 ms), but
  its channel is left out of the poll set meanwhile, so again at the next wake.
So a dead rank was seen, and a stop returned, up to 1 s late each. Here, in the daemon's
runforever: the C-level signal handler also writes to a pipe whose read end is in the poll set
(signal.set_wakeup_fd), every event writes to it too, and while an RPC waits the poll sleeps at
most that RPC's delay. Idle, supervisord still sleeps its full second; no timer, no thread.
"""
from __future__ import annotations

import os
import signal

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import Any, Callable


# What of supervisor's internals this module and supervisord.py build on (pyproject pins the
# release range they are tested against; tests/unit/host/test_supervisor_internals.py reads them)
INTERNALS = {
    "supervisor.supervisord": ["Supervisor.runforever", "main"],
    "supervisor.options": ["ServerOptions.get_socket_map", "ServerOptions.pidfile"],
    "supervisor.events": ["subscribe", "unsubscribe", "Event"],
    "supervisor.medusa.asyncore_25": ["file_dispatcher.del_channel", "file_dispatcher.readable"],
    "supervisor.poller": ["BasePoller.poll"],
}


_MISSING = object()


def missing_internals() -> list[str]:
    """The names of INTERNALS this supervisor lacks ([] when all are there)."""
    import importlib
    out = []
    for module, names in INTERNALS.items():
        try:
            mod: Any = importlib.import_module(module)
        except ImportError:
            out.append(module)
            continue
        for name in names:
            obj = mod
            for part in name.split("."):
                obj = getattr(obj, part, _MISSING)
                if obj is _MISSING:
                    out.append(f"{module}.{name}")
                    break
    return out


def install(supervisor_class: Any) -> None:
    """Make every Supervisor.runforever (in the daemon, after its signal handlers are set) wake on signals."""
    run = supervisor_class.runforever

    def runforever(self: Any) -> Any:
        from supervisor import events  # type: ignore[import-untyped]
        socket_map, poller = self.options.get_socket_map(), self.options.poller
        drain, wr = wake_on_signals(socket_map)
        wake = wake_on_events(wr)
        poll = poller.poll
        poll_no_longer_than_waiting_rpcs(poller, socket_map)
        try:
            return run(self)
        finally:  # a reload (SIGHUP) runs it again after closing every fd from 5 on: nothing may point at ours
            signal.set_wakeup_fd(-1)
            poller.poll = poll
            events.unsubscribe(events.Event, wake)
            drain.close()
            os.close(wr)

    supervisor_class.runforever = runforever


def wake_on_signals(socket_map: dict) -> tuple[Any, int]:
    """Put a pipe's read end into ``socket_map`` (what supervisord polls) and point the signal
    wakeup fd at its write end; returns the read end's dispatcher and the write end."""
    from supervisor.medusa import asyncore_25 as asyncore  # type: ignore[import-untyped]

    rd, wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    class Drain(asyncore.file_dispatcher):
        def readable(self) -> bool:
            return True

        def writable(self) -> bool:
            return False

        def handle_read(self) -> None:
            try:
                while os.read(rd, 4096):
                    pass
            except BlockingIOError:
                pass

        def handle_error(self) -> None:  # never take supervisord down over a wakeup byte
            pass

        def close(self) -> None:
            self.del_channel()
            os.close(rd)

    drain = Drain(rd, map=socket_map)
    signal.set_wakeup_fd(wr, warn_on_full_buffer=False)
    return drain, wr


def wake_on_events(wr: int) -> Callable[[Any], None]:
    """Every event supervisord notifies (a process state change, ...) ends its next poll at once,
    so an event listener gets it now (subscribed after supervisord's run() cleared the callbacks)."""
    from supervisor import events

    def wake(event: Any) -> None:
        try:
            os.write(wr, b"e")
        except OSError:  # the pipe is full: a wake is pending anyway
            pass
    events.subscribe(events.Event, wake)
    return wake


def poll_no_longer_than_waiting_rpcs(poller: Any, socket_map: dict) -> None:
    """While an XML-RPC call waits (a deferred: its channel's ``delay`` is set), sleep at most that
    long in poll(), so the call is answered within its delay instead of at the next 1 s wake."""
    poll = poller.poll

    def bounded(timeout: float) -> Any:
        delays = [d for d in (getattr(ch, "delay", 0) for ch in list(socket_map.values())) if d]
        return poll(min([timeout, *delays]))
    poller.poll = bounded
