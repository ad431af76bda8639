"""Alembic environment: runs on the connection servicekit's migrate() passes in."""

from agentry.sandbox.adapters.sql import metadata
from agentry.servicekit.db import alembic_env

alembic_env(metadata)
