"""The pure pipeline as one call per stage, shared by the CLI, tests and benchmarks."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import Diagnostic, SpecErrors
from .expand import _Expander
from .load import DeviceFacts, build_topology, read_source
from .lockfile import read_lock
from .model import Topology
from .plan import File, Plan
from .render import generation_id, render
from .validate import validate
from .yamlsrc import Source, load_yaml


@dataclass(frozen=True)
class Result:
    topology: Topology
    plan: Plan
    warnings: tuple[Diagnostic, ...]


def compile_source(src: Source, facts: DeviceFacts | None = None) -> Result:
    """Source -> validated Topology and Plan. Raises SpecErrors with every error found."""
    topo = build_topology(src, facts)
    diags = validate(topo)
    if any(d.is_error for d in diags):
        raise SpecErrors(diags)
    return Result(topo, _Expander(topo).run(), tuple(diags))


def compile_text(text: str, file: str = "<text>", facts: DeviceFacts | None = None) -> Result:
    return compile_source(load_yaml(text, file), facts)


def compile_file(path: str, facts: DeviceFacts | None = None) -> Result:
    """A topology file plus its lock file of discovered device IPs (if any)."""
    src = read_source(path)
    return compile_source(src, read_lock(path) if facts is None else facts)


def rendered(plan: Plan) -> tuple[str, dict[str, dict[str, File]]]:
    files = render(plan)
    return generation_id(files), files
