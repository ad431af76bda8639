"""The auth service's settings: where its tables live and how it signs access tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from agentry.servicekit.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    """Read from AGENTRY_AUTH_* (plus the shared AGENTRY_INTERNAL_TOKEN / AGENTRY_DEV_MODE)."""

    model_config = SettingsConfigDict(env_prefix="AGENTRY_AUTH_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./var/auth.db"
    # "local": our own users table; "supabase": Supabase Auth (GoTrue) at SUPABASE_URL.
    provider: Literal["local", "supabase"] = "local"
    # The Supabase project (read without the AGENTRY_AUTH_ prefix, as Supabase names them).
    supabase_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_URL", "AGENTRY_AUTH_SUPABASE_URL", "supabase_url")
    )
    supabase_anon_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SUPABASE_ANON_KEY", "SUPABASE_PUBLISHABLE_KEY", "AGENTRY_AUTH_SUPABASE_ANON_KEY", "supabase_anon_key"
        ),
    )
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SUPABASE_SERVICE_ROLE_KEY",
            "SUPABASE_SECRET_KEY",
            "AGENTRY_AUTH_SUPABASE_SERVICE_ROLE_KEY",
            "supabase_service_role_key",
        ),
    )
    # Only for projects still signing with the legacy HS256 secret; asymmetric keys come from the JWKS.
    supabase_jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "AGENTRY_AUTH_SUPABASE_JWT_SECRET", "supabase_jwt_secret"),
    )
    issuer: str = "agentry-local"
    audience: str = "authenticated"
    # Short-lived: with local (JWKS) verification a signed-out session's access token works until
    # it expires; the refresh token is what keeps a session going.
    access_token_ttl_seconds: int = Field(default=900, gt=0)
    refresh_token_ttl_seconds: int = Field(default=30 * 86_400, gt=0)
    stream_token_ttl_seconds: int = Field(default=300, gt=0, le=3600)
    # An EC P-256 private key in PEM. Without it, dev mode generates one and keeps it at key_path.
    signing_key: SecretStr | None = None
    # Key rotation: the previous signing key(s), PEM blocks (private or public) one after another.
    # Their tokens keep verifying and they stay in the JWKS; drop them one access-token lifetime
    # after the rotation.
    retired_signing_keys: SecretStr | None = None
    key_path: Path = Path("./var/auth-signing-key.pem")

    @model_validator(mode="after")
    def _require_supabase_settings(self) -> AuthSettings:
        if self.provider == "supabase":
            missing = [
                name
                for name, value in (
                    ("SUPABASE_URL", self.supabase_url),
                    ("SUPABASE_ANON_KEY", self.supabase_anon_key),
                    ("SUPABASE_SERVICE_ROLE_KEY", self.supabase_service_role_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"AGENTRY_AUTH_PROVIDER=supabase needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _require_signing_key_outside_dev(self) -> AuthSettings:
        # A generated key on a pod's disk would differ per replica and vanish on restart.
        if not self.dev_mode and (self.signing_key is None or not self.signing_key.get_secret_value().strip()):
            raise ValueError(
                "AGENTRY_AUTH_SIGNING_KEY must be set to an EC P-256 private key (PEM) when AGENTRY_DEV_MODE is false"
            )
        return self
