"""Test doubles every service's tests share: inject them where code takes a clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable


class FakeClock:
    """Seconds that move only when a test says so; pass it wherever a `clock` callable goes."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, *, interval: float = 0.02) -> None:
    """Waits until `condition()` holds, checking every `interval` seconds; fails (AssertionError)
    after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


def needs(available: bool, what: str):
    """A pytest mark for tests that need a local program: skipped without it, but failed under CI
    (CI=true), where a missing program must never turn into a green run."""
    import pytest

    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    return pytest.mark.skipif(not available and not in_ci, reason=f"{what} is not installed")


def make_test_pki(directory, names):
    """A private CA in `directory` and a certificate for each name (valid for localhost and
    127.0.0.1), as TlsFiles by name: what mutual-TLS tests run on."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from .tls import TlsFiles

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        builder("agentry-test-ca", "agentry-test-ca", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files = {}
    for service in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(service, "agentry-test-ca", key.public_key())
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{service}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{service}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        files[service] = TlsFiles(directory / f"{service}.crt", directory / f"{service}.key", ca_file)
    return files
