"""The command line every service process shares: no argument serves, `migrate` upgrades the
service's tables and exits (a Kubernetes migration Job), `--help` lists the settings it reads."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migrations:
    """Where a service's Alembic history lives and the version table it records itself in."""

    directory: Path
    version_table: str


def settings_env(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Every environment variable `settings_cls` reads, name -> field name; a field read under
    several names (AliasChoices) has each, its preferred one first."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            envs = [c for c in alias.choices if isinstance(c, str) and c.isupper()] or [f"{prefix}{field_name}".upper()]
        elif isinstance(alias, str):
            envs = [alias.upper()]
        else:
            envs = [f"{prefix}{field_name}".upper()]
        names.update(dict.fromkeys(envs, field_name))
    return names


def usage(settings_cls: type[BaseSettings], *, prog: str, migrations: Migrations | None) -> str:
    lines = [
        f"usage: {prog} [migrate | --help]",
        "",
        "  (no argument)  serve until SIGTERM",
        *(["  migrate        bring this service's tables to the newest migration, then exit"] if migrations else []),
        "  --help         this text",
        "",
        "Settings (environment variables):",
    ]
    preferred = {field_name: env for env, field_name in reversed(settings_env(settings_cls).items())}
    for field_name, env in sorted(preferred.items(), key=lambda item: item[1]):
        field = settings_cls.model_fields[field_name]
        default: Any = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr) or "SecretStr" in repr(field.annotation):
            shown = "(secret)" if default else "(unset)"
        else:
            shown = repr(default)
        lines.append(f"  {env:<48} default {shown}")
    return "\n".join(lines)


def service_command(
    argv: Sequence[str],
    settings_cls: type[BaseSettings],
    *,
    migrations: Migrations | None = None,
    prog: str | None = None,
) -> int | None:
    """Handles `argv` (without the program name): None means serve; otherwise the exit code."""
    prog = prog or f"python -m {settings_cls.__module__.rsplit('.', 1)[0]}"
    if not argv:
        return None
    if argv[0] in ("-h", "--help"):
        print(usage(settings_cls, prog=prog, migrations=migrations))
        return 0
    if argv[0] == "migrate" and migrations is not None and len(argv) == 1:
        migrate_now(settings_cls(), migrations)
        return 0
    print(
        f"{prog}: unexpected arguments {' '.join(argv)!r}\n{usage(settings_cls, prog=prog, migrations=migrations)}",
        file=sys.stderr,
    )
    return 2


def migrate_now(settings: Any, migrations: Migrations) -> None:
    """Runs the service's migrations on `settings.database_url` (the direct connection, not a
    transaction-mode pooler, in production) and returns once they are at head."""
    from .context import configure_logging
    from .db import create_engine, migrate

    log_json = getattr(settings, "log_json", None)
    configure_logging(settings.log_level, json=log_json() if log_json else not getattr(settings, "dev_mode", True))

    async def _run() -> None:
        engine = create_engine(settings.database_url, pool_mode=getattr(settings, "database_pool_mode", None))
        try:
            await migrate(engine, migrations_dir=migrations.directory, version_table=migrations.version_table)
        finally:
            await engine.dispose()

    asyncio.run(_run())
    logger.info("%s is at the newest migration", migrations.version_table)
