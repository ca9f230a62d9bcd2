"""An execution's state on its way to the store: group commit, one document per parallel branch.

Rewriting the whole state tree in a transaction of its own after every step made a parallel step
of n branches pay n trees per step. Instead:

* ``save`` queues the step's writes (its history entry, a callback's consumption) and marks what
  changed; nothing is serialised yet. Every save made during one turn of the event loop, by any
  execution, is committed in one transaction when the turn ends, with the state as it stands
  then: every task is suspended at an await, a point the interpreter resumes from. The mechanism
  is the core's group commit (``meridian.concurrency.ordered_writer.OrderedWriter``, built by the
  engine over the store's ``batch_write``); a ``StoredState`` is one of its sources.
* A parallel branch's record is a ``Branch``, kept in a document of its own; the tree it sits in
  holds ``{"$branch": key}`` instead. A commit re-serialises the execution's root tree (the main
  frame and the records down to the branches) and the branches that saved since the last commit,
  never their siblings, and deletes branch documents the tree no longer refers to.

The commit itself runs on a writer thread, one batch at a time and in order, while the loop goes
on: a commit can wait a while for the store's write lock (other processes write too), and a loop
blocked on it would hold back every branch's HTTP answers and callbacks meanwhile. Saves made
while a batch is in flight go into the next one, so the busier the store, the bigger the batches.
A batch that fails is committed again execution by execution, so one execution's bad write (a
document over the size limit) fails that execution alone.

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
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from meridian.concurrency.ordered_writer import OrderedWriter
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
    branches, and the writes queued since the last commit. A source of the engine's group
    commit (``take``, ``failed``)."""

    def __init__(
        self,
        store: DocumentStore,
        doc: dict[str, Any],
        commits: OrderedWriter[Write],
        on_failure: Callable[[Exception], None],
    ) -> None:
        self.doc = doc
        self.execution_id: str = doc["execution_id"]
        self.closed = False
        self._commits = commits
        self._on_failure = on_failure
        self._queued: list[Write] = []
        self._next: asyncio.Future[None] | None = None  # for saves not yet taken
        self._taken: asyncio.Future[None] | None = None  # for the last batch taken
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
        if self._next is None:
            self._next = self._commits.queue(self)

    async def durable(self) -> None:
        """Return once every save made so far is committed (batches commit in order, so the
        last one taken stands for those before it)."""
        for future in (self._taken, self._next):
            if future is not None:
                await asyncio.shield(future)

    def close(self) -> None:
        """Write nothing more (the execution ended, or another writer took over): saves not yet
        taken are dropped (their future is cancelled, so the group commit skips them)."""
        self.closed = True
        self._queued = []
        if self._next is not None:
            self._next.cancel()
            self._next = None

    # committing (the group commit's side) --------------------------------------------------------

    def take(self) -> list[Write]:
        """The writes that bring the store up to date: the execution with its root tree, every
        branch that saved, deletes for branches no longer referred to, and the queued writes
        (saves from now on go into the next batch)."""
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
        self._taken, self._next = self._next, None
        return writes

    def failed(self, error: Exception) -> None:
        """Its state could not be committed: nothing more is written for it, and whoever awaits
        ``durable()`` is cancelled."""
        self.closed = True
        self._queued = []
        for future in (self._taken, self._next):
            if future is not None and not future.done():
                future.cancel()
        self._next = self._taken = None
        self._on_failure(error)
