"""launcher.host.wakeup: what ends supervisord's poll at once (a signal, an event) and what bounds it (a waiting RPC)."""
from __future__ import annotations

import os
import select
import signal

from launcher.host import wakeup


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_signal_and_an_event_make_the_polled_pipe_readable():
    from supervisor import events
    socket_map: dict = {}
    old = signal.signal(signal.SIGUSR1, lambda *a: None)  # supervisord has Python handlers for its signals
    try:
        drain, wr = wakeup.wake_on_signals(socket_map)
        (fd, same), = socket_map.items()
        assert same is drain
        assert drain.readable() and not drain.writable() and not _readable(fd)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert _readable(fd)  # the C handler wrote to the pipe: supervisord's poll() returns
        drain.handle_read()
        assert not _readable(fd)
        wakeup.wake_on_events(wr)
        events.notify(events.SupervisorRunningEvent())
        assert _readable(fd)
        drain.close()
        assert socket_map == {}
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR1, old)
        events.clear()
        for d in list(socket_map.values()):
            d.close()
        os.close(wr)


def test_the_poll_sleeps_no_longer_than_a_waiting_rpc_re_checks():
    class Poller:
        def poll(self, timeout):
            self.timeout = timeout
            return [], []

    class Channel:
        delay = 0

    poller, channel = Poller(), Channel()
    wakeup.poll_no_longer_than_waiting_rpcs(poller, {3: channel})
    poller.poll(1)
    assert poller.timeout == 1  # idle: supervisord's own second
    channel.delay = 0.05        # a deferred (stopProcessGroup with wait) is pending
    poller.poll(1)
    assert poller.timeout == 0.05
