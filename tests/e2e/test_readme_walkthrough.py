"""The README's walkthrough, run as written: its blocks, taken from README.md, against a real
`meridian up`.

The README marks what this test runs with HTML comments before a fenced block:

- ``<!-- walkthrough: platform -->``: the command that starts the platform (first terminal);
  it runs until the end of the test.
- ``<!-- walkthrough -->``: commands a user types in the second terminal, run one block after the
  other in one bash (variables carry over, as in a terminal). A ``text`` block right after one is
  what it prints: each of its lines must appear, in order, in the block's output (``…`` stands
  for any text; a line of ``…`` alone for lines left out).
- ``<!-- walkthrough: webhook -->``: a ``text`` block that the example receiver, started by the
  commands in the background, prints a moment later.

The commands keep the README's default addresses and read the test's from the environment
(``MERIDIAN_URL``, ``RECEIVER_PORT``, ``MERIDIAN_DATA_DIR``, ``MERIDIAN_BASE_PORT``); the output is
compared with the test's receiver port written back as the README's. The commands run in a
directory of links to the repository's top-level entries, so the files they write (``webhook.json``)
stay out of the checkout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from meridian.config import PORT_OFFSETS
from tests.e2e.conftest import ROOT, Runtime, free_port_block, listening_pids, stop_runtime

pytestmark = pytest.mark.e2e

README_PORTS = {"command": 8701, "receiver": 8800}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
MARKER = re.compile(r"<!-- walkthrough(?:: (\w+))? -->")


@dataclass
class Block:
    kind: str  # "platform", "commands" or "webhook"
    text: str
    expected: list[str] = field(default_factory=list)


def walkthrough(readme: str) -> list[Block]:
    """The README's marked blocks in order, each command block with the output shown after it."""
    blocks: list[Block] = []
    previous_end = -1
    for fence in FENCE.finditer(readme):
        before = readme[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before)
        if marker:
            blocks.append(Block(marker[1] or "commands", fence[2]))
        elif (
            fence[1] == "text"
            and blocks
            and blocks[-1].kind == "commands"
            and not blocks[-1].expected
            and not readme[previous_end : fence.start()].strip()
        ):
            blocks[-1].expected = fence[2].splitlines()
        previous_end = fence.end()
    return blocks


def shown(expected: list[str], output: list[str]) -> bool:
    """Whether every expected line matches an output line, in order (``…``: any text)."""
    patterns = [
        re.compile(".*".join(map(re.escape, line.split("…"))))
        for line in expected
        if line.strip() != "…"
    ]
    matched = 0
    for line in output:
        if matched < len(patterns) and patterns[matched].fullmatch(line):
            matched += 1
    return matched == len(patterns)


class Terminal:
    """One bash reading commands as a terminal does; everything it and its background jobs print
    is collected in ``lines``."""

    def __init__(self, cwd: Path, env: dict[str, str], replace: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._replace = replace
        self._steps = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            for actual, readme in self._replace.items():
                line = line.replace(actual, readme)
            self.lines.append(line.rstrip("\n"))

    def run(self, commands: str, timeout_s: float = 30) -> tuple[int, int]:
        """Run ``commands``; the index of their first output line and the last command's status."""
        assert self.process.stdin is not None
        self._steps += 1
        done = f"::step {self._steps} done::"
        start = len(self.lines)
        self.process.stdin.write(f"{commands}\necho '{done}' $?\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if line.startswith(done):
                    return start, int(line.split()[-1])
            time.sleep(0.05)
        raise AssertionError(
            f"still running after {timeout_s} s:\n{commands}\n{self.output(start)}"
        )

    def output(self, start: int) -> str:
        return "\n".join(line for line in self.lines[start:] if not line.startswith("::step"))

    def wait_shown(self, expected: list[str], start: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not shown(expected, self.lines[start:]):
            if time.monotonic() > deadline:
                raise AssertionError(
                    "the README shows:\n"
                    + "\n".join(expected)
                    + f"\n\nbut within {timeout_s} s the walkthrough printed:\n"
                    + self.output(start)
                )
            time.sleep(0.1)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        finally:
            self.process.kill()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory that looks like the repository's root to the README's relative paths."""
    work = tmp_path / "checkout"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".meridian", "webhook.json", ".git"):
            (work / entry.name).symlink_to(entry)
    return work


@pytest.fixture
def ports() -> dict[str, int]:
    base = free_port_block(24)  # the Pub/Sub gRPC API sits at base + 20
    return {"base": base, "receiver": base + 23}


@pytest.fixture
def platform(
    checkout: Path, ports: dict[str, int], tmp_path: Path
) -> Iterator[tuple[Runtime, list[Block]]]:
    blocks = walkthrough((ROOT / "README.md").read_text())
    starts = [b for b in blocks if b.kind == "platform"]
    assert len(starts) == 1, "the README marks one command that starts the platform"
    env = {
        **os.environ,
        "MERIDIAN_DATA_DIR": str(tmp_path / "data"),
        "MERIDIAN_BASE_PORT": str(ports["base"]),
    }
    process = subprocess.Popen(
        ["bash", "-c", starts[0].text],
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runtime = Runtime(process, tmp_path / "data", ports["base"])
    deadline = time.monotonic() + 60
    pending = ["platform", "command", "event-publisher", "client-webhook"]
    while pending:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"`{starts[0].text.strip()}` did not come up:\n{output}")
        try:
            port = ports["base"] + PORT_OFFSETS[pending[0]]
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
            pending.pop(0)
        except httpx.HTTPError:
            time.sleep(0.2)
    yield runtime, blocks
    stop_runtime(runtime)


def test_the_readme_walkthrough_works_as_written(
    platform: tuple[Runtime, list[Block]], checkout: Path, ports: dict[str, int]
) -> None:
    runtime, blocks = platform
    command_port = ports["base"] + PORT_OFFSETS["command"]
    terminal = Terminal(
        checkout,
        {
            **os.environ,
            "MERIDIAN_DATA_DIR": str(runtime.data_dir),
            "MERIDIAN_BASE_PORT": str(ports["base"]),
            "MERIDIAN_URL": f"http://127.0.0.1:{command_port}",
            "RECEIVER_PORT": str(ports["receiver"]),
        },
        replace={f"127.0.0.1:{ports['receiver']}": f"127.0.0.1:{README_PORTS['receiver']}"},
    )
    try:
        kinds = [b.kind for b in blocks]
        assert kinds.count("commands") >= 5 and kinds.count("webhook") == 1, kinds
        for block in blocks:
            if block.kind == "commands":
                started, status = terminal.run(block.text)
                assert status == 0, f"{block.text}\nexited {status}:\n{terminal.output(started)}"
                if block.expected:
                    terminal.wait_shown(block.expected, started, timeout_s=10)
                else:  # the README shows no output: there must be none (no error either)
                    assert not terminal.output(started), terminal.output(started)
            elif block.kind == "webhook":
                # Sent after the delivery, whichever command the terminal is running by then.
                terminal.wait_shown(block.text.splitlines(), 0, timeout_s=30)

        # The example receiver verifies what it is sent: a forged delivery is refused with 400,
        # one signed with the endpoint's secret is accepted with 204.
        secret = json.loads((checkout / "webhook.json").read_text())["secret"]
        receiver = f"http://127.0.0.1:{ports['receiver']}/meridian"
        body = b'{"type":"ParcelDelivered","timestamp":"2026-11-21T09:30:00+00:00","data":{}}'
        now = time.time()
        signed_at = datetime.fromtimestamp(now, UTC)
        signature = Webhook(secret).sign("evt-test", signed_at, body.decode())
        headers = {
            "webhook-id": "evt-test",
            "webhook-timestamp": str(int(now)),
            "content-type": "application/json",
        }
        forged = Webhook("whsec_" + "A" * 44).sign("evt-test", signed_at, body.decode())
        refused = httpx.post(
            receiver, content=body, headers={**headers, "webhook-signature": forged}
        )
        assert refused.status_code == 400
        assert httpx.post(receiver, content=body, headers=headers).status_code == 400  # unsigned
        accepted = httpx.post(
            receiver, content=body, headers={**headers, "webhook-signature": signature}
        )
        assert accepted.status_code == 204
    finally:
        for pid in listening_pids(ports["receiver"]):  # the receiver the README backgrounds
            os.kill(pid, signal.SIGTERM)
        terminal.close()


def test_the_walkthrough_parser_pairs_commands_with_their_output() -> None:
    readme = (
        "<!-- walkthrough: platform -->\n```sh\nmeridian up\n```\n\n"
        "<!-- walkthrough -->\n```sh\necho hi\n```\n\n```text\nhi\n```\n\n"
        "prose\n\n```text\nnot an output\n```\n"
        "<!-- walkthrough -->\n```sh\ntrue\n```\nprose\n```text\nnot its output\n```\n"
        "<!-- walkthrough: webhook -->\n```text\nverified …\n```\n"
    )
    blocks = walkthrough(readme)
    assert [(b.kind, b.text, b.expected) for b in blocks] == [
        ("platform", "meridian up\n", []),
        ("commands", "echo hi\n", ["hi"]),
        ("commands", "true\n", []),
        ("webhook", "verified …\n", []),
    ]
    assert shown(["a…", "…", "c"], ["x", "abc", "b", "c"])
    assert not shown(["c", "a…"], ["abc", "c"])
    assert not shown(["202"], ["409"])
