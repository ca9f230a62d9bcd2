"""An execution's state on its way to the store: group commit, one document per parallel branch.

Rewriting the whole state tree in a transaction of its own after every step made a parallel step
of n branches pay n trees per step. Instead:

* ``save`` queues the step's writes (its history entry, a callback's consumption) and marks what
  changed; nothing is serialised yet. Every save made during one turn of the event loop, by any
  execution, is committed in one transaction when the turn ends (``GroupCommit``), with the state
  as it stands then: every task is suspended at an await, a point the interpreter resumes from.
* A parallel branch's record is a ``Branch``, kept in a document of its own; the tree it sits in
  holds ``{"$branch": key}`` instead. A commit re-serialises the execution's root tree (the main
  frame and the records down to the branches) and the branches that saved since the last commit,
  never their siblings, and deletes branch documents the tree no longer refers to.

The commit itself runs on a writer thread, one batch at a time and in order, while the loop goes
on: a commit can wait a while for the store's write lock (other processes write too), and a loop
blocked on it would hold back every branch's HTTP answers and callbacks meanwhile. Saves made
while a batch is in flight go into the next one, so the busier the store, the bigger the batches.

The durability rule: a saved step is committed before anything outside the engine can depend on
it. An HTTP call is issued only after ``durable()``; an execution's end is reported only once its
final write is committed; a callback request is accepted, and a cancel recorded, only after the
saves queued so far are committed (so a consumed request counts as consumed). Anything else (a
sleep's deadline, a callback wait's position) is committed with the next batch: a crash loses at
most the saves not yet committed, none of which anything outside saw, and the resumed execution
re-runs them as it would after a crash a few turns earlier.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from meridian.ports import DocumentStore, Query

from . import records

Write = tuple[str, str, dict[str, Any] | None]

# The branches the running task is inside, outermost first (tasks started inside inherit it).
_INSIDE: ContextVar[tuple[Branch, ...]] = ContextVar("workflow_branches", default=())


class Branch(MutableMapping[str, Any]):
    """One parallel branch's record (``id``, ``vars``, ``b``, ``done``, ``error``)."""

    def __init__(self, data: dict[str, Any], key: str | None = None) -> None:
        self.data = data
        self.key = key  # its document's id, given when the tree holding it is first written
        self.dirty = key is None
        self.children: list[Branch] = []  # the branches its stored document refers to

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.data[name] = value

    def __delitem__(self, name: str) -> None:
        del self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@contextmanager
def inside(branch: Branch) -> Iterator[None]:
    """Saves made within (by this task and the tasks it starts) rewrite ``branch`` and the
    branches around it: a step writes only its own branch's variables, or a shared one of an
    enclosing frame."""
    token = _INSIDE.set((*_INSIDE.get(), branch))
    try:
        yield
    finally:
        _INSIDE.reset(token)


class StoredState:
    """One execution's documents: the execution itself (with the root of the state tree), its
    branches, and the writes queued since the last commit."""

    def __init__(
        self,
        store: DocumentStore,
        doc: dict[str, Any],
        commits: GroupCommit,
        on_failure: Callable[[Exception], None],
    ) -> None:
        self.doc = doc
        self.execution_id: str = doc["execution_id"]
        self.closed = False
        self._commits = commits
        self._on_failure = on_failure
        self._queued: list[Write] = []
        self._committed: asyncio.Future[None] | None = None  # for saves not yet taken
        self._inflight: asyncio.Future[None] | None = None  # for the last batch taken
        self._roots: list[Branch] = []
        texts: dict[str, str] = {}
        if doc.get("branches"):  # it numbers every branch document it ever wrote
            collection = Query(records.branches_collection(self.execution_id))
            texts = {
                d.path.rsplit("/", 1)[-1]: str(d.data["state_tree"])
                for d in store.query(collection)
            }
        self._stored = set(texts)
        self.tree: dict[str, Any] = self._parse(doc["state_tree"], texts, self._roots)

    def _parse(self, text: str, texts: dict[str, str], children: list[Branch]) -> Any:
        def hook(obj: dict[str, Any]) -> Any:
            if len(obj) == 1 and "$branch" in obj:
                key = obj["$branch"]
                if key not in texts:
                    raise ValueError(f"execution {self.execution_id} lost its branch {key}")
                branch = Branch({}, key)
                branch.data = self._parse(texts[key], texts, branch.children)
                children.append(branch)
                return branch
            return records.decode_object(obj)

        return json.loads(text, object_hook=hook)

    def _dump(self, value: Any, children: list[Branch]) -> str:
        def default(item: Any) -> Any:
            if isinstance(item, Branch):
                if item.key is None:
                    self.doc["branches"] = int(self.doc.get("branches", 0)) + 1
                    item.key = f"b{self.doc['branches']}"
                children.append(item)
                return {"$branch": item.key}
            return records.encode_value(item)

        return json.dumps(value, default=default, separators=(",", ":"))

    # saving ---------------------------------------------------------------------------------------

    def save(self, writes: list[Write]) -> None:
        """Queue ``writes``; they commit with the state at the end of this event-loop turn."""
        if self.closed:
            return
        for branch in _INSIDE.get():
            branch.dirty = True
        self._queued.extend(writes)
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
            self._commits.schedule(self)

    async def durable(self) -> None:
        """Return once every save made so far is committed (batches commit in order, so the
        last one taken stands for those before it)."""
        for future in (self._inflight, self._committed):
            if future is not None:
                await asyncio.shield(future)

    def close(self) -> None:
        """Write nothing more (the execution ended, or another writer took over)."""
        self.closed = True

    # committing (GroupCommit's side) -------------------------------------------------------------

    def take_writes(self) -> tuple[list[Write], asyncio.Future[None] | None]:
        """The writes that bring the store up to date: the execution with its root tree, every
        branch that saved, deletes for branches no longer referred to, and the queued writes;
        with the future their commit resolves (saves from now on get a new one)."""
        writes: list[Write] = []
        self._roots = []
        self.doc["state_tree"] = self._dump(self.tree, self._roots)
        live: set[str] = set()
        reachable = list(self._roots)
        while reachable:
            branch = reachable.pop()
            assert branch.key is not None
            live.add(branch.key)
            if branch.dirty:
                branch.children = []
                text = self._dump(branch.data, branch.children)
                branch.dirty = False
                path = records.branch_path(self.execution_id, branch.key)
                writes.append(
                    ("set", path, {"execution_id": self.execution_id, "state_tree": text})
                )
            reachable.extend(branch.children)
        # after the dumps: they number new branches in the execution document
        # a copy: the writer thread encodes it while the loop goes on changing the execution
        writes.insert(0, ("set", records.execution_path(self.execution_id), dict(self.doc)))
        for key in sorted(self._stored - live):
            writes.append(("delete", records.branch_path(self.execution_id, key), None))
        self._stored = live
        writes.extend(self._queued)
        self._queued = []
        taken, self._committed = self._committed, None
        self._inflight = taken
        return writes, taken

    def committed(self, taken: asyncio.Future[None] | None) -> None:
        if taken is not None and not taken.done():
            taken.set_result(None)
        if self._inflight is taken:
            self._inflight = None

    def failed(self, error: Exception, taken: asyncio.Future[None] | None = None) -> None:
        self.closed = True
        self._queued = []
        for future in (taken, self._inflight, self._committed):
            if future is not None and not future.done():
                future.cancel()
        self._committed = self._inflight = None
        self._on_failure(error)


Batch = list[tuple[StoredState, list[Write], "asyncio.Future[None] | None"]]


class GroupCommit:
    """Commits the saves of every execution made during one event-loop turn in one transaction,
    on a writer thread, one batch at a time. Used on the engine's loop only."""

    def __init__(self, store: DocumentStore) -> None:
        self.store = store
        self._due: list[StoredState] = []
        self._kick_pending = False
        self._writer: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None
        self._inflight_batch: Batch = []

    def schedule(self, state: StoredState) -> None:
        self._due.append(state)
        if not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._kick)

    def _kick(self) -> None:
        """Hand what is due to the writer, unless a batch is in flight (its landing kicks)."""
        self._kick_pending = False
        if self._inflight is not None:
            return
        batch = self._take()
        if not batch:
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="workflows-commit")
        loop = asyncio.get_running_loop()
        writes = [w for _, state_writes, _ in batch for w in state_writes]
        self._inflight = inflight = self._writer.submit(self.store.batch_write, writes)
        self._inflight_batch = batch
        inflight.add_done_callback(lambda _: loop.call_soon_threadsafe(self._landed, inflight))

    def _landed(self, inflight: Future[None]) -> None:
        if inflight is not self._inflight:
            return  # a synchronous flush settled it already
        self._settle()
        self._kick()  # the saves made while it was in flight

    def _settle(self) -> None:
        """Wait for the batch in flight and report its outcome to its executions."""
        inflight, batch = self._inflight, self._inflight_batch
        self._inflight, self._inflight_batch = None, []
        if inflight is None:
            return
        error = inflight.exception()
        if error is None:
            for state, _, taken in batch:
                state.committed(taken)
        else:
            self._apart(batch, error if isinstance(error, Exception) else RuntimeError(error))

    def flush(self) -> None:
        """Commit every save queued so far, now, on the calling thread (after the batch in
        flight: commits apply in order)."""
        self._settle()
        batch = self._take()
        if not batch:
            return
        try:
            self.store.batch_write([w for _, writes, _ in batch for w in writes])
        except Exception as e:
            self._apart(batch, e)
            return
        for state, _, taken in batch:
            state.committed(taken)

    def close(self) -> None:
        """Settle the batch in flight and stop the writer (a new one starts if needed)."""
        self._settle()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None

    def _take(self) -> Batch:
        due, self._due = self._due, []
        batch: Batch = []
        for state in due:
            if state.closed:
                continue
            try:
                writes, taken = state.take_writes()
            except Exception as e:
                state.failed(e)
                continue
            batch.append((state, writes, taken))
        return batch

    def _apart(self, batch: Batch, error: Exception) -> None:
        """A batch failed: with one execution in it, that execution fails; with more, one
        execution's writes may have spoilt it (a document over the size limit), so each commits
        on its own."""
        if len(batch) == 1:
            state, _, taken = batch[0]
            state.failed(error, taken)
            return
        for state, writes, taken in batch:
            try:
                self.store.batch_write(writes)
            except Exception as own:
                state.failed(own, taken)
            else:
                state.committed(taken)
