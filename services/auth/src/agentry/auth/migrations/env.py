"""Alembic's entry point for the auth service's tables, run by servicekit's migrate()."""

from agentry.auth.adapters.sql import metadata
from agentry.servicekit.db import alembic_env

alembic_env(metadata)
