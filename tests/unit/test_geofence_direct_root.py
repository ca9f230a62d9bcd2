"""The DirectRunner internals the geofence job's local roots rely on (``pipelines/geofence/
direct_root.py``) are still there in the installed Beam: when an upgrade changes them, this fails
naming the version and what is missing, before any pipeline test hangs or misbehaves."""

from __future__ import annotations

import apache_beam as beam
import pytest

from pipelines.geofence import direct_root


def test_the_beam_internals_the_local_roots_use_are_there() -> None:
    missing = direct_root.missing_beam_internals()
    assert not missing, (
        f"apache_beam {beam.__version__} changed the DirectRunner internals that "
        f"pipelines/geofence/direct_root.py uses: {'; '.join(missing)}. Adapt RootEvaluator "
        "and register_root there (nothing else touches them)."
    )


def test_a_changed_beam_is_refused_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from apache_beam.runners.direct import transform_evaluator

    monkeypatch.delattr(
        transform_evaluator.TransformEvaluatorRegistry, "_test_evaluators_overrides"
    )
    assert direct_root.missing_beam_internals() == [
        "TransformEvaluatorRegistry._test_evaluators_overrides (a dict)"
    ]
    with pytest.raises(RuntimeError, match=rf"apache_beam {beam.__version__} changed"):
        direct_root.register_root(direct_root.UnboundedRoot, direct_root.RootEvaluator)
