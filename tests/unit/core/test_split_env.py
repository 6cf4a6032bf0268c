"""render.split_env: its positional fast path (the shared pairs around each program's own) gives
the set intersection's answer, whatever the envs look like."""
from __future__ import annotations

import random
from itertools import filterfalse
from types import SimpleNamespace
from typing import Any

from launcher.core.render import split_env


def _by_sets(programs: list[Any]) -> tuple[list, list]:
    shared = set(programs[0].env).intersection(*(p.env for p in programs[1:]))
    return list(filter(shared.__contains__, programs[0].env)), \
        [list(filterfalse(shared.__contains__, p.env)) for p in programs]


def _pairs(rng: random.Random, count: int) -> tuple:
    return tuple((rng.choice("ABCD"), rng.choice(["0", "1", ""])) for _ in range(count))


def test_split_env_is_the_set_intersection():
    rng = random.Random(7)
    for _ in range(20000):
        head, tail, own = _pairs(rng, rng.randint(0, 3)), _pairs(rng, rng.randint(0, 3)), rng.randint(0, 3)
        envs = []
        for _ in range(rng.randint(1, 4)):
            mine = _pairs(rng, own if rng.random() < 0.9 else rng.randint(0, 3))
            # mostly the same pair objects; sometimes equal ones made anew, or in another order
            around = head if rng.random() < 0.9 else tuple((k, v + "") for k, v in head)
            envs.append(around + mine + tail if rng.random() < 0.95 else mine + around + tail)
        programs = [SimpleNamespace(env=e) for e in envs]
        assert split_env(programs) == _by_sets(programs), envs  # type: ignore[arg-type]
