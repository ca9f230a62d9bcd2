"""An embedded SMS provider: accepts messages over HTTP, records what it sent, and sends a message
once per idempotency key. Latency and failure rate are injectable (MERIDIAN_SMS_LATENCY_S,
MERIDIAN_SMS_FAILURE_RATE, or ``PUT /v1/config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from meridian.embedded.external.fake_service import (
    FaultConfig,
    Ledger,
    behave,
    fault_config,
    install_fault_routes,
)


class SmsRequest(BaseModel):
    to: str = Field(min_length=3, max_length=32)
    body: str = Field(min_length=1, max_length=1600)


def create_app(data_dir: Path, initial: FaultConfig | None = None) -> FastAPI:
    app = FastAPI(title="Embedded SMS gateway", version="1")
    sent = Ledger(data_dir, "sms_gateway")
    state = {"config": initial or FaultConfig()}
    install_fault_routes(app, lambda: state["config"], lambda c: state.__setitem__("config", c))

    @app.post("/v1/messages")
    async def send(
        body: SmsRequest, idempotency_key: Annotated[str, Header(min_length=1, max_length=255)]
    ) -> JSONResponse:
        if not await behave(state["config"]):
            return JSONResponse({"error": "gateway unavailable (injected failure)"}, status_code=503)
        record = sent.accept(idempotency_key, body.model_dump(), "sms")
        # A repeated key is answered with the first receipt: the message is not sent again.
        return JSONResponse(
            {"message_id": record.record_id, "duplicate": not record.created},
            status_code=201 if record.created else 200,
        )

    @app.get("/v1/messages")
    async def messages() -> list[dict[str, Any]]:
        return sent.all()

    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.runtime.serve import serve

    settings = Settings.from_env()
    app = create_app(settings.data_dir, fault_config("MERIDIAN_SMS"))
    serve(app, "sms-gateway", settings.port_of("sms-gateway"))


if __name__ == "__main__":
    main()
