"""The embedded Cloud Workflows engine (reference §6): loads a definition, refusing what it does
not support, and runs executions durably in the DocumentStore.

``WorkflowEngine`` implements the ``WorkflowExecutions`` port; ``create_app`` (``api.py``)
serves the executions and callback HTTP API.
"""

from .clock import Clock, FakeClock, SystemClock
from .definition import Program, load_program
from .effects import HttpResponse, HttpTransport, HttpxTransport, TransportError
from .engine import WorkflowEngine, parse_callback_url
from .errors import DefinitionError, WorkflowError

__all__ = [
    "Clock",
    "DefinitionError",
    "FakeClock",
    "HttpResponse",
    "HttpTransport",
    "HttpxTransport",
    "Program",
    "SystemClock",
    "TransportError",
    "WorkflowEngine",
    "WorkflowError",
    "load_program",
    "parse_callback_url",
]
