"""The core's error hierarchy.

Adapters translate driver errors into these at the boundary (``raise AlreadyExists(path) from e``);
entrypoints map them to status codes. Nothing outside an adapter catches a driver's own exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class MeridianError(Exception):
    """Base of every error the platform raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field; ``location`` is a dotted path such as ``parcels.0.stop.lat``."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ValidationError(MeridianError):
    """Input that can never succeed as sent. Lists every field error, not just the first."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        self.errors = tuple(errors)
        detail = "; ".join(str(e) for e in self.errors)
        super().__init__(f"{message}: {detail}" if detail else message)
        self.summary = message


class LimitExceeded(ValidationError):
    """A documented size or count limit was crossed; the message names the limit."""


class NotFound(MeridianError):
    """The addressed entity does not exist."""


class AlreadyExists(MeridianError):
    """A create found the entity already there."""


class Conflict(MeridianError):
    """The request clashes with the current state of the entity."""


class InvalidTransition(Conflict):
    """A state machine was asked for a move its transition table does not allow."""

    def __init__(self, entity: str, state: str, move: str, allowed: Sequence[str] = ()) -> None:
        self.entity = entity
        self.state = state
        self.move = move
        self.allowed = tuple(allowed)
        hint = f" (allowed from {state}: {', '.join(self.allowed)})" if self.allowed else ""
        super().__init__(f"cannot {move} {entity}: it is {state}{hint}")


class IdempotencyMismatch(Conflict):
    """An idempotency key was reused with a different request body."""


class Unauthenticated(MeridianError):
    """No credentials, or credentials that could not be verified."""


class PermissionDenied(MeridianError):
    """Verified credentials that do not allow this action."""


class Unavailable(MeridianError):
    """A dependency is down or overloaded; retrying later may succeed."""


class TransactionContention(Unavailable):
    """A transaction kept colliding with concurrent writers and gave up after its retries."""


class Overloaded(Unavailable):
    """More work waits than the service can finish soon, so it refused this request and did
    nothing of it (shed); the caller may try again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DecodeError(MeridianError):
    """Bytes that do not decode to a whole, valid message of the expected schema."""


class CatalogError(MeridianError):
    """The event catalog is inconsistent; the message names the file and the entry."""
