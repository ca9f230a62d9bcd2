"""An embedded SMS provider: accepts messages over HTTP, records what it sent, and sends a message
once per idempotency key. Latency and failure rate are injectable (MERIDIAN_SMS_LATENCY_S,
MERIDIAN_SMS_FAILURE_RATE, or ``PUT /v1/config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from meridian.edge.fast_routes import PlainRequest, PlainResponse, PlainRoutes, json_response
from meridian.edge.problems import install_problem_handlers
from meridian.embedded.external.fake_service import (
    FaultConfig,
    Ledger,
    behave,
    fault_config,
    idempotent_request,
    install_fault_routes,
)


class SmsRequest(BaseModel):
    to: str = Field(min_length=3, max_length=32)
    body: str = Field(min_length=1, max_length=1600)


def create_app(data_dir: Path, initial: FaultConfig | None = None) -> FastAPI:
    app = PlainRoutes(title="Embedded SMS gateway", version="1")
    install_problem_handlers(app)
    sent = Ledger(data_dir, "sms_gateway")
    state = {"config": initial or FaultConfig()}
    install_fault_routes(app, lambda: state["config"], lambda c: state.__setitem__("config", c))

    async def send(request: PlainRequest) -> PlainResponse:
        body, idempotency_key = idempotent_request(SmsRequest, request)
        if not await behave(state["config"]):
            return json_response(503, {"error": "gateway unavailable (injected failure)"})
        record = sent.accept(idempotency_key, body.model_dump(), "sms")
        # A repeated key is answered with the first receipt: the message is not sent again.
        return json_response(
            201 if record.created else 200,
            {"message_id": record.record_id, "duplicate": not record.created},
        )

    app.plain_route("POST", "/v1/messages", send)

    @app.get("/v1/messages")
    async def messages() -> list[dict[str, Any]]:
        return sent.all()

    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve

    settings = Settings.from_env()
    app = create_app(settings.data_dir, fault_config(settings.embedded.sms_faults))
    serve(app, settings, "sms-gateway")


if __name__ == "__main__":
    main()
