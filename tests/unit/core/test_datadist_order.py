"""LLM-DataDist start order: decoders wait for the prompts they link to (implied edges, levels,
the relink set after a restart, and the errors for
topologies whose links cannot be ordered."""
from __future__ import annotations

import json

import pytest

from launcher.core.graph import dependency_edges, link_edges, relink_after, start_levels
from launcher.core.model import Probe
from launcher.core.pipeline import compile_text
from tests.helpers import CONFIGS, run_cli, write
from tests.unit.core.test_validation import BASE_HOSTS, assert_error

TOPO = BASE_HOSTS + """\
instances:
  - {name: d0, hosts: [b], devices: [0], command: [run]DEPS}
  - {name: p0, hosts: [a], devices: [0], command: [run]PROBE}
  - {name: p1, hosts: [a], devices: [1], command: [run]}
  - {name: d1, hosts: [b], devices: [1], command: [run]}
llm_datadist:
  clusters:
    - {id: 1, instance: p0, role: prompt, listen_port: 26000}
    - {id: 2, instance: p1, role: prompt, listen_port: 26000}
    - {id: 3, instance: d0, role: decoder}
    - {id: 4, instance: d1, role: decoder}
  links:
    - {name: l13, clusters: [1, 3]}
    - {name: l23, clusters: [2, 3]}
    - {name: l14, clusters: [1, 4]}
"""


def topo(deps: str = "", probe: str = "") -> str:
    return TOPO.replace("DEPS", deps).replace("PROBE", probe)


def test_a_decoder_waits_for_every_prompt_it_links_to():
    t = compile_text(topo()).topology
    edges = dependency_edges(t)
    assert edges == {"d0": ("p0", "p1"), "p0": (), "p1": (), "d1": ("p0",)}
    assert link_edges(t) == {("d0", "p0"): "l13", ("d0", "p1"): "l23", ("d1", "p0"): "l14"}
    assert start_levels(edges) == (("p0", "p1"), ("d0", "d1"))


def test_explicit_depends_on_comes_first_and_is_not_repeated():
    edges = dependency_edges(compile_text(topo(deps=", depends_on: [p1, d1]")).topology)
    assert edges["d0"] == ("p1", "d1", "p0")
    assert start_levels(edges) == (("p0", "p1"), ("d1",), ("d0",))


def test_the_plan_shows_the_order(tmp_path):
    run = run_cli("plan", write(tmp_path, topo()))
    assert run.code == 0, run.err
    assert "start order: [p0, p1] -> [d0, d1]" in run.out
    run = run_cli("plan", str(CONFIGS / "llm-datadist-link.yaml"))
    assert "start order: [prompt-0, prompt-1] -> [decoder-0, decoder-1]" in run.out


def test_a_prompt_instance_without_a_probe_gets_none_and_a_warning(tmp_path):
    # no implied TCP probe of the listen address: on NPU servers the host does not reach the
    # device (RoCE) plane, so such a probe would hold every decoder back forever
    plan = compile_text(topo()).plan
    assert {p.owner: p.probe for hp in plan.hosts for p in hp.programs}["p0"] is None
    run = run_cli("validate", write(tmp_path, topo()))
    assert run.code == 0
    assert "warning: instances[1].name: prompt instance p0 has no probe" in run.err
    assert "prompt instance p1 has no probe" in run.err and "instance d0" not in run.err


def test_a_probe_the_topology_gives_wins():
    plan = compile_text(topo(probe=", probe: {http: ':8000/health'}")).plan
    probes = {p.owner: p.probe for hp in plan.hosts for p in hp.programs}
    assert probes["p0"] == Probe(http=":8000/health")


def test_the_decoder_side_learns_where_each_prompt_listens():
    plan = compile_text(topo()).plan
    files = {f.path: json.loads(f.content) for hp in plan.hosts for f in hp.files if f.path.startswith("llm_")}
    d0 = files["llm_datadist/cluster_3.json"]
    assert [(lk["comm_name"], lk["prompt_listen"]) for lk in d0["links"]] == [
        ("l13", {"1": "10.9.0.1:26000"}), ("l23", {"2": "10.9.0.2:26000"})]


@pytest.mark.parametrize("restarted, expected", [
    (["p0"], ["d0", "d1"]),      # every decoder linked to p0, in link order
    (["p1"], ["d0"]),
    (["d0"], []),                # a decoder relinks by itself; the prompts keep listening
    (["p0", "d0"], ["d1"]),      # d0 restarts anyway
    (["p0", "p1", "d0", "d1"], []),
])
def test_decoders_relink_after_their_prompt_restarts(restarted, expected):
    assert relink_after(compile_text(topo()).plan.links, restarted) == expected


def test_a_cycle_through_a_link_names_the_link(tmp_path):
    text = topo().replace("{name: p0, hosts: [a], devices: [0], command: [run]}",
                          "{name: p0, hosts: [a], devices: [0], command: [run], depends_on: [d1]}")
    assert_error(tmp_path, text, "F:16:70: error: instances[1].depends_on: dependency cycle: p0 -> d1 -> p0 "
                                 "(d1 -> p0 because link l14 makes the decoder d1 wait for the prompt p0)")


def test_an_instance_on_both_sides_is_refused(tmp_path):
    text = topo().replace("{id: 4, instance: d1, role: decoder}", "{id: 4, instance: p1, rank: 0, role: decoder}")
    text = text.replace("{id: 2, instance: p1, role: prompt, listen_port: 26000}",
                        "{id: 2, instance: p1, rank: 0, role: prompt, listen_port: 26000}")
    lines = assert_error(tmp_path, text, "llm_datadist.clusters[3].role: cluster 4 is a decoder in instance p1, "
                                         "which also holds prompt cluster 2; an instance is either on the prompt "
                                         "side (listens) or on the decoder side (links)")
    assert lines[-1] == "2 errors; nothing was changed", lines  # and (p1, 0) holds two clusters


def test_a_link_without_a_prompt_is_refused(tmp_path):
    text = topo().replace("{name: l14, clusters: [1, 4]}", "{name: l34, clusters: [3, 4]}")
    assert_error(tmp_path, text, "F:28:29: error: llm_datadist.links[2].clusters: link l34 has only decoder "
                                 "clusters; a link needs a prompt cluster that listens and a decoder cluster "
                                 "that links to it")


def test_a_roll_relinks_decoders_after_their_prompt_never_in_its_batch():
    from launcher.deploy.rolling import roll_batches
    links = compile_text(topo()).plan.links
    # the decoders linked to p0 (d0, d1) and p1 (d0) join the roll, after both prompts
    assert roll_batches(links, ["p0", "p1"], 1) == [["p0"], ["p1"], ["d0"], ["d1"]]
    assert roll_batches(links, ["p0", "p1"], 3) == [["p0", "p1"], ["d0", "d1"]]
    assert roll_batches(links, ["d0", "p1"], 2) == [["p1"], ["d0"]]  # d0 waits for p1 even if named first
    assert roll_batches(links, ["d1", "d0"], 2) == [["d1", "d0"]]  # decoders alone: nothing to relink
