"""The Makefile's system installs (``make browser``, ``make redis``) through scripts/need.sh: a
missing command is installed with apt-get only where that can work (apt-get present, root);
elsewhere one message says what to install, and the exit status is non-zero.

Each case runs the script (or make) with PATH reduced to a directory of stand-ins: ``id`` says
who runs it, ``apt-get`` records its calls (and may install the command), and the command itself
is there or not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEED = ROOT / "scripts" / "need.sh"


def _stand_ins(
    tmp_path: Path, uid: int, apt_get: str | None = None, present: tuple[str, ...] = ()
) -> Path:
    """A PATH directory: ``id -u`` printing ``uid``, an ``apt-get`` running ``apt_get`` (a shell
    snippet, after logging its arguments to apt-get.log), and a stand-in for each of ``present``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"id": f'[ "$1" = -u ] && echo {uid}\n'}
    if apt_get is not None:
        scripts["apt-get"] = f'echo "$*" >> "{tmp_path}/apt-get.log"\n{apt_get}\n'
    scripts.update({name: "exit 0\n" for name in present})
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}")
        path.chmod(0o755)
    return bin_dir


def _need(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(NEED), *args],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _apt_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "apt-get.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_present_command_needs_nothing(tmp_path: Path) -> None:
    bin_dir = _stand_ins(tmp_path, uid=1000, apt_get="exit 1", present=("chromium",))
    result = _need(bin_dir, "chromium", "chromium")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert _apt_calls(tmp_path) == []


def test_without_apt_get_it_says_what_to_install(tmp_path: Path) -> None:
    result = _need(_stand_ins(tmp_path, uid=0), "chromium", "chromium", "the browser tests")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "chromium is not installed (the browser tests) and this machine has no apt-get: "
        "install chromium with your system's package manager, then run make again."
    ]


def test_not_root_it_says_what_to_run_and_installs_nothing(tmp_path: Path) -> None:
    result = _need(_stand_ins(tmp_path, uid=1000, apt_get="exit 0"), "redis-server", "redis-server")
    assert result.returncode == 1
    assert "run 'sudo apt-get install redis-server'" in result.stderr
    assert _apt_calls(tmp_path) == []


def test_as_root_with_apt_get_it_installs_the_package(tmp_path: Path) -> None:
    chromium = tmp_path / "bin" / "chromium"  # what installing the package puts on PATH
    install = f'case "$*" in *install*) echo "exit 0" > {chromium}; /bin/chmod +x {chromium};; esac'
    result = _need(_stand_ins(tmp_path, uid=0, apt_get=install), "chromium", "chromium")
    assert result.returncode == 0, result.stderr
    assert _apt_calls(tmp_path) == ["update -qq", "install -y -qq chromium"]


def test_a_failed_install_is_said_and_fails(tmp_path: Path) -> None:
    failing = 'case "$*" in *install*) exit 100;; esac'
    result = _need(_stand_ins(tmp_path, uid=0, apt_get=failing), "chromium", "chromium")
    assert result.returncode == 1
    assert "apt-get could not install chromium" in result.stderr


def test_an_install_that_does_not_bring_the_command_fails(tmp_path: Path) -> None:
    result = _need(_stand_ins(tmp_path, uid=0, apt_get="exit 0"), "postgresql", "initdb")
    assert result.returncode == 1
    assert "so that 'initdb' is there" in result.stderr


@pytest.mark.parametrize(
    ("target", "package"), [("browser", "chromium"), ("redis", "redis-server")]
)
def test_the_make_targets_explain_themselves(tmp_path: Path, target: str, package: str) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (the Makefile is the project's entry point)")
    result = subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), target],
        env={"PATH": str(_stand_ins(tmp_path, uid=1000, apt_get="exit 0"))},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"run 'sudo apt-get install {package}', then run make again." in result.stderr
    assert _apt_calls(tmp_path) == []


def test_a_program_kept_off_path_is_found_by_its_path_glob(tmp_path: Path) -> None:
    # Debian keeps PostgreSQL's server programs in /usr/lib/postgresql/<version>/bin.
    program = tmp_path / "lib" / "postgresql" / "15" / "bin" / "pg_ctl"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    bin_dir = _stand_ins(tmp_path, uid=1000, apt_get="exit 1")
    result = _need(bin_dir, "postgresql", f"{tmp_path}/lib/postgresql/*/bin/pg_ctl")
    assert (result.returncode, result.stderr) == (0, "")
    assert _apt_calls(tmp_path) == []


def test_a_path_glob_matching_nothing_asks_for_the_package(tmp_path: Path) -> None:
    bin_dir = _stand_ins(tmp_path, uid=1000, apt_get="exit 0")
    result = _need(bin_dir, "postgresql", f"{tmp_path}/lib/postgresql/*/bin/pg_ctl")
    assert result.returncode == 1
    assert "run 'sudo apt-get install postgresql', then run make again." in result.stderr
    assert _apt_calls(tmp_path) == []
