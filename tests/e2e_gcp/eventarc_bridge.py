"""The Eventarc bridge: Google offers no Eventarc emulator, so this turns Firestore emulator
document changes into the binary-mode CloudEvents Eventarc delivers (reference §5).

It listens with the official client's ``on_snapshot`` to the collections the catalog's triggers
watch, keeps each document's last data (a listener sees only the new one; Eventarc's payload
carries both), and for every change a trigger matches POSTs the CloudEvent the embedded Eventarc
would: body and ``ce-*`` headers come from ``meridian.embedded.eventarc`` (``document_event_bytes``
over ``codec.firestore_values.encode_document_event``, ``cloudevent_attributes``), so there is one
encoder. Each delivery carries an OIDC token for the Eventarc identity, and a refused or failed
one is retried with a short backoff, as Eventarc retries.
"""

from __future__ import annotations

import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from google.cloud import firestore

from meridian.catalog import Catalog
from meridian.embedded.docstore import Change
from meridian.embedded.eventarc import (
    ACK_STATUSES,
    Trigger,
    cloudevent_attributes,
    document_event_bytes,
)
from tests.e2e_gcp.signing import LocalSigner

KINDS = {"ADDED": "created", "MODIFIED": "updated", "REMOVED": "deleted"}


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    """Eventarc's ``updateMask``: the top-level fields an update set, changed or removed."""
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))


class EventarcBridge:
    def __init__(
        self,
        catalog: Catalog,
        project: str,
        destination: dict[str, str],
        signer: LocalSigner,
        identity: str,
    ) -> None:
        """``destination``: each service's base URL (the triggers' targets)."""
        self._project = project
        self._signer = signer
        self._identity = identity
        self._destination = destination
        self._client = firestore.Client(project=project)
        self._triggers = [Trigger.of(name, spec) for name, spec in catalog.triggers.items()]
        self._last: dict[str, dict[str, Any]] = {}
        self._seq = 0
        self._pending: queue.Queue[tuple[Trigger, Change] | None] = queue.Queue()
        self._http = httpx.Client(timeout=30)
        self._watches: list[Any] = []
        self._ready: list[threading.Event] = []
        self._worker = threading.Thread(target=self._deliver, name="eventarc-bridge", daemon=True)
        self.delivered: list[tuple[str, int]] = []  # (document, status) of every POST

    def start(self, timeout_s: float = 30) -> None:
        self._worker.start()
        for collection in sorted({t.spec.document.rsplit("/", 1)[0] for t in self._triggers}):
            ready = threading.Event()
            self._ready.append(ready)
            self._watches.append(
                self._client.collection(collection).on_snapshot(self._on_snapshot(ready))
            )
        for ready in self._ready:
            if not ready.wait(timeout_s):
                raise RuntimeError("the Firestore emulator's listener gave no first snapshot")

    def _on_snapshot(self, ready: threading.Event) -> Any:
        def on_snapshot(_docs: Any, changes: Any, _read_time: Any) -> None:
            first = not ready.is_set()
            for change in changes:
                self._seen(change, announce=not first)
            ready.set()

        return on_snapshot

    def _seen(self, doc_change: Any, announce: bool) -> None:
        snapshot = doc_change.document
        path = snapshot.reference.path
        kind = KINDS[doc_change.type.name]
        old = self._last.get(path)
        new = snapshot.to_dict() if kind != "deleted" else None
        if new is None:
            self._last.pop(path, None)
        else:
            self._last[path] = new
        if not announce:  # what existed before the bridge started: Eventarc sends nothing
            return
        commit_time = snapshot.update_time or snapshot.read_time or datetime.now(UTC)
        self._seq += 1
        change = Change(
            seq=self._seq,
            path=path,
            collection=path.rsplit("/", 1)[0],
            kind=kind,  # type: ignore[arg-type]
            old_data=old,
            new_data=new,
            update_mask=changed_fields(old or {}, new or {}) if kind == "updated" else (),
            create_time=snapshot.create_time,
            commit_time=commit_time,
        )
        for trigger in self._triggers:
            if trigger.matches(change):
                self._pending.put((trigger, change))

    def _deliver(self) -> None:
        while (item := self._pending.get()) is not None:
            trigger, change = item
            url = self._destination[trigger.spec.service] + trigger.spec.path
            headers = {
                **cloudevent_attributes(trigger, change, self._project, "us-central1"),
                "authorization": f"Bearer {self._signer.oidc_token(url, self._identity)}",
            }
            body = document_event_bytes(change, self._project)
            for attempt in range(20):
                try:
                    status = self._http.post(url, content=body, headers=headers).status_code
                except httpx.HTTPError:
                    status = 0
                self.delivered.append((change.path, status))
                if status in ACK_STATUSES:
                    break
                time.sleep(min(0.2 * 2**attempt, 2.0))

    def close(self) -> None:
        for watch in self._watches:
            watch.unsubscribe()
        if self._worker.is_alive():
            self._pending.put(None)
            self._worker.join(timeout=10)
        self._http.close()
        self._client.close()
