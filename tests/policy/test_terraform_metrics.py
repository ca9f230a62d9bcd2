"""The services' Prometheus metrics reach Cloud Monitoring in Google Cloud (issue #22 item 4), and
never the internet: every Cloud Run service runs Managed Service for Prometheus' collector as a
sidecar beside its app (the ingress container, the only one with a port, started first), its
identity may write metrics, and the edge's Cloud Armor policy refuses ``/metrics`` before any
other rule (the command service is the default backend: it gets every path no other one lists).

Each check returns its problems (empty = compliant) and is also run on a broken copy, which it
must report.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.policy.terraform_policy import (
    Block,
    Tree,
    Unresolved,
    bare,
    load_tree,
    resolve_strings,
    unq,
)

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
RUN_SERVICE = (TERRAFORM / "modules" / "cloud-run-service").resolve()
SIDECAR_IMAGE = (
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar"
)
PINNED = re.compile(r":\d+\.\d+\.\d+$|@sha256:[0-9a-f]{64}$")
METRIC_WRITER = "roles/monitoring.metricWriter"
METRICS_PATH = "/metrics"
# How a scanner might spell /metrics (the app's router decodes the path before matching it).
METRICS_SPELLINGS = ("/metrics", "/metrics/", "//metrics", "/%6Detrics", "/%2Fmetrics", "/METRICS")
# Cloud Armor's partial RE2 match on the path, lowered and/or URL-decoded first.
PATH_MATCH = re.compile(r"request\.path((?:\.lower\(\)|\.urlDecode\(\))*)\.matches\('([^']+)'\)")


@pytest.fixture(scope="module")
def tree() -> Tree:
    return load_tree(TERRAFORM)


# Reading the tree -----------------------------------------------------------------------------


def _containers(template: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """Each container of a revision template, with the ``for_each`` of its dynamic block (None:
    a static container)."""
    found: list[tuple[dict[str, Any], str | None]] = [
        (c, None) for c in template.get("containers", []) if isinstance(c, dict)
    ]
    for dynamic in template.get("dynamic", []):
        for label, spec in dynamic.items():
            if unq(label) == "containers":
                found.extend((c, bare(spec["for_each"])) for c in spec.get("content", []))
    return found


def _variable(tree: Tree, directory: Path, name: str) -> dict[str, Any] | None:
    for path, parsed in tree.files.items():
        if path.parent != directory:
            continue
        for entry in parsed.get("variable", []):
            for label, body in entry.items():
                if unq(label) == name:
                    return dict(body)
    return None


def _effective(tree: Tree, directory: Path, name: str) -> set[str]:
    """What ``var.name`` of the module in ``directory`` is, per module call: the caller's value,
    else the variable's default (as bare HCL text)."""
    variable = _variable(tree, directory, name)
    default = None if variable is None or "default" not in variable else variable["default"]
    values = set()
    callers: list[Block | None] = [*tree.callers(directory)] or [None]
    for caller in callers:
        if caller is not None and name in caller.body:
            values.add(_hcl(caller.body[name]))
        elif default is not None:
            values.add(_hcl(default))
        else:
            values.add("<unset>")
    return values


def _hcl(value: Any) -> str:
    """A value as HCL writes it (python-hcl2 gives booleans and numbers as Python values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return bare(value) if isinstance(value, str) else str(value)


def _strings(tree: Tree, value: Any, directory: Path) -> set[str]:
    try:
        return resolve_strings(tree, value, directory)
    except Unresolved:
        return set()


# The sidecar ----------------------------------------------------------------------------------


def check_metrics_sidecar(tree: Tree) -> list[str]:
    """Every Cloud Run service runs the collector beside its app: the app is the one container
    with a port (ingress), the collector has none, starts after the app, runs Google's image
    pinned by a version tag, and no caller of the module turns it off."""
    problems: list[str] = []
    services = tree.of("google_cloud_run_v2_service", "google_cloud_run_service")
    if not services:
        problems.append("no Cloud Run service found")
    for service in services:
        (template,) = service.body.get("template", [{}])
        containers = _containers(template)
        ingress = [(c, each) for c, each in containers if c.get("ports")]
        if len(ingress) != 1 or ingress[0][1] is not None:
            problems.append(f"{service.where()}: exactly one static container must have a port")
            continue
        app_names = _strings(tree, ingress[0][0].get("name", '""'), service.dir)
        if not app_names or "" in app_names:
            problems.append(f"{service.where()}: the ingress container has no name to depend on")
        sidecars = [(c, each) for c, each in containers if c is not ingress[0][0]]
        collectors = []
        for container, each in sidecars:
            images = _sidecar_images(tree, service, container, each)
            if images and all(i.split("@")[0].rsplit(":", 1)[0] == SIDECAR_IMAGE for i in images):
                collectors.append((container, each, images))
        if len(collectors) != 1:
            problems.append(f"{service.where()}: no Managed Service for Prometheus sidecar")
            continue
        container, each, images = collectors[0]
        if container.get("ports"):
            problems.append(f"{service.where()}: the collector must not take requests (a port)")
        after = {
            d for dep in container.get("depends_on", []) for d in _strings(tree, dep, service.dir)
        }
        if not app_names or not app_names <= after:
            problems.append(f"{service.where()}: the collector must start after the app")
        for image in images:
            if not PINNED.search(image):
                problems.append(f"{service.where()}: sidecar image {image} is not pinned")
        if each is not None:
            switch = re.fullmatch(r"var\.(\w+)\s*\?\s*\[.+\]\s*:\s*\[\]", each)
            if not switch:
                problems.append(f"{service.where()}: the sidecar's for_each is not a switch")
                continue
            for value in _effective(tree, service.dir, switch.group(1)):
                if value != "true":
                    problems.append(f"{service.where()}: var.{switch.group(1)} is {value}")
    return problems


def _sidecar_images(
    tree: Tree, service: Block, container: dict[str, Any], each: str | None
) -> set[str]:
    image = bare(container.get("image", ""))
    if each is not None and image == "containers.value":
        listed = re.search(r"\[\s*var\.(\w+)\s*\]", each)
        if not listed:
            return set()
        return {unq(v) for v in _effective(tree, service.dir, listed.group(1))}
    return _strings(tree, container.get("image", ""), service.dir)


def check_metric_writer(tree: Tree) -> list[str]:
    """Each Cloud Run service's own account holds roles/monitoring.metricWriter (the collector
    writes with it)."""
    problems: list[str] = []
    for service in tree.of("google_cloud_run_v2_service"):
        (template,) = service.body.get("template", [{}])
        account = re.fullmatch(
            r"google_service_account\.(\w+)\.email", bare(template.get("service_account", ""))
        )
        if not account:
            problems.append(f"{service.where()}: not run as an account of its own")
            continue
        member = f"google_service_account.{account.group(1)}.member"
        grants = [
            g
            for g in tree.of("google_project_iam_member")
            if g.dir == service.dir and bare(g.body.get("member", "")) == member
        ]
        roles: set[str] = set()
        for grant in grants:
            role = bare(grant.body.get("role", ""))
            if role == "each.key":
                source = bare(grant.body.get("for_each", ""))
                local = re.fullmatch(r"local\.(\w+)", source)
                if local:
                    source = bare(tree.locals.get(service.dir, {}).get(local.group(1), ""))
                roles |= set(re.findall(r'"(roles/[\w.]+)"', source))
            else:
                roles.add(unq(role))
        if METRIC_WRITER not in roles:
            problems.append(f"{service.where()}: its account may not write metrics")
    return problems


# The edge -------------------------------------------------------------------------------------


def _rules(tree: Tree, policy: Block) -> list[tuple[int, str, str]]:
    """(priority, action, expression) of each rule, the dynamic ones from their local table."""
    rules = []
    for rule in policy.body.get("rule", []):
        expression = ""
        for match in rule.get("match", []):
            for expr in match.get("expr", []):
                expression = unq(expr.get("expression", ""))
        rules.append((int(rule["priority"]), unq(rule["action"]), expression))
    for dynamic in policy.body.get("dynamic", []):
        for label, spec in dynamic.items():
            if unq(label) != "rule":
                continue
            table = re.fullmatch(r"local\.(\w+)", bare(spec["for_each"]))
            entries = tree.locals.get(policy.dir, {}).get(table.group(1), {}) if table else {}
            for content in spec.get("content", []):
                for entry in entries.values():
                    rules.append(
                        (int(entry["priority"]), unq(content["action"]), entry["expression"])
                    )
    return rules


def refuses(expression: str, path: str) -> bool:
    """Whether a Cloud Armor path expression of the form this module uses matches ``path``."""
    match = PATH_MATCH.fullmatch(expression.strip())
    if not match:
        return False
    value = path
    for step in re.findall(r"\.(\w+)\(\)", match.group(1)):
        value = value.lower() if step == "lower" else unquote(value)
    return re.search(match.group(2), value) is not None


def check_metrics_not_public(tree: Tree, public_routes: set[str]) -> list[str]:
    """Every Cloud Armor policy on the edge denies /metrics (however spelt) before any other
    rule, and denies no public route."""
    problems: list[str] = []
    policies = tree.of("google_compute_security_policy")
    if not policies:
        problems.append("no Cloud Armor policy at the edge")
    for policy in policies:
        rules = _rules(tree, policy)
        denials = [r for r in rules if r[1].startswith("deny(") and PATH_MATCH.fullmatch(r[2])]
        metrics = [r for r in denials if refuses(r[2], METRICS_PATH)]
        if not metrics:
            problems.append(f"{policy.where()}: /metrics is not denied")
            continue
        priority, _, expression = min(metrics)
        if any(p <= priority for p, _, e in rules if e != expression):
            problems.append(f"{policy.where()}: a rule is evaluated before the /metrics denial")
        for spelling in METRICS_SPELLINGS:
            if not refuses(expression, spelling):
                problems.append(f"{policy.where()}: {spelling} passes the /metrics denial")
        for route in sorted(public_routes):
            if refuses(expression, route):
                problems.append(f"{policy.where()}: the /metrics denial refuses {route}")
    return problems


def public_routes() -> set[str]:
    """The route templates the public services (command API, live map) declare."""
    sources = [*(REPO / "services/command").rglob("*.py"), REPO / "services/live_map/app.py"]
    routes: set[str] = set()
    for source in sources:
        text = source.read_text()
        routes |= set(
            re.findall(r'\.(?:get|post|put|patch|delete|api_route|route)\(\s*"(/[^"]*)"', text)
        )
        routes |= set(re.findall(r'add_\w*route\(\s*"(/[^"]*)"', text))
    return routes - {METRICS_PATH}


# The tree as it is ----------------------------------------------------------------------------


def test_every_cloud_run_service_runs_the_managed_prometheus_sidecar(tree: Tree) -> None:
    assert check_metrics_sidecar(tree) == []
    # Only the shared module creates Cloud Run services, and every service is one of its calls.
    assert {s.dir for s in tree.of("google_cloud_run_v2_service")} == {RUN_SERVICE}
    assert {c.name for c in tree.callers(RUN_SERVICE)} == {"reactor", "service"}


def test_the_app_container_is_the_ingress_on_the_port_the_sidecar_scrapes(tree: Tree) -> None:
    (service,) = tree.of("google_cloud_run_v2_service")
    (template,) = service.body["template"]
    (app,) = [c for c, _ in _containers(template) if c.get("ports")]
    (port,) = app["ports"]
    # The collector's default RunMonitoring scrapes :8080/metrics; Cloud Run sets the app's $PORT
    # (meridian.edge.serve listens on it) to its container's port.
    assert bare(port["container_port"]) == "local.app_port"
    assert tree.locals[RUN_SERVICE]["app_port"] == 8080
    assert bare(app["image"]) == "var.image"


def test_the_services_may_write_metrics(tree: Tree) -> None:
    assert check_metric_writer(tree) == []


def test_metrics_are_refused_at_the_edge(tree: Tree) -> None:
    routes = public_routes()
    assert any(r.startswith("/v1/") for r in routes) and "/map" in routes
    assert check_metrics_not_public(tree, routes) == []
    # Why the rule is needed: the command service takes every path no other backend lists.
    (url_map,) = [m for m in tree.of("google_compute_url_map") if m.name == "https"]
    assert "[var.default_backend]" in bare(url_map.body["default_service"])
    (edge,) = [m for m in tree.modules() if m.name == "edge"]
    assert unq(edge.body["default_backend"]) == "command"


# Broken copies --------------------------------------------------------------------------------


class Copy:
    """terraform/ copied to a temporary directory, to break on purpose."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(TERRAFORM, root)

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new, 1))

    def tree(self) -> Tree:
        return load_tree(self.root)


@pytest.fixture
def copy(tmp_path: Path) -> Copy:
    return Copy(tmp_path / "terraform")


MAIN = "modules/cloud-run-service/main.tf"
VARIABLES = "modules/cloud-run-service/variables.tf"
SERVICES = "modules/meridian/services.tf"
EDGE = "modules/edge/main.tf"


def test_a_service_without_the_sidecar_is_reported(copy: Copy) -> None:
    copy.edit(MAIN, 'dynamic "containers" {', 'dynamic "volumes" {')
    assert any(
        "no Managed Service for Prometheus sidecar" in p for p in check_metrics_sidecar(copy.tree())
    )


def test_a_caller_switching_the_sidecar_off_is_reported(copy: Copy) -> None:
    # The reactors' module call (the first of the two) turns it off.
    copy.edit(
        SERVICES,
        "  deletion_protection = var.deletion_protection\n",
        "  managed_prometheus  = false\n",
    )
    problems = check_metrics_sidecar(copy.tree())
    assert any("var.managed_prometheus is false" in p for p in problems), problems


def test_a_sidecar_off_by_default_is_reported(copy: Copy) -> None:
    copy.edit(
        VARIABLES,
        "type        = bool\n  default     = true",
        "type        = bool\n  default     = false",
    )
    assert any("var.managed_prometheus is false" in p for p in check_metrics_sidecar(copy.tree()))


def test_an_unpinned_sidecar_image_is_reported(copy: Copy) -> None:
    copy.edit(VARIABLES, "cloud-run-gmp-sidecar:1.2.0", "cloud-run-gmp-sidecar:latest")
    problems = check_metrics_sidecar(copy.tree())
    assert any("is not pinned" in p for p in problems), problems


def test_a_sidecar_starting_with_the_app_is_reported(copy: Copy) -> None:
    copy.edit(MAIN, "        depends_on = [local.app_container]\n", "")
    assert any("start after the app" in p for p in check_metrics_sidecar(copy.tree()))


def test_a_sidecar_taking_the_port_is_reported(copy: Copy) -> None:
    copy.edit(MAIN, "      ports {\n        container_port = local.app_port\n      }\n", "")
    assert any("exactly one static container" in p for p in check_metrics_sidecar(copy.tree()))


def test_an_account_without_the_metric_writer_role_is_reported(copy: Copy) -> None:
    copy.edit(MAIN, 'var.managed_prometheus ? ["roles/monitoring.metricWriter"] : [],', "[],")
    copy.edit(SERVICES, ', "roles/monitoring.metricWriter"]', "]")
    assert any("may not write metrics" in p for p in check_metric_writer(copy.tree()))


def test_an_edge_without_the_metrics_denial_is_reported(copy: Copy) -> None:
    copy.edit(EDGE, "matches('/metrics')", "matches('/healthz')")
    problems = check_metrics_not_public(copy.tree(), public_routes())
    assert any("/metrics is not denied" in p for p in problems)


def test_a_metrics_denial_after_the_rate_limit_or_undecoded_is_reported(copy: Copy) -> None:
    copy.edit(EDGE, "priority    = 900", "priority    = 2001")
    copy.edit(EDGE, "request.path.lower().urlDecode()", "request.path")
    problems = check_metrics_not_public(copy.tree(), public_routes())
    assert any("evaluated before the /metrics denial" in p for p in problems)
    assert any("/%6Detrics passes" in p for p in problems)


def test_a_metrics_denial_refusing_public_routes_is_reported(copy: Copy) -> None:
    copy.edit(EDGE, "matches('/metrics')", "matches('/(metrics|v1)')")
    problems = check_metrics_not_public(copy.tree(), public_routes())
    assert any("the /metrics denial refuses /v1/" in p for p in problems)
