"""The UserRepository over SQLAlchemy Core, portable between SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ..domain import (
    Account,
    AccountMembership,
    ApiKey,
    Invitation,
    Member,
    Membership,
    Principal,
    RefreshRecord,
    Session,
    User,
)
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

    async def ensure_user(self, user: User, account: Account, membership: Membership) -> str:
        """The personal account of `user`, creating the three rows the first time the user is seen
        (an external provider's user); concurrent first sightings settle on one account."""
        existing = await self.personal_account_id(user.user_id)
        if existing is not None:
            return existing
        try:
            await self.add_user(user, account, membership)
            return account.account_id
        except (IntegrityError, EmailTaken):
            existing = await self.personal_account_id(user.user_id)
            if existing is None:
                raise
            return existing

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
    return Session(
        session_id=row.session_id,
        user_id=row.user_id,
        account_id=row.account_id,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class SqlSessionRepository:
    """Sessions and their refresh-token families."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add_session(self, session: Session, token_hash: str, expires_at: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sessions.insert().values(
                    session_id=session.session_id,
                    user_id=session.user_id,
                    account_id=session.account_id,
                    created_at=session.created_at,
                    revoked_at=None,
                )
            )
            await conn.execute(
                refresh_tokens.insert().values(
                    token_hash=token_hash,
                    session_id=session.session_id,
                    created_at=session.created_at,
                    expires_at=expires_at,
                    used_at=None,
                )
            )

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
            await conn.execute(
                refresh_tokens.insert().values(
                    token_hash=new_hash, session_id=session_id, created_at=now, expires_at=expires_at, used_at=None
                )
            )
        return True

    async def find_session(self, session_id: str) -> Session | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id))).first()
        return _session(row) if row is not None else None

    async def revoke_session(self, session_id: str, *, now: float) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                sessions.update()
                .where(sessions.c.session_id == session_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )

    async def revoke_user_sessions(self, user_id: str, *, now: float, keep: str | None = None) -> int:
        where = [sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None)]
        if keep:
            where.append(sessions.c.session_id != keep)
        async with self._engine.begin() as conn:
            result = await conn.execute(sessions.update().where(*where).values(revoked_at=now))
        return result.rowcount


def _api_key(row) -> ApiKey:
    return ApiKey(
        api_key_id=row.api_key_id,
        account_id=row.account_id,
        user_id=row.user_id,
        name=row.name,
        display_prefix=row.display_prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlApiKeyRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, key: ApiKey, key_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    api_key_id=key.api_key_id,
                    account_id=key.account_id,
                    user_id=key.user_id,
                    name=key.name,
                    display_prefix=key.display_prefix,
                    key_hash=key_hash,
                    created_at=key.created_at,
                    expires_at=key.expires_at,
                    last_used_at=None,
                    revoked_at=None,
                )
            )

    async def list_for_account(self, account_id: str) -> list[ApiKey]:
        query = (
            sa.select(api_keys)
            .where(api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
            .order_by(api_keys.c.created_at, api_keys.c.api_key_id)
        )
        async with self._engine.connect() as conn:
            return [_api_key(row) for row in await conn.execute(query)]

    async def revoke(self, account_id: str, api_key_id: str, *, now: float) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.api_key_id == api_key_id,
                    api_keys.c.account_id == account_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
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
                .where(
                    api_keys.c.api_key_id == api_key_id,
                    sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - every),
                )
                .values(last_used_at=now)
            )


invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("invitation_id", sa.String(64), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.account_id", ondelete="CASCADE", name="fk_invitations_account_id"),
        nullable=False,
    ),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("invited_by", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("accepted_at", sa.Double, nullable=True),
    sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
)


def _account(row) -> Account:
    return Account(account_id=row.account_id, name=row.name, personal=row.personal, created_at=row.created_at)


class SqlAccountRepository:
    """Accounts, memberships and invitations (the tables the user repository also writes)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def membership(self, user_id: str, account_id: str) -> AccountMembership | None:
        query = (
            sa.select(accounts, memberships.c.role)
            .join(memberships, memberships.c.account_id == accounts.c.account_id)
            .where(memberships.c.user_id == user_id, accounts.c.account_id == account_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return AccountMembership(_account(row), row.role) if row is not None else None

    async def list_for_user(self, user_id: str) -> list[AccountMembership]:
        query = (
            sa.select(accounts, memberships.c.role)
            .join(memberships, memberships.c.account_id == accounts.c.account_id)
            .where(memberships.c.user_id == user_id)
            .order_by(accounts.c.personal.desc(), accounts.c.created_at, accounts.c.account_id)
        )
        async with self._engine.connect() as conn:
            return [AccountMembership(_account(row), row.role) for row in await conn.execute(query)]

    async def add_account(self, account: Account, owner: Membership) -> None:
        async with self._engine.begin() as conn:
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
                    account_id=owner.account_id, user_id=owner.user_id, role=owner.role, created_at=owner.created_at
                )
            )

    async def members(self, account_id: str) -> list[Member]:
        query = (
            sa.select(users.c.user_id, users.c.email, memberships.c.role, memberships.c.created_at)
            .join(memberships, memberships.c.user_id == users.c.user_id)
            .where(memberships.c.account_id == account_id)
            .order_by(memberships.c.created_at, users.c.user_id)
        )
        async with self._engine.connect() as conn:
            return [Member(row.user_id, row.email, row.role, row.created_at) for row in await conn.execute(query)]

    async def add_invitation(self, invitation: Invitation, token_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                invitations.insert().values(
                    invitation_id=invitation.invitation_id,
                    account_id=invitation.account_id,
                    email=invitation.email,
                    role=invitation.role,
                    invited_by=invitation.invited_by,
                    token_hash=token_hash,
                    created_at=invitation.created_at,
                    expires_at=invitation.expires_at,
                    accepted_at=None,
                )
            )

    async def accept_invitation(self, token_hash: str, user_id: str, email: str, *, now: float) -> Invitation | None:
        """Marks the invitation accepted and adds the membership in one transaction; None when the
        token is unknown, used, expired or for another email."""
        async with self._engine.begin() as conn:
            used = await conn.execute(
                invitations.update()
                .where(
                    invitations.c.token_hash == token_hash,
                    invitations.c.accepted_at.is_(None),
                    invitations.c.expires_at > now,
                    invitations.c.email == email,
                )
                .values(accepted_at=now)
                .returning(*invitations.c)
            )
            row = used.first()
            if row is None:
                return None
            exists = (
                await conn.execute(
                    sa.select(memberships.c.role).where(
                        memberships.c.account_id == row.account_id, memberships.c.user_id == user_id
                    )
                )
            ).first()
            if exists is None:
                await conn.execute(
                    memberships.insert().values(
                        account_id=row.account_id, user_id=user_id, role=row.role, created_at=now
                    )
                )
        return Invitation(
            row.invitation_id, row.account_id, row.email, row.role, row.invited_by, row.created_at, row.expires_at, now
        )

    async def count_owners(self, account_id: str) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(memberships)
            .where(memberships.c.account_id == account_id, memberships.c.role == "owner")
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def set_role(self, account_id: str, user_id: str, role: str, *, keep_an_owner: bool) -> bool:
        """False when the change would leave the account without an owner (checked in the same
        transaction, with the account's memberships locked, so two demotions cannot both pass)."""
        change = (
            memberships.update()
            .where(memberships.c.account_id == account_id, memberships.c.user_id == user_id)
            .values(role=role)
        )
        return await self._guarded(account_id, change, keep_an_owner=keep_an_owner)

    async def remove_member(self, account_id: str, user_id: str, *, keep_an_owner: bool) -> bool:
        change = memberships.delete().where(memberships.c.account_id == account_id, memberships.c.user_id == user_id)
        return await self._guarded(account_id, change, keep_an_owner=keep_an_owner)

    async def _guarded(self, account_id: str, change, *, keep_an_owner: bool) -> bool:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    sa.select(memberships.c.user_id).where(memberships.c.account_id == account_id).with_for_update()
                )
                await conn.execute(change)
                if keep_an_owner and not await self._has_owner(conn, account_id):
                    raise _NoOwnerLeft
        except _NoOwnerLeft:
            return False
        return True

    @staticmethod
    async def _has_owner(conn, account_id: str) -> bool:
        query = (
            sa.select(sa.func.count())
            .select_from(memberships)
            .where(memberships.c.account_id == account_id, memberships.c.role == "owner")
        )
        return int((await conn.execute(query)).scalar() or 0) > 0


class _NoOwnerLeft(Exception):
    """Rolls back a membership change that would leave an account without an owner."""
