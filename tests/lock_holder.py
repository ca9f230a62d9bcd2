"""Another process holding a SQLite database's write lock, for the tests that show no event loop
waits for it (#24): ``start(database, seconds)`` starts it; it prints ``held`` once it has the lock
(``BEGIN IMMEDIATE``), keeps it for ``seconds`` and lets it go, writing nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("freed", flush=True)
"""


def start(database: Path, seconds: float) -> subprocess.Popen[str]:
    """The holder's process; read a line from its stdout (``held``) before relying on the lock."""
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(database), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
