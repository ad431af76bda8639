"""Mutual TLS between services: each side proves itself with a certificate from one private CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: this process's certificate and key, and the CA that signs every service's."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def _read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert_file.read_bytes(), self.key_file.read_bytes(), self.ca_file.read_bytes()

    def server_credentials(self) -> grpc.ServerCredentials:
        """A server that refuses any client without a certificate from the CA."""
        cert, key, ca = self._read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def tls_files(cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
    """TlsFiles when all three are set, None when none is; anything in between is a mistake."""
    given = [p for p in (cert, key, ca) if p]
    if not given:
        return None
    if len(given) != 3:
        raise ValueError(
            "AGENTRY_TLS_CERT_FILE, AGENTRY_TLS_KEY_FILE and AGENTRY_TLS_CA_FILE go together: "
            "set all three for mutual TLS, or none"
        )
    return TlsFiles(Path(cert), Path(key), Path(ca))  # type: ignore[arg-type]
