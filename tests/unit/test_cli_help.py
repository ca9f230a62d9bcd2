"""The `meridian` command explains itself: every command, argument and option of it and of its
sub-apps (workflows, sim, emulator, client, ...) has help text, and `--version` answers."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import typer
from typer.testing import CliRunner

from meridian.runtime.cli import app


def _commands(command: Any, path: str = "meridian") -> Iterator[tuple[str, Any]]:
    """Every command under ``command`` (Typer's own copy of click's: walked by its attributes)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


def test_every_command_and_parameter_has_help() -> None:
    missing = []
    for path, command in _commands(typer.main.get_command(app)):
        if not (command.help or command.short_help):
            missing.append(f"{path}: the command")
        for parameter in command.params:
            if not getattr(parameter, "help", None):
                missing.append(f"{path}: {parameter.opts[0] if parameter.opts else parameter.name}")
    assert not missing, "no help text:\n" + "\n".join(missing)


def test_the_walk_reaches_the_sub_apps() -> None:
    paths = {path for path, _ in _commands(typer.main.get_command(app))}
    for expected in (
        "meridian up",
        "meridian workflows start",
        "meridian workflows list",
        "meridian workflows show",
        "meridian sim",
        "meridian emulator pubsub",
        "meridian client create",
    ):
        assert expected in paths


def test_version_is_the_installed_distributions() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"meridian {version('meridian')}"
