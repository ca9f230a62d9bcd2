"""Shared fixtures for the contract suites: emulators started as real processes on loopback.

The Firestore emulator is the npm package ``@firestore-emulator/server`` pinned in the root
``package.json``; ``make test`` runs ``npm ci`` first, and this fixture runs it itself when the
package is missing (e.g. a bare ``pytest`` on a fresh checkout).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# FirestoreServer.start() binds 0.0.0.0; tests must stay on loopback, so bind its gRPC server
# ourselves on 127.0.0.1.
_FIRESTORE_LAUNCHER = """
const grpc = require('@grpc/grpc-js');
const { FirestoreServer } = require('@firestore-emulator/server');
const server = new FirestoreServer();
const port = process.argv[1];
server.server.bindAsync('127.0.0.1:' + port, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('ready ' + port);
});
process.on('SIGTERM', () => { server.stop(); process.exit(0); });
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emulator exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"emulator did not listen on 127.0.0.1:{port} within {timeout_s} s")


def ensure_npm_packages() -> None:
    if (ROOT / "node_modules" / "@firestore-emulator" / "server").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed for the Firestore emulator (run `make test`)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    """A Firestore emulator on a free loopback port; yields ``host:port`` and sets
    FIRESTORE_EMULATOR_HOST for the Google client for the session."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is needed for the Firestore emulator")
    ensure_npm_packages()
    port = free_port()
    process = subprocess.Popen(
        [node, "-e", _FIRESTORE_LAUNCHER, str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    try:
        wait_for_port(port, process)
        os.environ["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        yield f"127.0.0.1:{port}"
    finally:
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
