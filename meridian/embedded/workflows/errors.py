"""Workflow errors: the values a workflow's ``except`` sees, and definition refusals."""

from __future__ import annotations

from typing import Any

from meridian.domain.errors import ValidationError


class DefinitionError(ValidationError):
    """A workflow file the engine refuses at load time; the message names the construct and line."""


class WorkflowError(Exception):
    """An error raised inside a workflow: ``value`` is what ``except: {as: e}`` receives
    (a map with ``message``/``tags``/… for built-in errors, or whatever ``raise`` gave)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        super().__init__(describe(value))


def describe(value: Any) -> str:
    if isinstance(value, dict):
        tags = value.get("tags")
        message = value.get("message", "")
        return f"{tags}: {message}" if tags else str(message or value)
    return str(value)


def builtin(tag: str, message: str, **extra: Any) -> WorkflowError:
    """A built-in error map as Cloud Workflows shapes it (reference §6.4)."""
    value: dict[str, Any] = {"message": message, "tags": [tag]}
    value.update(extra)
    return WorkflowError(value)


def tags_of(value: Any) -> list[str]:
    if isinstance(value, dict) and isinstance(value.get("tags"), list):
        return [str(t) for t in value["tags"]]
    return []


def key_error(key: Any) -> WorkflowError:
    return builtin("KeyError", f"key not found: {key}")


def type_error(message: str) -> WorkflowError:
    return builtin("TypeError", message)


def value_error(message: str) -> WorkflowError:
    return builtin("ValueError", message)


def index_error(message: str) -> WorkflowError:
    return builtin("IndexError", message)
