"""``make bench``: run the benchmarks and rewrite their sections of BENCHMARKS.md.

Each ``loadtest/bench_<name>.py`` has ``run() -> str`` returning a Markdown section. Sections live
between ``<!-- bench:<name> -->`` markers, so running one benchmark
(``python -m loadtest.bench codec``) replaces its own section and keeps the others.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
HEADER = """# Benchmarks

Produced by `make bench` (or `python -m loadtest.bench NAME…` for some of them). The machine is
noisy and small (2 cores), so each figure stands beside a baseline measured in the same run, and
the ratio is the number to compare across runs. Each section carries its own date and command.
"""


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, body: str) -> None:
    text = REPORT.read_text() if REPORT.exists() else HEADER
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- bench:{name} -->\n{body.strip()}\n\n"
        f"_Measured {stamp} on {machine()}; command: `python -m loadtest.bench {name}` "
        f"(part of `make bench`)._\n<!-- /bench:{name} -->"
    )
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
    )
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{section}\n"
    )
    REPORT.write_text(text)


def main(names: list[str]) -> int:
    chosen = names or available()
    unknown = sorted(set(chosen) - set(available()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
        return 2
    for name in chosen:
        started = time.monotonic()
        print(f"== bench {name} …", flush=True)
        body = importlib.import_module(f"loadtest.bench_{name}").run()
        write_section(name, body)
        print(f"== bench {name} done in {time.monotonic() - started:.0f} s", flush=True)
    print(f"results in {REPORT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
