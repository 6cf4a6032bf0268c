"""Plan -> the exact files of one generation per host, and the generation id.

Launch files per owner (an instance or a service) and host:
- ``env/<owner>.env`` (mode 0600: env may hold secrets, and it never appears on a command
  line): the variables all its programs share, then a ``case`` on the slot (the local
  rank) for the per-rank ones;
- ``bin/<owner>.sh SLOT``: a POSIX sh script that loads the env file, applies limits,
  changes directory and execs the argv (so signals reach the program).
Every value is single-quoted, so quotes, ``$()``, spaces, newlines and unicode arrive
byte-for-byte. One pair of files per owner keeps a 2048-host plan at a few files per host.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Sequence

from .gcpause import paused
from . import containers, jsonfmt
from .envfile import HEADER, env_file, owner_inputs, sh_quote, slot, slot_of, split_env
from .plan import File, HostPlan, Plan, Program
from .probes import dependency_probes, restart_with_doc


def launch_argv(program: Program) -> tuple[str, ...]:
    """What supervisord runs for a program, relative to the generation: its owner's script and slot."""
    return _launch_argv(program.owner, slot(program))


def _launch_argv(owner: str, slot_arg: str | None) -> tuple[str, ...]:
    return (f"bin/{owner}.sh", slot_arg) if slot_arg else (f"bin/{owner}.sh",)


def numactl_argv(program: Program) -> list[str]:
    numa = program.limits.numa
    if not numa or not program.numa_via_numactl:
        return []
    argv = ["numactl"]
    if numa.cpunodebind is not None:
        argv.append(f"--cpunodebind={numa.cpunodebind}")
    if numa.physcpubind:
        argv.append(f"--physcpubind={numa.physcpubind}")
    if numa.membind is not None:
        argv.append(f"--membind={numa.membind}")
    if numa.localalloc:
        argv.append("--localalloc")
    return argv + ["--"]


ULIMIT_EXIT = 78  # EX_CONFIG: the host does not allow what the topology asks; restarting will not help


def _ulimit(flag: str, value: str, what: str) -> str:
    """`ulimit FLAG VALUE`, or a message naming the limit, the login's hard limit and the fix.

    Without privilege (CAP_SYS_RESOURCE) a limit rises only up to the hard limit the login gave
    (pam_limits, e.g. `<user> hard memlock unlimited` in /etc/security/limits.conf); the shell's
    own words ("error setting limit") name neither."""
    msg = f"ascend-launcher: cannot set {what} (ulimit {flag}) to {value}: the hard limit of this login is "
    hint = ("; raise the hard limit for this user (pam_limits: /etc/security/limits.conf) "
            "or deploy as a user allowed to (root with CAP_SYS_RESOURCE)")
    return (f"ulimit {flag} {sh_quote(value)} || {{ echo {sh_quote(msg)}\"$(ulimit -H {flag})\"{sh_quote(hint)} >&2; "
            f"exit {ULIMIT_EXIT}; }}\n")


def launch_script(programs: Sequence[Program], root: str) -> bytes:
    """The script supervisord runs as `sh bin/<owner>.sh [SLOT]`; the owner's programs share it."""
    p = programs[0]
    out = ["#!/bin/sh\n", HEADER, f"# {p.kind} {p.owner}: {', '.join(q.name for q in programs)}\n",
           "set -e\n", 'LAUNCHER_SLOT="${1:-}"\n', 'here=$(dirname "$0")\n', f'. "$here/../env/{p.owner}.env"\n',
           # the launcher's own helpers (e.g. launcher-demo-rank) are found without a full path
           f'PATH={sh_quote(root + "/runtime/current/bin")}:"$PATH"\n', "export PATH\n"]
    if p.limits.memlock:
        out.append(_ulimit("-l", p.limits.memlock, "max locked memory"))
    if p.limits.nofile:
        out.append(_ulimit("-n", str(int(p.limits.nofile)), "open files"))
    if p.cwd:
        out.append(f"cd {sh_quote(p.cwd)}\n")
    argv = " ".join(sh_quote(a) for a in p.argv)
    numactl = numactl_argv(p)
    if numactl:
        warning = f"ascend-launcher: numactl not found; {p.owner} starts without NUMA binding"
        out += ["if command -v numactl >/dev/null 2>&1; then\n",
                f"  exec {' '.join(sh_quote(a) for a in numactl)} {argv}\n", "fi\n",
                f"echo {sh_quote(warning)} >&2\n"]
    out.append(f"exec {argv}\n")
    return "".join(out).encode("utf-8")


def container_script(owner: str, root: str) -> bytes:
    """bin/<owner>.sh of an owner in containers: supervisord runs the host's runner
    (host/container.py), which runs bin/<owner>.in.sh (the usual launch script) in the container."""
    return "".join([
        "#!/bin/sh\n", HEADER, f"# container runner of {owner}\n", "set -e\n",
        'gen=$(cd -P "$(dirname "$0")/.." && pwd)\n',
        # from the runtime's own site.zip, as the agent: the login's cwd never shadows it
        f"rt=$(cd -P {sh_quote(root + '/runtime/current')} && pwd)\n",
        f'PYTHONPATH="$rt/site.zip" exec python3 -m launcher.host.container run {sh_quote(root)} "$gen" '
        f'{sh_quote(owner)} "${{1:-}}"\n']).encode("utf-8")


def by_owner(programs: Iterable[Program]) -> dict[str, list[Program]]:
    groups: dict[str, list[Program]] = {}
    for p in programs:
        groups.setdefault(p.owner, []).append(p)
    return groups


@lru_cache(maxsize=65536)
def _entry_parts(owner: str, kind: str, local_rank: int | None, devices: tuple[int, ...]) -> tuple[str, str]:
    """A manifest entry's text around its rank, but its name and owner_hash: an owner's programs
    with the same slot and devices share it on every host (an encoder call per entry cost ~4 us)."""
    argv = _launch_argv(owner, slot_of(kind, local_rank))
    return (f', "owner": {jsonfmt.string(owner)}, "kind": {jsonfmt.string(kind)}, "rank": ',
            f', "local_rank": {jsonfmt.compact(local_rank)}, "devices": {jsonfmt.compact(devices)}, '
            f'"argv": {jsonfmt.compact(argv)}, "owner_hash": ')


def manifest(hp: HostPlan, hashes: dict[str, str], deployment: str) -> bytes:
    """What this generation runs on this host, for the supervisor side (no env values: they may be secret)."""
    # One program per line: readable, greppable, and cheap to write for thousands of hosts.
    lines = []
    string = jsonfmt.string
    hash_parts: dict[str, str] = {}
    for p in hp.programs:
        rank = p.rank
        if p.container or not (rank is None or type(rank) is int):
            # (tuples: the encoder writes them as lists, without a copy per program)
            entry = {"name": p.name, "owner": p.owner, "kind": p.kind, "rank": p.rank, "local_rank": p.local_rank,
                     "devices": p.devices, "argv": launch_argv(p), "owner_hash": hashes[p.owner]}
            if p.container:
                entry["container"] = containers.runs_in(deployment, p, hp.programs, hp.root)
                entry["engine"] = p.container.engine
            lines.append("    " + jsonfmt.compact(entry))
            continue
        head, tail = _entry_parts(p.owner, p.kind, p.local_rank, p.devices)
        owner_hash = hash_parts.get(p.owner)
        if owner_hash is None:
            owner_hash = hash_parts[p.owner] = string(hashes[p.owner]) + "}"
        lines.append(f'    {{"name": {string(p.name)}{head}{"null" if rank is None else int.__repr__(rank)}'
                     f'{tail}{owner_hash}')
    body = ",\n".join(lines)
    text = (f'{{\n  "host": {jsonfmt.compact(hp.host.name)},\n  "root": {jsonfmt.compact(hp.root)},\n'
            f'  "programs": [\n{body}\n  ]\n}}\n')
    return text.encode("utf-8")


def owner_hash(env: bytes, script: bytes, inputs: Iterable[File]) -> str:
    """Changes exactly when something an owner's processes read changes: restart only those."""
    h = hashlib.sha256(env + b"\0" + script)
    for f in inputs:  # the same bytes hashed, the content (a ranktable) not copied to be joined
        h.update(f.path.encode() + b"\0")
        h.update(f.content)
    return h.hexdigest()[:16]


def _ini(value: str) -> str:
    """supervisord expands %(name)s in values: a literal % must be doubled."""
    return value.replace("%", "%%")


_AGENT = ('rt=$(cd -P {root}/runtime/current && pwd) && PYTHONPATH="$rt/site.zip" '
          'exec python3 -m launcher.host.agent {root}')


def supervisor_conf(hp: HostPlan, hashes: dict[str, str], groups: dict[str, list[Program]] | None = None) -> bytes:
    """One supervisord per host and deployment: unix socket only (mode 0700), programs from the plan.

    Programs never start or restart by themselves (autostart/autorestart false): the launcher
    starts an instance's ranks as a gang and the agent restarts them as a gang.
    ``groups``: by_owner(hp.programs), when the caller has it.
    """
    root = hp.root
    out = [HEADER.replace("#", ";", 1),
           f"[unix_http_server]\nfile={_ini(root)}/run/supervisor.sock\nchmod=0700\n\n",
           f"[supervisord]\nlogfile={_ini(root)}/logs/supervisord.log\nlogfile_maxbytes=10MB\nlogfile_backups=3\n"
           # directory: supervisord chdirs there when it daemonizes, so no process of it keeps the
           # login's cwd (`python3 -m` puts the cwd first on sys.path: a launcher/ checkout there
           # would shadow the runtime's package)
           f"pidfile={_ini(root)}/run/supervisord.pid\ndirectory=/\nidentifier=ascend-launcher:{_ini(hp.host.name)}\n\n",
           "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n",
           f"[supervisorctl]\nserverurl=unix://{_ini(root)}/run/supervisor.sock\n\n",
           # the agent is an event listener: woken by process state changes, idle otherwise
           "[eventlistener:launcher-agent]\n"
           # from its runtime's own site.zip (cd -P), not through runtime/current, which the next
           # runtime takes over while this agent still imports from the zip it started with
           f"command=/bin/sh -c {_ini(sh_quote(_AGENT.format(root=sh_quote(root))))}\n"
           # its own cwd too: a supervisord started by launcher 0.1 kept the login's cwd
           "directory=/\n"
           # REMOTE_COMMUNICATION: a host action wakes it (restore: a gang stopped, no state change)
           "events=PROCESS_STATE,REMOTE_COMMUNICATION,TICK_60\nbuffer_size=1024\n"
           "autostart=true\nautorestart=true\nstartsecs=1\nstopasgroup=true\nkillasgroup=true\n"
           f"stderr_logfile={_ini(root)}/logs/launcher-agent.log\n"
           "stderr_logfile_maxbytes=10MB\nstderr_logfile_backups=3\n\n"]
    logs = f"{_ini(root)}/logs"
    for owner, programs in (groups or by_owner(hp.programs)).items():
        # what an owner's sections share, made once (a slot is digits or BOX: no % to double)
        command = _ini(f"/bin/sh {sh_quote(f'{root}/current/bin/{owner}.sh')}")
        tail = ("stdout_logfile_maxbytes=50MB\nstdout_logfile_backups=5\n"
                f"environment=LAUNCHER_OWNER_HASH=\"{hashes[owner]}\"\n\n")
        for p in programs:
            arg = slot_of(p.kind, p.local_rank)  # slot(p), a call less per program
            out.append(
                f"[program:{p.name}]\ncommand={command}{' ' + arg if arg else ''}\nautostart=false\nautorestart=false\n"
                f"{_BOX_PRIORITY if p.kind == containers.BOX else ''}{_PROGRAM_FLAGS}"
                f"redirect_stderr=true\nstdout_logfile={logs}/{p.name}.log\n{tail}")
        out.append(f"[group:{owner}]\nprograms={','.join(p.name for p in programs)}\n\n")
    return "".join(out).rstrip("\n").encode("utf-8") + b"\n"


# an instance's container starts before its ranks and stops after them
_BOX_PRIORITY = "priority=10\n"
# startsecs=0: an early exit stays EXITED with its exit code (the gang restarts it);
# readiness is judged by probes, not by supervisord's start timer.
_PROGRAM_FLAGS = "startsecs=0\nstartretries=0\nstopsignal=TERM\nstopwaitsecs=30\nstopasgroup=true\nkillasgroup=true\n"


@dataclass(frozen=True)
class Gangs:
    """Who runs each owner, computed once per plan (hosts x programs is large at scale)."""

    members: dict[str, list[str]]
    kinds: dict[str, str]
    addresses: dict[str, str]
    depends: dict[str, list[dict]]  # owner -> its dependencies' probes (probes.dependency_probes)
    # a gang's entry in gang.json, formatted once for all its member hosts, by what it is made of:
    # (owner, "" or a service's host, its restart_with part as compact JSON or "")
    entries: dict[tuple[str, str, str], jsonfmt.Formatted]

    @classmethod
    def of(cls, plan: Plan) -> "Gangs":
        members: dict[str, list[str]] = {}
        kinds: dict[str, str] = {}
        for hp in plan.hosts:
            for p in hp.programs:
                if p.kind != containers.BOX:
                    kinds[p.owner] = p.kind
                hosts = members.setdefault(p.owner, [])
                if not hosts or hosts[-1] != hp.host.name:
                    hosts.append(hp.host.name)
        return cls(members, kinds, {hp.host.name: hp.host.address for hp in plan.hosts},
                   dependency_probes(plan), {})


GANG_INDENT = 4  # where a gang's entry sits in gang.json: {"gangs": {"<owner>": ENTRY}}


def gang_doc(plan: Plan, hp: HostPlan, g: Gangs, owners: Iterable[str] | None = None) -> bytes:
    """What this host's agent needs to restart its gangs: members, leader, budget, peers' agents.

    An instance is one gang across all its hosts (leader: its first host). A service is a gang
    per host: one datasystem worker dying does not restart the workers on other hosts.
    ``owners``: the owners of hp's programs in order (by_owner), when the caller has them.
    """
    gangs: dict[str, Any] = {}
    for owner in by_owner(hp.programs) if owners is None else owners:
        rank = g.kinds[owner] == "rank"
        extra = restart_with_doc(plan, hp, owner, g.members, g.addresses)  # {} unless restart_with:
        # the rest of the entry is the owner's (an instance) or the owner's on this host (a service)
        key = (owner, "" if rank else hp.host.name, jsonfmt.compact(extra) if extra else "")
        entry = g.entries.get(key)
        if entry is None:
            hosts = g.members[owner] if rank else [hp.host.name]
            gang: dict[str, Any] = {"kind": g.kinds[owner], "leader": hosts[0],
                                    "members": [{"host": h, "address": g.addresses[h]} for h in hosts]}
            if g.depends.get(owner):  # the agent restarts it only once these pass (etcd back, ...)
                gang["depends"] = g.depends[owner]
            gang.update(extra)
            entry = g.entries[key] = jsonfmt.formatted(gang, GANG_INDENT)
        gangs[owner] = entry
    doc = {"deployment": plan.deployment, "host": hp.host.name, "address": hp.host.address,
           "agent_port": plan.agent_port, "restart_max": plan.restart_max, "restart_window": plan.restart_window,
           "metrics": metrics_endpoint(plan, hp), "gangs": gangs}
    return jsonfmt.dumps_bytes(doc)


def metrics_endpoint(plan: Plan, hp: HostPlan) -> dict | None:
    """Where this host's agent serves /metrics (defaults.metrics), or None: no endpoint."""
    if plan.metrics_port is None:
        return None
    listen = {"address": hp.host.address, "loopback": "127.0.0.1", "any": "0.0.0.0"}.get(
        plan.metrics_listen, plan.metrics_listen)
    return {"address": listen, "port": plan.metrics_port}


def render_host(hp: HostPlan, plan: Plan, gangs: Gangs) -> dict[str, File]:
    """All files of one host's generation, by relative path, sorted."""
    files = {f.path: f for f in hp.files}
    groups = by_owner(hp.programs)  # once per host: gang.json, the launch files and supervisord.conf
    files["gang.json"] = File("gang.json", gang_doc(plan, hp, gangs, groups))
    env_files: dict[str, bytes] = {}
    hashes: dict[str, str] = {}
    for owner, everything in groups.items():
        programs = [p for p in everything if p.kind != containers.BOX]  # the container's own is HOLD
        split = split_env(programs)
        env_files[owner] = env_file(programs, split)
        script = launch_script(programs, hp.root)
        files[f"env/{owner}.env"] = File(f"env/{owner}.env", env_files[owner], 0o600)
        if programs[0].container is not None:
            spec = containers.spec(plan.deployment, everything, hp.root, slot)
            files[f"containers/{owner}.json"] = File(f"containers/{owner}.json", spec)
            files[f"bin/{owner}.in.sh"] = File(f"bin/{owner}.in.sh", script, 0o755)
            runner = container_script(owner, hp.root)
            files[f"bin/{owner}.sh"] = File(f"bin/{owner}.sh", runner, 0o755)
            script = runner + spec + script  # all three decide what runs
        else:
            files[f"bin/{owner}.sh"] = File(f"bin/{owner}.sh", script, 0o755)
        hashes[owner] = owner_hash(env_files[owner], script, (files[p] for p in owner_inputs(split, files)))
    files["manifest.json"] = File("manifest.json", manifest(hp, hashes, plan.deployment))
    files["supervisord.conf"] = File("supervisord.conf", supervisor_conf(hp, hashes, groups))
    return dict(sorted(files.items()))


@paused
def render(plan: Plan) -> dict[str, dict[str, File]]:
    """host name -> relative path -> File, for every host of the plan."""
    gangs = Gangs.of(plan)
    return {hp.host.name: render_host(hp, plan, gangs) for hp in plan.hosts}


def generation_id(rendered: dict[str, dict[str, File]]) -> str:
    """A hash of everything rendered (paths, modes, bytes) for every host: equal input, equal id."""
    h = hashlib.sha256()
    for host in sorted(rendered):
        for path, f in rendered[host].items():
            h.update(f"{host}\0{path}\0{f.mode:o}\0{len(f.content)}\0".encode())
            h.update(f.content)
    return h.hexdigest()[:12]


def iter_files(rendered: dict[str, dict[str, File]]) -> Iterable[tuple[str, File]]:
    for host, files in rendered.items():
        for f in files.values():
            yield host, f
