"""supervisord's event listener protocol (READY, a header, a payload, RESULT), as the agent speaks it.

supervisord holds the other end of both pipes. When it dies (kill -9, the OOM killer) the agent
learns it in one of two ways, depending on where it is in the protocol: waiting for an event, it
reads EOF; handling one, its RESULT (or its next READY) meets a pipe with no reader: EPIPE.
Both mean the same, and `listen` returns on either, so the agent goes on to bring supervisord
back instead of dying of a BrokenPipeError with nobody left to restart it.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from typing import BinaryIO, Callable

GONE = (BrokenPipeError, ConnectionResetError)  # EPIPE (Python ignores SIGPIPE), ECONNRESET


def listen(stdin: BinaryIO, stdout: BinaryIO, on_event: Callable[[dict[bytes, bytes], bytes], None]) -> str:
    """Serve events until supervisord goes away; then say how it was seen to go."""
    try:
        while True:
            stdout.write(b"READY\n")
            stdout.flush()
            header = stdin.readline()
            if not header:
                return "its end of the event pipe closed"
            fields = dict(tok.split(b":", 1) for tok in header.split() if b":" in tok)
            want = int(fields.get(b"len", b"0"))
            payload = stdin.read(want)
            if len(payload) < want:  # it died while writing the event
                return "it died while sending an event"
            on_event(fields, payload)
            stdout.write(b"RESULT 2\nOK")
            stdout.flush()
    except GONE:
        return "it stopped reading the event pipe"
