"""The UserRepository over SQLAlchemy Core, portable between SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain import Account, Membership, Principal, User
from ..errors import EmailTaken

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    # Stored already lower-cased by the domain, so a plain unique index is case-insensitive.
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("email", name="uq_users_email"),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("personal", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE", name="fk_memberships_account_id"),
        nullable=False,
    ),
    sa.Column(
        "user_id",
        sa.String(64),
        sa.ForeignKey("users.user_id", ondelete="CASCADE", name="fk_memberships_user_id"),
        nullable=False,
    ),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("account_id", "user_id", name="pk_memberships"),
    sa.Index("ix_memberships_user_id", "user_id"),
)


class SqlUserRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_user(self, user: User, account: Account, membership: Membership) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    users.insert().values(
                        user_id=user.user_id,
                        email=user.email,
                        password_hash=user.password_hash,
                        created_at=user.created_at,
                    )
                )
                await conn.execute(
                    accounts.insert().values(
                        account_id=account.account_id,
                        name=account.name,
                        personal=account.personal,
                        created_at=account.created_at,
                    )
                )
                await conn.execute(
                    memberships.insert().values(
                        account_id=membership.account_id,
                        user_id=membership.user_id,
                        role=membership.role,
                        created_at=membership.created_at,
                    )
                )
        except IntegrityError as exc:
            # Constraint names differ per dialect; asking again is portable and names the real cause.
            if await self.find_user_by_email(user.email) is not None:
                raise EmailTaken("email: an account with this email already exists") from exc
            raise

    async def find_user_by_email(self, email: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.email == email))).first()
        if row is None:
            return None
        return User(user_id=row.user_id, email=row.email, password_hash=row.password_hash, created_at=row.created_at)

    async def personal_account_id(self, user_id: str) -> str | None:
        query = (
            sa.select(accounts.c.account_id)
            .join(memberships, memberships.c.account_id == accounts.c.account_id)
            .where(memberships.c.user_id == user_id, accounts.c.personal.is_(True))
            .order_by(accounts.c.created_at)
            .limit(1)
        )
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(users.update().where(users.c.user_id == user_id).values(password_hash=password_hash))

    async def find_principal(self, user_id: str, account_id: str) -> Principal | None:
        query = (
            sa.select(users.c.email)
            .join(memberships, memberships.c.user_id == users.c.user_id)
            .where(users.c.user_id == user_id, memberships.c.account_id == account_id)
        )
        async with self._engine.connect() as conn:
            email = (await conn.execute(query)).scalar()
        if email is None:
            return None
        return Principal(user_id=user_id, account_id=account_id, email=email)
