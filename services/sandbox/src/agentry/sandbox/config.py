"""The sandbox service's settings, read from AGENTRY_SANDBOX_* so they sit apart from other services'."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.settings import ServiceSettings


class SandboxSettings(ServiceSettings):
    """Where sandboxes live and how long and loud their commands may be.

    `isolation`: "bwrap" runs every command under bubblewrap (no network, only the workspace
    writable), "none" runs it as a plain host process, "auto" picks bwrap when it is installed
    and works.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTRY_SANDBOX_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/sandbox.db"
    provider: Literal["local"] = "local"
    root_dir: Path = Path("./var/sandboxes")
    isolation: Literal["auto", "bwrap", "none"] = "auto"
    default_exec_timeout_seconds: float = Field(default=60.0, gt=0)
    max_exec_timeout_seconds: float = Field(default=600.0, gt=0)
    max_output_bytes: int = Field(default=1_000_000, gt=0)
    max_file_bytes: int = Field(default=16 * 1024 * 1024, gt=0)

    @model_validator(mode="after")
    def _default_within_max(self) -> SandboxSettings:
        if self.default_exec_timeout_seconds > self.max_exec_timeout_seconds:
            raise ValueError("default_exec_timeout_seconds must not exceed max_exec_timeout_seconds")
        return self
