"""The embedded DocumentStore: Firestore's semantics on SQLite (WAL), with a change log.

``EmbeddedDocumentStore`` is the adapter; ``store.changes`` (a ``ChangeLog``) is the tail the
Eventarc emulation reads with durable named cursors.
"""

from .changelog import Change, ChangeLog, ChangesExpired
from .store import DEFAULT_INDEXED_FIELDS, EmbeddedDocumentStore, EmbeddedTransaction

__all__ = [
    "DEFAULT_INDEXED_FIELDS",
    "Change",
    "ChangeLog",
    "ChangesExpired",
    "EmbeddedDocumentStore",
    "EmbeddedTransaction",
]
