"""Group commit: the writes of concurrent callers in one transaction, one commit, one fsync.

A caller hands :meth:`GroupCommit.run` a function that writes with a cursor. The first caller to
arrive while no transaction is being written leads: it opens one transaction, runs every queued
write (its own first) each in a savepoint of its own, and commits. A write that fails is rolled back
to its savepoint alone and its caller gets its error; the others go on. A commit that fails fails
every write of the transaction. Each caller returns (or raises) only once the transaction holding its
write is committed, or has failed: nothing is acknowledged before it is durable. When the leader is
done and others have queued meanwhile, it hands the lead to the first of them (each transaction takes
at most ``most`` writes).

Used by the command path on SQLite (campus/commands.py): the process has one writer connection, so
commands of different schools used to take turns for it, one commit and one fsync each.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

MOST = 64  # writes per transaction at most


@dataclass(eq=False)
class _Write:
    write: Callable[[Any], Any]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # handed the lead while it waited
    result: Any = None
    error: BaseException | None = None
    shared: bool = False  # the error is the transaction's (every write of it got the same one)


class GroupCommit:
    def __init__(self, transaction: Callable[[], AbstractContextManager[Any]], most: int = MOST) -> None:
        """`transaction()`: a context manager giving a cursor in a new transaction, committed on exit."""
        self._transaction = transaction
        self._most = most
        self._mutex = threading.Lock()
        self._queue: deque[_Write] = deque()
        self._leading = False
        self.transactions = 0  # committed or failed (to measure the grouping)
        self.writes = 0

    def run(self, write: Callable[[Any], Any]) -> Any:
        """Run `write(cursor)` in a group transaction; its result once committed, or its error."""
        mine = _Write(write)
        with self._mutex:
            self._queue.append(mine)
            lead = not self._leading
            self._leading = True
        if not lead:
            mine.done.wait()
            lead = mine.lead
        if lead:
            self._lead(mine)
        if mine.error is not None:
            raise _own(mine.error) if mine.shared else mine.error
        return mine.result

    def _lead(self, mine: _Write) -> None:
        while not mine.done.is_set() or mine.lead:
            mine.lead = False
            with self._mutex:
                batch = [self._queue.popleft() for _ in range(min(self._most, len(self._queue)))]
            self._commit(batch)
        with self._mutex:
            if self._queue:  # queued meanwhile: the first of them leads next
                nxt = self._queue[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._leading = False

    def _commit(self, batch: list[_Write]) -> None:
        try:
            with self._transaction() as curs:
                if len(batch) == 1:  # alone: its failure is the transaction's, no savepoint needed
                    batch[0].result = batch[0].write(curs)
                    return
                for n, member in enumerate(batch):
                    curs.execute(f"SAVEPOINT w{n}")
                    try:
                        member.result = member.write(curs)
                    except Exception as exc:  # noqa: BLE001 - this write fails alone
                        curs.execute(f"ROLLBACK TO w{n}")
                        member.error = exc
                    curs.execute(f"RELEASE w{n}")
        except BaseException as exc:  # noqa: BLE001 - the transaction failed: every write of it with it
            for member in batch:
                if member.error is None:
                    member.error, member.shared = exc, True
        finally:
            self.transactions += 1
            self.writes += len(batch)
            for member in batch:
                member.done.set()


def _own(error: BaseException) -> BaseException:
    """A copy of the transaction's error for one caller (one exception object raised in several threads
    would mix their tracebacks)."""
    try:
        copy = type(error)(*error.args)
    except Exception:  # noqa: BLE001 - an error that cannot be rebuilt from its args: share it
        return error
    copy.__cause__ = error
    return copy
