"""Issue 14 point 3: what reaches a deployed path, and the ranktables' server_id, as the consumers check them.

- ATB's safe_open refuses a path with a character outside [0-9A-Za-z_./-]: every name that becomes
  part of a deployed path (deployment, host, instance, service; a host's address in PD table names)
  is refused otherwise, at its line:col;
- HCCL's parser: server_id non-empty, unique, at most 64 characters;
- ATB's check_ranktable (seed 004's launch, framework: atb) and MindIE (framework: mindie-service):
  server_id an IP address, so a hostname address needs an explicit server_id.
"""
from __future__ import annotations

import re

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.pipeline import compile_text
from launcher.core.schema import compiled_check

SAFE = re.compile(r"[0-9A-Za-z_./-]+")


def topo(name="t", host="a", address="10.1.0.1", extra_host="", instance="m", framework="", service=""):
    return (f"version: 1\nname: {name}\nhosts:\n"
            f"  - name: {host}\n    address: {address}\n{extra_host}    devices: {{0: 10.9.0.1}}\n"
            f"  - name: b\n    address: 10.1.0.2\n    devices: {{0: 10.9.1.1}}\n"
            f"instances:\n  - name: {instance}\n    hosts: [{host}, b]\n    command: [run]\n{framework}"
            + (f"services:\n  - {{name: {service}, kind: generic, hosts: [b], command: [x]}}\n" if service else ""))


def errors(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as exc:
        compile_text(text, "F", check=compiled_check())
    return [str(d) for d in exc.value.errors]


def ok(text: str) -> None:
    compile_text(text, "F", check=compiled_check())


@pytest.mark.parametrize("bad", ["'a b'", "a/b", "'..'", "'a:b'", "ü", "'a$b'"])
@pytest.mark.parametrize("field, line", [("name", 2), ("host", 4), ("instance", 11), ("service", 15)])
def test_a_name_that_reaches_a_deployed_path_is_refused_at_its_line(field, line, bad):
    kwargs = {"service": "s"}
    kwargs[field] = bad
    errs = errors(topo(**kwargs))
    assert any(e.startswith(f"F:{line}:") and "must match ^[A-Za-z0-9][A-Za-z0-9_.-]" in e for e in errs), errs


@pytest.mark.parametrize("address", ["10.0.0.1/x", "'host name'", "'[fe80::1]'"])
def test_an_address_that_would_put_other_characters_into_pd_table_names_is_refused(address):
    errs = errors(topo(address=address))
    assert any(e.startswith("F:5:14: error: hosts[0].address:") for e in errs), errs


def test_every_rendered_path_holds_only_atb_safe_characters():
    from launcher.core.pipeline import rendered
    from tests.helpers import CONFIGS
    for config in sorted(CONFIGS.glob("*.yaml")):
        from launcher.deploy.files import compile_file
        result = compile_file(str(config))
        _, files = rendered(result.plan)
        for hp in result.plan.hosts:
            for path in files[hp.host.name]:
                assert SAFE.fullmatch(f"{hp.root}/current/{path}"), (config.name, path)


def test_server_id_longer_than_hccl_takes_is_refused_where_it_is_written():
    sid = "n" * 65
    errs = errors(topo(extra_host=f"    server_id: {sid}\n"))
    assert errs == [f"F:6:16: error: hosts[0].server_id: host a: server_id {sid!r} is 65 characters; "
                    "HCCL's ranktable parser takes at most 64"], errs
    ok(topo(extra_host=f"    server_id: {'n' * 64}\n"))


def test_a_long_address_used_as_server_id_is_refused_at_the_address():
    address = "node-" + "x" * 60 + ".example"
    errs = errors(topo(address=address))
    assert any(e.startswith("F:5:14: error: hosts[0].address:") and "at most 64" in e for e in errs), errs
    ok(topo(address=address, extra_host="    server_id: node_0\n"))  # HCCL's own guide names them so


def test_duplicate_server_ids_are_refused():
    errs = errors(topo(extra_host="    server_id: 10.1.0.2\n"))
    assert any("duplicate server_id '10.1.0.2'" in e for e in errs), errs


@pytest.mark.parametrize("framework", ["atb", "mindie-service"])
def test_atb_and_mindie_need_an_ip_server_id(framework, tmp_path):
    fw = f"    framework: {framework}\n"
    if framework == "mindie-service":
        fw += "    processes: per_host\n    mindie: {config: base.json}\n"
    inputs = {"base.json": b'{"BackendConfig": {}}'}
    with pytest.raises(SpecErrors) as exc:
        compile_text(topo(address="npu-a.example", framework=fw), "F", check=compiled_check(), inputs=inputs)
    errs = [str(d) for d in exc.value.errors]
    assert any(e.startswith("F:5:14: error: hosts[0].address: host a: server_id 'npu-a.example' is not an IP")
               for e in errs), errs
    # the same topology with an explicit IP server_id passes
    compile_text(topo(address="npu-a.example", extra_host="    server_id: 10.1.0.1\n", framework=fw), "F",
                 check=compiled_check(), inputs=inputs)
    # a generic instance keeps HCCL's looser rule (its A3 guide names servers node_0)
    ok(topo(address="npu-a.example"))


def test_atb_refuses_a_deploy_dir_its_safe_open_would_refuse():
    text = topo(extra_host="    deploy_dir: /data/my+launcher\n", framework="    framework: atb\n")
    errs = errors(text)
    assert any(e.startswith("F:6:17: error: hosts[0].deploy_dir: host a: deploy_dir '/data/my+launcher'")
               for e in errs), errs
