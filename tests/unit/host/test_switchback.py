"""The agent's `switch-back` (a rollback relayed to a host whose SSH is lost) refuses what is not
a rollback of this deployment: a path for an id, a generation or runtime the host does not have,
and it runs the host's own `switch` with compare-and-swap (a later `up`'s switch is not undone)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.host.switchback import switch_back


def body(**kw: object) -> dict:
    return {"op": "switch-back", "generation": "g1", "runtime": "r1", "if_current": "g2", **kw}


@pytest.mark.parametrize("field,value", [("generation", "../../etc"), ("runtime", "a/b"), ("if_current", ""),
                                         ("generation", None), ("runtime", "..")])
def test_refuses_an_id_that_is_not_a_name(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ValueError, match="not a generation or runtime id"):
        switch_back(str(tmp_path), body(**{field: value}))


def test_refuses_a_generation_or_runtime_the_host_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="generation g1 is not on this host"):
        switch_back(str(tmp_path), body())
    os.makedirs(tmp_path / "gens" / "g1")
    with pytest.raises(ValueError, match="runtime r1 is not on this host"):
        switch_back(str(tmp_path), body())


def test_a_rollback_of_a_switch_that_did_not_happen_here_changes_nothing(tmp_path: Path) -> None:
    from launcher.host.actions import act_switch
    for g in ("g0", "g1", "g2"):
        os.makedirs(tmp_path / "gens" / g)
    os.makedirs(tmp_path / "state")
    os.symlink("gens/g1", tmp_path / "current")  # a later `up` switched here to g1 meanwhile
    reply = act_switch(str(tmp_path), ["g0", "r1", "--if-current=g2"])
    assert reply == {"previous": "g1", "generation": "g1", "unchanged": True}
    assert os.readlink(tmp_path / "current") == "gens/g1"
