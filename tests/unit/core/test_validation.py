"""One test per validation error: the message a user reads and where it points (line:col)."""
from __future__ import annotations

import pytest

from tests.helpers import CONFIGS, run_cli, write

BASE_HOSTS = """\
version: 1
name: t
hosts:
  - name: a
    address: 10.1.0.1
    devices:
      0: 10.9.0.1
      1: 10.9.0.2
  - name: b
    address: 10.1.0.2
    devices:
      0: 10.9.1.1
      1: 10.9.1.2
"""


def check(tmp_path, text: str) -> tuple[int, list[str]]:
    path = write(tmp_path, text)
    run = run_cli("validate", path)
    lines = [ln.replace(path, "F") for ln in run.err.splitlines()]
    return run.code, lines


def assert_error(tmp_path, text: str, expected: str) -> list[str]:
    code, lines = check(tmp_path, text)
    assert code == 2, lines
    assert any(expected in ln for ln in lines), "\n".join(lines)
    assert lines[-1].endswith("nothing was changed")
    return lines


def test_valid_topology_passes(tmp_path):
    text = BASE_HOSTS + "instances:\n  - {name: m, hosts: [a, b], command: [run]}\n"
    path = write(tmp_path, text)
    run = run_cli("validate", path)
    assert run.code == 0, run.err
    assert "ok (2 hosts, 1 instances, 4 ranks" in run.out


def test_yaml_syntax_error_points_at_line_and_column(tmp_path):
    assert_error(tmp_path, "version: 1\nname: t\nhosts: [\n  {name: a\n", "F:5:1: error: YAML syntax:")


def test_yaml_bad_indentation(tmp_path):
    assert_error(tmp_path, "version: 1\nname: t\n hosts: []\n", "F:3:7: error: YAML syntax: mapping values are "
                                                                 "not allowed in this context")


def test_duplicate_yaml_key(tmp_path):
    assert_error(tmp_path, "version: 1\nname: t\nname: u\nhosts: []\n",
                 "F:3:1: error: name: duplicate key 'name' (first defined at line 2)")


def test_unknown_key_with_suggestion(tmp_path):
    text = BASE_HOSTS.replace("    address: 10.1.0.2\n", "    address: 10.1.0.2\n    devics: []\n")
    assert_error(tmp_path, text, "F:11:5: error: hosts[1].devics: unknown key 'devics' (did you mean 'devices'?)")


def test_wrong_type(tmp_path):
    text = BASE_HOSTS.replace("address: 10.1.0.2", "address: [10.1.0.2]")
    assert_error(tmp_path, text, "F:10:14: error: hosts[1].address: expected string, got list [\"10.1.0.2\"]")


def test_device_id_that_is_not_a_number(tmp_path):
    text = BASE_HOSTS.replace("      1: 10.9.0.2", "      one: 10.9.0.2")
    assert_error(tmp_path, text, "F:8:7: error: hosts[0].devices.one: device id 'one' is not valid (an NPU id 0..15)")


def test_missing_required_key(tmp_path):
    text = BASE_HOSTS.replace("    address: 10.1.0.2\n", "")
    assert_error(tmp_path, text, "F:9:5: error: hosts[1]: missing required key 'address'")


def test_all_errors_are_reported_together(tmp_path):
    text = BASE_HOSTS.replace("      1: 10.9.0.2", "      one: 10.9.0.2").replace(
        "    address: 10.1.0.2\n", "    address: 10.1.0.2\n    colour: red\n")
    lines = assert_error(tmp_path, text, "F:8:7:")
    assert any("F:11:5:" in ln and "colour" in ln for ln in lines)
    assert lines[-1] == "2 errors; nothing was changed"


def test_duplicate_host_name(tmp_path):
    text = BASE_HOSTS.replace("  - name: b\n", "  - name: a\n")
    assert_error(tmp_path, text, "F:9:11: error: hosts[1].name: duplicate host name 'a' (also at hosts[0].name)")


def test_duplicate_host_address(tmp_path):
    text = BASE_HOSTS.replace("address: 10.1.0.2", "address: 10.1.0.1")
    assert_error(tmp_path, text, "F:10:14: error: hosts[1].address: duplicate host address '10.1.0.1'")


def test_duplicate_device_ip(tmp_path):
    text = BASE_HOSTS.replace("10.9.1.2", "10.9.0.1")
    assert_error(tmp_path, text, "F:13:10: error: hosts[1].devices.1: duplicate device IP '10.9.0.1' "
                                 "(also at hosts[0].devices.0)")


def test_invalid_device_ip(tmp_path):
    text = BASE_HOSTS.replace("10.9.1.2", "10.9.1.256")
    assert_error(tmp_path, text, "F:13:10: error: hosts[1].devices.1: host b device 1: '10.9.1.256' is not "
                                 "an IPv4 address")


def test_duplicate_device_id_is_a_duplicate_key(tmp_path):
    text = BASE_HOSTS.replace("      1: 10.9.1.2", "      0: 10.9.1.2")
    assert_error(tmp_path, text, "F:13:7: error: hosts[1].devices.0: duplicate key '0' (first defined at line 12)")


def test_device_id_out_of_range(tmp_path):
    text = BASE_HOSTS.replace("      1: 10.9.1.2", "      16: 10.9.1.2")
    assert_error(tmp_path, text, "F:13:7: error: hosts[1].devices.16: device id '16' is not valid (an NPU id 0..15)")


def test_instance_uses_undeclared_device(tmp_path):
    text = BASE_HOSTS + "instances:\n  - {name: m, hosts: [a], devices: [5], command: [run]}\n"
    assert_error(tmp_path, text, "F:15:36: error: instances[0].devices: instance m: device 5 is not declared on "
                                 "host a (declared: [0, 1])")


def test_one_npu_used_by_two_instances(tmp_path):
    text = BASE_HOSTS + ("instances:\n"
                         "  - {name: m1, hosts: [a], devices: [0], command: [run]}\n"
                         "  - {name: m2, hosts: [b, a], devices: [0], command: [run]}\n")
    assert_error(tmp_path, text, "F:16:27: error: instances[1].hosts[1]: NPU 0 on host a is used by both "
                                 "instance m1 and instance m2")


def test_hosts_with_different_device_counts_is_an_error(tmp_path):
    text = BASE_HOSTS.replace("      1: 10.9.1.2\n", "") + \
        "instances:\n  - {name: m, hosts: [a, b], command: [run]}\n"
    assert_error(tmp_path, text, "F:14:22: error: instances[0].hosts: instance m: hosts have different device "
                                 "counts (a=2, b=1)")


def test_unknown_host_in_instance(tmp_path):
    text = BASE_HOSTS + "instances:\n  - {name: m, hosts: [a, c], command: [run]}\n"
    assert_error(tmp_path, text, "F:15:26: error: instances[0].hosts[1]: unknown host 'c' (hosts: a, b)")


def test_reserved_env_is_refused(tmp_path):
    text = BASE_HOSTS + "instances:\n  - name: m\n    hosts: [a]\n    command: [run]\n    env: {RANK: '3'}\n"
    assert_error(tmp_path, text, "F:18:17: error: instances[0].env.RANK: RANK is set per rank by the launcher")


PD = BASE_HOSTS + """\
instances:
  - {name: p, role: prefill, hosts: [a], command: [run]}
  - {name: d, role: decode, hosts: [b], command: [run]}
pd_groups:
  - name: g
    scheduler: SCHED
    prefill: [p]
    decode: [d]
"""


def test_pd_group_with_two_schedulers(tmp_path):
    assert_error(tmp_path, PD.replace("SCHED", "[a, b]"),
                 "F:19:16: error: pd_groups[0].scheduler: PD group g needs exactly one scheduler, got 2: ['a', 'b']")


def test_pd_group_with_no_scheduler(tmp_path):
    assert_error(tmp_path, PD.replace("SCHED", "[]"),
                 "F:19:16: error: pd_groups[0].scheduler: PD group g needs exactly one scheduler, got 0: []")


def test_pd_group_valid(tmp_path):
    code, lines = check(tmp_path, PD.replace("SCHED", "a"))
    assert code == 0, lines


def test_pd_instance_with_wrong_role(tmp_path):
    text = PD.replace("SCHED", "a").replace("decode: [d]", "decode: [p]")
    assert_error(tmp_path, text, "F:21:14: error: pd_groups[0].decode[0]: instance p has role prefill, "
                                 "expected decode")


DD = BASE_HOSTS + """\
instances:
  - {name: p0, hosts: [a], devices: [0], command: [run]}
  - {name: p1, hosts: [a], devices: [1], command: [run]}
  - {name: d0, hosts: [b], devices: [0], command: [run]}
  - {name: d1, hosts: [b], devices: [1], command: [run]}
llm_datadist:
  clusters:
    - {id: 1, instance: p0, role: prompt, listen_port: 26000}
    - {id: 2, instance: p1, role: prompt, listen_port: PORT2}
    - {id: 3, instance: d0, role: decoder}
    - {id: 4, instance: d1, role: decoder}
  links:
LINKS"""


def test_datadist_domain_with_more_than_4_nodes(tmp_path):
    text = BASE_HOSTS + """\
instances:
  - {name: p, hosts: [a], command: [run]}
  - {name: d, hosts: [b], command: [run]}
llm_datadist:
  clusters:
    - {id: 1, instance: p, rank: 0, role: prompt, listen_port: 26000}
    - {id: 2, instance: p, rank: 1, role: prompt, listen_port: 26000}
    - {id: 3, instance: d, rank: 0, role: decoder}
    - {id: 4, instance: d, rank: 1, role: decoder}
    - {id: 5, instance: d, rank: 1, role: decoder}
  links:
    - {name: big, clusters: [1, 2, 3, 4, 5]}
"""
    lines = assert_error(tmp_path, text, "F:25:29: error: llm_datadist.links[0].clusters: link big has 5 clusters; "
                                         "a communication domain holds at most 4")
    assert lines[-1] == "2 errors; nothing was changed"  # and cluster 5 reuses rank 3


def _links(n: int) -> str:
    return "".join(f"    - {{name: l{i}, clusters: [1, 3]}}\n" for i in range(n))


def test_datadist_more_than_16_domains_warns(tmp_path):
    path = write(tmp_path, DD.replace("PORT2", "26001").replace("LINKS", _links(17)))
    run = run_cli("validate", path)
    assert run.code == 0, run.err
    assert f"{path}:21:7: warning: llm_datadist.clusters[0]: cluster 1 is in 17 communication domains" in run.err


def test_datadist_more_than_512_domains_is_an_error(tmp_path):
    assert_error(tmp_path, DD.replace("PORT2", "26001").replace("LINKS", _links(513)),
                 "F:21:7: error: llm_datadist.clusters[0]: cluster 1 is in 513 communication domains; "
                 "the maximum is 512")


def test_two_listeners_on_the_same_ip_and_port(tmp_path):
    text = DD.replace("PORT2", "26000").replace("LINKS", _links(1)).replace(
        "{id: 2, instance: p1, role: prompt,", "{id: 2, instance: p1, role: prompt, listen_ip: 10.9.0.1,")
    assert_error(tmp_path, text, "F:22:77: error: llm_datadist.clusters[1].listen_port: cluster 2 listens on "
                                 "10.9.0.1:26000, already used by cluster 1")


def test_two_services_on_the_same_port(tmp_path):
    text = BASE_HOSTS + """\
services:
  - {name: etcd, kind: etcd, hosts: [a], client_port: 2379}
  - {name: router, kind: generic, hosts: [a], command: [r], ports: [2379]}
"""
    assert_error(tmp_path, text, "F:16:68: error: services[1].ports: service router on a listens on "
                                 "10.1.0.1:2379, already used by service etcd on a")


DEPS = BASE_HOSTS + """\
services:
  - {name: s1, kind: generic, hosts: [a], command: [x], depends_on: DEP1}
  - {name: s2, kind: generic, hosts: [b], command: [x], depends_on: DEP2}
"""


def test_dangling_depends_on(tmp_path):
    text = DEPS.replace("DEP1", "[nothere]").replace("DEP2", "[]")
    assert_error(tmp_path, text, "F:15:70: error: services[0].depends_on[0]: s1 depends on unknown 'nothere'")


def test_dependency_cycle(tmp_path):
    text = DEPS.replace("DEP1", "[s2]").replace("DEP2", "[s1]")
    assert_error(tmp_path, text, "F:15:69: error: services[0].depends_on: dependency cycle: s1 -> s2 -> s1")


def test_discovered_ip_missing_from_lock_file(tmp_path):
    text = BASE_HOSTS.replace("      1: 10.9.1.2", "      1: discover")
    assert_error(tmp_path, text, "F:13:10: error: hosts[1].devices.1: host b device 1: IP is left to "
                                 "discovery and not in the lock file yet")


@pytest.mark.parametrize("body, message", [
    ("", "F:1:1: error: the file is empty"),
    ("- a\n- b\n", "F:1:1: error: the top level must be a mapping"),
])
def test_not_a_topology(tmp_path, body, message):
    assert_error(tmp_path, body, message)


def test_missing_file_is_bad_input(tmp_path):
    run = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert run.code == 2
    assert "cannot read" in run.err and "No such file" in run.err


def test_two_clusters_on_one_rank(tmp_path):
    text = DD.replace("PORT2", "26001").replace("LINKS", _links(1)).replace(
        "{id: 4, instance: d1, role: decoder}", "{id: 4, instance: d0, role: decoder}")
    assert_error(tmp_path, text, "F:24:25: error: llm_datadist.clusters[3].instance: duplicate (instance, rank) of a "
                                 "cluster ('d0', 0) (also at llm_datadist.clusters[2].instance)")


@pytest.mark.parametrize("long_dir", ["/srv/" + "d" * 90,
                                      # a 100-byte socket path: supervisord's SOCKET.<pid> would not fit
                                      "/srv/" + "d" * 71])
def test_deploy_dir_too_long_for_supervisords_socket(tmp_path, long_dir):
    text = BASE_HOSTS.replace("name: t\n", f"name: t\ndefaults: {{deploy_dir: {long_dir}}}\n")
    assert_error(tmp_path, text, "F:3:24: error: defaults.deploy_dir: host a: deploy_dir is too long: "
                                 "supervisord's socket")


@pytest.mark.parametrize("key", ["LAUNCHER_INSTANCE", "LAUNCHER_DEVICE_IP"])
def test_identity_env_is_refused_not_silently_replaced(tmp_path, key):
    text = BASE_HOSTS + f"instances:\n  - name: m\n    hosts: [a]\n    command: [run]\n    env: {{{key}: x}}\n"
    assert_error(tmp_path, text, f"F:18:{len(key) + 13}: error: instances[0].env.{key}: {key} is set ")


def test_identity_env_in_defaults_is_refused_once_where_it_is_written(tmp_path):
    text = (BASE_HOSTS.replace("hosts:\n", "defaults:\n  env: {LAUNCHER_ROLE: mine}\nhosts:\n", 1)
            + "instances:\n  - {name: m, hosts: [a], command: [run]}\n  - {name: n, hosts: [b], command: [run]}\n"
            + "services:\n  - {name: s, kind: generic, hosts: [a], command: [svc]}\n")
    code, lines = check(tmp_path, text)
    assert code == 2
    errors = [ln for ln in lines if "LAUNCHER_ROLE" in ln]
    assert errors == ["F:4:24: error: defaults.env.LAUNCHER_ROLE: LAUNCHER_ROLE is set for every process "
                      "(where it belongs) by the launcher; remove it"]


def test_service_identity_env_is_refused(tmp_path):
    text = BASE_HOSTS + ("services:\n  - name: s\n    kind: generic\n    hosts: [a]\n    command: [svc]\n"
                         "    env: {LAUNCHER_SERVICE: other, RANK: '1'}\n")
    lines = assert_error(tmp_path, text, "F:19:29: error: services[0].env.LAUNCHER_SERVICE: LAUNCHER_SERVICE is set")
    assert not any("env.RANK" in ln for ln in lines)  # a service has no rank: RANK is its own


@pytest.mark.parametrize("owner", ["instances", "services"])
def test_a_log_probe_that_is_not_a_regex_is_refused_at_validation(tmp_path, owner):
    body = ("instances:\n  - name: m\n    hosts: [a]\n    command: [run]\n" if owner == "instances" else
            "services:\n  - name: m\n    kind: generic\n    hosts: [a]\n    command: [run]\n")
    text = BASE_HOSTS + body + '    probe: {log: "("}\n'
    line = 18 if owner == "instances" else 19
    assert_error(tmp_path, text, f"F:{line}:18: error: {owner}[0].probe.log: '(' is not a regular expression: "
                                 "missing ), unterminated subpattern (at character 0)")


def test_global_ranktable_env_is_refused_on_pd_members_only(tmp_path):
    text = (CONFIGS / "pd-1p1d-tp2.yaml").read_text().replace(
        'env: {VLLM_PORT_OVERRIDE: "8102"}', 'env: {VLLM_PORT_OVERRIDE: "8102", GLOBAL_RANK_TABLE_FILE_PATH: /x}')
    lines = assert_error(tmp_path, text, "error: instances[1].env.GLOBAL_RANK_TABLE_FILE_PATH: "
                                         "GLOBAL_RANK_TABLE_FILE_PATH is set per rank by the launcher; remove it")
    assert sum("error:" in ln for ln in lines) == 1
    # outside a PD group the launcher does not set it: the instance's own value stays, no error
    plain = BASE_HOSTS + ("instances:\n  - name: m\n    hosts: [a]\n    command: [run]\n"
                          "    env: {GLOBAL_RANK_TABLE_FILE_PATH: /x}\n")
    assert check(tmp_path, plain)[0] == 0
