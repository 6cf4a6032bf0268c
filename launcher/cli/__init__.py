"""The command line, a side of its own: parser, flag checks, offline and remote commands, status view."""
from __future__ import annotations

from .main import handle_errors, main
from .parser import build_parser

__all__ = ["build_parser", "handle_errors", "main"]
