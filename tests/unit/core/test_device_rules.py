"""Device layouts a stack cannot use are refused at line:col, naming the rule; the launcher's own
ASCEND_RT_VISIBLE_DEVICES numbers the NPUs as the runtime there does (core/device_rules.py)."""
from __future__ import annotations

import pytest

from launcher.core.pipeline import compile_text
from tests.helpers import run_cli, write

TOPO = """\
version: 1
name: t
defaults:
  deploy_dir: /srv/l
hosts:
  - name: a
    address: 10.1.0.1
    devices: {devices}
instances:
  - name: m
    hosts: [a]
    command: [python3, run.py]
{extra}"""
EIGHT = "{" + ", ".join(f"{d}: 10.9.0.{d + 1}" for d in range(8)) + "}"


def text(server: str = EIGHT, **keys: str) -> str:
    """The topology with the server's NPUs ``server`` and the instance's ``keys`` (from line 13)."""
    return TOPO.format(devices=server, extra="".join(f"    {k}: {v}\n" for k, v in keys.items()))


def refused(tmp_path, topo: str) -> str:
    run = run_cli("validate", write(tmp_path, topo))
    assert run.code == 2, run.err
    return run.err


def visible(topo: str) -> str:
    (hp,) = compile_text(topo).plan.hosts
    return next(dict(p.env)["ASCEND_RT_VISIBLE_DEVICES"] for p in hp.programs if p.kind == "rank")


@pytest.mark.parametrize("value", ["0,0", "x", "1;2", ""])
def test_a_visible_devices_value_that_is_not_a_list_of_ids(tmp_path, value):
    err = refused(tmp_path, text(env=f'{{ASCEND_RT_VISIBLE_DEVICES: "{value}"}}'))
    assert ":13:38: error: instances[0].env.ASCEND_RT_VISIBLE_DEVICES:" in err  # at the value
    assert "[rule: visible-devices-format]" in err


def test_atb_on_a_renumbering_subset_is_refused_where_the_env_says_it(tmp_path):
    """ATB selects npu:{device_id} with the physical id: 4,5,6,7 makes physical 4 the runtime's NPU 0."""
    err = refused(tmp_path, text(framework="atb", devices="[4, 5, 6, 7]",
                                 env='{ASCEND_RT_VISIBLE_DEVICES: "4,5,6,7"}'))
    assert ":15:38: error: instances[0].env.ASCEND_RT_VISIBLE_DEVICES: instance m (atb)" in err
    assert "its runtime's NPU 4 is no NPU" in err and "[rule: physical-device-ids]" in err
    err = refused(tmp_path, text(framework="atb", env='{ASCEND_RT_VISIBLE_DEVICES: "1,0,2,3,4,5,6,7"}'))
    assert "its runtime's NPU 0 is physical NPU 1" in err and "[rule: physical-device-ids]" in err


def test_atb_whose_visible_devices_start_at_0_in_order_is_accepted():
    assert visible(text(framework="atb", env='{ASCEND_RT_VISIBLE_DEVICES: "0,1,2,3,4,5,6,7"}')) == "0,1,2,3,4,5,6,7"
    # the launcher's default for a stack that selects by physical id: every NPU there, in order
    assert visible(text(framework="atb", devices="[4, 5, 6, 7]")) == "0,1,2,3,4,5,6,7"


def test_atb_in_a_container_holding_npus_not_numbered_from_0_is_refused_at_the_hosts_devices(tmp_path):
    """The container holds davinci0 and davinci2 (all the server's the topology declares): inside,
    the runtime calls davinci2 NPU 1, and ATB asks for npu:2."""
    topo = text(server="{0: 10.9.0.1, 2: 10.9.0.3}", framework="atb", container="{image: mindie:1}")
    err = refused(tmp_path, topo)
    assert ":8:14: error: hosts[0].devices: instance m (atb)" in err and "[rule: physical-device-ids]" in err
    assert "declare the server's NPUs 0..N-1, or run the container privileged" in err
    ok = text(server="{0: 10.9.0.1, 2: 10.9.0.3}", framework="atb", container="{image: mindie:1, privileged: true}")
    assert visible(ok) == "0,1,2"  # privileged: every NPU of the server, physical ids


def test_a_container_that_holds_a_subset_numbers_it_from_0(tmp_path):
    boxed = text(devices="[2, 3]", container="{image: vllm:1}")
    assert visible(boxed) == "0,1"  # the container holds davinci2 and davinci3: NPUs 0 and 1 inside
    assert visible(text(devices="[2, 3]")) == "2,3"  # on the host: physical ids
    err = refused(tmp_path, text(devices="[2, 3]", container="{image: vllm:1}", env='{ASCEND_RT_VISIBLE_DEVICES: "2,3"}'))
    assert ":15:38: error: instances[0].env.ASCEND_RT_VISIBLE_DEVICES:" in err
    assert "lists 2 but its container holds 2 NPU(s) (davinci2, davinci3), numbered 0..1 inside" in err
    assert "[rule: visible-devices-exist]" in err


def test_visible_devices_naming_an_npu_the_host_lacks(tmp_path):
    err = refused(tmp_path, text(env='{ASCEND_RT_VISIBLE_DEVICES: "0,9"}'))
    assert "host a has no NPU 9 [rule: visible-devices-exist]" in err


@pytest.mark.parametrize("args,col", [('["--device=/dev/davinci3"]', 39),
                                      ('["--pids-limit", "9", "--device", "/dev/davinci3:/dev/davinci0"]', 60)])
def test_container_args_giving_an_npu_are_refused(tmp_path, args, col):
    err = refused(tmp_path, text(container=f"{{image: vllm:1, args: {args}}}"))
    assert "instances[0].container.args[" in err and "[rule: container-devices]" in err
    assert f":13:{col}: error:" in err, err


def test_yuanrong_rh2d_container_without_privileged_numbers_its_npu_from_0():
    """configs/yuanrong-rh2d-container.yaml: vLLM on NPU 2; privileged, every NPU is seen under its
    physical id; without, its container holds davinci2 only, which the runtime there calls NPU 0."""
    from pathlib import Path
    src = (Path(__file__).parents[3] / "configs" / "yuanrong-rh2d-container.yaml").read_text()

    def vllm(topo: str) -> tuple[str, list[str]]:
        plan = compile_text(topo).plan
        hp = next(h for h in plan.hosts if h.host.name == "node1")
        box = next(p for p in hp.programs if p.kind == "container")
        rank = next(p for p in hp.programs if p.owner == "vllm-node1" and p.kind == "rank")
        return dict(rank.env)["ASCEND_RT_VISIBLE_DEVICES"], list(box.devices)

    assert vllm(src) == ("2", [2])
    assert vllm(src.replace("privileged: true ", "privileged: false")) == ("0", [2])
