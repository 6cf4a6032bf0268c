"""The agent's side of supervisord's event protocol, over real pipes: whichever way supervisord
goes (EOF while the agent waits, EPIPE while it handles an event), `listen` returns, so the agent
goes on to bring supervisord back instead of dying of a BrokenPipeError."""
from __future__ import annotations

import os
import threading

from launcher.host.listener import listen

EVENT = b"ver:3.0 server:supervisor serial:1 pool:launcher-agent poolserial:1 eventname:TICK_60 len:15\n" \
        b"when:1796670651"


def pipes():
    """(agent's stdin, agent's stdout, supervisord's write end, supervisord's read end)."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    return os.fdopen(r_in, "rb"), os.fdopen(w_out, "wb"), os.fdopen(w_in, "wb"), os.fdopen(r_out, "rb")


def run(stdin, stdout, on_event) -> dict:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(how=listen(stdin, stdout, on_event)), daemon=True)
    t.start()
    return {"thread": t, "out": out}


def test_each_event_is_answered_and_eof_ends_the_loop():
    stdin, stdout, sup_w, sup_r = pipes()
    seen = []
    job = run(stdin, stdout, lambda fields, payload: seen.append((fields[b"eventname"], payload)))
    assert sup_r.read(6) == b"READY\n"
    sup_w.write(EVENT)
    sup_w.flush()
    assert sup_r.read(len(b"RESULT 2\nOK")) == b"RESULT 2\nOK"
    assert sup_r.read(6) == b"READY\n"
    sup_w.close()  # supervisord died while the agent waited
    job["thread"].join(10)
    assert not job["thread"].is_alive()
    assert seen == [(b"TICK_60", b"when:1796670651")]
    assert job["out"]["how"] == "its end of the event pipe closed"


def test_supervisord_dying_while_an_event_is_handled_ends_the_loop_without_an_exception():
    stdin, stdout, sup_w, sup_r = pipes()
    handling, dead = threading.Event(), threading.Event()

    def on_event(fields, payload):
        handling.set()
        dead.wait(10)  # the event is being handled when supervisord dies

    job = run(stdin, stdout, on_event)
    assert sup_r.read(6) == b"READY\n"
    sup_w.write(EVENT)
    sup_w.flush()
    assert handling.wait(10)
    sup_r.close()  # kill -9: both its ends close at once
    sup_w.close()
    dead.set()
    job["thread"].join(10)
    assert not job["thread"].is_alive()
    assert job["out"]["how"] == "it stopped reading the event pipe"


def test_an_event_cut_short_ends_the_loop():
    stdin, stdout, sup_w, sup_r = pipes()
    seen = []
    job = run(stdin, stdout, lambda fields, payload: seen.append(payload))
    assert sup_r.read(6) == b"READY\n"
    sup_w.write(EVENT[:-5])  # died while writing the event
    sup_w.close()
    job["thread"].join(10)
    assert seen == [] and job["out"]["how"] == "it died while sending an event"
