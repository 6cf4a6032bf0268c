"""jsonfmt's layout is JSON whatever fits on a line: what json.dumps reads, key for key."""
from __future__ import annotations

import json

from launcher.core import jsonfmt


def test_a_document_laid_out_over_lines_is_the_json_of_its_value():
    doc = {"server_count": "2", "server_list": [
        {"server_id": f"10.0.0.{s}", "device": [{"device_id": str(d), "device_ip": f"29.0.{s}.{d}",
                                                 "rank_id": str(s * 8 + d)} for d in range(8)]}
        for s in range(2)], "status": "completed", "version": "1.0"}
    text = jsonfmt.dumps(doc)
    assert json.loads(text) == doc
    assert text.count("\n") > 16  # one device per line: not one line


def test_keys_that_are_not_strings_are_quoted_on_one_line_and_over_lines_alike():
    short, long = {1: "a"}, {1: "x" * 120, 2: None}
    assert json.loads(jsonfmt.dumps(short)) == {"1": "a"}
    text = jsonfmt.dumps(long)
    assert "\n" in text  # laid out over lines
    assert json.loads(text) == json.loads(json.dumps(long))
