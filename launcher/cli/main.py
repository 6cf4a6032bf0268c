"""`launcher`'s entry point: parse, check every flag, run the command, map errors to exit codes."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..core.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, LauncherError, SpecErrors
from .flags import check_flags
from .output import write
from .parser import Parser, build_parser


MAX_SHOWN = 100  # past this, more lines hide rather than help


def _print_causes(exc: LauncherError) -> None:
    """Under -v: every host's failure with its traceback, and the host side's own when it sent one."""
    import traceback
    failures: dict[str, BaseException] = getattr(exc, "failures", None) or {}
    for host, cause in sorted(failures.items()):
        print(f"host {host}: " + "".join(traceback.format_exception(cause)), end="", file=sys.stderr)
    for host, cause in sorted(failures.items()) or [("", exc)]:
        remote = getattr(cause, "remote_traceback", None)
        if remote:
            print(f"host {getattr(cause, 'host', host)}: traceback on the host:\n{remote}", end="", file=sys.stderr)


def json_error(message: str, code: int, **more: Any) -> None:
    """A failed --json command's answer on stdout (the message also goes to stderr, for people):
    a script reads `ok`, `error` and `exit` (the process's exit code: 1 failed, 2 bad input)."""
    write(json.dumps({"ok": False, "error": message, "exit": code, **more}) + "\n")


@contextmanager
def handle_errors(verbose: bool, as_json: bool = False) -> Iterator[list[int]]:
    """Map errors to one clear message and a stable exit code (0 ok, 1 failed, 2 bad input);
    with ``as_json`` also a JSON error object on stdout."""
    code = [EXIT_OK]
    try:
        yield code
    except SpecErrors as exc:
        for d in exc.diagnostics[:MAX_SHOWN]:
            print(str(d), file=sys.stderr)
        if len(exc.diagnostics) > MAX_SHOWN:
            print(f"... and {len(exc.diagnostics) - MAX_SHOWN} more", file=sys.stderr)
        n = len(exc.errors)
        print(f"{n} error{'s' if n != 1 else ''}; nothing was changed", file=sys.stderr)
        code[0] = EXIT_BAD_INPUT
        if as_json:
            said = [str(d) for d in exc.diagnostics[:MAX_SHOWN]]
            json_error(said[0] if len(said) == 1 else f"{n} errors; nothing was changed", code[0], diagnostics=said)
    except LauncherError as exc:
        if as_json:
            hosts = {h: str(c) for h, c in sorted((getattr(exc, "failures", None) or {}).items())}
            json_error(str(exc), exc.exit_code, **({"hosts": hosts} if hosts else {}))
        if verbose:
            _print_causes(exc)
            raise
        print(f"error: {exc}", file=sys.stderr)
        code[0] = exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code[0] = EXIT_FAILED
        if as_json:
            json_error("interrupted", code[0])


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a usage error (exit 2); --help and --version exit 0
        if exc.code == EXIT_BAD_INPUT and "--json" in argv:
            json_error(Parser.last_error, EXIT_BAD_INPUT)
        raise
    with handle_errors(args.verbose, getattr(args, "json", False)) as code:
        check_flags(args)
        code[0] = args.func(args)
    return code[0]
