"""An embedded client billing API: posts charges, and refuses a second charge with the same
idempotency key (409, naming the first charge). Latency and failures are injectable
(MERIDIAN_BILLING_LATENCY_S, MERIDIAN_BILLING_FAILURE_RATE, or ``PUT /v1/config``)."""

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


class ChargeRequest(BaseModel):
    client_id: str = Field(min_length=1)
    reference: str = Field(min_length=1)
    amount_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    description: str = ""


def create_app(data_dir: Path, initial: FaultConfig | None = None) -> FastAPI:
    app = PlainRoutes(title="Embedded billing API", version="1")
    install_problem_handlers(app)
    charges = Ledger(data_dir, "billing_api")
    state = {"config": initial or FaultConfig()}
    install_fault_routes(app, lambda: state["config"], lambda c: state.__setitem__("config", c))

    async def charge(request: PlainRequest) -> PlainResponse:
        body, idempotency_key = idempotent_request(ChargeRequest, request)
        if not await behave(state["config"]):
            return json_response(503, {"error": "billing unavailable (injected failure)"})
        record = charges.accept(idempotency_key, body.model_dump(), "ch")
        if not record.created:
            return json_response(
                409,
                {
                    "error": "a charge with this idempotency key exists",
                    "charge_id": record.record_id,
                },
            )
        return json_response(201, {"charge_id": record.record_id})

    app.plain_route("POST", "/v1/charges", charge)

    @app.get("/v1/charges")
    async def list_charges() -> list[dict[str, Any]]:
        return charges.all()

    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.edge.serve import serve

    settings = Settings.from_env()
    app = create_app(settings.data_dir, fault_config(settings.embedded.billing_faults))
    serve(app, settings, "billing-api")


if __name__ == "__main__":
    main()
