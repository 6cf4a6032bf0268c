"""`python -m launcher.host.demo_rank` (what the runtime's bin/launcher-demo-rank runs)."""
from __future__ import annotations

import sys

from .cli import main
from .signals import exit_now, stopped_by_signal

if __name__ == "__main__":
    code = main()
    if stopped_by_signal():
        exit_now(code)
    sys.exit(code)
