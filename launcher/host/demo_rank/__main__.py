"""`python -m launcher.host.demo_rank` (what the runtime's bin/launcher-demo-rank runs)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
