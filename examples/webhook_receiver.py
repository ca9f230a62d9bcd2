"""A client system's webhook receiver: the smallest one that is safe to copy.

It verifies each delivery's Standard Webhooks signature with the endpoint's secret (the ``secret``
of the answer that registered it, from the environment variable ``WEBHOOK_SECRET``), prints the
event and answers ``204``; a delivery that does not verify (no signature, a wrong one, or a
timestamp more than five minutes away) is refused with ``400`` and nothing else happens.

    WEBHOOK_SECRET=whsec_... RECEIVER_PORT=8800 python examples/webhook_receiver.py

Only the standard library and the ``standardwebhooks`` package (``pip install standardwebhooks``).
A real receiver would also store the event and skip a ``webhook-id`` it has handled already
(every retry and replay of a delivery carries the same id); see docs/webhooks.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver(BaseHTTPRequestHandler):
    webhook: Webhook  # set by main(), from the endpoint's secret

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            # Over the raw bytes, before parsing them: the signature is over exactly these.
            event = self.webhook.verify(body, dict(self.headers.items()))
        except WebhookVerificationError as e:
            print(f"refused a delivery: {e}", file=sys.stderr, flush=True)
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = event["data"]
        subject = data.get("parcel_id") or data.get("shipment_id", "")
        summary = f"verified {event['type']} {subject} ({self.headers['webhook-id']})"
        # One write, so that the lines of two deliveries (or of a shell sharing the terminal)
        # never interleave.
        sys.stdout.write(f"{summary}\n{json.dumps(event, indent=2, sort_keys=True)}\n")
        sys.stdout.flush()
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per event above is enough


def main() -> None:
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        sys.exit("set WEBHOOK_SECRET to the endpoint's secret (whsec_...), from its registration")
    Receiver.webhook = Webhook(secret)
    port = int(os.environ.get("RECEIVER_PORT", "8800"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    print(f"webhook receiver listening on http://127.0.0.1:{port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it quietly
        server.serve_forever()


if __name__ == "__main__":
    main()
