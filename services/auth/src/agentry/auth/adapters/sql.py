"""The UserRepository over SQLAlchemy Core, portable between SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain import Account, ApiKey, Membership, Principal, RefreshRecord, Session, User
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

    async def find_user_by_id(self, user_id: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.user_id == user_id))).first()
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


sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column(
        "user_id",
        sa.String(64),
        sa.ForeignKey("users.user_id", ondelete="CASCADE", name="fk_sessions_user_id"),
        nullable=False,
    ),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Index("ix_sessions_user_id", "user_id"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    # SHA-256 of the token: the token itself is 256 random bits, so a slow hash adds nothing.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column(
        "session_id",
        sa.String(64),
        sa.ForeignKey("sessions.session_id", ondelete="CASCADE", name="fk_refresh_tokens_session_id"),
        nullable=False,
    ),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("used_at", sa.Double, nullable=True),
    sa.Index("ix_refresh_tokens_session_id", "session_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("api_key_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column(
        "user_id",
        sa.String(64),
        sa.ForeignKey("users.user_id", ondelete="CASCADE", name="fk_api_keys_user_id"),
        nullable=False,
    ),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("display_prefix", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=True),
    sa.Column("last_used_at", sa.Double, nullable=True),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    sa.Index("ix_api_keys_account_id", "account_id"),
)


def _session(row) -> Session:
    return Session(session_id=row.session_id, user_id=row.user_id, account_id=row.account_id,
                   created_at=row.created_at, revoked_at=row.revoked_at)


class SqlSessionRepository:
    """Sessions and their refresh-token families."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_session(self, session: Session, token_hash: str, expires_at: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sessions.insert().values(
                session_id=session.session_id, user_id=session.user_id, account_id=session.account_id,
                created_at=session.created_at, revoked_at=None))
            await conn.execute(refresh_tokens.insert().values(
                token_hash=token_hash, session_id=session.session_id, created_at=session.created_at,
                expires_at=expires_at, used_at=None))

    async def find_refresh_token(self, token_hash: str) -> RefreshRecord | None:
        query = (
            sa.select(sessions, refresh_tokens.c.expires_at, refresh_tokens.c.used_at)
            .join(refresh_tokens, refresh_tokens.c.session_id == sessions.c.session_id)
            .where(refresh_tokens.c.token_hash == token_hash)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return RefreshRecord(session=_session(row), expires_at=row.expires_at, used_at=row.used_at)

    async def rotate(self, old_hash: str, new_hash: str, *, now: float, expires_at: float) -> bool:
        """Marks `old_hash` used and stores its successor, atomically; False if it was already used."""
        async with self._engine.begin() as conn:
            used = await conn.execute(
                refresh_tokens.update()
                .where(refresh_tokens.c.token_hash == old_hash, refresh_tokens.c.used_at.is_(None))
                .values(used_at=now)
                .returning(refresh_tokens.c.session_id)
            )
            session_id = used.scalar()
            if session_id is None:
                return False
            await conn.execute(refresh_tokens.insert().values(
                token_hash=new_hash, session_id=session_id, created_at=now, expires_at=expires_at, used_at=None))
        return True

    async def find_session(self, session_id: str) -> Session | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id))).first()
        return _session(row) if row is not None else None

    async def revoke_session(self, session_id: str, *, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sessions.update()
                               .where(sessions.c.session_id == session_id, sessions.c.revoked_at.is_(None))
                               .values(revoked_at=now))

    async def revoke_user_sessions(self, user_id: str, *, now: float, keep: str | None = None) -> int:
        where = [sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None)]
        if keep:
            where.append(sessions.c.session_id != keep)
        async with self._engine.begin() as conn:
            result = await conn.execute(sessions.update().where(*where).values(revoked_at=now))
        return result.rowcount


def _api_key(row) -> ApiKey:
    return ApiKey(api_key_id=row.api_key_id, account_id=row.account_id, user_id=row.user_id, name=row.name,
                  display_prefix=row.display_prefix, created_at=row.created_at, expires_at=row.expires_at,
                  last_used_at=row.last_used_at, revoked_at=row.revoked_at)


class SqlApiKeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, key: ApiKey, key_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(api_keys.insert().values(
                api_key_id=key.api_key_id, account_id=key.account_id, user_id=key.user_id, name=key.name,
                display_prefix=key.display_prefix, key_hash=key_hash, created_at=key.created_at,
                expires_at=key.expires_at, last_used_at=None, revoked_at=None))

    async def list_for_account(self, account_id: str) -> list[ApiKey]:
        query = (sa.select(api_keys)
                 .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
                 .order_by(api_keys.c.created_at, api_keys.c.api_key_id))
        async with self._engine.connect() as conn:
            return [_api_key(row) for row in await conn.execute(query)]

    async def revoke(self, account_id: str, api_key_id: str, *, now: float) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(api_keys.c.api_key_id == api_key_id, api_keys.c.account_id == account_id,
                       api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now))
        return result.rowcount == 1

    async def find_by_hash(self, key_hash: str) -> ApiKey | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
        return _api_key(row) if row is not None else None

    async def touch(self, api_key_id: str, *, now: float, every: float) -> None:
        # At most one write per key per `every` seconds, however busy the key is.
        async with self._engine.begin() as conn:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.api_key_id == api_key_id,
                       sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - every))
                .values(last_used_at=now))
