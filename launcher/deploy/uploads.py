"""`up`'s upload round: one `prepare` per host that needs anything (runtime, generation, agent key).

A blank host (nothing deployed, so nothing to protect) is also switched by its upload, which
starts supervisord there and the first-level owners that live only on blank hosts: one round
trip and one Python start less per host. If any host fails, the blank ones are put back to
nothing (`switch -`).

When the lock host had nothing of the deployment (the lock's reply says so), `up` guesses that
no host has (a first deploy, or one after `down --purge`) and sends this round without reading
the hosts' state first: every upload carries ``--if-blank``, so a host that does have something
touches nothing and says so. Then the hosts the guess switched are put back to nothing (`down
--purge`: not even the agent key stays) and `up` reads every host's state and uploads as usual:
a wrong guess costs a round, never a change to a host that had something.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.plan import File
from .records import HostState
from .remote import HostClient, blank_state
from .runtime import build_runtime, payload
from .session import Progress, Session, owners_on
from .transport import HostsFailed

Files = Mapping[str, Mapping[str, File]]  # host -> path -> file of a rendered generation


@dataclass(frozen=True)
class Upload:
    replies: dict[str, dict[str, Any]]  # host -> its `prepare` reply
    needs: frozenset[str]               # hosts that were sent anything
    blank: frozenset[str]               # hosts switched by their upload
    early: tuple[str, ...]              # owners of the first level that start on blank hosts only
    together: tuple[str, ...]           # ... of those, instances on several hosts (started through their leader)


def guessed_blank(session: Session) -> dict[str, HostState]:
    """Every host's state if the lock host's blankness holds for all of them."""
    return {h: HostState.from_json(blank_state(c.root, True)) for h, c in session.clients.items()}


def upload_round(session: Session, files: Files, generation: str, old: Mapping[str, HostState],
                 checked: set[str], say: Progress, if_blank: bool = False) -> Upload | None:
    """Upload to every host of ``old`` that needs it (``checked``: instances the link check must
    pass before they start). Raises HostsFailed, after putting the blank hosts back to nothing.
    With ``if_blank`` (``old`` guessed by guessed_blank): None when a host was not blank, after
    putting back the hosts that were."""
    plan = session.plan
    key, key_hosts, force_key = plan_secret(session, old)
    needs = {h for h, s in old.items() if s.runtime_missing or s.generation != generation or h in key_hosts}
    blank = {h for h, s in old.items() if s.blank} & needs
    owners = owners_on(plan)
    early = [o for o in (plan.levels[0] if plan.levels else [])
             if o in owners and o not in checked and set(owners[o]) <= blank]
    # ... except an instance on several hosts: it starts once all of them are ready, all at once
    # through its leader's agent; started in each upload, it would start over the whole round
    together = [o for o in early if len(owners[o]) > 1 and o in {i.name for i in plan.instances}]
    early_in_upload = [o for o in early if o not in together]

    def prepare(c: HostClient) -> dict[str, Any]:
        st = old[c.name]
        data = payload(build_runtime() if st.runtime_missing else None,
                       files[c.name] if st.generation != generation else None,
                       key if c.name in key_hosts else None)
        extra: tuple[str, ...] = ("--force-secret",) if force_key else ()
        if c.name in blank:
            groups = [o for o in early_in_upload if c.name in owners[o]]
            extra += (f"--switch={build_runtime().id}", *((f"--start={','.join(groups)}",) if groups else ()))
        if if_blank:
            extra += ("--if-blank",)
        return c.call("prepare", generation, *extra, stdin=data)

    replies, failures = session.fan_out(prepare, sorted(needs))
    kept = {h for h, r in replies.items() if r.get("not_blank")}
    # a blank host the upload never reached (no SSH session) was not switched: nothing to put back there
    switched = blank - kept - {h for h, e in failures.items() if getattr(e, "unreached", False)}
    if failures:
        if switched:
            undo_blank(session, switched, say)
            say("  upload failed; the blank hosts it had switched were put back to nothing")
        raise HostsFailed(failures, "upload")
    if kept:  # the others were blank: back to exactly that (no key left behind to disagree with theirs)
        _, failed = session.fan_out(lambda c: c.call("down", "--purge"), sorted(switched))
        if failed:
            raise HostsFailed(failed, "putting back the hosts an upload had switched (they may run this generation)")
        say(f"  {', '.join(sorted(kept))} already {'has' if len(kept) == 1 else 'have'} part of this deployment "
            "(untouched); reading every host's state first")
        return None
    return Upload(replies, frozenset(needs), frozenset(blank), tuple(early), tuple(together))


def plan_secret(session: Session, states: Mapping[str, HostState]) -> tuple[bytes | None, set[str], bool]:
    """The agent key every host must hold: (key, hosts to send it to, replace an existing one)."""
    ids = {h: s.secret_id for h, s in states.items()}
    have = {i for i in ids.values() if i}
    if len(have) == 1 and all(ids.values()):
        return None, set(), False
    if len(have) == 1:  # a new host joins: it gets the key the others already share
        holder = next(h for h, i in ids.items() if i)
        key = session.clients[holder].call("secret", "--reveal")["secret"].encode()
        return key, {h for h, i in ids.items() if not i}, False
    # none yet, or hosts disagree: one new key for all
    return secrets.token_hex(32).encode(), set(ids), bool(have)


def undo_blank(session: Session, hosts: set[str] | frozenset[str], say: Progress) -> None:
    """Put hosts that had nothing deployed back to nothing (`switch -`: no `current`, supervisord
    stopped with all it ran). Best effort, on the way out of a failed `up`: a host where it
    fails is named, since it may still run the new generation."""
    if not hosts:
        return
    _, failed = session.fan_out(lambda c: c.call("switch", "-", build_runtime().id), sorted(hosts))
    for host, exc in sorted(failed.items()):
        say(f"  {host}: NOT put back to nothing, it may still run what this up started there: {exc}")
