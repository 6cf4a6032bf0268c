"""The lock file's text: core formats it and parses it back, naming the file in every error."""
from __future__ import annotations

import pytest

from launcher.core.errors import SpecErrors
from launcher.core.lockfile import lock_path, lock_text, parse_lock

FACTS = {("node1", 1): "10.0.0.2", ("node0", 0): "10.0.0.1"}


def test_lock_text_parses_back_to_the_same_facts():
    text = lock_text(FACTS)
    assert text.startswith("# Written by `launcher discover`")
    assert parse_lock(text, "t.lock.yaml") == FACTS
    assert lock_path("dir/topo.yaml") == "dir/topo.lock.yaml" and lock_path("topo") == "topo.lock.yaml"


def test_a_yaml_error_names_the_lock_file_as_when_yaml_read_the_file(tmp_path):
    with pytest.raises(SpecErrors) as exc:
        parse_lock("devices: [\n  x: y\n", "t.lock.yaml")
    msg = str(exc.value)
    assert msg.startswith("t.lock.yaml:1:1: error: cannot read the lock file: while parsing a flow sequence\n"
                          '  in "t.lock.yaml", line 1, column 10')
    assert "^" not in msg  # no snippet: the same words as reading the file gave


def test_a_lock_file_without_devices():
    with pytest.raises(SpecErrors, match="the lock file has no `devices:` mapping"):
        parse_lock("version: 1\n", "t.lock.yaml")



@pytest.mark.parametrize("text, where", [
    ("version: 1\ndevices:\n  node0: [10.0.0.1, 10.0.0.2]\n",
     "t.lock.yaml:3:10: error: devices.node0: must map device ids to IPs"),
    ("version: 1\ndevices:\n  node0:\n    0: 10.0.0.1\n    npu1: 10.0.0.2\n",
     "t.lock.yaml:5:11: error: devices.node0.npu1: device id 'npu1' is not a non-negative integer"),
    ("version: 1\ndevices:\n  node0:\n    0: {ip: 10.0.0.1}\n",
     "t.lock.yaml:4:8: error: devices.node0.0: device 0: the IP must be a string"),
])
def test_a_malformed_lock_file_is_an_error_at_its_line(text, where):
    with pytest.raises(SpecErrors) as exc:
        parse_lock(text, "t.lock.yaml")
    assert str(exc.value).startswith(where)


def test_a3_facts_round_trip_and_an_a2_lock_file_reads_as_before():
    from launcher.core.load import SuperPodFacts
    from launcher.core.lockfile import parse_superpod
    a3 = SuperPodFacts({"a3-0": "0"}, {("a3-0", 1): 104857601, ("a3-0", 0): 104857600})
    text = lock_text(FACTS, a3)
    assert parse_lock(text, "t.lock.yaml") == FACTS
    assert parse_superpod(text, "t.lock.yaml") == a3
    assert lock_text(FACTS, SuperPodFacts()) == lock_text(FACTS)  # no A3 facts: the same text as before
    assert parse_superpod(lock_text(FACTS), "t.lock.yaml") == SuperPodFacts()


def test_a3_sections_of_the_wrong_shape():
    from launcher.core.lockfile import parse_superpod
    with pytest.raises(SpecErrors, match="super_pods / super_device_ids / nic_ips are not host -> id mappings"):
        parse_superpod("version: 1\ndevices: {}\nsuper_device_ids: {a: [1, 2]}\n", "t.lock.yaml")
