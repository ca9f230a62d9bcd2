"""The job's entry point reads a launcher's ``--name=value`` arguments before Beam does."""

from __future__ import annotations

import pytest

from pipelines.geofence.pipeline import launch_args


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["--streaming=true", "--backend=gcp"], ["--streaming", "--backend=gcp"]),
        (["--streaming=True"], ["--streaming"]),
        (["--streaming=false", "--backend=gcp"], ["--backend=gcp"]),
        (["--streaming"], ["--streaming"]),
        (
            ["--subscription=projects/p/subscriptions/geofence"],
            ["--subscription=projects/p/subscriptions/geofence"],
        ),
    ],
)
def test_streaming_as_a_launch_parameter_becomes_beams_flag(
    given: list[str], expected: list[str]
) -> None:
    assert launch_args(given) == expected


def test_a_streaming_value_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(SystemExit, match="--streaming takes true or false"):
        launch_args(["--streaming=sometimes"])
