"""An open-loop load generator for latency at a fixed rate, light enough to share two cores.

Locust, beside the service on this 2-core machine, takes about 0.6 of a core to send 900
requests a second and adds its own scheduling delays to what it reports: the bare FastAPI
baseline's p99 at that rate measured 49 to 95 ms across runs, so a p99 aim of a few tens of
milliseconds could not be seen through it. This generator sends each request at its planned time
(``start + i / rate``, whether or not earlier ones have been answered: open loop) over up to
128 keep-alive connections with the platform's lean HTTP/1.1 client (``meridian.wire.pool``), and
times each request from its planned start, so a stalled server shows as latency instead of as
fewer requests sent (no coordinated omission). At 900/s it costs about 0.3 of a core, half
of what Locust does.

``python -m loadtest.openloop PLAN.json URL RATE SECONDS`` prints one JSON line: requests, errors
(non-2xx or no answer), the achieved rate, and latency p50 / p90 / p99 / max in milliseconds.
The plan is the same file the Locust scenarios read (``locustfile.py``): ``bare`` or ``deliver``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meridian.wire.pool import Http1Pool, PostFailed

TIMEOUT_S = 10.0
# Like wrk2: a fixed set of connections, each request sent on the first free one. Without a bound,
# every request that found none free opened a new one, and past the listen backlog those waited
# out SYN retries of seconds: the generator's overload, not the service's.
CONNECTIONS = 128
Request = tuple[str, bytes, Mapping[str, str]]


def requests(plan: Mapping[str, Any], url: str) -> Iterator[Request]:
    """The plan's requests in order: what ``locustfile.Scenario.post`` sends for it."""
    body = json.dumps(
        {
            "vehicle_id": "veh-1",
            "delivered_at": datetime.now(UTC).isoformat(),
            "position": {"lat": 12.97, "lng": 77.59},
        }
    ).encode()
    json_type = {"content-type": "application/json"}
    if plan["scenario"] == "bare":
        i = 0
        while True:
            yield f"{url}/v1/echo/p-{i}", body, json_type
            i += 1
    elif plan["scenario"] == "deliver":
        for parcel_id, driver in plan["parcels"]:
            headers = {
                **json_type,
                "authorization": f"Bearer {plan['tokens'][driver]}",
                "idempotency-key": f"k-{parcel_id}",
            }
            yield f"{url}/v1/parcels/{parcel_id}:deliver", body, headers
    else:
        raise ValueError(f"no open-loop scenario {plan['scenario']!r}")


async def run(plan: Mapping[str, Any], url: str, rate: float, seconds: float) -> dict[str, Any]:
    pool = Http1Pool(max_idle=CONNECTIONS)
    latencies: list[float] = []
    errors: Counter[str] = Counter()  # what each failed request got: its status, or why none

    slots = asyncio.Semaphore(CONNECTIONS)

    async def send(planned: float, request: Request) -> None:
        target, body, headers = request
        try:
            async with slots:  # a request waiting for a connection is late from its planned time
                status = await pool.post(target, body, headers, TIMEOUT_S)
        except PostFailed as e:
            errors[str(e).rsplit(": ", 1)[-1].split("(")[0]] += 1  # e.g. TimeoutError
        else:
            if not 200 <= status < 300:
                errors[str(status)] += 1
        latencies.append(time.perf_counter() - planned)

    pending: set[asyncio.Task[None]] = set()
    source = requests(plan, url)
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        planned = start + i / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(planned, next(source)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    elapsed = time.perf_counter() - start
    await pool.aclose()
    latencies.sort()

    def quantile(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "rps": round(len(latencies) / elapsed, 1),
        "p50": quantile(0.50),
        "p90": quantile(0.90),
        "p99": quantile(0.99),
        "max": round(latencies[-1] * 1000, 1),
    }


def main() -> None:
    plan_file, url, rate, seconds = sys.argv[1:5]
    plan = json.loads(Path(plan_file).read_text())
    try:
        import uvloop  # the service's loop too (uvicorn's default when installed)

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(plan, url, float(rate), float(seconds)))))


if __name__ == "__main__":
    main()
