"""Small helpers shared by tests: run the real CLI in-process and capture what a user sees."""
from __future__ import annotations

import io
import json
import os
import sys
import time
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path

from launcher.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def run_cli(*argv: str) -> Run:
    """Run `launcher ARGV...` in this process; stdout is captured as bytes-safe text."""
    out = io.BytesIO()
    err = io.StringIO()
    real = sys.stdout
    wrapper = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    sys.stdout = wrapper
    try:
        with redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        sys.stdout.flush()
    finally:
        sys.stdout = real
        wrapper.detach()  # or closing the wrapper would close the buffer we read below
    return Run(code, out.getvalue().decode("utf-8"), err.getvalue())


def write(tmp_path: Path, text: str, name: str = "topo.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return os.fspath(path)


def wait_for(predicate, timeout: float = 90.0, what: str = "condition"):
    """Poll until predicate() is truthy and return it; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """The pid runs and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.split(") ")[1].startswith("Z")


def agents_idle(tb, roots: dict[str, str]) -> bool:
    """Every host's agent has no gang work under way (a report, a restart: state/agent-busy is 0):
    what runs now stays as it is until something else happens. ``roots``: host name -> ROOT."""
    for h in tb.hosts:
        try:
            if json.loads(Path(h.path(f"{roots[h.name]}/state/agent-busy")).read_text()) != 0:
                return False
        except (OSError, ValueError):
            return False
    return True


# --- topology fragments the testbed tests share -------------------------------------------
def host_entry(tb, h, devices: str) -> str:
    """One testbed host as a topology `hosts:` entry; ``devices`` is the YAML mapping text."""
    return (f"  - name: {h.name}\n    address: {h.address}\n"
            f"    ssh: {{user: {tb.user}, identity_file: {tb.identity_file}}}\n    devices: {devices}\n")


def topology_head(name: str, deploy_dir: str = "/srv/launcher", extra_defaults: str = "") -> str:
    """`version`, `name` and defaults for a testbed topology (no NPUs there: preflight off)."""
    return f"version: 1\nname: {name}\ndefaults:\n  deploy_dir: {deploy_dir}\n  preflight: false\n{extra_defaults}"

def two_host_demo(tb, name: str, health_port: int) -> str:
    """A topology of one demo instance over the testbed's first two hosts, one rank (device 0) each."""
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{i}.1}}") for i, h in enumerate(tb.hosts))
    return f"""\
{topology_head(name)}hosts:
{hosts}instances:
  - name: demo
    hosts: [{tb.hosts[0].name}, {tb.hosts[1].name}]
    devices: [0]
    command: [launcher-demo-rank, --health-port, "{health_port}", --barrier-timeout, "120"]
"""


@contextmanager
def demo_deployed(tb, path: Path, health_port: int):
    """`up` of a two_host_demo topology at ``path``, both ranks serving; `down --purge` after."""
    run = cli_on_testbed(tb, "up", str(path))
    assert run.code == 0, run.err
    wait_for(lambda: all(health_json(h.address, health_port) for h in tb.hosts[:2]), what="both demo ranks serving")
    try:
        yield str(path)
    finally:
        run_cli("down", str(path), "--purge", *ssh_flags(tb))



def datadist_2p2d(listen_port: int) -> str:
    """configs/llm-datadist-link.yaml's domains: clusters 1, 2 (prompt-0/1) each linked with 3, 4
    (decoder-0/1)."""
    return (f"llm_datadist:\n  clusters:\n"
            f"    - {{id: 1, instance: prompt-0, role: prompt, listen_port: {listen_port}}}\n"
            f"    - {{id: 2, instance: prompt-1, role: prompt, listen_port: {listen_port}}}\n"
            "    - {id: 3, instance: decoder-0, role: decoder}\n"
            "    - {id: 4, instance: decoder-1, role: decoder}\n"
            "  links:\n" + "".join(f"    - {{name: pd_comm_{p}_{d}, clusters: [{p}, {d}]}}\n"
                                   for p in (1, 2) for d in (3, 4)))


# --- launcher 0.1, as hosts deployed before the package split still run it -----------------
LAUNCHER_0_1 = "24d77ac"  # the last commit of the flat layout (launcher/hostside.py, launcher.agent)


def launcher_0_1(dest: Path, *paths: str) -> Path:
    """Extract ``paths`` (default: launcher/ and native/) of launcher 0.1 from this repository's
    history into ``dest``; skips the calling test where the history is not there."""
    import io
    import shutil
    import subprocess
    import tarfile

    import pytest
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this repository's history (launcher 0.1 is taken from it)")
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", LAUNCHER_0_1,
                           *(paths or ("launcher", "native"))], capture_output=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"commit {LAUNCHER_0_1} is not in this clone's history: {proc.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="tar")
    return dest


def ssh_flags(tb) -> list[str]:
    """The CLI flags that point it at a testbed: its ssh config and known_hosts."""
    return ["--ssh-config", str(tb.ssh_config), "--known-hosts", str(tb.known_hosts)]


def cli_on_testbed(tb, *argv: str) -> Run:
    """`launcher ARGV` against a testbed."""
    return run_cli(*argv, *ssh_flags(tb))


def health_json(address: str, port: int) -> dict | None:
    """GET http://ADDRESS:PORT/health as JSON, or None while it does not answer (a rank that
    exits mid-reply, e.g. stopped by a rolling restart, ends its answer short: not an answer)."""
    import http.client
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/health", timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, http.client.HTTPException, ValueError):
        return None


def demo_health(tb, port: int, hosts: int | None = None) -> dict[str, dict] | None:
    """Each demo rank's /health by host (the first ``hosts`` testbed hosts, default all), or None
    while any has not answered (a demo rank answers once its world has passed the barrier)."""
    out = {}
    for h in tb.hosts[:hosts]:
        doc = health_json(h.address, port)
        if doc is None:
            return None
        out[h.name] = doc
    return out


def live_pids(match) -> list[int]:
    """Pids of live (not zombie) processes for which ``match(cmdline, environ)`` holds (both
    bytes): the testbed shares one pid namespace, so ps cannot tell its hosts apart."""
    pids = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{d}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{d}/stat", "rb") as fh:
                zombie = fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except (OSError, IndexError):
            continue
        if not zombie and match(cmd, env):
            pids.append(int(d))
    return sorted(pids)


def compile_checked(text: str, name: str = "F"):
    """Compile a topology text as `validate` does (schema and every rule); raises SpecErrors."""
    from launcher.core.pipeline import compile_text
    from launcher.core.schema import compiled_check
    return compile_text(text, name, check=compiled_check())


def spec_errors(text: str) -> list[str]:
    """The errors compiling ``text`` gives, each as `F:line:col: error: ...`; fails if there are none."""
    import pytest
    from launcher.core.errors import SpecErrors
    with pytest.raises(SpecErrors) as exc:
        compile_checked(text)
    return [str(d) for d in exc.value.errors]


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of ``text`` holding ``needle``."""
    return next(k + 1 for k, ln in enumerate(text.splitlines()) if needle in ln)
