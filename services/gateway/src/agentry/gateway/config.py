"""Settings of the HTTP gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentry.servicekit.settings import DEV_INTERNAL_TOKEN
from agentry.servicekit.tls import TlsFiles, tls_files


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTRY_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    auth_target: str = "127.0.0.1:50051"
    billing_target: str = "127.0.0.1:50052"
    sandbox_target: str = "127.0.0.1:50053"
    runner_target: str = "127.0.0.1:50054"
    events: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "agentry:run:"
    # Idempotency-Key: the first answer to a key is replayed to retries for this long (24 h, as
    # Stripe does). Kept in memory, or in Redis (at redis_url) when events="redis".
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1)
    # A key whose first request is still running is held at most this long, so a gateway that dies
    # mid-request does not block the key for a day; keep it above the slowest request.
    idempotency_lock_seconds: int = Field(default=60, ge=1)
    idempotency_prefix: str = "agentry:idem:"
    # A comment line is sent on an idle stream this often, so proxies keep it open.
    keepalive_seconds: float = 15.0
    upstream_timeout_seconds: float = 10.0
    # The largest file POST /api/sandboxes/{id}/files accepts (413 above it); streamed, never held whole.
    max_upload_bytes: int = Field(default=1 << 30, gt=0)
    cors_origins: list[str] = []
    # "local": verify access tokens here with auth's published keys (no call per request);
    # "auth": ask the auth service on every request (revocation is immediate).
    token_verification: Literal["local", "auth"] = "local"
    # Must match the auth service's AGENTRY_AUTH_ISSUER / AGENTRY_AUTH_AUDIENCE.
    token_issuer: str = "agentry-local"
    token_audience: str = "authenticated"
    # Rate limits (attempts per window in seconds), kept in memory, or in Redis when events="redis".
    # Failed sign-ins count per email: the 11th attempt within 5 minutes is refused even with the
    # right password, which slows a guesser at the price of letting them lock the email briefly.
    signin_failures_per_email: int = Field(default=10, ge=1)
    signin_failures_window_seconds: int = Field(default=300, ge=1)
    signin_attempts_per_ip: int = Field(default=60, ge=1)
    signin_attempts_window_seconds: int = Field(default=60, ge=1)
    signup_per_ip: int = Field(default=30, ge=1)
    signup_window_seconds: int = Field(default=60, ge=1)
    refresh_per_ip: int = Field(default=120, ge=1)
    refresh_window_seconds: int = Field(default=60, ge=1)
    run_starts_per_account: int = Field(default=120, ge=1)
    run_starts_window_seconds: int = Field(default=60, ge=1)
    rate_limit_prefix: str = "agentry:rl:"
    internal_token: SecretStr = Field(
        default=SecretStr(DEV_INTERNAL_TOKEN),
        validation_alias=AliasChoices("AGENTRY_INTERNAL_TOKEN", "internal_token"),
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("AGENTRY_LOG_LEVEL", "log_level"))
    # "json": one JSON object per line (production, the default); "text": readable lines (`agentry
    # dev` logs text). The same AGENTRY_LOG_FORMAT the services read.
    log_format: Literal["json", "text"] = Field(default="json",
                                                validation_alias=AliasChoices("AGENTRY_LOG_FORMAT", "log_format"))
    # Mutual TLS to the services, when all three are set (the same AGENTRY_TLS_* as the services').
    tls_cert_file: Path | None = Field(default=None, validation_alias=AliasChoices("AGENTRY_TLS_CERT_FILE",
                                                                                   "tls_cert_file"))
    tls_key_file: Path | None = Field(default=None, validation_alias=AliasChoices("AGENTRY_TLS_KEY_FILE",
                                                                                  "tls_key_file"))
    tls_ca_file: Path | None = Field(default=None, validation_alias=AliasChoices("AGENTRY_TLS_CA_FILE",
                                                                                 "tls_ca_file"))

    def tls(self) -> TlsFiles | None:
        return tls_files(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    @model_validator(mode="after")
    def _tls_all_or_nothing(self) -> GatewaySettings:
        self.tls()
        return self
