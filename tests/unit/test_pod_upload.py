"""POD photo upload on the command service, over fakes: who may upload, what is accepted, what is
recorded for the event publisher, and that a retry records nothing new."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meridian.app.records import parcel_document
from meridian.domain.actors import Actor
from meridian.domain.model import GeoPoint, Parcel, Recipient, Stop, TimeWindow
from meridian.edge.problems import install_problem_handlers
from services.command.app import create_app
from services.command.handlers import Deps
from services.command.routes import pod
from services.event_publisher.handlers import DocumentChange, event_for_change
from tests.fakes import FakeDocumentStore, FakePublisher
from tests.fakes_reactors import FakeBlobStore
from tests.unit.test_command_service import CODEC, DRIVER, NOW, FakeVerifier

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 300
PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 100
URL = "/v1/parcels/p-1/pod-image"


def _parcel(delivered: bool = True) -> Parcel:
    window = TimeWindow(start=NOW, end=NOW + timedelta(hours=2))
    parcel = Parcel(
        parcel_id="p-1",
        shipment_id="s-1",
        client_id="c-1",
        recipient=Recipient(name="Asha", phone="+919812345678"),
        stop=Stop(location=GeoPoint(lat=12.97, lng=77.59), address="1 MG Road", window=window),
        weight_kg=2.0,
    )
    out = parcel.plan("w-1").assign("r-1", "drv-7", "veh-3").send_out()
    return out.deliver(NOW, GeoPoint(lat=12.97, lng=77.59)) if delivered else out


@pytest.fixture
def store() -> FakeDocumentStore:
    store = FakeDocumentStore(clock=lambda: NOW)
    store.create("parcels/p-1", parcel_document(_parcel(), NOW, "test", Actor("drv-7", "driver")))
    return store


@pytest.fixture
def blobs() -> FakeBlobStore:
    return FakeBlobStore()


@pytest.fixture
def client(store: FakeDocumentStore, blobs: FakeBlobStore) -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(pod.router())
    app.state.blobs = lambda: blobs
    app.state.deps = Deps(store=store, publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW)
    app.state.verifier = FakeVerifier()
    return TestClient(app)


def _put(client: TestClient, body: bytes, content_type: str = "image/jpeg", **headers: str) -> int:
    answer = client.put(
        URL, content=body, headers={**DRIVER, "Content-Type": content_type, **headers}
    )
    return answer.status_code


def test_the_assigned_driver_uploads_and_the_parcel_records_the_stored_photo(
    client: TestClient, store: FakeDocumentStore, blobs: FakeBlobStore
) -> None:
    before = store.get("parcels/p-1")
    assert before is not None
    answer = client.put(URL, content=JPEG, headers={**DRIVER, "Content-Type": "image/jpeg"})
    assert answer.status_code == 202, answer.text
    ref = answer.json()["photo_ref"]
    assert blobs.get(ref) == JPEG and ref.endswith(".jpg")
    after = store.get("parcels/p-1")
    assert after is not None and after.data["status"] == "DELIVERED"
    assert after.data["pod_image"]["ref"] == ref and after.data["pod_image"]["size_bytes"] == len(
        JPEG
    )
    # What the event publisher makes of that commit.
    event = event_for_change(DocumentChange("parcels/p-1", before.data, after.data, NOW))
    assert event is not None and event.event_type == "PodImageReceived"


def test_a_retried_upload_of_the_same_photo_records_nothing_new(
    client: TestClient, store: FakeDocumentStore
) -> None:
    assert _put(client, JPEG) == 202
    first = store.get("parcels/p-1")
    assert _put(client, JPEG) == 202
    assert store.get("parcels/p-1") == first
    assert _put(client, PNG, "image/png") == 202  # a different photo replaces the reference
    replaced = store.get("parcels/p-1")
    assert replaced is not None and replaced.data["pod_image"]["content_type"] == "image/png"


def test_only_the_assigned_driver_of_a_delivered_parcel_may_upload(
    client: TestClient, store: FakeDocumentStore, blobs: FakeBlobStore
) -> None:
    other = {"Authorization": "Bearer driver:drv-8", "Content-Type": "image/jpeg"}
    assert client.put(URL, content=JPEG, headers=other).status_code == 403
    desk = {"Authorization": "Bearer dispatcher:dsp-1", "Content-Type": "image/jpeg"}
    assert client.put(URL, content=JPEG, headers=desk).status_code == 403
    assert client.put(URL, content=JPEG, headers={"Content-Type": "image/jpeg"}).status_code == 401
    assert (
        client.put(
            "/v1/parcels/p-2/pod-image",
            content=JPEG,
            headers={**DRIVER, "Content-Type": "image/jpeg"},
        ).status_code
        == 404
    )
    store.set(
        "parcels/p-1", parcel_document(_parcel(delivered=False), NOW, "t", Actor("drv-7", "driver"))
    )
    assert _put(client, JPEG) == 409
    assert blobs.blobs == {}


def test_only_jpeg_or_png_up_to_the_size_limit_is_accepted(
    client: TestClient, blobs: FakeBlobStore
) -> None:
    assert _put(client, b"GIF89a....", "image/gif") == 415
    assert _put(client, PNG, "image/jpeg") == 415  # the bytes are not what the type claims
    assert _put(client, b"", "image/jpeg") == 415
    too_big = b"\xff\xd8\xff" + b"\x00" * pod.MAX_IMAGE_BYTES
    assert _put(client, too_big) == 413
    assert blobs.blobs == {}
    assert _put(client, JPEG, "image/JPEG; charset=binary") == 202


def test_the_command_service_serves_the_upload_route() -> None:
    deps = Deps(
        store=FakeDocumentStore(), publisher=FakePublisher(), codec=CODEC, clock=lambda: NOW
    )
    paths = TestClient(create_app(deps, FakeVerifier())).get("/openapi.json").json()["paths"]
    assert "put" in paths["/v1/parcels/{parcel_id}/pod-image"]
