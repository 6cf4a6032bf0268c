"""A Plan is immutable all the way down: hashable, and every attempt to change it raises."""
from __future__ import annotations

import dataclasses
import inspect
import json

import pytest

from launcher.deploy.files import compile_file
from launcher.core.plan import File, FrozenMap, JsonDoc, Plan, Program, RankInfo
from launcher.core.ranktable import RankSlot
from tests.helpers import CONFIGS

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def plan_of(config) -> Plan:
    return compile_file(str(config)).plan  # with the files it names (a MindIE base config)


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_every_plan_is_hashable_and_equal_to_itself_compiled_again(config):
    plan, again = plan_of(config), plan_of(config)
    assert isinstance(hash(plan), int)
    assert plan == again and hash(plan) == hash(again)
    assert len({plan, again}) == 1


def _containers(value, path="plan"):
    """Every value reachable from a plan, with where it is."""
    yield path, value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _containers(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, FrozenMap):
        for k, v in value.items():
            yield from _containers(v, f"{path}[{k!r}]")
    elif isinstance(value, tuple):
        for i, v in enumerate(value):
            yield from _containers(v, f"{path}[{i}]")


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.stem)
def test_nothing_reachable_from_a_plan_is_mutable(config):
    mutable = [(where, type(v).__name__) for where, v in _containers(plan_of(config))
               if isinstance(v, (dict, list, set, bytearray))]
    assert not mutable
    for where, v in _containers(plan_of(config)):
        hash(v)  # raises TypeError naming the type if anything is not hashable


def test_mutating_a_plan_raises():
    plan = plan_of(CONFIGS / "pd-2p2d-multihost.yaml")
    inst = plan.instances[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.hosts = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        inst.ranktable = JsonDoc(b"{}")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        inst.ranktable.text = b"{}"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.hosts[0].programs[0].env = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.pd_global["pd"] = JsonDoc(b"{}")  # type: ignore[index]
    with pytest.raises(TypeError):
        del plan.pd_global["pd"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        plan.depends["decode-0"] = ()  # type: ignore[index]
    with pytest.raises(AttributeError):
        plan.depends._index = {}  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        plan.depends._index["x"] = ()  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        plan.instances[0] = inst  # type: ignore[index]


def test_a_ranktable_value_is_a_copy_the_plan_does_not_share():
    plan = plan_of(CONFIGS / "mindie-atb-2x8.yaml")
    inst = plan.instances[0]
    table = inst.ranktable.value()
    table["server_list"].clear()
    assert inst.ranktable.value()["server_list"]
    # the bytes the plan keeps are the bytes the hosts get
    files = {f.path: f.content for hp in plan.hosts for f in hp.files}
    assert files[inst.ranktable_path] == inst.ranktable.text
    assert json.loads(inst.ranktable.text) == inst.ranktable.value()


def test_a_plan_built_from_plain_dicts_is_frozen_too():
    plan = Plan("d", (), (), (), {"g": JsonDoc(b"{}\n")}, depends={"a": ("b",)})
    assert isinstance(plan.pd_global, FrozenMap) and isinstance(plan.depends, FrozenMap)
    assert hash(plan) == hash(Plan("d", (), (), (), FrozenMap({"g": JsonDoc(b"{}\n")}),
                                   depends=FrozenMap({"a": ("b",)})))


def test_frozen_map_is_a_read_only_ordered_mapping():
    m = FrozenMap([("b", 1), ("a", 2)])
    assert list(m) == ["b", "a"] and m["a"] == 2 and len(m) == 2 and "b" in m and m.get("z", 0) == 0
    assert m == {"a": 2, "b": 1}
    assert m != FrozenMap([("a", 2), ("b", 1)])  # order is part of it, as in every rendered file
    assert not FrozenMap() and hash(FrozenMap()) == hash(FrozenMap({}))


def test_a_plan_survives_copy_and_pickle():
    import copy
    import pickle
    plan = plan_of(CONFIGS / "pd-2p2d-multihost.yaml")
    for again in (copy.deepcopy(plan), pickle.loads(pickle.dumps(plan))):
        assert again == plan and hash(again) == hash(plan)


@pytest.mark.parametrize("cls", [File, Program, RankInfo, RankSlot])
def test_a_hand_written_init_sets_each_field_to_its_argument(cls):
    """These write their __init__ out (each slot set through its descriptor, for
    speed): it takes the fields in order, with their defaults, and sets each to its own argument."""
    own = dataclasses.fields(cls)
    params = inspect.signature(cls).parameters
    assert list(params) == [f.name for f in own]
    assert [p.default for p in params.values()] == \
        [inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in own]
    values = {f.name: object() for f in own}
    made = cls(**values)
    assert all(getattr(made, name) is value for name, value in values.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, own[0].name, 1)
