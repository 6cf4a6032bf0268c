"""The commands that read a topology and contact no host: validate, plan, render, ranktable, pd-merge, schema."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ..core import containers, jsonfmt
from ..core.errors import EXIT_BAD_INPUT, EXIT_OK, BadInput, LauncherError, SpecErrors
from ..core.expand import to_json_bytes
from ..core.pipeline import Result, rendered
from ..core.ranktable import pd_merge
from ..core.render import iter_files
from ..core.schema import schema_text
from ..core.yamlsrc import decode_text
from ..core.table import format_table
from ..deploy.files import compile_file
from .output import warn, write

if TYPE_CHECKING:
    from ..core.plan import File


def cmd_validate(args: argparse.Namespace) -> int:
    if args.json:
        try:
            result = compile_file(args.file)
        except SpecErrors as exc:  # scripts and editors get every diagnostic as data
            write(json.dumps({"file": args.file, "ok": False, "diagnostics": [
                {"severity": d.severity, "file": d.loc.file if d.loc else None,
                 "line": d.loc.line if d.loc else None, "col": d.loc.col if d.loc else None,
                 "path": d.path, "message": d.message} for d in exc.diagnostics]}) + "\n")
            return EXIT_BAD_INPUT
    else:
        result = compile_file(args.file)
    warn(result)
    plan = result.plan
    ranks = sum(i.world_size for i in plan.instances)
    services = sum(1 for hp in plan.hosts for p in hp.programs if p.kind == "service")
    if args.json:
        write(json.dumps({"file": args.file, "ok": True, "hosts": len(plan.hosts),
                           "instances": len(plan.instances), "ranks": ranks, "service_processes": services,
                           "warnings": [str(w) for w in result.warnings]}) + "\n")
    else:
        write(f"{args.file}: ok ({len(plan.hosts)} hosts, {len(plan.instances)} instances, {ranks} ranks, "
               f"{services} service processes)\n")
    return EXIT_OK


def plan_json(result: Result) -> dict[str, Any]:
    plan = result.plan
    gen, _ = rendered(plan)
    return {
        "deployment": plan.deployment, "generation": gen,
        "start_order": [list(level) for level in plan.levels],
        "instances": [{"name": i.name, "role": i.role, "world_size": i.world_size, "hosts": list(i.hosts),
                       "master": i.master, "ranktable": i.ranktable_path,
                       "ranks": [{"rank": r.rank, "host": r.host, "local_rank": r.local_rank,
                                  "device_id": r.device_id, "device_ip": r.device_ip} for r in i.ranks]}
                      for i in plan.instances],
        "hosts": [{"name": hp.host.name, "address": hp.host.address, "transport": hp.host.transport,
                   "root": hp.root, "files": [f.path for f in hp.files],
                   "programs": [{"name": p.name, "owner": p.owner, "kind": p.kind, "rank": p.rank,
                                 "local_rank": p.local_rank, "devices": list(p.devices), "argv": list(p.argv),
                                 "cwd": p.cwd, "env": dict(p.env),
                                 # the program (of kind container, or a service) whose container it runs in
                                 "container": containers.container_program(p, hp.programs)} for p in hp.programs]}
                  for hp in plan.hosts],
    }


def cmd_plan(args: argparse.Namespace) -> int:
    result = compile_file(args.file)
    warn(result)
    if args.json:
        write(jsonfmt.dumps(plan_json(result)))
        return EXIT_OK
    write(plan_table(result))
    return EXIT_OK


def plan_table(result: Result) -> str:
    plan = result.plan
    rows = []
    for hp in plan.hosts:
        for p in hp.programs:
            dev = ",".join(map(str, p.devices)) or None
            env = dict(p.env)
            rows.append((hp.host.name, p.owner, p.kind if p.kind != "rank" else env.get("LAUNCHER_ROLE"),
                         p.rank, p.local_rank, dev, env.get("LAUNCHER_DEVICE_IP"), p.name))
    gen, _ = rendered(plan)
    head = (f"deployment {plan.deployment}  generation {gen}\n"
            f"start order: {' -> '.join('[' + ', '.join(level) + ']' for level in plan.levels)}\n\n")
    return head + format_table(("HOST", "OWNER", "ROLE", "RANK", "LOCAL", "DEVICE", "DEVICE_IP", "PROGRAM"), rows)


def write_rendered(files: dict[str, dict[str, File]], out_dir: str) -> int:
    """Write DIR/<host>/<path> with each file's mode; returns the number of files."""
    made: set[str] = set()
    umask = os.umask(0o022)
    os.umask(umask)
    count = 0
    for host, f in iter_files(files):
        path = os.path.join(out_dir, host, f.path)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, f.mode)
        try:
            os.write(fd, f.content)
            if f.mode & umask:  # the umask took bits away that the file needs
                os.fchmod(fd, f.mode)
        finally:
            os.close(fd)
        count += 1
    return count


def cmd_render(args: argparse.Namespace) -> int:
    result = compile_file(args.file)
    warn(result)
    if os.path.exists(args.output) and (not os.path.isdir(args.output) or os.listdir(args.output)):
        raise BadInput(f"{args.output}: exists and is not an empty directory; choose a new one")
    gen, files = rendered(result.plan)
    try:
        count = write_rendered(files, args.output)
    except OSError as exc:
        raise LauncherError(f"cannot write into {args.output}: {exc.filename}: {exc.strerror}") from None
    write(f"rendered generation {gen}: {count} files for {len(files)} hosts into {args.output}/<host>/\n")
    return EXIT_OK


def cmd_ranktable(args: argparse.Namespace) -> int:
    result = compile_file(args.file)
    plan = result.plan
    if args.global_group is not None:
        if not plan.pd_global:
            raise BadInput(f"{args.file}: has no pd_groups, so there is no global ranktable")
        name = args.global_group or next(iter(plan.pd_global))
        if args.global_group == "" and len(plan.pd_global) > 1:
            raise BadInput(f"several PD groups ({', '.join(plan.pd_global)}); use --global NAME")
        if name not in plan.pd_global:
            raise BadInput(f"no PD group {name!r} (groups: {', '.join(plan.pd_global)})")
        doc = plan.pd_global[name]
    else:
        if args.instance:
            inst = plan.instance(args.instance)
            if inst is None:
                raise BadInput(f"no instance {args.instance!r} (instances: "
                               f"{', '.join(i.name for i in plan.instances)})")
        elif len(plan.instances) == 1:
            inst = plan.instances[0]
        else:
            raise BadInput(f"{args.file} has {len(plan.instances)} instances; use --instance NAME"
                           + (" or --global" if plan.pd_global else ""))
        doc = inst.ranktable
    sys.stdout.buffer.write(doc.text)
    return EXIT_OK


def cmd_pd_merge(args: argparse.Namespace) -> int:
    tables = []
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}") from None
        try:  # not UTF-8: SpecErrors at the byte's line:col and offset
            doc = json.loads(decode_text(data, path))
            json.dumps(doc, ensure_ascii=False).encode("utf-8")  # a "\ud800" escape names no character
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
        except UnicodeEncodeError as exc:
            raise BadInput(f"{path}: not JSON text: an escape of a lone surrogate "
                           f"(U+{ord(exc.object[exc.start]):04X}) names no character") from None
        tables.append((path, doc))
    data = to_json_bytes(pd_merge(tables))
    if args.save_dir:
        out = os.path.join(args.save_dir, "global_ranktable_merge.json")
        try:
            os.makedirs(args.save_dir, exist_ok=True)
            with open(out, "wb") as fh:
                fh.write(data)
        except OSError as exc:  # a read-only or full disk: said, not a traceback
            raise LauncherError(f"cannot write {out}: {exc.strerror}") from None
        write(f"wrote {out}\n")
    else:
        sys.stdout.buffer.write(data)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    write(schema_text())
    return EXIT_OK
