"""An embedded client billing API: posts charges, and refuses a second charge with the same
idempotency key (409, naming the first charge). Latency and failures are injectable
(MERIDIAN_BILLING_LATENCY_S, MERIDIAN_BILLING_FAILURE_RATE, or ``PUT /v1/config``)."""

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


class ChargeRequest(BaseModel):
    client_id: str = Field(min_length=1)
    reference: str = Field(min_length=1)
    amount_minor: int = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    description: str = ""


def create_app(data_dir: Path, initial: FaultConfig | None = None) -> FastAPI:
    app = FastAPI(title="Embedded billing API", version="1")
    charges = Ledger(data_dir, "billing_api")
    state = {"config": initial or FaultConfig()}
    install_fault_routes(app, lambda: state["config"], lambda c: state.__setitem__("config", c))

    @app.post("/v1/charges")
    async def charge(
        body: ChargeRequest, idempotency_key: Annotated[str, Header(min_length=1, max_length=255)]
    ) -> JSONResponse:
        if not await behave(state["config"]):
            return JSONResponse({"error": "billing unavailable (injected failure)"}, status_code=503)
        record = charges.accept(idempotency_key, body.model_dump(), "ch")
        if not record.created:
            return JSONResponse(
                {
                    "error": "a charge with this idempotency key exists",
                    "charge_id": record.record_id,
                },
                status_code=409,
            )
        return JSONResponse({"charge_id": record.record_id}, status_code=201)

    @app.get("/v1/charges")
    async def list_charges() -> list[dict[str, Any]]:
        return charges.all()

    return app


def main() -> None:
    from meridian.config import Settings
    from meridian.runtime.serve import serve

    settings = Settings.from_env()
    app = create_app(settings.data_dir, fault_config("MERIDIAN_BILLING"))
    serve(app, "billing-api", settings.port_of("billing-api"))


if __name__ == "__main__":
    main()
