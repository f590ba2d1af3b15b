"""Group commit: the single-event usage requests one web process serves at once share one
transaction, so one insert statement and one commit (one WAL flush) instead of one each.

A request thread resolves and matches its event as usual, then hands its rows to the process's
committer and waits. The first thread to hand over becomes the group's leader: it waits for the
threads that announced they are about to hand over too (`ticket()`), at most
USAGE_GROUP_COMMIT_WINDOW_MS and USAGE_GROUP_COMMIT_MAX_EVENTS, then writes everyone's rows in one
transaction on its own connection and gives each thread its own outcome. While a leader writes,
the next group gathers around the next leader, which also waits (within the same bounds) for
that write to finish, as a database's own group commit does: under load a group holds the
requests that arrived during one commit. A lone request does not wait at all: nobody else is
announced, and no group is being written.

Every thread answers only once the group's transaction committed. If it fails, nothing of it
was stored and every thread gets `GroupFailed`, to write its rows alone, in a transaction of its
own, as a request does without group commit: one event the database refuses does not fail its
neighbours. The rows keep their public ids, which are unique, so a commit whose outcome the
client never learnt (the connection dropped during COMMIT) cannot be stored twice by the retry.

The committer is made on first use, in the process that serves (gunicorn forks its workers
before any request), and again in a forked child that inherits one.
"""

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection


class GroupFailed(Exception):
    """The group's transaction failed and stored nothing of it: write alone."""


class _Slot:
    __slots__ = ("done", "error", "item", "outcome")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.done = threading.Event()
        self.outcome: Any = None
        self.error: BaseException | None = None


class Committer:
    """The groups of one process. `groups` and `items` count what it wrote (for tests and the
    bench: items / groups is the events per commit)."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._open: list[_Slot] | None = None  # the group gathering, until its leader takes it
        self._announced = 0  # threads that will hand over rows or withdraw (see ticket())
        self._writing = 0  # groups being written
        self.groups = 0
        self.items = 0

    def announce(self) -> None:
        with self._changed:
            self._announced += 1

    def withdraw(self) -> None:
        with self._changed:
            self._announced -= 1
            self._changed.notify_all()

    def submit(self, item: Any, write: Callable[[list[Any]], list[Any]]) -> Any:
        """Hand over an announced item; `write(items)` (run by the leader, once per group) returns
        their outcomes in order. This item's outcome once the group committed, or GroupFailed."""
        slot = _Slot(item)
        limit = settings.USAGE_GROUP_COMMIT_MAX_EVENTS
        with self._changed:
            self._announced -= 1
            leader = self._open is None
            if leader:
                self._open = []
            group = self._open
            group.append(slot)
            if len(group) >= limit:
                self._open = None  # full: the next thread starts the next group
            self._changed.notify_all()
            if leader:
                deadline = time.monotonic() + settings.USAGE_GROUP_COMMIT_WINDOW_MS / 1000
                while self._open is group and (self._announced > 0 or self._writing > 0):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                if self._open is group:
                    self._open = None
                self._writing += 1
        if leader:
            self._write(group, write)
        else:
            # No timeout: the leader's write ends (its finally sets every slot), as a request's own
            # insert would. Answering an error while the leader may still commit would let a
            # client's retry store an event without an idempotency key twice.
            slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.outcome

    def _write(self, group: list[_Slot], write: Callable[[list[Any]], list[Any]]) -> None:
        try:
            outcomes = write([slot.item for slot in group])
            for slot, outcome in zip(group, outcomes, strict=True):
                slot.outcome = outcome
            with self._changed:
                self.groups += 1
                self.items += len(group)
        except Exception:
            for slot in group:
                slot.error = GroupFailed()
        finally:
            with self._changed:
                self._writing -= 1
                self._changed.notify_all()
            # Even when the leader's thread is interrupted: every follower is answered.
            for slot in group:
                if slot.outcome is None and slot.error is None:
                    slot.error = GroupFailed()
                slot.done.set()


_committer: Committer | None = None
_committer_pid = 0
_committer_made = threading.Lock()


def committer() -> Committer:
    """This process's committer, made on first use."""
    global _committer, _committer_pid
    pid = os.getpid()
    if _committer_pid != pid:
        with _committer_made:
            if _committer_pid != pid:
                _committer, _committer_pid = Committer(), pid
    return _committer


def applies() -> bool:
    """Whether this thread's write may join a group: on PostgreSQL (SQLite has one writer at a
    time and nothing to share), when enabled, and not inside a transaction of the caller (such as
    the gateway's for an Idempotency-Key header), which the group's commit would not be."""
    return (
        settings.USAGE_GROUP_COMMIT_WINDOW_MS > 0
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
    )


class Ticket:
    def __init__(self, owner: Committer) -> None:
        self._owner = owner
        self.used = False

    def submit(self, item: Any, write: Callable[[list[Any]], list[Any]]) -> Any:
        self.used = True
        return self._owner.submit(item, write)


@contextmanager
def ticket() -> Iterator[Ticket]:
    """Announce, before the work that prepares an item, that this thread may submit one, so that
    a leader waits for it; withdrawn on leaving unless submitted."""
    owner = committer()
    owner.announce()
    held = Ticket(owner)
    try:
        yield held
    finally:
        if not held.used:
            owner.withdraw()
