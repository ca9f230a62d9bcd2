"""The one module that touches Beam's DirectRunner internals: how the job's own roots run there.

Locally, two roots of ours feed the job: the broker source (``source.py``) and the fence refresh
(``fence_feed.py``). Why not a public API: the DirectRunner holds the output watermark of an
unfinished splittable DoFn (and so of ``PeriodicImpulse``) at -infinity, so no event-time timer
downstream would fire and no side input would ever be ready; a DoFn looping after an ``Impulse``
never finishes its bundle, so nothing it outputs is committed; ``TestStream`` replays a fixed
script. What the DirectRunner does run as a live, watermark-holding root is a primitive transform
with a *root transform evaluator* of its own (that is how Beam itself runs its Pub/Sub read and
TestStream there). Such an evaluator subclasses Beam's private ``_TransformEvaluator`` and is
registered in ``TransformEvaluatorRegistry._test_evaluators_overrides``; both, and the private
attributes it reads, are used here and nowhere else. ``missing_beam_internals`` lists what of them
a Beam upgrade took away: ``register_root`` refuses to start on such a Beam, and
``tests/unit/test_geofence_direct_root.py`` fails naming the version and the attribute. On
Dataflow none of this runs (``source.py`` and ``fence_feed.py`` use ``ReadFromPubSub`` and
``PeriodicImpulse`` there).

A root here implements ``RootEvaluator.evaluate``: the elements it outputs now (in the global
window) and its watermark hold; the runner evaluates it again until the hold is +infinity. The
runner makes an evaluator per bundle, so what a running root keeps between evaluations lives in
``RunStates``, keyed by the transform.
"""

from __future__ import annotations

import abc
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.runners.direct import evaluation_context, transform_evaluator
from apache_beam.runners.direct.util import TransformResult
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

S = TypeVar("S")

# What ``RootEvaluator`` reads of the evaluator Beam builds (set by ``_TransformEvaluator``).
_EVALUATOR_ATTRIBUTES = ("_evaluation_context", "_applied_ptransform", "_outputs")


def missing_beam_internals() -> list[str]:
    """What this module needs of the installed Beam's DirectRunner and does not find there."""
    missing = []
    base = getattr(transform_evaluator, "_TransformEvaluator", None)
    if base is None:
        return ["apache_beam.runners.direct.transform_evaluator._TransformEvaluator"]
    names = set(base.__init__.__code__.co_names)
    expand = getattr(base, "_expand_outputs", None)
    if expand is not None:
        names |= set(expand.__code__.co_names)
    missing += [
        f"_TransformEvaluator.{name} (set by its __init__)"
        for name in _EVALUATOR_ATTRIBUTES
        if name not in names
    ]
    overrides = getattr(
        transform_evaluator.TransformEvaluatorRegistry, "_test_evaluators_overrides", None
    )
    if not isinstance(overrides, dict):
        missing.append("TransformEvaluatorRegistry._test_evaluators_overrides (a dict)")
    context = evaluation_context.EvaluationContext
    for method in ("create_bundle", "is_done"):
        if not callable(getattr(context, method, None)):
            missing.append(f"EvaluationContext.{method}")
    if "_root_transforms" not in context.__init__.__code__.co_names:
        missing.append("EvaluationContext._root_transforms (set by its __init__)")
    result_params = TransformResult.__init__.__code__.co_varnames[:6]
    expected = (
        "self",
        "transform_evaluator",
        "uncommitted_output_bundles",
        "unprocessed_bundles",
        "counters",
        "keyed_watermark_holds",
    )
    if result_params != expected:
        missing.append(f"TransformResult({', '.join(expected[1:])}), found {result_params[1:]}")
    return missing


def register_root(transform: type[UnboundedRoot], evaluator: type[RootEvaluator]) -> None:
    """Have the DirectRunner evaluate ``transform`` with ``evaluator``."""
    missing = missing_beam_internals()
    if missing:
        raise RuntimeError(
            f"apache_beam {beam.__version__} changed the DirectRunner internals that "
            f"pipelines/geofence/direct_root.py uses: {'; '.join(missing)}"
        )
    # The DirectRunner's documented-for-tests hook for evaluators of extra primitive transforms.
    transform_evaluator.TransformEvaluatorRegistry._test_evaluators_overrides[transform] = evaluator


class UnboundedRoot(beam.PTransform):
    """A root producing an unbounded PCollection of pickled elements in the global window."""

    def get_windowing(self, inputs: Any) -> beam.Windowing:
        return beam.Windowing(GlobalWindows())

    def _infer_output_coder(self, input_type: Any = None, input_coder: Any = None) -> PickleCoder:
        return PickleCoder()

    def expand(self, pbegin: pvalue.PBegin) -> pvalue.PCollection:
        # A primitive: the DirectRunner runs it with the evaluator registered for its class.
        return pvalue.PCollection(pbegin.pipeline, is_bounded=False)


class RootEvaluator(transform_evaluator._TransformEvaluator, abc.ABC):
    """An evaluator of a root: no input elements; ``evaluate`` does the work of one evaluation."""

    @abc.abstractmethod
    def evaluate(self) -> tuple[Sequence[tuple[Any, Timestamp]], Timestamp]:
        """(the elements to output with their timestamps, the watermark hold); a hold of
        ``MAX_TIMESTAMP`` means the root is done and is not evaluated again."""

    @property
    def transform(self) -> Any:
        """The root transform being evaluated (one object for the whole run)."""
        return self._applied_ptransform.transform

    def others_done(self) -> bool:
        """Whether every other root of the pipeline has finished."""
        context = self._evaluation_context
        return all(
            context.is_done(root)
            for root in context._root_transforms
            if root is not self._applied_ptransform
        )

    def start_bundle(self) -> None:
        pass

    def process_element(self, element: Any) -> None:
        pass

    def finish_bundle(self) -> TransformResult:
        outputs, hold = self.evaluate()
        bundles = []
        if outputs:
            bundle = self._evaluation_context.create_bundle(next(iter(self._outputs)))
            for value, timestamp in outputs:
                bundle.output(GlobalWindows.windowed_value(value, timestamp=timestamp))
            bundles.append(bundle)
        if hold >= MAX_TIMESTAMP:
            return TransformResult(self, bundles, [], None, {None: MAX_TIMESTAMP})
        again = self._evaluation_context.create_bundle(pvalue.PBegin(self.transform.pipeline))
        return TransformResult(self, bundles, [again], None, {None: hold})


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
