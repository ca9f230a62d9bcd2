"""The gcp backend end to end on Google's own emulators (marked e2e; ``make test`` runs it).

One session: Google's Firestore and Pub/Sub emulators on free loopback ports, the catalog's topics
and subscriptions created with the official clients (``topology.py``), the services started as
the image starts them (``meridian serve SERVICE`` with ``MERIDIAN_BACKEND=gcp``, ``$PORT``, the
emulator hosts and the environment Terraform gives each service), the SMS and billing providers'
embedded stand-ins as plain processes, and in this process what Google offers no emulator for:
Eventarc (``eventarc_bridge.py``), signed push delivery (``relay.py``) and the keys Google signs
tokens with (``signing.py``, whose JWKS URL the services verify against).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from meridian.catalog import PushDelivery, load_catalog
from tests.e2e_gcp import emulators
from tests.e2e_gcp.eventarc_bridge import EventarcBridge
from tests.e2e_gcp.relay import PushRelay
from tests.e2e_gcp.signing import LocalSigner, loopback_certificate, serving_jwks
from tests.e2e_gcp.topology import GoogleTopology

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "demo-meridian-e2e"
PUSH_IDENTITY = f"e2e-pubsub-push@{PROJECT}.iam.gserviceaccount.com"
EVENTARC_IDENTITY = f"e2e-eventarc@{PROJECT}.iam.gserviceaccount.com"
# The services this tier runs, and the stand-ins of the providers they call.
SERVICES = ("command", "event-publisher", "billing", "notification", "client-webhook")
STAND_INS = {
    "sms-gateway": "meridian.embedded.external.sms_gateway",
    "billing-api": "meridian.embedded.external.billing_api",
}


class WebhookReceiver(BaseHTTPRequestHandler):
    """A client's https:// webhook endpoint: records every delivery, answers 200."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@dataclass
class GcpPlatform:
    """What a test gets: the services' URLs, the signer, the receiver and the harness parts."""

    urls: dict[str, str]
    signer: LocalSigner
    webhook_url: str
    relay: PushRelay
    bridge: EventarcBridge
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return self.urls[service]


def _start(
    name: str, argv: list[str], env: dict[str, str], logs: Path
) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("ab")
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _wait_healthy(platform: GcpPlatform, names: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            process = platform.processes[name]
            if process.poll() is not None:
                log = (platform.logs / f"{name}.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
            try:
                httpx.get(f"{platform.url(name)}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not answer /healthz; see {platform.logs}/{name}.log"
                    ) from None
                time.sleep(0.2)


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def gcp_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcpPlatform]:
    logs = tmp_path_factory.mktemp("e2e-gcp")
    catalog = load_catalog()
    saved = {k: os.environ.get(k) for k in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST")}
    with ExitStack() as stack:
        pubsub = stack.enter_context(emulators.pubsub(PROJECT, logs / "pubsub-emulator.log"))
        firestore = stack.enter_context(emulators.firestore(logs / "firestore-emulator.log"))
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host
        os.environ["FIRESTORE_EMULATOR_HOST"] = firestore.host
        stack.callback(_restore, saved)

        topology = GoogleTopology(PROJECT)
        topology.apply_catalog(catalog)
        topology.close()

        signer = LocalSigner()
        certs_url = stack.enter_context(serving_jwks(signer))
        cert, key = loopback_certificate(logs)
        receiver = ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        receiver.socket = tls.wrap_socket(receiver.socket, server_side=True)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        stack.callback(receiver.shutdown)

        ports = {name: emulators.free_port() for name in (*STAND_INS, *SERVICES)}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        base = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "MERIDIAN_LOG_LEVEL": "WARNING",
            "MERIDIAN_DATA_DIR": str(logs / "stand-ins"),
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        stack.callback(_stop, processes)
        for name, module in STAND_INS.items():
            env = {**base, "PORT": str(ports[name])}
            processes[name] = _start(name, [sys.executable, "-m", module], env, logs)
        for name in SERVICES:
            env = {**base, **service_env(name, ports, urls, certs_url), "SSL_CERT_FILE": str(cert)}
            argv = [sys.executable, "-m", "meridian.runtime.cli", "serve", name]
            processes[name] = _start(name, argv, env, logs)

        relay = PushRelay(PROJECT, signer, PUSH_IDENTITY)
        stack.callback(relay.close)
        bridge = EventarcBridge(catalog, PROJECT, urls, signer, EVENTARC_IDENTITY)
        stack.callback(bridge.close)
        platform = GcpPlatform(
            urls,
            signer,
            f"https://127.0.0.1:{receiver.server_port}/hooks",
            relay,
            bridge,
            logs,
            processes,
        )
        _wait_healthy(platform, [*STAND_INS, *SERVICES])
        for name, spec in catalog.subscriptions.items():
            delivery = spec.delivery
            if isinstance(delivery, PushDelivery) and delivery.service in SERVICES:
                relay.relay(name, urls[delivery.service] + delivery.path)
        bridge.start()
        yield platform


def service_env(
    name: str, ports: dict[str, int], urls: dict[str, str], certs_url: str
) -> dict[str, str]:
    """What Terraform gives the Cloud Run service ``name`` (terraform/modules/meridian), with the
    emulators, loopback and the harness's stand-ins where production has Google and providers."""
    return {
        # As on Cloud Run
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "MERIDIAN_BACKEND": "gcp",
        "MERIDIAN_SERVICE": name,
        "PORT": str(ports[name]),
        "MERIDIAN_PUSH_IDENTITY": PUSH_IDENTITY,
        "MERIDIAN_EVENTARC_IDENTITY": EVENTARC_IDENTITY,
        "MERIDIAN_SMS_URL": urls["sms-gateway"],
        "MERIDIAN_SMS_API_KEY": "sms-key-e2e",
        "MERIDIAN_BILLING_URL": urls["billing-api"],
        "MERIDIAN_BILLING_API_KEY": "billing-key-e2e",
        "MERIDIAN_TRACKING_SECRET": "tracking-secret-of-the-e2e-gcp-tier-32+",
        "MERIDIAN_TRACKING_BASE_URL": "https://track.example.test",
        # Google's emulators and the harness's signer instead of Google
        "PUBSUB_EMULATOR_HOST": os.environ["PUBSUB_EMULATOR_HOST"],
        "FIRESTORE_EMULATOR_HOST": os.environ["FIRESTORE_EMULATOR_HOST"],
        "MERIDIAN_PUSH_CERTS_URL": certs_url,
        # Cloud Trace has no emulator (and this machine no Google credentials).
        "MERIDIAN_TRACE_EXPORT": "none",
        "MERIDIAN_IDENTITY_CERTS_URL": certs_url,
        # Loopback: each endpoint's own URL (the tokens' audience) is where it listens here, and
        # the client's webhook receiver is on loopback, which production refuses by default.
        "MERIDIAN_HOST": "127.0.0.1",
        f"MERIDIAN_PORT_{name.upper().replace('-', '_')}": str(ports[name]),
        "MERIDIAN_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    }


def _restore(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
