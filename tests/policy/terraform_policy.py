"""Offline policy checks on terraform/ (no terraform binary): parse every file with python-hcl2
and prove, from the code itself, the wiring people most often get wrong.

Every check returns a list of problems (empty = compliant). Checks fail closed: an expression the
resolver cannot follow is a problem, never a pass. The resolver follows exactly what the
Terraform uses: quoted strings with ``${path.module}``, ``local.*`` and ``var.*`` (through every
module call of the module), ``yamldecode(file(...))`` of the catalog, and ``{for k, v in …: k => v
if v.kind == "…"}`` comprehensions over it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

REACTOR_KIND = "push-reactor"
INTERNAL_INGRESS = {"INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"}
CLOUD_RUN_SERVICES = {"google_cloud_run_v2_service", "google_cloud_run_service"}
CLOUD_RUN_IAM = {
    "google_cloud_run_v2_service_iam_member",
    "google_cloud_run_v2_service_iam_binding",
    "google_cloud_run_v2_service_iam_policy",
    "google_cloud_run_service_iam_member",
    "google_cloud_run_service_iam_binding",
    "google_cloud_run_service_iam_policy",
}
PROJECT_IAM = {
    "google_project_iam_member",
    "google_project_iam_binding",
    "google_project_iam_policy",
}

# Every attribute a catalog subscription may set => what the Terraform subscription must carry
# for it. A catalog attribute missing here is itself a failure: someone must map it.
SUBSCRIPTION_MAPPING: dict[str, tuple[str, ...]] = {
    "ack_deadline_seconds": ("ack_deadline_seconds",),
    "dead_letter_topic": ("dead_letter_policy",),
    "delivery.consumer": ("@google_pubsub_subscription_iam_member",),
    "delivery.path": ("push_config",),
    "delivery.service": ("push_config",),
    "delivery.table": ("bigquery_config",),
    "delivery.type": ("push_config", "bigquery_config"),
    "delivery.write_metadata": ("bigquery_config",),
    "filter": ("filter",),
    "max_delivery_attempts": ("dead_letter_policy",),
    "message_retention": ("message_retention_duration",),
    "ordering": ("enable_message_ordering",),
    "retry.maximum_backoff": ("retry_policy",),
    "retry.minimum_backoff": ("retry_policy",),
    "topic": ("topic",),
}


class Unresolved(Exception):
    """An expression the resolver cannot follow (the check then fails closed)."""


# Parsing --------------------------------------------------------------------------------------


@dataclass
class Block:
    kind: str  # resource | data | module
    type: str  # resource type, or "module"
    name: str
    body: dict[str, Any]
    dir: Path
    file: Path

    @property
    def address(self) -> str:
        return f"{self.type}.{self.name}"

    def where(self) -> str:
        return f"{self.file}: {self.kind} {self.address}"


@dataclass
class Tree:
    root: Path
    blocks: list[Block] = field(default_factory=list)
    locals: dict[Path, dict[str, Any]] = field(default_factory=dict)
    files: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def of(self, *types: str, kind: str = "resource") -> list[Block]:
        return [b for b in self.blocks if b.kind == kind and b.type in types]

    def modules(self) -> list[Block]:
        return [b for b in self.blocks if b.kind == "module"]

    def callers(self, module_dir: Path) -> list[Block]:
        """The module blocks whose source is ``module_dir``."""
        return [m for m in self.modules() if module_source_dir(m) == module_dir]


def unq(label: str) -> str:
    return label[1:-1] if len(label) >= 2 and label[0] == label[-1] == '"' else label


@functools.lru_cache(maxsize=512)
def _parse(text: str) -> dict[str, Any]:
    # The lark parser is slow; broken copies of the tree share most files, parse each text once.
    # Callers never mutate the result.
    return hcl2.loads(text)  # type: ignore[no-any-return]


def load_tree(root: Path) -> Tree:
    """Parse every .tf file under ``root`` (raises on a file python-hcl2 cannot parse)."""
    tree = Tree(root=root.resolve())
    for path in sorted(tree.root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        parsed = _parse(path.read_text())
        tree.files[path] = parsed
        directory = path.parent
        for entry in parsed.get("locals", []):
            tree.locals.setdefault(directory, {}).update(
                {k: v for k, v in entry.items() if k != "__is_block__"}
            )
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        tree.blocks.append(
                            Block(kind, unq(rtype), unq(name), body, directory, path)
                        )
        for entry in parsed.get("module", []):
            for name, body in entry.items():
                tree.blocks.append(Block("module", "module", unq(name), body, directory, path))
    return tree


def module_source_dir(module: Block) -> Path | None:
    source = unq(str(module.body.get("source", "")))
    if not source.startswith("."):
        return None
    return Path(os.path.normpath(module.dir / source))


# Expressions ----------------------------------------------------------------------------------


def bare(value: Any) -> str:
    """An hcl2 expression string without its ``${…}`` wrapper (literals keep their quotes)."""
    text = str(value).strip()
    if text.startswith("${") and text.endswith("}") and _closing(text, 1) == len(text) - 1:
        return text[2:-1].strip()
    return text


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (strings skipped)."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack: list[str] = []
    i, in_string = start, False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in pairs:
            stack.append(pairs[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return i
        i += 1
    return -1


def resolve_strings(tree: Tree, value: Any, directory: Path, depth: int = 0) -> set[str]:
    """Every string ``value`` can evaluate to (one per module call path)."""
    if depth > 20:
        raise Unresolved(f"{value!r}: reference loop")
    text = bare(value)
    ref = re.fullmatch(r"(local|var)\.([A-Za-z_][\w-]*)", text)
    if ref:
        return _resolve_ref(tree, ref.group(1), ref.group(2), directory, depth)
    if not (text.startswith('"') and text.endswith('"')):
        raise Unresolved(f"{value!r} is not a string, local or var")
    results = {""}
    literal = text[1:-1]
    pos = 0
    for match in re.finditer(r"\$\{([^}]*)\}", literal):
        pieces = {literal[pos : match.start()]}
        inner = match.group(1).strip()
        if inner == "path.module":
            pieces = {p + str(directory) for p in pieces}
        else:
            sub = re.fullmatch(r"(local|var)\.([A-Za-z_][\w-]*)", inner)
            if not sub:
                raise Unresolved(f"{value!r}: cannot follow ${{{inner}}}")
            found = _resolve_ref(tree, sub.group(1), sub.group(2), directory, depth)
            pieces = {p + f for p in pieces for f in found}
        results = {r + p for r in results for p in pieces}
        pos = match.end()
    return {r + literal[pos:] for r in results}


def _resolve_ref(tree: Tree, kind: str, name: str, directory: Path, depth: int) -> set[str]:
    if kind == "local":
        locals_ = tree.locals.get(directory, {})
        if name not in locals_:
            raise Unresolved(f"local.{name} is not defined in {directory}")
        return resolve_strings(tree, locals_[name], directory, depth + 1)
    callers = tree.callers(directory)
    if not callers:
        raise Unresolved(f"var.{name} of {directory} has no module call to resolve it")
    found: set[str] = set()
    for caller in callers:
        if name not in caller.body:
            raise Unresolved(f"{caller.where()} does not set {name}")
        found |= resolve_strings(tree, caller.body[name], caller.dir, depth + 1)
    return found


def resolve_path(tree: Tree, value: Any, directory: Path) -> set[Path]:
    return {Path(os.path.normpath(p)) for p in resolve_strings(tree, value, directory)}


_FILE_CALL = re.compile(r"yamldecode\(\s*file\((.+)\)\s*\)")


def decoded_file(tree: Tree, value: Any, directory: Path) -> set[Path] | None:
    """The files ``yamldecode(file(X))`` reads, or None if ``value`` is not that."""
    match = _FILE_CALL.fullmatch(bare(value))
    if not match:
        return None
    arg = match.group(1).strip()
    return resolve_path(tree, arg if arg.startswith('"') else "${" + arg + "}", directory)


@dataclass
class Comprehension:
    key: str
    var: str
    source: str
    value: str
    condition: str | None


def parse_comprehension(value: Any) -> Comprehension | None:
    text = bare(value)
    match = re.match(r"\{\s*for\s+(\w+)\s*,\s*(\w+)\s+in\s+([\w.\[\]\"-]+)\s*:\s*", text)
    if not match or _closing(text, 0) != len(text) - 1:
        return None
    rest = text[match.end() : -1]
    # a top-level `if` (not inside brackets or strings) filters the input
    depth, in_string, i, cut = 0, False, 0, None
    while i < len(rest):
        ch = rest[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif depth == 0 and rest.startswith(" if ", i):
            cut = i
            break
        i += 1
    value_text = rest[:cut] if cut is not None else rest
    condition = rest[cut + 4 :].strip() if cut is not None else None
    return Comprehension(
        match.group(1), match.group(2), match.group(3), value_text.strip(), condition
    )


def evaluate_condition(condition: str, var: str, item: dict[str, Any]) -> bool:
    """``v.kind == "x"``, ``!=``, ``contains([...], v.kind)`` joined by && / ||; else Unresolved."""
    if "(" in condition.replace("contains(", ""):
        raise Unresolved(f"condition {condition!r} is too complex to prove")
    return any(
        all(_atom(part.strip(), var, item) for part in disjunct.split("&&"))
        for disjunct in condition.split("||")
    )


def _atom(atom: str, var: str, item: dict[str, Any]) -> bool:
    compare = re.fullmatch(
        rf"(?:try\()?{var}\.(\w+)(?:,\s*\"([^\"]*)\"\))?\s*(==|!=)\s*\"([^\"]*)\"", atom
    )
    if compare:
        attribute, default, op, literal = compare.groups()
        actual = item.get(attribute, default)
        return (actual == literal) == (op == "==")
    contains = re.fullmatch(rf"(!?)contains\(\[([^\]]*)\],\s*{var}\.(\w+)\)", atom)
    if contains:
        negate, values, attribute = contains.groups()
        listed = {unq(v.strip()) for v in values.split(",") if v.strip()}
        return (item.get(attribute) in listed) != bool(negate)
    raise Unresolved(f"condition {atom!r} is too complex to prove")


def resolve_collection(
    tree: Tree, value: Any, directory: Path, catalog: dict[str, Any], catalog_path: Path
) -> dict[str, Any]:
    """Evaluate a map expression built from the decoded catalog (see module docstring)."""
    text = bare(value)
    comprehension = parse_comprehension(value)
    if comprehension:
        source = resolve_collection(tree, comprehension.source, directory, catalog, catalog_path)
        if comprehension.condition is None:
            return dict(source)
        return {
            k: v
            for k, v in source.items()
            if evaluate_condition(comprehension.condition, comprehension.var, v)
        }
    ref = re.fullmatch(r"local\.([A-Za-z_][\w-]*)((?:\.[\w-]+)*)", text)
    if not ref:
        raise Unresolved(f"{value!r} is not built from the catalog")
    locals_ = tree.locals.get(directory, {})
    if ref.group(1) not in locals_:
        raise Unresolved(f"local.{ref.group(1)} is not defined in {directory}")
    definition = locals_[ref.group(1)]
    files = decoded_file(tree, definition, directory)
    if files is not None:
        if files != {catalog_path.resolve()}:
            raise Unresolved(
                f"local.{ref.group(1)} decodes {sorted(map(str, files))}, not the catalog"
            )
        data: Any = catalog
    else:
        data = resolve_collection(tree, definition, directory, catalog, catalog_path)
    for attribute in filter(None, ref.group(2).split(".")):
        if not isinstance(data, dict) or attribute not in data:
            raise Unresolved(f"{text}: the catalog has no {attribute!r} there")
        data = data[attribute]
    if not isinstance(data, dict):
        raise Unresolved(f"{text} is not a map")
    return data


def _blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Static blocks ``name`` and the content of ``dynamic "name"`` blocks."""
    found = [b for b in body.get(name, []) if isinstance(b, dict)]
    for dynamic in body.get("dynamic", []):
        for label, spec in dynamic.items():
            if unq(label) == name:
                found.extend(c for c in spec.get("content", []) if isinstance(c, dict))
    return found


def _has_static(body: dict[str, Any], name: str) -> bool:
    return any(isinstance(b, dict) for b in body.get(name, []))


# Policies -------------------------------------------------------------------------------------


def check_service_account_keys(tree: Tree) -> list[str]:
    """Exported service-account keys are forbidden: resources, data sources, anywhere."""
    problems = [
        f"{b.where()}: service-account keys are forbidden (use Workload Identity Federation)"
        for b in tree.blocks
        if b.type == "google_service_account_key"
    ]
    return problems


SENSITIVE_KEY = re.compile(
    r"(passw(or)?d|pwd|passphrase|secret_(data|value|key)|client_secret|private_key|api_?key|"
    r"access_?key|auth_?token|bearer|token|credentials?)$",
    re.IGNORECASE,
)
NOT_A_VALUE_KEY = re.compile(
    r"(_id|_name|_ref|_email|_version|_path|_file|_key_ref)$", re.IGNORECASE
)
SECRET_SHAPES = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service-account key JSON": re.compile(r"\"private_key(_id)?\"\s*:"),
    "Google API key": re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
    "Google OAuth token": re.compile(r"ya29\.[0-9A-Za-z_\-]{20,}"),
    "AWS access key": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Stripe key": re.compile(r"\b[sr]k_(live|test)_[A-Za-z0-9]{16,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"]+:[^/\s@\"]+@"),
}
_ASSIGNMENT = re.compile(r"""^\s*"?([A-Za-z0-9_.-]+)"?\s*[=:]\s*"([^"]*)"\s*,?\s*(#.*)?$""")


def scan_secrets(paths: Iterable[Path]) -> list[str]:
    """Heuristic: a literal assigned to a key/token/password-like name, or a string shaped like a
    known credential. References (``${...}``) and resource names are not values."""
    problems = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path}:{number}"
            for label, shape in SECRET_SHAPES.items():
                if shape.search(line):
                    problems.append(f"{where}: looks like a {label}")
            assignment = _ASSIGNMENT.match(line)
            if not assignment:
                continue
            key, literal = assignment.group(1), assignment.group(2)
            if (
                SENSITIVE_KEY.search(key)
                and not NOT_A_VALUE_KEY.search(key)
                and literal.strip()
                and "${" not in literal
            ):
                problems.append(f"{where}: {key} has a literal value; read it from Secret Manager")
        if path.suffix == ".tf":
            text = path.read_text()
            if re.search(
                r"resource\s+\"google_secret_manager_secret_version\"[^{]*\{[^}]*secret_data", text
            ):
                problems.append(
                    f"{path}: a secret version with secret_data puts the value in state"
                )
    return problems


def check_workflow_source(tree: Tree, expected: Path | set[Path]) -> list[str]:
    """Every workflow's source is ``file()`` of exactly ``expected`` (workflows/dispatch.yaml),
    or of one of them when given several (the files the embedded engine runs)."""
    problems = []
    wanted = {
        Path(os.path.normpath(p)) for p in (expected if isinstance(expected, set) else {expected})
    }
    for block in tree.of("google_workflows_workflow"):
        source = bare(block.body.get("source_contents", ""))
        match = re.fullmatch(r"file\((.+)\)", source)
        if not match:
            problems.append(
                f'{block.where()}: source_contents must be file("…/workflows/dispatch.yaml")'
            )
            continue
        arg = match.group(1).strip()
        try:
            paths = resolve_path(tree, arg if arg.startswith('"') else "${" + arg + "}", block.dir)
        except Unresolved as e:
            problems.append(f"{block.where()}: cannot resolve the workflow source: {e}")
            continue
        for path in sorted(paths - wanted):
            problems.append(
                f"{block.where()}: source is {path}, not {' or '.join(map(str, sorted(wanted)))}"
            )
    return problems


def _catalog_subscriptions_of(
    tree: Tree, block: Block, catalog: dict[str, Any], catalog_path: Path
) -> tuple[dict[str, Any] | None, Comprehension | None, list[str]]:
    """The catalog subscriptions a subscription resource's for_each iterates (None if by hand)."""
    for_each = block.body.get("for_each")
    if for_each is None:
        return None, None, []
    if isinstance(for_each, dict):  # a literal map written by hand
        return (
            {unq(k): v for k, v in for_each.items() if k != "__is_block__"},
            None,
            [f"{block.where()}: for_each is a hand-written map, not the catalog"],
        )
    ref = re.fullmatch(r"local\.([\w-]+)", bare(for_each))
    definition = tree.locals.get(block.dir, {}).get(ref.group(1)) if ref else for_each
    comprehension = parse_comprehension(definition) if definition is not None else None
    if comprehension is None:
        return (
            {},
            None,
            [f"{block.where()}: for_each {for_each!r} is not a comprehension over the catalog"],
        )
    problems = []
    if comprehension.condition is not None:
        problems.append(
            f"{block.where()}: for_each filters the catalog's subscriptions "
            f"(if {comprehension.condition}); those would be missing"
        )
    if not comprehension.source.endswith(".subscriptions"):
        problems.append(
            f"{block.where()}: for_each iterates {comprehension.source}, not the catalog's subscriptions"
        )
    try:
        keys = resolve_collection(tree, comprehension.source, block.dir, catalog, catalog_path)
    except Unresolved as e:
        return {}, comprehension, [*problems, f"{block.where()}: {e}"]
    if comprehension.condition is not None:
        try:
            keys = {
                k: v
                for k, v in keys.items()
                if evaluate_condition(comprehension.condition, comprehension.var, v)
            }
        except Unresolved:
            keys = {}
    return keys, comprehension, problems


def _leaf_paths(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return (
            set().union(*(_leaf_paths(v, f"{prefix}{k}.") for k, v in value.items()))
            if value
            else set()
        )
    return {prefix.rstrip(".")}


def check_subscription_wiring(tree: Tree, catalog: dict[str, Any], catalog_path: Path) -> list[str]:
    """Catalog subscriptions == Terraform subscriptions, all through one for_each over the decoded
    catalog, with every attribute the catalog sets mapped onto the resource."""
    problems: list[str] = []
    wanted = set(catalog.get("subscriptions", {}))
    declared: set[str] = set()
    blocks = tree.of("google_pubsub_subscription")
    if not blocks:
        return ["no google_pubsub_subscription in the Terraform"]
    for block in blocks:
        keys, comprehension, found = _catalog_subscriptions_of(tree, block, catalog, catalog_path)
        problems += found
        if keys is None:
            name = re.sub(r"\$\{[^}]*\}", "", unq(str(block.body.get("name", block.name)))).strip(
                "-"
            )
            problems.append(
                f"{block.where()}: subscription {name!r} is declared by hand, not from the catalog"
            )
            declared.add(name)
            continue
        declared |= set(keys)
        if comprehension is None:
            continue
        module_text = "\n".join(
            json.dumps(b.body) for b in tree.blocks if b.dir == block.dir and b.kind == "resource"
        )
        module_types = {b.type for b in tree.blocks if b.dir == block.dir}
        for path in sorted(
            set().union(*(_leaf_paths(s) for s in catalog["subscriptions"].values()))
        ):
            if path not in SUBSCRIPTION_MAPPING:
                problems.append(
                    f"catalog subscription attribute {path!r} is not mapped to Terraform"
                )
                continue
            if not re.search(rf"\b{comprehension.var}\.{re.escape(path)}\b", comprehension.value):
                problems.append(f"{block.where()}: for_each input ignores the catalog's {path!r}")
            for target in SUBSCRIPTION_MAPPING[path]:
                if target.startswith("@"):
                    ok = target[1:] in module_types and "pull_consumer" in module_text
                else:
                    ok = target in block.body or any(
                        unq(label) == target for d in block.body.get("dynamic", []) for label in d
                    )
                if not ok:
                    problems.append(
                        f"{block.where()}: catalog {path!r} is not mapped onto {target.lstrip('@')}"
                    )
    for name in sorted(wanted - declared):
        problems.append(
            f"catalog subscription {name!r} is missing from the Terraform for_each input"
        )
    for name in sorted(declared - wanted):
        problems.append(f"Terraform subscription {name!r} is not in the catalog")
    return problems


def check_push_subscriptions(tree: Tree, catalog: dict[str, Any], catalog_path: Path) -> list[str]:
    """Every push subscription has a dead-letter policy and pushes with an OIDC token."""
    problems = []
    for block in tree.of("google_pubsub_subscription"):
        pushes = _blocks(block.body, "push_config")
        if not pushes:
            continue
        for push in pushes:
            tokens = [t for t in push.get("oidc_token", []) if isinstance(t, dict)]
            if not tokens or not all(
                str(t.get("service_account_email", "")).strip('"') for t in tokens
            ):
                problems.append(
                    f"{block.where()}: push_config has no oidc_token with a service account"
                )
        if not _blocks(block.body, "dead_letter_policy"):
            problems.append(f"{block.where()}: push subscription without dead_letter_policy")
            continue
        if _has_static(block.body, "dead_letter_policy"):
            continue
        # a dynamic dead_letter_policy exists per catalog entry that names a dead-letter topic
        keys, _, _ = _catalog_subscriptions_of(tree, block, catalog, catalog_path)
        for name, spec in sorted((keys or {}).items()):
            if (
                isinstance(spec, dict)
                and spec.get("delivery", {}).get("type") == "push"
                and not spec.get("dead_letter_topic")
            ):
                problems.append(f"catalog push subscription {name!r} has no dead_letter_topic")
    return problems


def check_dead_letter_topics(tree: Tree, catalog: dict[str, Any], catalog_path: Path) -> list[str]:
    """Each subscription's dead letters go to a topic of its own, kept by exactly one
    subscription: so in the catalog, and the Terraform passes each subscription's own topic
    through to its dead_letter_policy (never one topic written for many)."""
    problems: list[str] = []
    subscriptions = catalog.get("subscriptions", {})
    users: dict[str, list[str]] = {}
    for name, spec in subscriptions.items():
        if isinstance(spec, dict) and spec.get("dead_letter_topic"):
            users.setdefault(spec["dead_letter_topic"], []).append(name)
    for topic, names in sorted(users.items()):
        if len(names) > 1:
            problems.append(
                f"catalog subscriptions {', '.join(sorted(names))} share the dead-letter topic "
                f"{topic!r}; each needs its own"
            )
        if topic not in catalog.get("topics", {}):
            problems.append(f"catalog dead-letter topic {topic!r} is not a catalog topic")
        keepers = sorted(n for n, s in subscriptions.items() if s.get("topic") == topic)
        if len(keepers) != 1:
            problems.append(
                f"catalog dead-letter topic {topic!r} is kept by {len(keepers)} subscriptions "
                f"({', '.join(keepers) or 'none'}), not exactly one"
            )
    literal_topics: dict[str, list[str]] = {}
    for block in tree.of("google_pubsub_subscription"):
        for policy in block.body.get("dead_letter_policy", []):
            if not isinstance(policy, dict):
                continue
            topic = bare(policy.get("dead_letter_topic", ""))
            if block.body.get("for_each") is not None:
                problems.append(
                    f"{block.where()}: one dead_letter_topic ({topic}) for every subscription of "
                    "its for_each; each needs its own (a dynamic block of each.value)"
                )
            else:
                literal_topics.setdefault(topic, []).append(block.where())
        for dynamic in block.body.get("dynamic", []):
            for label, spec in dynamic.items():
                if unq(label) != "dead_letter_policy":
                    continue
                if "each.value.dead_letter_topic" not in bare(spec.get("for_each", "")):
                    problems.append(
                        f"{block.where()}: dynamic dead_letter_policy does not iterate "
                        "each.value.dead_letter_topic, the subscription's own topic"
                    )
                for content in spec.get("content", []):
                    topic = bare(content.get("dead_letter_topic", ""))
                    if "dead_letter_policy.value" not in topic:
                        problems.append(
                            f"{block.where()}: dead_letter_topic {topic} is not the "
                            "subscription's own (dead_letter_policy.value)"
                        )
        _, comprehension, _ = _catalog_subscriptions_of(tree, block, catalog, catalog_path)
        if comprehension is not None and not re.search(
            rf"dead_letter_topic\s*=\s*(try\()?{comprehension.var}\.dead_letter_topic\b",
            comprehension.value,
        ):
            problems.append(
                f"{block.where()}: for_each input's dead_letter_topic is not the catalog "
                f"subscription's own ({comprehension.var}.dead_letter_topic)"
            )
    for topic, blocks in sorted(literal_topics.items()):
        if len(blocks) > 1:
            problems.append(f"dead-letter topic {topic} is shared by {'; '.join(blocks)}")
    return problems


def push_identities(tree: Tree) -> set[str]:
    """Resource addresses (or literal emails) Pub/Sub signs push tokens as."""
    identities: set[str] = set()
    for block in tree.of("google_pubsub_subscription"):
        for push in _blocks(block.body, "push_config"):
            for token in push.get("oidc_token", []):
                identities |= _identity_refs(
                    tree, token.get("service_account_email", ""), block.dir
                )
    return identities


def _identity_refs(tree: Tree, value: Any, directory: Path) -> set[str]:
    text = bare(value)
    var = re.fullmatch(r"var\.([\w-]+)", text)
    if var:
        refs: set[str] = set()
        for caller in tree.callers(directory):
            refs |= _identity_refs(tree, caller.body.get(var.group(1), ""), caller.dir)
        return refs
    address = re.fullmatch(r"(google_service_account\.[\w-]+)\.(email|member)", text)
    if address:
        return {address.group(1)}
    if text.startswith('"') and "${" not in text:
        return {unq(text)}
    return set()


def _member_is_push(member: str, identities: set[str]) -> bool:
    text = bare(member)
    for identity in identities:
        if identity.startswith("google_service_account."):
            if text in (f"{identity}.member", f'"serviceAccount:${{{identity}.email}}"'):
                return True
        elif unq(text) == f"serviceAccount:{identity}":
            return True
    return False


def _invoker_grants(tree: Tree, directory: Path) -> list[Block]:
    return [
        b
        for b in tree.blocks
        if b.dir == directory
        and b.type in CLOUD_RUN_IAM
        and unq(str(b.body.get("role", ""))) == "roles/run.invoker"
    ]


def _members_of(tree: Tree, grant: Block, caller: Block | None) -> list[str]:
    """Member expressions a run.invoker grant resolves to under ``caller`` (Unresolved if unknown)."""
    if "members" in grant.body:  # *_iam_binding
        members = grant.body["members"]
        return [str(m) for m in members] if isinstance(members, list) else [str(members)]
    member = bare(grant.body.get("member", ""))
    if member in ("each.value", "each.key"):
        source = bare(grant.body.get("for_each", ""))
        var = re.fullmatch(r"(?:toset\()?var\.([\w-]+)\)?", source)
        if not var or caller is None:
            raise Unresolved(f"{grant.where()}: cannot tell who is granted run.invoker")
        listed = caller.body.get(var.group(1), [])
        if isinstance(listed, dict):
            return [str(m) for k, m in listed.items() if k != "__is_block__"]
        if not isinstance(listed, list):
            raise Unresolved(f"{caller.where()}: {var.group(1)} is not a literal list or map")
        return [str(m) for m in listed]
    return [str(grant.body.get("member", ""))]


def _reactor_named(name: str, reactors: set[str]) -> set[str]:
    clean = re.sub(r"\$\{[^}]*\}", "", unq(name)).strip("-_").replace("_", "-")
    return {
        r for r in reactors if clean == r or clean.startswith(f"{r}-") or clean.endswith(f"-{r}")
    }


_MODULE_INSTANCE = re.compile(r'module\.[\w-]+\["([\w-]+)"\]')


def scheduler_callers(tree: Tree) -> dict[str, set[str]]:
    """Catalog service (a module instance, ``module.<call>["eta"]``, in the job's URI) => the
    identities the Cloud Scheduler jobs calling it sign their OIDC tokens as."""
    callers: dict[str, set[str]] = {}
    for job in tree.of("google_cloud_scheduler_job"):
        for target in _blocks(job.body, "http_target"):
            instance = _MODULE_INSTANCE.search(str(target.get("uri", "")))
            if not instance:
                continue
            for token in target.get("oidc_token", []):
                callers.setdefault(instance.group(1), set()).update(
                    _identity_refs(tree, token.get("service_account_email", ""), job.dir)
                )
    return callers


def check_reactor_exposure(tree: Tree, catalog: dict[str, Any], catalog_path: Path) -> list[str]:
    """Reactors (kind push-reactor) have internal ingress, and run.invoker only for the push
    identity, and, granted beside the module (``module.reactor["eta"]``), for the identity of a
    Cloud Scheduler job that calls that reactor."""
    problems: list[str] = []
    reactors = {n for n, s in catalog.get("services", {}).items() if s.get("kind") == REACTOR_KIND}
    identities = push_identities(tree)
    for grant in tree.of(*PROJECT_IAM):
        if unq(str(grant.body.get("role", ""))) == "roles/run.invoker":
            problems.append(f"{grant.where()}: project-wide run.invoker reaches every reactor")
    for service in tree.of(*CLOUD_RUN_SERVICES):
        callers = tree.callers(service.dir)
        contexts: list[tuple[Block | None, set[str]]] = []
        if callers:
            for caller in callers:
                for_each = caller.body.get("for_each")
                try:
                    covered = (
                        set(resolve_collection(tree, for_each, caller.dir, catalog, catalog_path))
                        if for_each is not None
                        else _reactor_named(str(caller.body.get("name", caller.name)), reactors)
                    )
                except Unresolved as e:
                    problems.append(
                        f"{caller.where()}: cannot tell which services it deploys ({e}); assuming all"
                    )
                    covered = set(reactors)
                contexts.append((caller, covered & reactors))
        else:
            contexts.append(
                (
                    None,
                    _reactor_named(str(service.body.get("name", service.name)), reactors)
                    | _reactor_named(service.name, reactors),
                )
            )
        for caller, covered in contexts:
            if not covered:
                continue
            label = f"{service.where()}" + (f" via {caller.where()}" if caller else "")
            names = ", ".join(sorted(covered))
            ingress = bare(service.body.get("ingress", '"INGRESS_TRAFFIC_ALL"'))
            var = re.fullmatch(r"var\.([\w-]+)", ingress)
            if var and caller is not None:
                ingress = bare(caller.body.get(var.group(1), '"INGRESS_TRAFFIC_INTERNAL_ONLY"'))
            if unq(ingress) not in INTERNAL_INGRESS:
                problems.append(f"{label}: reactor(s) {names} have ingress {ingress}, not internal")
            grants = _invoker_grants(tree, service.dir)
            if caller is None:
                grants = [
                    g for g in grants if f"{service.type}.{service.name}." in json.dumps(g.body)
                ]
            for grant in grants:
                if grant.type.endswith("_iam_policy"):
                    problems.append(
                        f"{grant.where()}: an IAM policy on reactor(s) {names}; use iam_member"
                    )
                    continue
                try:
                    members = _members_of(tree, grant, caller)
                except Unresolved as e:
                    problems.append(f"{label}: {e}")
                    continue
                for member in members:
                    if not _member_is_push(member, identities):
                        problems.append(
                            f"{grant.where()}: run.invoker on reactor(s) {names} granted to {member}, "
                            "not the push service account"
                        )
    problems += _reactor_grants_beside_the_module(tree, reactors, identities)
    return problems


def _reactor_grants_beside_the_module(
    tree: Tree, reactors: set[str], identities: set[str]
) -> list[str]:
    """run.invoker grants naming one reactor instance (``module.reactor["eta"].name``) from outside
    its module: the push identity, or the identity of a Scheduler job calling that reactor."""
    problems: list[str] = []
    schedulers = scheduler_callers(tree)
    service_dirs = {s.dir for s in tree.of(*CLOUD_RUN_SERVICES)}
    for grant in tree.blocks:
        if grant.dir in service_dirs or grant.type not in CLOUD_RUN_IAM:
            continue
        if unq(str(grant.body.get("role", ""))) != "roles/run.invoker":
            continue
        target = str(grant.body.get("name", grant.body.get("service", "")))
        instance = _MODULE_INSTANCE.search(target)
        named = {instance.group(1)} if instance else _reactor_named(target, reactors)
        for reactor in sorted(named & reactors):
            allowed = identities | schedulers.get(reactor, set())
            try:
                members = _members_of(tree, grant, None)
            except Unresolved as e:
                problems.append(f"{grant.where()}: {e}")
                continue
            for member in members:
                if not _member_is_push(member, allowed):
                    problems.append(
                        f"{grant.where()}: run.invoker on reactor {reactor} granted to {member}, "
                        "neither the push service account nor a Cloud Scheduler job calling it"
                    )
    return problems


def deployed_services(tree: Tree, catalog: dict[str, Any], catalog_path: Path) -> dict[str, int]:
    """How many Cloud Run module instances deploy each catalog service."""
    counts: dict[str, int] = {}
    for service in tree.of(*CLOUD_RUN_SERVICES):
        for caller in tree.callers(service.dir):
            if caller.body.get("for_each") is None:
                continue
            for name in resolve_collection(
                tree, caller.body["for_each"], caller.dir, catalog, catalog_path
            ):
                counts[name] = counts.get(name, 0) + 1
    return counts
