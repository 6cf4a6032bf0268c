"""Stand-in for a model rank: checks its env and ranktable, meets its world over TCP, serves /health.

Run as `python -m launcher.host.demo_rank [--health-port N] ...` (on hosts: `launcher-demo-rank`)
with the env the launcher gives a rank. Standard library only: it runs on hosts that have nothing
but python3 and the shipped package. One module per act: identity (env, ranktable), barrier,
datadist (the LLM-DataDist link, with LAUNCHER_DATADIST_FILE), health; cli runs them in order;
errors lists the exit codes.
"""
from __future__ import annotations

from .barrier import barrier, check_go, check_hello, hello_of
from .cli import main, parse_args
from .datadist import (DataDist, LinkSpec, check_link_hello, link_all, link_once, load_datadist, parse_datadist,
                       serve_links)
from .errors import (EXIT_BARRIER, EXIT_CRASH, EXIT_ENV, EXIT_FAIL_BARRIER, EXIT_HEALTH, EXIT_LINK, EXIT_MISMATCH,
                     EXIT_OK, BarrierFailed, BarrierRejected, DemoRankError, EnvError, HealthError, LinkError,
                     Stopped, TableError)
from .health import health_doc, start_health
from .identity import Identity, TableSlot, check_table, load_table, parse_env, table_slots
from .signals import start_helper

__all__ = ["barrier", "check_go", "check_hello", "hello_of", "main", "parse_args", "DataDist", "LinkSpec",
           "check_link_hello", "link_all", "link_once", "load_datadist", "parse_datadist", "serve_links",
           "EXIT_BARRIER", "EXIT_CRASH", "EXIT_ENV", "EXIT_FAIL_BARRIER", "EXIT_HEALTH", "EXIT_LINK",
           "EXIT_MISMATCH", "EXIT_OK", "BarrierFailed", "BarrierRejected", "DemoRankError", "EnvError",
           "HealthError", "LinkError", "Stopped", "TableError", "health_doc", "start_health", "Identity",
           "TableSlot", "check_table", "load_table", "parse_env", "table_slots", "start_helper"]
