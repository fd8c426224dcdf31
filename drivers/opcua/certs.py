"""Self-signed OPC UA application certificates for the gateway (and for test servers).

    python -m drivers.opcua.certs --uri urn:plantbridge:gateway --out /etc/plantbridge/pki

writes `gateway.der` (certificate) and `gateway.pem` (private key, mode 0600). Copy the .der
into the server's trusted-clients folder; the URI must equal `application_uri` in the config.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID


def generate_certificate(directory: Path, stem: str, app_uri: str,
                         usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
                         days: int = 365 * 5) -> tuple[Path, Path]:
    """A self-signed application certificate (DER) and RSA key (PEM) for `app_uri`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    host = socket.gethostname()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(app_uri),
                                     x509.DNSName(host), x509.DNSName("localhost")]
    cert = cert_gen.generate_self_signed_app_certificate(key, stem, {}, names, [usage], days)
    cert_path, key_path = directory / f"{stem}.der", directory / f"{stem}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m drivers.opcua.certs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", default="urn:plantbridge:gateway", help="application URI")
    p.add_argument("--out", type=Path, required=True, help="folder for the .der and .pem")
    p.add_argument("--name", default="gateway", help="file stem and common name")
    p.add_argument("--days", type=int, default=365 * 5)
    args = p.parse_args(argv)
    cert, key = generate_certificate(args.out, args.name, args.uri, days=args.days)
    print(f"certificate: {cert}\nprivate key: {key}")


if __name__ == "__main__":
    main()
