"""`python -m launcher.demo_rank` as before the host side moved to launcher/host (not shipped:
on hosts the demo rank is `launcher-demo-rank`, from the runtime's bin/)."""
from __future__ import annotations

import sys

from launcher.host.demo_rank import main

if __name__ == "__main__":
    sys.exit(main())
