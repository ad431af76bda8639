"""The settings every service shares; each service subclasses it with its own env prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .tls import TlsFiles, tls_files

# The credential `agentry dev` uses when none is configured. Refused outside dev mode.
DEV_INTERNAL_TOKEN = "agentry-dev-internal-token"


class ServiceSettings(BaseSettings):
    """Host, port, service credential and database shared by every gRPC service.

    `internal_token` and `dev_mode` are read from AGENTRY_INTERNAL_TOKEN and AGENTRY_DEV_MODE
    whatever the service's prefix, since every service must agree on them.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTRY_", extra="ignore", hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = 0
    database_url: str = "sqlite+aiosqlite:///./var/agentry.db"
    internal_token: SecretStr = Field(
        default=SecretStr(DEV_INTERNAL_TOKEN),
        validation_alias=AliasChoices("AGENTRY_INTERNAL_TOKEN", "internal_token"),
    )
    dev_mode: bool = Field(default=True, validation_alias=AliasChoices("AGENTRY_DEV_MODE", "dev_mode"))
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("AGENTRY_LOG_LEVEL", "log_level"))
    # "json": one JSON object per line (production); "text": readable lines. Unset: text in dev
    # mode, JSON otherwise. Read from AGENTRY_LOG_FORMAT whatever the service's prefix.
    log_format: Literal["json", "text"] | None = Field(
        default=None, validation_alias=AliasChoices("AGENTRY_LOG_FORMAT", "log_format")
    )
    # When set, Prometheus metrics are served on this HTTP port at /metrics (AGENTRY_<SERVICE>_
    # METRICS_PORT, e.g. AGENTRY_AUTH_METRICS_PORT); unset, none are served (embedded mode: the
    # gateway's /metrics serves every service's).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str | None = None  # unset: the same interface as `host`
    grace_seconds: float = 10.0
    # PostgreSQL connections this process may hold (pool + overflow). A request that finds none
    # free waits for one (it never fails for lack of a connection within the pool timeout).
    # Pooled connections are opened on demand and kept; an overflow connection is closed as soon
    # as it is returned, so a process that keeps using more than the pool would open a connection
    # (and prepare its statements again) for almost every transaction: all 15 are pooled.
    database_pool_size: int = Field(default=15, ge=1, le=500)
    database_max_overflow: int = Field(default=0, ge=0, le=500)
    # "transaction" when database_url goes through a transaction-mode pooler (PgBouncer,
    # Supabase's port 6543): no prepared statement is cached. Unset: detected from the URL.
    database_pool_mode: Literal["session", "transaction"] | None = Field(
        default=None, validation_alias=AliasChoices("AGENTRY_DATABASE_POOL_MODE", "database_pool_mode")
    )

    # Mutual TLS between services, when all three are set (shared by every service, like the
    # internal credential): this process's certificate and key, and the CA that signs them all.
    tls_cert_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("AGENTRY_TLS_CERT_FILE", "tls_cert_file")
    )
    tls_key_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("AGENTRY_TLS_KEY_FILE", "tls_key_file")
    )
    tls_ca_file: Path | None = Field(default=None, validation_alias=AliasChoices("AGENTRY_TLS_CA_FILE", "tls_ca_file"))

    def log_json(self) -> bool:
        """Whether log lines are JSON: as AGENTRY_LOG_FORMAT says, else JSON outside dev mode."""
        return self.log_format == "json" if self.log_format else not self.dev_mode

    def tls(self) -> TlsFiles | None:
        return tls_files(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    @model_validator(mode="after")
    def _tls_all_or_nothing(self) -> ServiceSettings:
        self.tls()
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        token = self.internal_token.get_secret_value()
        if not self.dev_mode and (token == DEV_INTERNAL_TOKEN or len(token) < 16):
            raise ValueError(
                "AGENTRY_INTERNAL_TOKEN must be set to a secret of at least 16 characters "
                "when AGENTRY_DEV_MODE is false"
            )
        return self
