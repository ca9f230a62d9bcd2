"""What the job's own DirectRunner root transforms share.

Locally, two roots of ours feed the job: the broker source (``source.py``) and the fence refresh
(``fence_feed.py``). Each is a primitive the DirectRunner evaluates with an evaluator of ours,
registered in ``TransformEvaluatorRegistry._test_evaluators_overrides``; the runner makes an
evaluator per bundle, so what a running root keeps between evaluations lives in ``RunStates``,
keyed by the transform.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.runners.direct.transform_evaluator import _TransformEvaluator
from apache_beam.transforms.window import GlobalWindows

S = TypeVar("S")


class UnboundedRoot(beam.PTransform):  # type: ignore[misc]
    """A root producing an unbounded PCollection of pickled elements in the global window."""

    def get_windowing(self, inputs: Any) -> beam.Windowing:
        return beam.Windowing(GlobalWindows())

    def _infer_output_coder(self, input_type: Any = None, input_coder: Any = None) -> PickleCoder:
        return PickleCoder()

    def expand(self, pbegin: pvalue.PBegin) -> pvalue.PCollection:
        # A primitive: the DirectRunner runs it with the evaluator registered for its class.
        return pvalue.PCollection(pbegin.pipeline, is_bounded=False)


class RootEvaluator(_TransformEvaluator):  # type: ignore[misc]
    """An evaluator of a root: no input elements; subclasses do their work in finish_bundle."""

    def start_bundle(self) -> None:
        pass

    def process_element(self, element: Any) -> None:
        pass


class RunStates(Generic[S]):
    """The state of each running root transform, made by ``make`` on first use (thread-safe)."""

    def __init__(self, make: Callable[[Any], S]) -> None:
        self._make = make
        self._states: weakref.WeakKeyDictionary[Any, S] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, transform: Any) -> S:
        with self._lock:
            state = self._states.get(transform)
            if state is None:
                state = self._states[transform] = self._make(transform)
            return state

    def values(self) -> Iterator[S]:
        with self._lock:
            return iter(list(self._states.values()))
