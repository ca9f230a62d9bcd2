"""The migration bridge's jobs are declared once and agree everywhere (#21): the catalog's ``jobs:``
(what Terraform makes a Cloud Run Job of, and the embedded engine may run) name exactly the
functions of ``services.sync.jobs.JOBS`` (what ``meridian job run NAME`` runs), both ways, and
every job ``workflows/sync.yaml`` starts is one of them.

A name in one place only fails at run time, far from the change that caused it: a catalog job
without a function is a Cloud Run Job whose container exits 2 ("no job"), a function without a
catalog entry is never deployed, and a job the workflow names but the catalog lacks makes every
sync end in SyncError."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from meridian.catalog import load_catalog
from meridian.resources import workflows_directory
from services.sync.jobs import JOBS

SYNC_WORKFLOW = workflows_directory() / "sync.yaml"
# How sync.yaml spells a job's name: the prefix and a literal (``prefix + "sync-report"``), or the
# prefix and the ``step`` variable, which its steps assign a job's name before running it.
LITERAL_JOB = re.compile(r'prefix\s*\+\s*"([^"]+)"')
STEP_JOB = re.compile(r"prefix\s*\+\s*step\b")
ANY_PREFIX = re.compile(r"\bprefix\b")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _step_assignments(node: Any) -> Iterator[str]:
    """Every value assigned to the workflow variable ``step``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "assign":
                for assignment in value:
                    if "step" in assignment:
                        yield str(assignment["step"])
            else:
                yield from _step_assignments(value)
    elif isinstance(node, list):
        for item in node:
            yield from _step_assignments(item)


def jobs_the_workflow_runs() -> set[str]:
    """The job names ``workflows/sync.yaml`` builds (every way it spells one, checked to be the
    only ways: an expression using ``prefix`` otherwise fails here rather than go unread)."""
    workflow = yaml.safe_load(SYNC_WORKFLOW.read_text())
    found: set[str] = set()
    uses_step = False
    for text in (s for s in _strings(workflow) if "${" in s):  # the expressions
        found.update(LITERAL_JOB.findall(text))
        uses_step = uses_step or bool(STEP_JOB.search(text))
        unread = STEP_JOB.sub("", LITERAL_JOB.sub("", text))
        assert not ANY_PREFIX.search(unread), (
            f"sync.yaml names a job in a way this test does not read: {text!r}; teach "
            "jobs_the_workflow_runs the new spelling"
        )
    if uses_step:
        found.update(_step_assignments(workflow))
    return found


def test_the_catalog_jobs_are_exactly_the_job_functions() -> None:
    declared = set(load_catalog().jobs)
    functions = set(JOBS)
    assert declared - functions == set(), (
        "catalog jobs with no function in services/sync/jobs.py JOBS (their container would exit "
        "2, 'no job'): register them there"
    )
    assert functions - declared == set(), (
        "JOBS entries the catalog's jobs: section does not declare (never deployed as Cloud Run "
        "Jobs, refused by the embedded engine): declare them in schemas/catalog.yaml"
    )


def test_every_job_the_sync_workflow_runs_is_a_catalog_job() -> None:
    run = jobs_the_workflow_runs()
    # the pipeline the issue names, so a broken reading of sync.yaml cannot pass vacuously
    assert {"sync-report", "sync-identities", "sync-shipments", "sync-ready"} <= run, run
    assert any("reconcile" in job for job in run), run
    assert run - set(load_catalog().jobs) == set(), (
        "workflows/sync.yaml runs jobs the catalog does not declare (each run would fail with "
        "SyncError): declare them in schemas/catalog.yaml's jobs: or fix the workflow"
    )
