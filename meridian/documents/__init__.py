"""What a document store promises, whichever adapter keeps the documents.

The rules every ``DocumentStore`` (``meridian.ports``) enforces and the semantics it follows, in
one place so the embedded store, the Google adapter and the unit tests' fake agree: document
paths, field names and the size limits (``paths``), Firestore's value ordering, equality and
field-path edits (``values``), and which queries are valid and what they answer (``query``).
Both adapters import these; neither imports the other.
"""
