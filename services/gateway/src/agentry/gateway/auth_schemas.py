"""Request and response bodies of the identity routes: sessions, API keys, stream tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .schemas import _Body


class RefreshBody(_Body):
    refresh_token: str = Field(min_length=1, max_length=128)


class SignOutBody(_Body):
    scope: Literal["local", "global"] = Field(
        default="local", description="`local`: this session; `global`: every session of the user."
    )


class PasswordChange(_Body):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class NewApiKey(_Body):
    name: str = Field(min_length=1, max_length=200)
    expires_at: datetime | None = Field(default=None, description="When the key stops working; never if absent.")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret, shown this once: only its hash is kept.")


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]


class StreamToken(BaseModel):
    token: str = Field(description="Pass as `?access_token=` to this resource's stream (EventSource).")
    expires_in: int


class AccountOut(BaseModel):
    id: str
    name: str
    personal: bool
    role: Literal["owner", "admin", "member"]
    created_at: datetime


class AccountList(BaseModel):
    accounts: list[AccountOut]


class NewTeam(_Body):
    name: str = Field(min_length=1, max_length=200)


class MemberOut(BaseModel):
    user_id: str
    email: str
    role: Literal["owner", "admin", "member"]
    joined_at: datetime


class MemberList(BaseModel):
    members: list[MemberOut]


class NewInvitation(_Body):
    email: str = Field(min_length=3, max_length=320)
    role: Literal["owner", "admin", "member"] = "member"


class InvitationCreated(BaseModel):
    id: str
    token: str = Field(description="Single use, shown once: the invitee accepts with it.")
    expires_at: datetime


class InvitationAcceptance(_Body):
    token: str = Field(min_length=1, max_length=128)


class RoleChange(_Body):
    role: Literal["owner", "admin", "member"]
