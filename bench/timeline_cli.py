"""The launcher's CLI, noting when each step of an `up` began and ended (up_bench.py --timeline).

    UP_TIMELINE_OUT=FILE python timeline_cli.py -m launcher up TOPOLOGY [flags]

Runs `python -m launcher ...` in this process after wrapping the functions that bound the
steps a cold `up` takes one after the other: the topology's compile (everything before it is
the interpreter, the imports and the argument parsing), the deployment lock's acquire and
release (each one SSH call to the first host; the acquire opens that host's connection), the
upload round and the gang start. At exit it writes [[step, monotonic begin, monotonic end],
...] to FILE as JSON; time.monotonic() is the machine's, so the bench compares it with its own.
Nothing of the launcher is changed: the wrappers call the functions they wrap.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import runpy
import sys
import time
from typing import Any, Callable

MARKS: list[tuple[str, float, float]] = []


def _wrap(module: Any, name: str, step: Callable[..., str | None]) -> None:
    """Replace module.name with a function that records its call as ``step(*args)`` (None: not recorded)."""
    fn = getattr(module, name)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            what = step(*args, **kwargs)
            if what:
                MARKS.append((what, t0, time.monotonic()))
    setattr(module, name, timed)


def _save() -> None:
    with open(os.environ["UP_TIMELINE_OUT"], "w", encoding="utf-8") as fh:
        json.dump(MARKS, fh)


def main() -> None:
    if sys.argv[1:3] != ["-m", "launcher"]:
        raise SystemExit("usage: UP_TIMELINE_OUT=FILE python timeline_cli.py -m launcher ARGS...")
    # before the CLI imports them: apply.py and cli/remote.py bind these names when they are imported
    from launcher.deploy import files, gang, lock, uploads
    _wrap(files, "compile_file", lambda *a, **k: "compile")
    _wrap(lock, "_run", lambda client, what, op, *a, **k: f"lock {op}" if op in ("acquire", "release") else None)
    _wrap(uploads, "upload_round", lambda *a, **k: "uploads")
    _wrap(gang, "start_through_leaders", lambda *a, **k: "gang start")
    atexit.register(_save)
    sys.argv = ["launcher", *sys.argv[3:]]
    runpy.run_module("launcher", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
