"""Client systems: registration and API keys (stored only as a digest)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from meridian.app.auth import api_key_digest
from meridian.domain.model import ClientIntegration
from meridian.ports import DocumentStore, Transaction

DEFAULT_TARIFF = {"per_delivery_minor": 4500, "currency": "INR"}  # ₹45 a delivered parcel


def register_client(
    store: DocumentStore, client_id: str, name: str, tariff: dict[str, object] | None = None
) -> str:
    """Create the client, its billing tariff and a fresh API key; returns the key (the only time
    it is shown). Billing refuses to guess a price, so every client gets a tariff here."""
    api_key = f"mk_{secrets.token_urlsafe(24)}"
    digest = api_key_digest(api_key)
    client = ClientIntegration(client_id=client_id, name=name, api_key_sha256=digest)
    now = datetime.now(UTC)

    def write(tx: Transaction) -> None:
        tx.create(f"clients/{client_id}", {**client.model_dump(mode="python"), "created_at": now})
        tx.create(f"api_keys/{digest}", {"client_id": client_id, "active": True, "created_at": now})
        tx.set(f"billing_tariffs/{client_id}", {**(tariff or DEFAULT_TARIFF), "updated_at": now})

    store.run_transaction(write)
    return api_key
