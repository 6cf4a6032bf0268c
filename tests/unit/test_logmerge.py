"""`logs` over several programs: lines merged in time order by the stamps the stacks print."""
from __future__ import annotations

import pytest

from launcher.cli.logmerge import line_time, merged

YEAR = 2026


@pytest.mark.parametrize("line, seconds", [
    ("2026-12-07 06:46:31,123 - INFO - torch_npu ...", 1796625991.123),       # python logging (ATB, torch)
    ("2026-12-07T06:46:31.5Z worker up", 1796625991.5),                          # ISO 8601, UTC
    ("[2026-12-07 14:46:31.250+08:00] [4312] [INFO] [llm] server", 1796625991.25),  # MindIE, with an offset
    ("INFO 12-07 06:46:31 [api_server.py:1024] Starting vLLM", 1796625991.0),  # vLLM: no year
    ("I1207 06:46:31.750000  4312 hccl.cc:12] init", 1796625991.75),            # glog
])
def test_the_stacks_stamps_are_read(line, seconds):
    assert line_time(line, YEAR) == pytest.approx(seconds)


@pytest.mark.parametrize("line", ["Traceback (most recent call last):", "  File \"x.py\", line 1",
                                  "2026-13-45 06:46:31 not a date", "", "INFO no time here"])
def test_a_line_without_a_stamp_has_no_time(line):
    assert line_time(line, YEAR) is None


def test_ranks_are_interleaved_by_time_and_a_traceback_stays_with_its_line():
    r0 = ["2026-12-07 06:00:01,000 r0 start", "2026-12-07 06:00:04,000 r0 crash", "Traceback ...", "  boom",
          "2026-12-07 06:00:05,000 r0 after"]
    r1 = ["2026-12-07 06:00:02,000 r1 start", "2026-12-07 06:00:04,500 r1 waits"]
    out = merged([("h1/a-r0", r0), ("h2/a-r1", r1)], YEAR)
    assert [line for _, line in out] == [r0[0], r1[0], r0[1], "Traceback ...", "  boom", r1[1], r0[4]]
    assert [p for p, _ in out][:2] == ["h1/a-r0", "h2/a-r1"]


def test_one_log_keeps_its_order_even_when_its_stamps_go_back():
    lines = ["2026-12-07 06:00:05,000 b", "2026-12-07 06:00:01,000 a (a clock step back)", "no stamp"]
    assert [line for _, line in merged([("h/p", lines)], YEAR)] == lines


def test_unstamped_logs_keep_the_plans_order():
    out = merged([("h1/x", ["one", "two"]), ("h2/y", ["three"])], YEAR)
    assert out == [("h1/x", "one"), ("h1/x", "two"), ("h2/y", "three")]
