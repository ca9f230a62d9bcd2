"""The harness's stand-in for Google's token signers: one local RSA key, its public half served as
a JWKS on loopback (the certificates URL the services are pointed at, ``MERIDIAN_PUSH_CERTS_URL``
and ``MERIDIAN_IDENTITY_CERTS_URL``), and tokens shaped as Google's: Pub/Sub's and Eventarc's
OIDC tokens (issuer ``https://accounts.google.com``, reference §3.4) and Identity Platform's ID
tokens (issuer ``https://securetoken.google.com/<project>``, the role a custom claim).

Also the TLS certificate of the client's webhook receiver: production only sends webhooks to
``https://`` endpoints, so the receiver serves TLS with a certificate the client-webhook service
is told to trust (``SSL_CERT_FILE``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

GOOGLE_ISSUER = "https://accounts.google.com"


class LocalSigner:
    """Signs Google-shaped tokens with a key of its own (``kid`` names it in the JWKS)."""

    def __init__(self, kid: str = "e2e-gcp") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "alg": "RS256", "use": "sig"})
        return {"keys": [jwk]}

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def oidc_token(self, audience: str, email: str, lifetime_s: int = 3600) -> str:
        """A token as Pub/Sub push and Eventarc sign it for ``email`` (reference §3.4)."""
        now = int(time.time())
        return self._sign(
            {
                "iss": GOOGLE_ISSUER,
                "aud": audience,
                "azp": "1234567890",
                "sub": "1234567890",
                "email": email,
                "email_verified": True,
                "iat": now,
                "exp": now + lifetime_s,
            }
        )

    def identity_token(self, project: str, subject: str, role: str) -> str:
        """An Identity Platform ID token of a user whose custom claim ``role`` is set."""
        now = int(time.time())
        return self._sign(
            {
                "iss": f"https://securetoken.google.com/{project}",
                "aud": project,
                "sub": subject,
                "user_id": subject,
                "auth_time": now,
                "iat": now,
                "exp": now + 3600,
                "role": role,
                "firebase": {"sign_in_provider": "password"},
            }
        )


@contextmanager
def serving_jwks(signer: LocalSigner) -> Iterator[str]:
    """Serve the signer's JWKS on loopback; yields its URL."""
    body = json.dumps(signer.jwks()).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/oauth2/v3/certs"
    finally:
        server.shutdown()
        server.server_close()


def loopback_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files (cert, key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "receiver.pem", directory / "receiver-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
