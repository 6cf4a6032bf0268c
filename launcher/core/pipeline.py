"""The pure pipeline as one call per stage, shared by the CLI, tests and benchmarks.

Files are the operator side's: deploy.files.compile_file reads a topology and its lock file
and calls compile_source.
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import Mapping

from . import frameworks
from .errors import Diagnostic, SpecErrors, sort_diagnostics
from .expand import _Expander
from .load import DeviceFacts, NicFacts, SuperPodFacts, build_topology
from .model import Topology
from .plan import File, Plan
from .render import generation_id, render
from .schema import Check
from .validate import validate
from .yamlsrc import Source, load_yaml


@dataclass(frozen=True)
class Result:
    topology: Topology
    plan: Plan
    warnings: tuple[Diagnostic, ...]


def compile_source(src: Source, facts: DeviceFacts | None = None, check: Check | None = None,
                   a3: SuperPodFacts | None = None, inputs: Mapping[str, bytes] | None = None,
                   nics: NicFacts | None = None) -> Result:
    """Source -> validated Topology and Plan. Raises SpecErrors with every error found.

    ``facts``: device IPs from the lock file; ``check``: a compiled schema check (schema.check_schema);
    ``a3``: SuperPoD facts from the lock file; ``inputs``: files the topology names (deploy.inputs.read_inputs);
    ``nics``: host -> the interface holding its address, from the lock file."""
    topo = build_topology(src, facts, check, a3, inputs, nics)
    diags = validate(topo)
    if any(d.is_error for d in diags):
        raise SpecErrors(diags)
    plan = _Expander(topo).run()
    # rules on what each host runs once placeholders are filled (vLLM's per-node DP arguments)
    diags = sort_diagnostics(list(diags) + frameworks.check_plan(topo, plan))
    if any(d.is_error for d in diags):
        raise SpecErrors(diags)
    return Result(topo, plan, tuple(diags))


def compile_text(text: str, file: str = "<text>", facts: DeviceFacts | None = None,
                 check: Check | None = None, inputs: Mapping[str, bytes] | None = None) -> Result:
    return compile_source(load_yaml(text, file), facts, check, inputs=inputs)


def rendered(plan: Plan) -> tuple[str, dict[str, dict[str, File]]]:
    """(generation id, host name -> relative path -> File) of a plan."""
    files = render(plan)
    return generation_id(files), files
