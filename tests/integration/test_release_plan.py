"""``meridian release plan`` on throw-away git repositories: one rule a test, each on a small
synthetic tree (a catalog, a few modules, Terraform roots, a workflow) committed and tagged in
tmp_path, then changed and committed again."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meridian.release.git import Repository
from meridian.release.plan import Plan, plan_release
from meridian.release.schema_gate import BreakingSchemaChange
from meridian.runtime.release_cli import app

DLQ = (
    "{{topic: {name}.dlq, delivery: {{type: pull, consumer: operator}}, ack_deadline_seconds: 60}}"
)
CATALOG = f"""
version: 1
services:
  alpha: {{package: services.alpha, kind: http, sources: [Dockerfile]}}
  beta:  {{package: services.beta, kind: push-reactor, sources: [Dockerfile]}}
  gamma: {{package: services.gamma, kind: push-reactor, sources: [Dockerfile]}}
  geo:   {{package: pipelines.geo, kind: pipeline}}
topics:
  events: {{description: Business facts.}}
  beta.dlq: {{description: dead letters}}
  gamma.dlq: {{description: dead letters}}
event_types:
  Thing: {{schema: avro/Thing.avsc, version: 1, description: a thing, producer: alpha,
          topic: events, subject: thing_id}}
  Other: {{schema: avro/Other.avsc, version: 1, description: another, producer: geo,
          topic: events, subject: thing_id}}
subscriptions:
  beta:
    topic: events
    filter: attributes.eventType = "Thing"
    delivery: {{type: push, service: beta}}
    dead_letter_topic: beta.dlq
    max_delivery_attempts: 5
  gamma:
    topic: events
    filter: attributes.eventType = "Other"
    delivery: {{type: push, service: gamma}}
    dead_letter_topic: gamma.dlq
    max_delivery_attempts: 5
  beta-dead-letters: {DLQ.format(name="beta")}
  gamma-dead-letters: {DLQ.format(name="gamma")}
"""


def _schema(name: str, *extra: dict[str, object]) -> str:
    fields = [{"name": "thing_id", "type": "string"}, {"name": "size", "type": "long"}, *extra]
    return json.dumps({"type": "record", "name": name, "fields": fields})


TREE = {
    "schemas/catalog.yaml": CATALOG,
    "schemas/avro/Thing.avsc": _schema("Thing"),
    "schemas/avro/Other.avsc": _schema("Other"),
    "meridian/__init__.py": "",
    "meridian/codec/__init__.py": "",
    "meridian/codec/events.py": "import json\n",
    "meridian/util.py": "",
    "meridian/runtime/__init__.py": "",
    "meridian/runtime/cli.py": "import typer\n",
    "meridian/release/plan.py": "",
    "services/__init__.py": "",
    "services/alpha/__init__.py": "",
    "services/alpha/app.py": "from meridian.codec.events import EventCodec\n",
    "services/beta/__init__.py": "",
    "services/beta/app.py": "from meridian import util\n",
    "services/gamma/__init__.py": "",
    "services/gamma/app.py": "def f():\n    from ..gamma import handlers\n",
    "services/gamma/handlers.py": "",
    "pipelines/__init__.py": "",
    "pipelines/geo/__init__.py": "from meridian.codec import events\n",
    "workflows/dispatch.yaml": "main:\n  steps: []\n",
    "terraform/environments/dev/main.tf": "",
    "terraform/environments/prod/main.tf": "",
    "terraform/modules/meridian/main.tf": "",
    "docs/releasing.md": "# Releasing\n",
    "README.md": "# Meridian\n",
    "tests/test_x.py": "",
    "loadtest/bench.py": "",
    ".github/workflows/ci.yml": "on: push\n",
    ".ci/x.sh": "",
    "Dockerfile": "FROM python\n",
    "uv.lock": "",
    "pyproject.toml": "",
}


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def _commit(
    root: Path, files: dict[str, str], message: str = "change", tag: str | None = None
) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "--allow-empty", "-m", message)
    if tag:
        _git(root, "tag", tag)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "release@example.com")
    _git(tmp_path, "config", "user.name", "Release")
    _commit(tmp_path, TREE, "first", tag="v1.0.0")
    return tmp_path


def _released(repo: Path, files: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Commit ``files`` as the next v1.N.0 and plan it against the tag before."""
    tags = subprocess.run(
        ["git", "-C", str(repo), "tag", "--list", "v*"], check=True, capture_output=True, text=True
    ).stdout.split()
    base, head = f"v1.{len(tags) - 1}.0", f"v1.{len(tags)}.0"
    _commit(repo, files, tag=head)
    plan = plan_release(Repository(repo), base, head)
    return {r.deployable.name: r.because for r in plan.releases}


def test_a_docs_only_tag_releases_nothing(repo: Path) -> None:
    released = _released(
        repo,
        {
            "docs/releasing.md": "# Releasing, again\n",
            "README.md": "more\n",
            "tests/test_x.py": "x = 1\n",
            "loadtest/bench.py": "x = 1\n",
            ".ci/x.sh": "echo\n",
            ".github/workflows/ci.yml": "on: pull_request\n",
            "meridian/release/plan.py": "x = 1\n",
        },
    )
    assert released == {}


def test_a_change_to_the_codec_releases_exactly_the_services_that_import_it(repo: Path) -> None:
    released = _released(repo, {"meridian/codec/events.py": "import json\nimport io\n"})
    assert released == {
        "alpha": ("meridian/codec/events.py",),
        "geo": ("meridian/codec/events.py",),
    }


def test_a_core_module_releases_its_importers_only(repo: Path) -> None:
    assert set(_released(repo, {"meridian/util.py": "x = 1\n"})) == {"beta"}


def test_the_entrypoint_releases_every_cloud_run_service(repo: Path) -> None:
    released = _released(repo, {"meridian/runtime/cli.py": "import typer\nx = 1\n"})
    assert set(released) == {"alpha", "beta", "gamma"}


def test_a_change_in_a_services_package_releases_that_service_only(repo: Path) -> None:
    assert set(_released(repo, {"services/gamma/handlers.py": "x = 1\n"})) == {"gamma"}


def test_the_lock_and_pyproject_release_every_image(repo: Path) -> None:
    released = _released(repo, {"uv.lock": "# new\n"})
    assert set(released) == {"alpha", "beta", "gamma", "geo"}
    assert set(_released(repo, {"pyproject.toml": "[project]\n"})) == set(released)


def test_the_dockerfile_releases_the_services_built_from_it(repo: Path) -> None:
    assert set(_released(repo, {"Dockerfile": "FROM python:3.11\n"})) == {"alpha", "beta", "gamma"}


def test_terraform_releases_the_infrastructure_per_environment(repo: Path) -> None:
    assert set(_released(repo, {"terraform/environments/prod/main.tf": "# x\n"})) == {
        "infrastructure:prod"
    }
    _commit(repo, {"terraform/modules/meridian/main.tf": "# x\n"}, tag="v1.2.0")
    plan = plan_release(Repository(repo), "v1.1.0", "v1.2.0")
    assert [r.deployable.name for r in plan.releases] == [
        "infrastructure:dev",
        "infrastructure:prod",
    ]


def test_a_workflow_releases_that_workflow(repo: Path) -> None:
    assert _released(repo, {"workflows/dispatch.yaml": "main:\n  steps: [{a: {return: 1}}]\n"}) == {
        "workflow:dispatch": ("workflows/dispatch.yaml",)
    }


def test_an_additive_schema_change_releases_the_schema_step_and_its_producer_and_consumers(
    repo: Path,
) -> None:
    note = {"name": "note", "type": ["null", "string"], "default": None}
    released = _released(repo, {"schemas/avro/Thing.avsc": _schema("Thing", note)})
    assert set(released) == {"schemas", "alpha", "beta"}


def test_a_schema_change_with_a_removed_field_fails_the_plan_naming_the_field(repo: Path) -> None:
    removed = json.dumps(
        {"type": "record", "name": "Thing", "fields": [{"name": "thing_id", "type": "string"}]}
    )
    _commit(repo, {"schemas/avro/Thing.avsc": removed}, tag="v1.1.0")
    with pytest.raises(BreakingSchemaChange, match="'size'") as refused:
        plan_release(Repository(repo), "v1.0.0", "v1.1.0")
    assert refused.value.field == "size"
    assert refused.value.event_type == "Thing"
    result = CliRunner().invoke(app, ["plan", "--repo", str(repo), "--json"])
    assert result.exit_code == 1
    assert "field 'size'" in result.output


def test_a_catalog_change_releases_the_entries_that_differ(repo: Path) -> None:
    changed = CATALOG.replace(
        "max_delivery_attempts: 5\n  gamma:", "max_delivery_attempts: 7\n  gamma:"
    )
    assert changed != CATALOG
    assert set(_released(repo, {"schemas/catalog.yaml": changed})) == {"schemas", "beta"}
    _commit(repo, {"schemas/catalog.yaml": "# a comment\n" + changed}, tag="v1.2.0")
    plan = plan_release(Repository(repo), "v1.1.0", "v1.2.0")
    assert plan.releases == ()
    assert plan.unreleased == {"schemas/catalog.yaml": "comments and layout only"}


def test_the_plan_defaults_to_the_previous_v_tag_and_an_environment_to_its_own(repo: Path) -> None:
    _git(repo, "tag", "prod-v1.0.0", "v1.0.0")
    _commit(repo, {"services/beta/app.py": "x = 1\n"}, tag="v1.1.0")
    _commit(repo, {"services/gamma/app.py": "x = 1\n"}, tag="v1.2.0")
    runner = CliRunner()
    plan = Plan.from_json(
        json.loads(runner.invoke(app, ["plan", "--repo", str(repo), "--json"]).output)
    )
    assert (plan.base, [r.deployable.name for r in plan.releases]) == ("v1.1.0", ["gamma"])
    prod = runner.invoke(app, ["plan", "--repo", str(repo), "--json", "--environment", "prod"])
    plan = Plan.from_json(json.loads(prod.output))
    assert (plan.base, [r.deployable.name for r in plan.releases]) == (
        "prod-v1.0.0",
        ["beta", "gamma"],
    )
    table = runner.invoke(app, ["plan", "--repo", str(repo)])
    assert (
        table.exit_code == 0 and "gamma" in table.output and "services/gamma/app.py" in table.output
    )


def test_a_first_release_releases_everything(repo: Path) -> None:
    plan = plan_release(Repository(repo), None, "v1.0.0")
    assert {r.deployable.name for r in plan.releases} == {
        "schemas",
        "alpha",
        "beta",
        "gamma",
        "geo",
        "workflow:dispatch",
        "infrastructure:dev",
        "infrastructure:prod",
    }
