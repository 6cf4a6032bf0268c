"""`restart_with:` across hosts: an instance on h2 follows a service on h1.

kill -9 of the service: h1's agent restarts it, waits for its probe, then tells h2's agent, which
restarts the instance (which itself never noticed: only the rule restarts it), spending none of
its restart budget. `launcher restart --instance web` restarts the follower after web is ready,
and so does an `up` that restarts web because its config changed.
"""
from __future__ import annotations

import json
import os
import signal

from tests.helpers import cli_on_testbed as cli, health_json, host_entry, topology_head, wait_for
from tests.ray_testbed import agent_log, rows

TESTBED_HOSTS = 2
WEB, HEALTH = 18880, 18881


def topology(tb, web_env: str = "{}") -> str:
    h1 = tb.hosts[0]
    hosts = "".join(host_entry(tb, h, f"{{0: 10.98.{k}.1}}") for k, h in enumerate(tb.hosts))
    return (f"{topology_head(f'rw{tb.id}')}hosts:\n{hosts}services:\n"
            f"  - name: web\n    kind: generic\n    hosts: [h1]\n    env: {web_env}\n"
            f"    command: [python3, -m, http.server, \"{WEB}\", --bind, \"{h1.address}\"]\n"
            f"    probe: {{http: \"{h1.address}:{WEB}/\", period: 0.2}}\n"
            "instances:\n  - name: follower\n    hosts: [h2]\n    restart_with: [web]\n"
            f"    command: [launcher-demo-rank, --health-port, \"{HEALTH}\"]\n"
            f"    probe: {{http: \":{HEALTH}/health\", period: 0.2}}\n")


def test_an_instance_restarts_after_the_service_it_follows_on_another_host(testbed, tmp_path):
    tb = testbed
    h1, h2 = tb.hosts
    path = str(tmp_path / "rw.yaml")
    (tmp_path / "rw.yaml").write_text(topology(tb))
    roots = {h.name: f"/srv/launcher/rw{tb.id}/{h.name}" for h in tb.hosts}
    try:
        run = cli(tb, "up", path)
        assert run.code == 0, run.err
        first = wait_for(lambda: health_json(h2.address, HEALTH), 30, "the follower's /health")
        web = rows(tb, path)["web"]

        os.kill(web["pid"], signal.SIGKILL)
        st = wait_for(lambda: (r := rows(tb, path))["follower"]["restarts"] == 1 and r, 90,
                      "the follower restarted once")
        assert st["web"]["restarts"] == 1 and st["web"]["state"] == "RUNNING", st["web"]
        again = wait_for(lambda: (d := health_json(h2.address, HEALTH)) and d["pid"] != first["pid"] and d, 30,
                         "the follower's new run")
        assert again["pid"] == rows(tb, path)["follower"]["pid"]
        said1, said2 = agent_log(tb, h1, roots["h1"]), agent_log(tb, h2, roots["h2"])
        assert "gang web: ready again after its restart; restarting follower after it (restart_with)" in said1
        assert "gang follower: web on h1 was restarted and is ready again; restarting it on 1 hosts" in said2
        web_rec = json.loads(tb.run(h1.name, ["cat", f"{roots['h1']}/state/gang.json"]).stdout)["web"]
        rec = json.loads(tb.run(h2.name, ["cat", f"{roots['h2']}/state/gang.json"]).stdout)["follower"]
        assert rec["followed"] == {"web@h1": web_rec["last_restart"]}, (rec, web_rec)
        assert rec["history"] == [], rec  # a restart it followed spends none of its own budget

        run = cli(tb, "restart", path, "--instance", "web")
        assert run.code == 0, run.err
        assert "restarted follower after web was ready again (restart_with)" in run.err + run.out
        third = wait_for(lambda: health_json(h2.address, HEALTH), 30, "the follower's /health")
        assert third["pid"] not in (first["pid"], again["pid"])

        web = rows(tb, path)["web"]
        (tmp_path / "rw.yaml").write_text(topology(tb, web_env='{WEB_CHANGED: "1"}'))  # only web changes
        run = cli(tb, "up", path)
        assert run.code == 0, run.err
        st = rows(tb, path)
        assert st["web"]["pid"] != web["pid"] and st["follower"]["pid"] not in (third["pid"],), st
        fourth = wait_for(lambda: health_json(h2.address, HEALTH), 30, "the follower's /health")
        assert fourth["pid"] == st["follower"]["pid"]
    finally:
        cli(tb, "down", path, "--purge")
