"""The baseline: a bare FastAPI POST endpoint with a body of the same shape as ``:deliver``,
validated by pydantic and answered 202, with no auth, no store, no ledger. Served the same way."""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Position(BaseModel):
    lat: float
    lng: float


class Body(BaseModel):
    vehicle_id: str
    delivered_at: datetime
    position: Position


app = FastAPI()


@app.post("/v1/echo/{item}")
async def echo(item: str, body: Body) -> JSONResponse:
    return JSONResponse(
        {"parcel_id": item, "status": "DELIVERED", "accepted_at": body.delivered_at.isoformat()},
        status_code=202,
    )


if __name__ == "__main__":
    from meridian.config import Settings
    from meridian.edge.serve import serve

    serve(app, Settings.from_env(), "bare-baseline")  # on $PORT
