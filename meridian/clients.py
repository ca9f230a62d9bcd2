"""Client systems: registration and API keys (stored only as a digest)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from meridian.auth import api_key_digest
from meridian.domain.model import ClientIntegration
from meridian.ports import DocumentStore, Transaction


def register_client(store: DocumentStore, client_id: str, name: str) -> str:
    """Create the client and a fresh API key for it; returns the key (the only time it is shown)."""
    api_key = f"mk_{secrets.token_urlsafe(24)}"
    digest = api_key_digest(api_key)
    client = ClientIntegration(client_id=client_id, name=name, api_key_sha256=digest)
    now = datetime.now(UTC)

    def write(tx: Transaction) -> None:
        tx.create(f"clients/{client_id}", {**client.model_dump(mode="python"), "created_at": now})
        tx.create(f"api_keys/{digest}", {"client_id": client_id, "active": True, "created_at": now})

    store.run_transaction(write)
    return api_key
