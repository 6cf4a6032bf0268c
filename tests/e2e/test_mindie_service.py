"""End to end on the testbed: a 2-host framework: mindie-service instance forms its world.

`up` ships the rank table and config.json (0640, owned by the login user) and the env MindIE reads;
on each host one demo rank in --mindie mode reads them as mindieservice_daemon does (owner and mode
of both files, its own server by HOST_IP, the master = rank 0's server) and the two meet at the
master's multiNodesInferPort.
"""
from __future__ import annotations

import json
import os
import pwd
import stat

from tests.helpers import health_json, host_entry, cli_on_testbed, topology_head, wait_for

TESTBED_HOSTS = 2
HEALTH = 18840
PORT = 27140
ENDPOINT = 18841  # ServerConfig.port: where the master serves requests


def topology(tb) -> str:
    h1, h2 = tb.hosts
    hosts = "".join(host_entry(tb, h, f"{{0: 10.78.{k}.1, 1: 10.78.{k}.2}}") for k, h in enumerate((h1, h2)))
    return (f"{topology_head('mi')}hosts:\n{hosts}instances:\n"
            "  - name: svc\n    framework: mindie-service\n"
            f"    mindie: {{config: base.json, port: {PORT}}}\n    processes: per_host\n    hosts: [h1, h2]\n"
            f"    command: [launcher-demo-rank, --mindie, --health-port, \"{HEALTH}\"]\n"
            f"    probe: {{http: \":{HEALTH}/health\", period: 0.2}}\n")




def test_a_two_host_mindie_service_instance_forms_its_world(testbed, tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"ServerConfig": {"ipAddress": "127.0.0.1", "port": ENDPOINT},
                                                    "BackendConfig": {"multiNodesInferEnabled": False}}))
    path = tmp_path / "mi.yaml"
    path.write_text(topology(testbed))
    try:
        run = cli_on_testbed(testbed, "up", str(path))
        assert run.code == 0, run.err
        docs = [wait_for(lambda h=h: health_json(h.address, HEALTH), 30, f"{h.name} /health") for h in testbed.hosts]
        assert [d["mindie"]["master"] for d in docs] == [True, False]
        assert [d["mindie"]["found_by"] for d in docs] == ["HOST_IP", "HOST_IP"]
        assert [d["mindie"]["server_id"] for d in docs] == [h.address for h in testbed.hosts]
        assert all(d["world_size"] == 2 for d in docs)
        # the master serves requests on its host's address, not on the 127.0.0.1 MindIE ships with
        h1 = testbed.hosts[0]
        assert docs[0]["mindie"]["endpoint"] == f"{h1.address}:{ENDPOINT}"
        listening = testbed.run(h1.name, ["ss", "-Hltn", f"sport = :{ENDPOINT}"]).stdout
        listening = listening if isinstance(listening, str) else listening.decode()
        assert [ln.split()[3] for ln in listening.splitlines()] == [f"{h1.address}:{ENDPOINT}"], listening
        assert health_json(h1.address, ENDPOINT)["mindie"]["master"] is True
        uid = pwd.getpwnam(testbed.user).pw_uid
        for h in testbed.hosts:
            for rel in ("ranktables/svc.json", "mindie/svc/config.json"):
                real = os.path.realpath(h.path(f"/srv/launcher/mi/{h.name}/current/{rel}"))
                st = os.lstat(real)
                assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == uid, (h.name, rel, oct(st.st_mode))
    finally:
        cli_on_testbed(testbed, "down", str(path), "--purge")
