"""Google's own Firestore emulator (``gcloud emulators firestore start``, Java) as a process on
loopback, for the tests that need Firestore's real transaction semantics: locks, ABORTED on
contention, atomic commits. The npm emulator of ``conftest.py`` has none of these.

A missing ``gcloud`` fails the test that asks for it: CI has the emulator, so a skip would hide
a broken setup. Clients are pointed at the emulator explicitly (``emulator_client``) instead of
through a process-wide FIRESTORE_EMULATOR_HOST, which the npm emulator's fixture owns.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from unittest import mock

from google.cloud import firestore

from .conftest import free_port, wait_for_port

PROJECT = "demo-meridian"
START_TIMEOUT_S = 90.0  # the JVM's start on a busy 2-core machine


@contextmanager
def google_firestore_emulator() -> Iterator[str]:
    """Start the emulator on a free loopback port; yields ``host:port``; stops it (the gcloud
    wrapper and the Java process it starts: one process group) afterwards."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError(
            "gcloud is needed for Google's Firestore emulator (the google-cloud-cli and "
            "google-cloud-cli-firestore-emulator packages, with Java 17)"
        )
    port = free_port()
    process = subprocess.Popen(
        [gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process, timeout_s=START_TIMEOUT_S)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGTERM lets the wrapper stop the emulator; SIGKILL then takes whatever of the group (the
    # Java process) is left.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def emulator_client(host: str, project: str = PROJECT) -> Any:
    """A Firestore client of ``host``'s emulator: the client reads FIRESTORE_EMULATOR_HOST once,
    when built, so it is set only for that moment."""
    with mock.patch.dict(os.environ, {"FIRESTORE_EMULATOR_HOST": host}):
        return firestore.Client(project=project)
