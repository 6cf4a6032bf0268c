"""Property tests for rank numbering: unique, contiguous 0..N-1, host order then device order,
consistent between env and ranktable, and deterministic."""
from __future__ import annotations


import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.core.pipeline import compile_text, rendered


@st.composite
def topologies(draw):
    n_hosts = draw(st.integers(1, 6))
    per_host = draw(st.integers(1, 8))
    ids = draw(st.lists(st.integers(0, 15), min_size=per_host, max_size=per_host, unique=True))
    hosts = [{"name": f"h{i}", "address": f"10.1.{i}.1",
              "devices": {d: f"10.9.{i}.{d + 1}" for d in draw(st.permutations(ids))}}
             for i in range(n_hosts)]
    # Split each host's devices into instances spanning a random, shuffled subset of hosts.
    n_inst = draw(st.integers(1, min(3, per_host)))
    chunks = [sorted(ids)[k::n_inst] for k in range(n_inst)]
    instances = []
    for k, devs in enumerate(chunks):
        order = draw(st.permutations([h["name"] for h in hosts]))
        span = order[:draw(st.integers(1, n_hosts))]
        instances.append({"name": f"m{k}", "hosts": list(span), "devices": devs, "command": ["run"]})
    return {"version": 1, "name": "prop", "hosts": hosts, "instances": instances}


@settings(max_examples=150, deadline=None)
@given(topologies())
def test_rank_numbering(doc):
    text = yaml.safe_dump(doc)
    plan = compile_text(text, "prop.yaml").plan
    for inst_doc, inst in zip(doc["instances"], plan.instances):
        ranks = [r.rank for r in inst.ranks]
        assert ranks == list(range(len(ranks)))  # unique and contiguous from 0
        assert inst.world_size == len(inst_doc["hosts"]) * len(inst_doc["devices"])
        # host order as listed in the instance, then ascending device id
        expected = [(h, d) for h in inst_doc["hosts"] for d in sorted(inst_doc["devices"])]
        assert [(r.host, r.device_id) for r in inst.ranks] == expected
        table = inst.ranktable.value()
        table_ranks = [int(d["rank_id"]) for s in table["server_list"] for d in s["device"]]
        assert table_ranks == ranks
        assert table["server_count"] == str(len(inst_doc["hosts"]))
        assert all(isinstance(v, str) for s in table["server_list"] for d in s["device"] for v in d.values())
    # every rank program's env agrees with the plan
    for hp in plan.hosts:
        for p in hp.programs:
            env = dict(p.env)
            inst = plan.instance(p.owner)
            info = inst.ranks[p.rank]
            assert (info.host, info.device_id, info.local_rank) == (hp.host.name, int(env["DEVICE_ID"]),
                                                                   int(env["LOCAL_RANK"]))
            assert env["WORLD_SIZE"] == str(inst.world_size)
    # deterministic: same text, byte-identical output
    again = compile_text(text, "prop.yaml").plan
    assert rendered(plan) == rendered(again)
    assert [i.ranktable for i in plan.instances] == [i.ranktable for i in again.instances]
