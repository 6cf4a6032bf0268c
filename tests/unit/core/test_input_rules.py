"""Issue 21, input: integers are integers, strings hold only what their place carries safely, and
the schema check never fails open. Each error is at its line:col and names its rule."""
from __future__ import annotations

import fastjsonschema
import pytest

from launcher.core.errors import SpecErrors
from launcher.core.pipeline import compile_text, rendered
from launcher.core.schema import check_schema, compiled_check
from launcher.core.yamlsrc import Source, load_yaml

TOPO = """\
version: 1
name: t
defaults:
  deploy_dir: {deploy_dir}
  agent_port: {agent_port}
hosts:
  - {{name: {host}, address: 10.1.0.1, devices: {{0: 10.9.0.1, 1: 10.9.0.2}}}}
instances:
  - name: x
    hosts: [{host}]
    devices: {devices}
    command: [serve, {arg}]
    rendezvous_port: {port}
    env: {{A: {env}}}
    probe: {{timeout: {timeout}}}
"""
GOOD = {"deploy_dir": "/srv/x", "agent_port": "29390", "host": "a", "devices": "[0, 1]", "arg": "x",
        "port": "29610", "env": "v", "timeout": "5.0"}


def errors(**changes: str) -> list[str]:
    text = TOPO.format(**{**GOOD, **changes})
    with pytest.raises(SpecErrors) as err:
        compile_text(text, "F", check=compiled_check())
    return [str(d) for d in err.value.errors]


def test_the_base_topology_is_valid():
    result = compile_text(TOPO.format(**GOOD), "F", check=compiled_check())
    assert dict(result.plan.hosts[0].programs[0].env)["A"] == "v"


# --- 1. integers are integers ---------------------------------------------------------------
@pytest.mark.parametrize("key, value, where", [
    ("agent_port", "29390.0", "F:5:15: error: defaults.agent_port: expected integer, got number 29390.0"),
    ("port", "29610.0", "F:13:22: error: instances[0].rendezvous_port: expected integer, got number 29610.0"),
    ("devices", "[0, 1.0]", "F:11:18: error: instances[0].devices[1]: expected integer, got number 1.0"),
    ("agent_port", "2.939e+4", "F:5:15: error: defaults.agent_port: expected integer, got number 29390.0"),
])
def test_a_float_where_an_integer_belongs_is_refused_at_its_place(key, value, where):
    found = errors(**{key: value})
    assert found == [where + " (rule integer: an integer is written without a decimal point or exponent)"]


def test_a_float_in_a_number_field_still_counts():
    compile_text(TOPO.format(**{**GOOD, "timeout": "5"}), "F", check=compiled_check())
    compile_text(TOPO.format(**{**GOOD, "timeout": "0.5"}), "F", check=compiled_check())


def test_without_a_float_in_the_document_the_slow_pass_is_not_needed_and_ints_pass():
    # the compiled check alone (draft 7) would take 29390.0 for an integer: check_schema must not
    src = load_yaml(TOPO.format(**{**GOOD, "agent_port": "29390.0"}), "F")
    compiled_check()(src.data)  # the library's own verdict, for the record: accepted
    assert [str(d) for d in check_schema(src)][0].startswith("F:5:15: error: defaults.agent_port: expected integer")


# --- 2. control characters and NUL ---------------------------------------------------------
NO_CONTROL = ("(rule no-control: control characters only in env values, argv items and probe.log; "
              "this string goes into a path, a name or a config file)")
NO_NUL = "(rule no-nul: NUL and lone surrogates nowhere: they cannot pass through an environment or be written as UTF-8)"


def test_a_newline_in_deploy_dir_cannot_write_a_section_into_supervisord_conf():
    found = errors(deploy_dir='"/srv/x\\n[program:evil]\\ncommand=/bin/id"')
    assert found == [f"F:4:15: error: defaults.deploy_dir: U+000A (line feed) at character 7 of the value is not "
                     f"allowed here {NO_CONTROL}"]


@pytest.mark.parametrize("value, shown", [
    ('"/srv/a ;b"', "'/srv/a ;b'"),        # supervisord reads ` ;` as the start of a comment
    ("\"/srv/$(id)\"", "'/srv/$(id)'"),    # the systemd unit has it inside sh -c '... \"%f\" ...'
    ("\"/srv/a'b\"", '"/srv/a\'b"'),
])
def test_deploy_dir_holds_nothing_that_its_unquoted_places_would_read_otherwise(value, shown):
    assert errors(deploy_dir=value) == [
        f"F:4:15: error: defaults.deploy_dir: {shown} is not allowed here (rule deploy-dir: no whitespace, quotes, "
        "backslash, $ or `; the path is written unquoted into supervisord.conf and the systemd unit)"]


@pytest.mark.parametrize("changes, where, char", [
    ({"host": '"a\\n"'}, "F:7:12: error: hosts[0].name", "U+000A (line feed) at character 2"),
    ({"host": '"a\\t"'}, "F:7:12: error: hosts[0].name", "U+0009 (tab) at character 2"),
    ({"deploy_dir": '"/srv/x\\u2028y"'}, "F:4:15: error: defaults.deploy_dir", "U+2028 (line separator) at character 7"),
    ({"deploy_dir": '"/srv/x\\x85"'}, "F:4:15: error: defaults.deploy_dir", "U+0085 (next line) at character 7"),
    ({"deploy_dir": '"/srv/\\rx"'}, "F:4:15: error: defaults.deploy_dir", "U+000D (carriage return) at character 6"),
])
def test_a_control_character_in_a_name_or_path_is_refused_at_its_place_with_the_rule(changes, where, char):
    found = errors(**changes)
    assert f"{where}: {char} of the value is not allowed here {NO_CONTROL}" in found
    assert not any("must match" in e for e in found)  # said once, by the rule


def test_a_control_character_in_an_env_key_is_refused():
    found = errors(env='v, "B\\n": w')
    assert found == [f"F:14:17: error: instances[0].env.B\\n: U+000A (line feed) at character 2 of the key is not "
                     f"allowed here {NO_CONTROL}"]


@pytest.mark.parametrize("changes, where", [
    ({"env": '"x\\0y"'}, "F:14:14: error: instances[0].env.A: U+0000 (NUL) at character 2"),
    ({"arg": '"x\\0"'}, "F:12:22: error: instances[0].command[1]: U+0000 (NUL) at character 2"),
])
def test_nul_is_refused_everywhere_even_where_other_control_characters_pass(changes, where):
    assert errors(**changes) == [f"{where} of the value is not allowed here {NO_NUL}"]


def test_a_lone_surrogate_is_refused_like_nul():
    # libyaml refuses a "\\ud800" escape; PyYAML's pure-Python loader (used without libyaml) keeps it
    from launcher.core.strings import check_strings
    src = Source("F", {"version": 1, "name": "t", "hosts": [{"name": "a", "address": "x", "server_id": "\ud800"}]})
    assert [str(d) for d in check_strings(src)] == [
        f"error: hosts[0].server_id: U+D800 (surrogate) at character 1 of the value is not allowed here {NO_NUL}"]


def test_env_values_and_argv_keep_every_other_byte_newlines_included():
    env = "\"a\\nb\\tc\\r\\u2028 'q' $(x) \\x1b\\x7f\""
    result = compile_text(TOPO.format(**{**GOOD, "env": env, "arg": '"l1\\nl2"'}), "F", check=compiled_check())
    program = result.plan.hosts[0].programs[0]
    assert dict(program.env)["A"] == "a\nb\tc\r\u2028 'q' $(x) \x1b\x7f"
    assert program.argv[-1] == "l1\nl2"
    _, files = rendered(result.plan)
    assert b"export A='a\nb\tc\r\xe2\x80\xa8 '\"'\"'q'\"'\"' $(x) \x1b\x7f'\n" in files["a"]["env/x.env"].content


def test_a_non_finite_number_is_refused_outside_env_and_argv():
    found = errors(timeout=".nan")
    assert found == ["F:15:22: error: instances[0].probe.timeout: nan is not allowed here "
                     "(rule finite-numbers: .nan and .inf only in env values and argv items)"]
    compile_text(TOPO.format(**{**GOOD, "env": ".inf"}), "F", check=compiled_check())


def test_x_anchors_are_free_form_but_hold_no_nul():
    text = TOPO.format(**GOOD) + 'x-anchors: {note: "tab\\there\\nand a line"}\n'
    compile_text(text, "F", check=compiled_check())
    with pytest.raises(SpecErrors) as err:
        compile_text(text.replace("\\there", "\\0here"), "F", check=compiled_check())
    assert str(err.value.errors[0]).startswith("F:16:19: error: x-anchors.note: U+0000 (NUL)")


def test_an_instance_or_service_on_no_host_is_refused():
    # draft 7 ignores keywords beside $ref: the `minItems: 1` next to it never applied, and
    # `hosts: []` ended in an IndexError in expand (found by test_mutations)
    text = TOPO.format(**GOOD).replace("hosts: [a]", "hosts: []") + \
        "services:\n  - {name: s, kind: generic, hosts: [], command: [x]}\n"
    with pytest.raises(SpecErrors) as err:
        compile_text(text, "F", check=compiled_check())
    assert [str(d) for d in err.value.errors] == ["F:10:12: error: instances[0].hosts: must not be empty",
                                                  "F:17:37: error: services[0].hosts: must not be empty"]


# --- 4. the schema check never fails open ----------------------------------------------------
def test_when_the_compiled_check_refuses_and_the_thorough_pass_says_nothing_it_is_still_an_error():
    src = load_yaml(TOPO.format(**GOOD), "F")

    def refuses(data):  # a compiled check that knows better than jsonschema (e.g. its `$` is `\Z`)
        raise fastjsonschema.JsonSchemaValueException(
            "data.hosts[0].name must match pattern ^a$", value="a", name="data.hosts[0].name",
            definition={"type": "string", "pattern": "^b$"}, rule="pattern")

    assert [str(d) for d in check_schema(src, refuses)] == [
        "F:7:12: error: hosts[0].name: 'a' is not valid here (must match ^b$)"]


def test_a_name_ending_in_a_newline_is_refused_though_jsonschema_lets_its_pattern_pass():
    # jsonschema's pattern `$` matches before a final newline; fastjsonschema's (\\Z) does not
    src = load_yaml(TOPO.format(**{**GOOD, "host": '"a\\n"'}).replace("hosts: [\"a\\n\"]", "hosts: [a]"), "F")
    with pytest.raises(fastjsonschema.JsonSchemaException):
        compiled_check()(src.data)
    assert [str(d) for d in check_schema(src)] == [
        "F:7:12: error: hosts[0].name: 'a\\n' is not valid here (must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$)"]
