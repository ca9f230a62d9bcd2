"""Google's own Firestore and Pub/Sub emulators, started on free loopback ports and stopped.

They come with the Google Cloud CLI (Debian packages ``google-cloud-cli``,
``google-cloud-cli-firestore-emulator``, ``google-cloud-cli-pubsub-emulator``) and need Java 17. A
missing emulator fails the tier with what to install: this tier exists to prove the ``gcp``
backend, so it never skips.

Each emulator runs in a process group of its own (``gcloud`` starts Java as a child), stopped as a
group at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

INSTALL = (
    "Google's emulators are needed (`apt-get install google-cloud-cli "
    "google-cloud-cli-firestore-emulator google-cloud-cli-pubsub-emulator openjdk-17-jre-headless`)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Emulator:
    name: str
    host: str  # host:port, as FIRESTORE_EMULATOR_HOST / PUBSUB_EMULATOR_HOST take it
    log: Path


def _gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise RuntimeError(f"gcloud is not on PATH. {INSTALL}")
    if shutil.which("java") is None:
        raise RuntimeError(f"java is not on PATH. {INSTALL}")
    return gcloud


@contextmanager
def running(name: str, argv: list[str], log: Path, timeout_s: float = 90) -> Iterator[Emulator]:
    """Run ``gcloud <argv> --host-port=127.0.0.1:P`` until it listens; stop its process group."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_gcloud(), *argv, f"--host-port=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_listening(name, port, process, log, timeout_s)
        yield Emulator(name, f"127.0.0.1:{port}", log)
    finally:
        _stop_group(process)


def _wait_listening(
    name: str, port: int, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the {name} emulator exited with {process.returncode} before listening "
                f"({INSTALL}); its output:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the {name} emulator did not listen within {timeout_s} s; see {log}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # gcloud may exit before its Java child: whatever is left of the group goes too.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def pubsub(project: str, log: Path) -> AbstractContextManager[Emulator]:
    return running("Pub/Sub", ["beta", "emulators", "pubsub", "start", f"--project={project}"], log)


def firestore(log: Path) -> AbstractContextManager[Emulator]:
    return running("Firestore", ["emulators", "firestore", "start"], log)
