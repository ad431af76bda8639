"""The sandbox service's settings, read from AGENTRY_SANDBOX_* (and DAYTONA_* for the Daytona provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.settings import ServiceSettings


class SandboxSettings(ServiceSettings):
    """Where sandboxes live, what they may use, and how long and loud their commands may be.

    `provider`: "local" (a directory and bubblewrapped processes on this host) or "daytona".
    `isolation` (local): "bwrap" runs every command under bubblewrap (own namespaces, no network
    unless the sandbox asked for it, read-only system, only the workspace writable), "none" runs
    it as a plain host process, "auto" picks bwrap when it is installed and works. Without
    bubblewrap, commands are refused unless `allow_unisolated` is set.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTRY_SANDBOX_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/sandbox.db"
    provider: Literal["local", "daytona"] = "local"
    root_dir: Path = Path("./var/sandboxes")
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    allow_unisolated: bool = False
    default_exec_timeout_seconds: float = Field(default=60.0, gt=0)
    max_exec_timeout_seconds: float = Field(default=600.0, gt=0)
    max_output_bytes: int = Field(default=1_000_000, gt=0)
    # Whole-file reads and writes (the agent's tools); larger files go through upload/download.
    max_file_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    max_upload_bytes: int = Field(default=1 << 30, gt=0)

    # Lifecycle: a sandbox unused this long is stopped, and archived this long after it stopped (0: never).
    auto_stop_minutes: float = Field(default=15.0, ge=0)
    auto_archive_minutes: float = Field(default=120.0, ge=0)
    reap_interval_seconds: float = Field(default=30.0, gt=0)

    # Local provider limits per sandbox (a sandbox's spec may ask for up to the max).
    cpu_seconds: int = Field(default=600, ge=0)
    memory_mb: int = Field(default=2048, ge=0)
    max_memory_mb: int = Field(default=8192, ge=0)
    max_processes: int = Field(default=256, ge=0)
    disk_mb: int = Field(default=5120, ge=0)
    max_disk_mb: int = Field(default=51200, ge=0)
    dedicated_users: bool = True

    # Daytona provider, configured explicitly (the SDK is never left to read .env files).
    daytona_api_key: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("DAYTONA_API_KEY", "daytona_api_key")
    )
    daytona_api_url: str = Field(
        default="https://app.daytona.io/api", validation_alias=AliasChoices("DAYTONA_API_URL", "daytona_api_url")
    )
    daytona_target: str = Field(default="", validation_alias=AliasChoices("DAYTONA_TARGET", "daytona_target"))
    daytona_snapshot: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> SandboxSettings:
        if self.default_exec_timeout_seconds > self.max_exec_timeout_seconds:
            raise ValueError("default_exec_timeout_seconds must not exceed max_exec_timeout_seconds")
        if self.provider == "daytona" and not self.daytona_api_key.get_secret_value():
            raise ValueError("DAYTONA_API_KEY is required when AGENTRY_SANDBOX_PROVIDER=daytona")
        return self
