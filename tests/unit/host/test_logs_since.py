"""`logs` on the host: the last N lines, then only what came after (for `logs -f`), rotation, partial lines."""
from __future__ import annotations

from launcher.host.actions import act_logs


def test_follow_reads_only_what_came_after_the_last_read(tmp_path):
    log = tmp_path / "logs" / "p.log"
    log.parent.mkdir()
    log.write_text("".join(f"line{i}\n" for i in range(10)))
    first = act_logs(str(tmp_path), ["3", "p"])
    assert first["logs"] == {"p": ["line7", "line8", "line9"]}
    with log.open("a") as fh:
        fh.write("line10\nline11\npart")  # the last line is not complete yet
    second = act_logs(str(tmp_path), ["0", f"p@{first['offsets']['p']}"])
    assert second["logs"] == {"p": ["line10", "line11"]}
    with log.open("a") as fh:
        fh.write("ial\n")
    third = act_logs(str(tmp_path), ["0", f"p@{second['offsets']['p']}"])
    assert third["logs"] == {"p": ["partial"]}
    assert act_logs(str(tmp_path), ["0", f"p@{third['offsets']['p']}"])["logs"] == {"p": []}


def test_a_rotated_log_is_read_from_its_start(tmp_path):
    log = tmp_path / "logs" / "p.log"
    log.parent.mkdir()
    log.write_text("old line that was long enough\n" * 3)
    offset = act_logs(str(tmp_path), ["1", "p"])["offsets"]["p"]
    log.write_text("new0\n")  # supervisord rotated it: shorter than where we were
    assert act_logs(str(tmp_path), ["0", f"p@{offset}"])["logs"] == {"p": ["new0"]}


def test_a_missing_log_has_no_lines(tmp_path):
    reply = act_logs(str(tmp_path), ["5", "nope"])
    assert reply == {"logs": {"nope": []}, "offsets": {"nope": 0}}
