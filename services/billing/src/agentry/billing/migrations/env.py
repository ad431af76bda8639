"""Alembic's entry point for billing's tables; servicekit runs it on the connection it migrates."""

from agentry.billing.adapters.sql import metadata
from agentry.servicekit.db import alembic_env

alembic_env(metadata)
