"""`launcher events FILE [-f] [--since T] [--json]`: every host's journal as one timeline (deploy/events.py)."""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..core.errors import EXIT_FAILED, EXIT_OK, BadInput

FOLLOW_POLL = 1.0  # s between two polls of -f


def add_events_flags(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing new events as they happen")
    sp.add_argument("--since", metavar="T", help="only events from T on: 90s, 10m, 2h, 1d ago; epoch seconds; "
                                                 "YYYY-MM-DDTHH:MM:SS or HH:MM:SS (local time)")


def cmd_events(args: argparse.Namespace) -> int:
    from .remote import _session
    from ..deploy.events import Timeline, line, parse_since
    from ..deploy.files import compile_file
    try:
        since = parse_since(args.since, time.time()) if args.since else 0.0
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    result = compile_file(args.file)
    out = sys.stdout
    with _session(args, result) as session:
        timeline = Timeline(session, since)
        first = True
        while True:
            events, unreachable = timeline.poll()
            for host, why in sorted(unreachable.items()):
                print(f"events: host {host} did not answer: {why}", file=sys.stderr)
            if args.json and not args.follow:
                out.write(json.dumps(events) + "\n")  # one array; with -f one object a line
            else:
                for e in events:
                    out.write((json.dumps(e) if args.json else line(e)) + "\n")
            out.flush()
            if not args.follow:
                return EXIT_FAILED if unreachable else EXIT_OK
            if first and unreachable and len(unreachable) == len(session.clients):
                return EXIT_FAILED
            first = False
            time.sleep(FOLLOW_POLL)
