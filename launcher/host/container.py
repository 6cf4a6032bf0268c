"""Programs in containers on this host: run one in the foreground, stop it, find the ones left behind.

supervisord runs ``bin/<owner>.sh SLOT``, which execs ``python3 -m launcher.host.container run``
(this module): it removes a leftover container of the same name, runs the engine's client in the
foreground (the container's output is the program's log) and, asked to stop, stops the container
(the engine's grace period, then kill) rather than only its client. Whatever ends the client
(kill -9, the engine), the container goes with it: nothing of a program runs unseen once its
supervised process is gone. Containers are labelled with ROOT (engine.py finds and removes the ones left behind).
"""
from __future__ import annotations

import os
import signal
import sys
from .engine import (ENGINE_ERROR, ENGINE_TIMEOUT, EX_CONFIG, LABEL, REGISTRY_TIMEOUT, cidfile, record_engine,
                     remove, run_engine, spec_path)
from .state import read_json
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any


def mount_arg(mount: str, exists=os.path.exists) -> list[str]:
    """`-v SRC:DST[:OPTS]`, or nothing when the host lacks SRC (driver paths a host may not have)."""
    return ["-v", mount] if exists(mount.split(":", 1)[0]) else []


def run_argv(spec: dict, slot: str, gen: str, runtime: str, exists=os.path.exists) -> list[str]:
    """The engine's `run` argv for one program: pure, given what exists on this host.

    ``gen`` and ``runtime`` are the resolved generation and runtime directories: mounted read-only
    where the program's env names them (ROOT/current, ROOT/runtime/current), so RANKTABLEFILE and
    the other paths resolve unchanged inside, and the container runs the generation it started with."""
    root, owner, prog = spec["root"], spec["owner"], spec["programs"][slot]
    labels = {**prog["labels"], f"{LABEL}.generation": os.path.basename(gen.rstrip("/"))}
    argv = [spec["engine"], "run", "--rm", "--name", prog["name"], "--cidfile", cidfile(root, prog["program"])]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for dev in prog["devices"]:
        if exists(dev):
            argv += ["--device", dev]
    argv += ["-v", f"{gen}:{root}/current:ro", "-v", f"{runtime}:{root}/runtime/current:ro"]
    for mount in spec["optional_mounts"]:
        argv += mount_arg(mount, exists)
    argv += prog["flags"]
    if "command" in prog:  # an instance's per-host container: it holds the NPUs, its ranks are exec'd
        return argv + [spec["image"], *prog["command"]]
    return argv + [spec["image"], "/bin/sh", f"{root}/current/bin/{owner}.in.sh"] + ([slot] if slot else [])


def check(specs: list[dict]) -> dict:
    """Can this host run these containers: each engine found, each image present; and which NPU
    devices and driver paths it lacks (run without them: said here, once per host)."""
    import shutil
    problems, notes, engines_ok = [], [], set()
    for engine in sorted({s["engine"] for s in specs}):
        if shutil.which(engine):
            engines_ok.add(engine)
        else:
            problems.append(f"container engine {engine!r} not found (not on PATH, or not executable)")
    for engine, image in sorted({(s["engine"], s["image"]) for s in specs if s["engine"] in engines_ok}):
        if run_engine([engine, "image", "inspect", "--format", "{{.Id}}", image])[0] == 0:
            continue
        # not here: can the host's registry give it (without pulling gigabytes now)?
        if run_engine([engine, "manifest", "inspect", image], REGISTRY_TIMEOUT)[0] == 0:
            notes.append(f"image {image} is not on this host yet; its registry has it and the first start "
                         f"pulls it (`{engine} pull {image}` beforehand keeps that start fast)")
        else:
            problems.append(f"image {image} is not on this host and no registry it reaches has it: "
                            f"`{engine} pull {image}` (or `{engine} load`) before `up`")
    wanted = {d for s in specs for p in s["programs"].values() for d in p.get("devices", ())}
    wanted |= {m.split(":", 1)[0] for s in specs for m in s["optional_mounts"]}
    return {"problems": problems, "notes": notes, "missing": sorted(p for p in wanted if not os.path.exists(p))}


def generation_specs(gen: str) -> list[dict]:
    folder = os.path.join(gen, "containers")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [s for s in (read_json(os.path.join(folder, n), None) for n in names if n.endswith(".json")) if s]


class NotRunnable(Exception):
    """The host cannot run a generation's containers (no engine, no image): said before anything starts."""


def check_generation(gen: str) -> None:
    specs = generation_specs(gen)
    problems = check(specs)["problems"] if specs else []
    if problems:
        raise NotRunnable("; ".join(problems))


class _Runner:
    def __init__(self, root: str, gen: str, owner: str, slot: str):
        self.spec = read_json(spec_path(gen, owner), None)
        if not self.spec or slot not in self.spec["programs"]:
            raise SystemExit(f"ascend-launcher: no container spec for {owner} slot {slot!r} in {gen}")
        self.root, self.gen, self.slot = root, gen, slot
        self.prog = self.spec["programs"][slot]
        self.engine, self.name = self.spec["engine"], self.prog["name"]
        self.child: Any = None  # the engine's client (subprocess.Popen)
        self.stopping = False

    def stop(self, signum: int, _frame: object) -> None:
        """supervisord's stop (or a signal to the group): stop the container, not only its client."""
        if self.stopping or self.child is None:
            return
        self.stopping = True
        timeout = str(int(self.spec["stop_timeout"]))
        if "command" in self.prog:  # an instance's container: its ranks first, each with its grace period
            from .container_exec import await_ranks
            await_ranks(self.root, self.prog["program"], float(timeout) + 2.0)
        run_engine([self.engine, "stop", "-t", timeout, self.name], float(timeout) + ENGINE_TIMEOUT)

    def run(self) -> int:
        if "in" in self.prog:  # a rank of an instance: exec'd in its per-host container
            from .container_exec import ExecRunner
            return ExecRunner(self.root, self.gen, self.spec, self.slot).run()
        runtime = os.path.realpath(os.path.join(self.root, "runtime", "current"))
        argv = run_argv(self.spec, self.slot, self.gen, runtime)
        for dev in self.prog["devices"]:
            if not os.path.exists(dev):
                print(f"ascend-launcher: {dev} is not on this host; the container runs without it",
                      file=sys.stderr, flush=True)
        record_engine(self.root, self.engine)
        cid = cidfile(self.root, self.prog["program"])
        os.makedirs(os.path.dirname(cid), exist_ok=True)
        if os.path.exists(cid):  # the last runner did not end cleanly: its container may live on
            remove(self.engine, self.name)  # never two copies (each engine command costs ~0.1 s of CPU)
            os.unlink(cid)  # the engine refuses to overwrite it
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.stop)
        code = self.run_client(argv, cid)
        if code == ENGINE_ERROR and not self.stopping:  # perhaps the name is taken (a leftover no cidfile named)
            remove(self.engine, self.name)
            code = self.run_client(argv, cid)
        if code == ENGINE_ERROR and not self.stopping:
            print(f"ascend-launcher: {self.engine} could not run the container of {self.prog['program']} "
                  f"(exit {code}, see above); a restart will not fix that", file=sys.stderr, flush=True)
            return EX_CONFIG
        return 128 - code if code < 0 else code


    def run_client(self, argv: list[str], cid: str) -> int:
        """Run the engine's client to the end. --rm removes the container when it exits; only a
        client killed by a signal (kill -9, the OOM killer) may leave it behind: remove it then."""
        import subprocess
        from .container_exec import announce, withdraw
        code = -1
        box = "command" in self.prog
        try:
            if box:
                withdraw(self.root, self.prog["program"])
            # an instance's container: its client out of the program's process group, so supervisord's
            # stop (to the group) does not reach it, which would pass it on to the container at once
            # and end the ranks inside before their runners stopped them (`stop` does it, after them)
            self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=box)
            if box:  # its ranks wait for this: the container runs, and which one it is
                announce(self.root, self.gen, self.spec["engine"], self.spec["owner"], self.prog, self.child,
                         lambda: self.stopping)
            code = self.child.wait()
        finally:
            if box:
                withdraw(self.root, self.prog["program"])
            if code < 0:
                remove(self.engine, self.name)
            if os.path.exists(cid):
                os.unlink(cid)
        return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 5 or args[0] != "run":
        print("usage: python3 -m launcher.host.container run ROOT GENERATION_DIR OWNER SLOT", file=sys.stderr)
        return 2
    return _Runner(*args[1:]).run()


if __name__ == "__main__":
    sys.exit(main())
