"""The API key routes: create (the secret shown once), list (no secrets), revoke."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from agentry.api.auth.v1 import auth_pb2

from . import auth_schemas
from .deps import CallerDep, UpstreamsDep, bearer
from .errors import ApiError

router = APIRouter(prefix="/api")


def _time(value: float) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def _out(key: auth_pb2.ApiKey) -> dict:
    return {
        "id": key.api_key_id,
        "name": key.name,
        "prefix": key.display_prefix,
        "created_at": _time(key.created_at),
        "expires_at": _time(key.expires_at),
        "last_used_at": _time(key.last_used_at),
    }


@router.post("/api-keys", status_code=201, response_model=auth_schemas.ApiKeyCreated, tags=["api-keys"])
async def create_api_key(body: auth_schemas.NewApiKey, request: Request, caller: CallerDep, up: UpstreamsDep):
    """A key acting for the caller's current account, accepted as `Authorization: Bearer <key>` or
    `X-API-Key: <key>`. The answer is the only time the secret is shown. Needs a signed-in session
    (auth confirms it is still live), not another API key."""
    if caller.api_key_id:
        raise ApiError(403, "session_required", "API keys are created from a signed-in session, not with an API key")
    principal = auth_pb2.Principal(user_id=caller.user_id, account_id=caller.account_id, email=caller.email)
    expires_at = body.expires_at.timestamp() if body.expires_at else 0.0
    reply = await up.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(principal=principal, name=body.name, expires_at=expires_at, token=bearer(request))
    )
    return auth_schemas.ApiKeyCreated(**_out(reply.api_key), key=reply.key)


@router.get("/api-keys", response_model=auth_schemas.ApiKeyList, tags=["api-keys"])
async def list_api_keys(caller: CallerDep, up: UpstreamsDep):
    reply = await up.auth.ListApiKeys(auth_pb2.ListApiKeysRequest(account_id=caller.account_id))
    return auth_schemas.ApiKeyList(api_keys=[auth_schemas.ApiKeyOut(**_out(k)) for k in reply.api_keys])


@router.delete("/api-keys/{api_key_id}", status_code=204, tags=["api-keys"])
async def revoke_api_key(api_key_id: str, caller: CallerDep, up: UpstreamsDep):
    """Revokes the key at once; another account's key is 404, as a key that does not exist."""
    await up.auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(account_id=caller.account_id, api_key_id=api_key_id))
    return Response(status_code=204)
