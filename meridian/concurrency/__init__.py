"""How work meets threads and the store: group commit in one place, and the event loop's hand-offs.

Group commit (writes that become ready together commit together, each keeping its own outcome)
comes in two flavours, by where its callers run:

* On an event loop. ``group_commit.Committer``: requests that each await their own transaction
  (the command service's parcel moves), committed as one group by ``group_commit.Transactions``,
  chosen once in ``meridian.adapters``. ``batches.Batcher``: pushes handled a batch at a time in
  a worker thread, each answered with its own event's outcome (the reactors, the event
  publisher); ``group_commit.commit_per_event`` makes a batch one commit.
  ``ordered_writer.OrderedWriter``: state the loop keeps changing, taken at the end of each loop
  turn and written on one writer thread, in order, with a future to await and a synchronous
  ``flush`` (the embedded Workflows engine's checkpoints).
* On many threads. ``group_writer.GroupWriter``: the first caller writes what is queued (the
  dispatch saga's request ledger).

Beside it: ``offload`` (whether a loop runs an adapter's blocking call itself or in a worker
thread, chosen in ``meridian.adapters``) and ``wakeup`` (a cheap "something happened" signal).
"""
