"""`launcher demo`: the README's first command, the embedded local demo topology run for real."""
from __future__ import annotations

import argparse
import tempfile
import time
from importlib import resources

from ..core.errors import EXIT_OK, LauncherError
from ..core.pipeline import compile_text, rendered
from .offline import plan_table
from .output import warn, write
from .statusview import status_table


def demo_text() -> str:
    return resources.files("launcher").joinpath("examples", "demo-local.yaml").read_text(encoding="utf-8")


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's first command: the embedded local demo, for real: up, every rank healthy, status, down."""
    import shutil
    import urllib.request

    from ..deploy.apply import down, up
    from ..deploy.session import Session
    from ..deploy.status import status_rows

    work = tempfile.mkdtemp(prefix="ascend-launcher-demo-")
    result = compile_text(demo_text().replace("/tmp/ascend-launcher-demo", work), "demo-local.yaml (embedded)")
    warn(result)
    write(plan_table(result) + "\n")
    gen, files = rendered(result.plan)
    session = Session(result.plan)
    try:
        up(session, files, gen)
        ranks = [(hp.host.address, 18610 + p.local_rank, p.rank) for hp in result.plan.hosts for p in hp.programs
                 if p.local_rank is not None and p.rank is not None]  # the demo runs ranks only
        deadline = time.monotonic() + 60
        pending = set(ranks)
        while pending and time.monotonic() < deadline:
            for addr, port, rank in sorted(pending):
                try:
                    with urllib.request.urlopen(f"http://{addr}:{port}/health", timeout=1) as resp:
                        if resp.status == 200:
                            pending.discard((addr, port, rank))
                except OSError:
                    pass
            time.sleep(0.2)
        if pending:
            raise LauncherError(f"ranks {sorted(r for _, _, r in pending)} never became healthy; "
                                f"see the logs under {work}")
        write(f"\nall {len(ranks)} ranks passed their barrier and answer /health:\n")
        rows = status_rows(session)
        write(status_table(rows))
    finally:
        down(session, purge=True)
        session.close()
        shutil.rmtree(work, ignore_errors=True)
        write("\ndemo stopped and removed (launcher down --purge)\n")
    return EXIT_OK
