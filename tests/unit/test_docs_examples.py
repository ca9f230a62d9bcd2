"""The docs say what the code does today: each example in docs/ is checked against the code.

- docs/webhooks.md: one payload per event type a client webhook can receive, each exactly what the
  reactor's payload builder makes of the sample event below; the event types are those the
  catalog's ``client-webhook`` subscription lets through that carry a client; the retry schedule
  is ``RETRY_SCHEDULE_S``; the Python and Node verification snippets verify a delivery signed as
  the reactor signs it, and refuse a tampered one (the Node one run by ``node``).
- docs/configuration.md is ``python -m meridian.config --markdown``, and its table
  (``meridian.config.VARIABLES``) names exactly the variables ``Settings.from_env`` reads.
- docs/api.md's route table is the command service's OpenAPI document.

``python -m tests.unit.test_docs_examples`` prints the webhook examples and the route table as the
docs hold them, to paste after a change.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meridian import config
from meridian.app.webhooks import JITTER, RETRY_SCHEDULE_S, new_secret, signed_headers
from meridian.catalog import load_catalog
from meridian.config import VARIABLES, Settings
from meridian.domain.events import (
    EVENT_TYPES,
    DeliveryFailed,
    DomainEvent,
    ParcelAssigned,
    ParcelDelivered,
    ParcelOutForDelivery,
    ParcelPlanned,
    ParcelRequeued,
    ParcelReturned,
    ShipmentClosed,
    ShipmentCreated,
    SlaBreached,
    derive_event_id,
)
from services.reactors.webhook.handlers import payload

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

# One delivery day of one parcel of Freshmart's, as the event publisher and the ETA reactor
# report it.
T = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
WINDOW_START, WINDOW_END = T + timedelta(hours=1), T + timedelta(hours=3)
SHIPMENT, PARCEL, CLIENT = "s-1042", "p-1042-1", "c-freshmart"
ROUTE, DRIVER, VEHICLE = "r-2026-11-21-03", "drv-7", "veh-3"
PHONE = "+919800000001"


def _id(name: str) -> str:
    return derive_event_id(name, PARCEL)


SAMPLES: dict[str, DomainEvent] = {
    e.event_type: e
    for e in (
        ShipmentCreated(
            event_id=_id("ShipmentCreated"),
            occurred_at=T,
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            parcel_ids=(PARCEL, "p-1042-2"),
        ),
        ParcelPlanned(
            event_id=_id("ParcelPlanned"),
            occurred_at=T + timedelta(minutes=10),
            parcel_id=PARCEL,
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            window_id="w-2026-11-21-am",
        ),
        ParcelAssigned(
            event_id=_id("ParcelAssigned"),
            occurred_at=T + timedelta(minutes=12),
            parcel_id=PARCEL,
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            window_id="w-2026-11-21-am",
            route_id=ROUTE,
            driver_id=DRIVER,
            vehicle_id=VEHICLE,
            stop_sequence=4,
        ),
        ParcelOutForDelivery(
            event_id=_id("ParcelOutForDelivery"),
            occurred_at=T + timedelta(minutes=30),
            parcel_id=PARCEL,
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            route_id=ROUTE,
            driver_id=DRIVER,
            vehicle_id=VEHICLE,
            recipient_phone=PHONE,
            lat=12.9716,
            lng=77.5946,
            address="12 MG Road, Bengaluru",
            window_start=WINDOW_START,
            window_end=WINDOW_END,
            attempt=1,
            stop_sequence=4,
        ),
        ParcelDelivered(
            event_id=_id("ParcelDelivered"),
            occurred_at=T + timedelta(hours=1, minutes=30),
            parcel_id=PARCEL,
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            route_id=ROUTE,
            driver_id=DRIVER,
            vehicle_id=VEHICLE,
            delivered_at=T + timedelta(hours=1, minutes=30),
            lat=12.9716,
            lng=77.5946,
            window_end=WINDOW_END,
            recipient_phone=PHONE,
            pod_signature_ref=None,
            pod_photo_ref=f"pod/{PARCEL}/photo.jpg",
        ),
        DeliveryFailed(
            event_id=_id("DeliveryFailed"),
            occurred_at=T + timedelta(hours=1, minutes=30),
            parcel_id="p-1042-2",
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            route_id=ROUTE,
            driver_id=DRIVER,
            vehicle_id=VEHICLE,
            failed_at=T + timedelta(hours=1, minutes=30),
            reason="recipient not at home",
            attempt=1,
            recipient_phone="+919800000002",
        ),
        ParcelRequeued(
            event_id=_id("ParcelRequeued"),
            occurred_at=T + timedelta(hours=2),
            parcel_id="p-1042-2",
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            previous_status="DELIVERY_FAILED",
            reason="second attempt tomorrow",
        ),
        ParcelReturned(
            event_id=_id("ParcelReturned"),
            occurred_at=T + timedelta(days=1, hours=2),
            parcel_id="p-1042-2",
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            reason="recipient refused the parcel",
        ),
        SlaBreached(
            event_id=_id("SlaBreached"),
            occurred_at=WINDOW_END,
            parcel_id="p-1042-2",
            route_id=ROUTE,
            client_id=CLIENT,
            window_end=WINDOW_END,
        ),
        ShipmentClosed(
            event_id=_id("ShipmentClosed"),
            occurred_at=T + timedelta(days=1, hours=2),
            shipment_id=SHIPMENT,
            client_id=CLIENT,
            delivered_count=1,
            failed_count=0,
            returned_count=1,
        ),
    )
}


def client_event_types() -> list[str]:
    """The event types a client webhook can receive: those the catalog's ``client-webhook``
    subscription lets through that name a client (the reactor sends the others to nobody)."""
    subscription = load_catalog().filters["client-webhook"]
    return [
        name
        for name, cls in EVENT_TYPES.items()
        if subscription.matches({"eventType": name}) and "client_id" in cls.model_fields
    ]


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    end = text.find(f"\n{level} ", start + 1)
    return text[start : end if end >= 0 else None]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)


def doc_examples(text: str) -> dict[str, str]:
    """Each ``### EventType`` of the doc's event section and the JSON block under it."""
    events = _section(text, "## Events")
    found = {}
    for part in events.split("\n### ")[1:]:
        name = part.split("\n", 1)[0].strip().strip("`")
        blocks = _blocks(part, "json")
        assert len(blocks) == 1, f"### {name} needs one JSON example, has {len(blocks)}"
        found[name] = blocks[0]
    return found


def example_json(event: DomainEvent) -> str:
    """A payload as the doc shows it: the reactor's bytes, indented."""
    return json.dumps(json.loads(payload(event)), indent=2, sort_keys=True) + "\n"


# docs/webhooks.md --------------------------------------------------------------------------------


def test_there_is_a_sample_of_every_event_a_client_can_receive() -> None:
    assert sorted(SAMPLES) == sorted(client_event_types())


def test_each_webhook_example_is_what_the_reactor_sends() -> None:
    examples = doc_examples((DOCS / "webhooks.md").read_text())
    assert list(examples) == list(SAMPLES), "docs/webhooks.md's events, in this order"
    for name, shown in examples.items():
        sent = payload(SAMPLES[name])
        as_sent = json.dumps(json.loads(shown), separators=(",", ":"), sort_keys=True).encode()
        assert as_sent == sent, f"### {name}: regenerate with python -m {__name__}"
        assert shown == example_json(SAMPLES[name]), f"### {name}: not as generated"


EXAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Standard Webhooks' own example


def signed_example() -> str:
    """The doc's delivery of ``ParcelDelivered``, signed with ``EXAMPLE_SECRET`` when it happened."""
    event = SAMPLES["ParcelDelivered"]
    body = payload(event)
    headers = signed_headers(EXAMPLE_SECRET, event.event_id, body, event.occurred_at)
    lines = [f"{name}: {value}" for name, value in headers.items()]
    return "\n".join(
        ["POST /meridian HTTP/1.1", "Host: hooks.freshmart.example", *lines, "", body.decode(), ""]
    )


def test_the_signed_example_is_what_the_reactor_signs() -> None:
    text = _section((DOCS / "webhooks.md").read_text(), "## What a delivery looks like")
    (shown,) = _blocks(text, "http")
    assert shown == signed_example(), f"regenerate with python -m {__name__}"
    assert f"`{EXAMPLE_SECRET}`" in text


def _human(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def test_the_retry_schedule_is_the_reactors() -> None:
    text = (DOCS / "webhooks.md").read_text()
    schedule = ", ".join(_human(s) for s in RETRY_SCHEDULE_S)
    assert schedule in text, f"docs/webhooks.md should give the schedule as: {schedule}"
    assert f"{len(RETRY_SCHEDULE_S) + 1} attempts" in text
    assert f"±{JITTER:.0%}" in text


def _signed(body: bytes, secret: str, at: datetime) -> dict[str, str]:
    return signed_headers(secret, "evt-0123456789abcdef", body, at)


def test_the_python_snippet_verifies_what_the_reactor_signs() -> None:
    text = _section((DOCS / "webhooks.md").read_text(), "## Verifying a delivery")
    (snippet,) = [b for b in _blocks(text, "python") if "def verify_webhook" in b]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # the doc's own code
    verify = namespace["verify_webhook"]
    secret, body = new_secret(), payload(SAMPLES["ParcelDelivered"])
    headers = _signed(body, secret, datetime.now(UTC))

    assert verify(secret, body, headers) == json.loads(body)
    with pytest.raises(Exception, match="signature"):
        verify(secret, body.replace(b"drv-7", b"drv-8"), headers)
    with pytest.raises(Exception, match="too old"):
        verify(secret, body, _signed(body, secret, datetime.now(UTC) - timedelta(minutes=10)))


NODE_HARNESS = """
const [secret, body, headers] = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
try {
  console.log(JSON.stringify(verifyWebhook(secret, Buffer.from(body), headers)));
} catch (e) {
  console.log(JSON.stringify({ refused: e.message }));
}
"""


def test_the_node_snippet_verifies_what_the_reactor_signs(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed (make test installs the npm packages with it)"
    text = _section((DOCS / "webhooks.md").read_text(), "## Verifying a delivery")
    (snippet,) = [b for b in _blocks(text, "js") if "function verifyWebhook" in b]
    script = tmp_path / "verify.js"
    script.write_text(snippet + NODE_HARNESS)
    secret, body = new_secret(), payload(SAMPLES["ParcelDelivered"])

    def run(sent: bytes, headers: Mapping[str, str]) -> Any:
        given = json.dumps([secret, sent.decode(), dict(headers)])
        done = subprocess.run(
            [node, str(script)], input=given, capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    now = datetime.now(UTC)
    assert run(body, _signed(body, secret, now)) == json.loads(body)
    tampered = run(body.replace(b"drv-7", b"drv-8"), _signed(body, secret, now))
    assert "signature" in tampered["refused"]
    old = run(body, _signed(body, secret, now - timedelta(minutes=10)))
    assert "timestamp" in old["refused"]


# docs/configuration.md -----------------------------------------------------------------------------


class _Recording(Mapping[str, str]):
    """An environment that remembers each variable looked up in it."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_configuration_md_is_generated_from_config() -> None:
    shown = (DOCS / "configuration.md").read_text()
    assert shown == config.markdown(), (
        "docs/configuration.md is out of date: python -m meridian.config --markdown "
        "> docs/configuration.md"
    )


def test_the_variable_table_names_every_read_of_from_env() -> None:
    env = _Recording({})
    Settings.from_env(env)
    fixed = {v.name for v in VARIABLES if "<" not in v.name}
    assert env.read == fixed, (
        f"read but not in meridian.config.VARIABLES: {sorted(env.read - fixed)}; "
        f"in VARIABLES but not read: {sorted(fixed - env.read)}"
    )
    assert len(VARIABLES) == len({v.name for v in VARIABLES}), "a variable listed twice"


def test_each_family_of_variables_is_read() -> None:
    families = [v.name for v in VARIABLES if "<" in v.name]
    assert families, "MERIDIAN_PORT_<SERVICE> and MERIDIAN_<NAME>_WORKFLOW"
    for family in families:
        example = re.sub(r"<\w+>", "DISPATCH", family)
        assert Settings.from_env({example: "9000"}) != Settings(), f"{example} is not read"


def test_the_live_maps_own_options_are_named() -> None:
    from services.live_map.bootstrap import MapOptions

    env = _Recording({})
    MapOptions.from_env(env)
    shown = (DOCS / "configuration.md").read_text()
    assert env.read, "MapOptions reads its LIVE_MAP_* variables"
    missing = sorted(name for name in env.read if f"`{name}`" not in shown)
    assert not missing, f"docs/configuration.md (meridian.config.markdown) lacks {missing}"


# docs/api.md ---------------------------------------------------------------------------------------


def route_table() -> str:
    """The command service's routes, from its OpenAPI document, as docs/api.md shows them."""
    from meridian.app.auth import api_key_digest
    from services.command.app import create_app
    from services.command.handlers import Deps
    from tests.fakes import FakeDocumentStore, FakePublisher, FakeWorkflows
    from tests.unit.test_command_service import CODEC, NOW, FakeVerifier

    store = FakeDocumentStore(clock=lambda: NOW)
    store.create(f"api_keys/{api_key_digest('key')}", {"client_id": "c-1", "active": True})
    deps = Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW)
    schema = create_app(deps, FakeVerifier(), FakeWorkflows(NOW)).openapi()
    rows = ["| method | path | tag | operation | success |", "|---|---|---|---|---|"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            success = next(s for s in operation["responses"] if s.startswith("2"))
            tag = ", ".join(operation.get("tags", []))
            rows.append(
                f"| `{method.upper()}` | `{path}` | {tag} | {operation['summary']} | {success} |"
            )
    return "\n".join(rows) + "\n"


def test_the_api_route_table_is_the_openapi_documents() -> None:
    text = (DOCS / "api.md").read_text()
    shown = re.search(r"<!-- routes -->\n(.*?)<!-- /routes -->", text, re.DOTALL)
    assert shown, "docs/api.md keeps its route table between <!-- routes --> markers"
    assert shown[1] == route_table(), f"docs/api.md's route table: python -m {__name__}"


if __name__ == "__main__":
    print(f"```http\n{signed_example()}```\n")
    for name, event in SAMPLES.items():
        print(f"### {name}\n\n```json\n{example_json(event)}```\n")
    print(route_table())
