"""The sandbox service's Alembic history, applied by agentry.servicekit.db.open_database."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).parent
VERSION_TABLE = "sandbox_alembic_version"
