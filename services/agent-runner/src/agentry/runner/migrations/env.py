"""Alembic environment of the runner's tables."""

from agentry.runner.adapters.sql import metadata
from agentry.servicekit.db import alembic_env

alembic_env(metadata)
