"""Auth costs: how many access tokens a process verifies per second, and what authentication adds
to a gateway request, by credential kind.

    uv run python bench/auth.py --n 3000

**Verification throughput** (one process, one core busy): ES256 access tokens checked by the
gateway's JwksVerifier (local: signature, alg, iss, aud, exp, required claims; keys cached),
the auth service's TokenService.verify (the same checks, no I/O), and GoTrue-style tokens by the
supabase provider's local verifier (JWKS cached, the user's personal account cached after its
first token).

**Gateway overhead per request**: a real dev-stack auth service (SQLite) and the gateway app,
driven in-process over ASGI (httpx.ASGITransport: no sockets, so what is left is the gateway's own
work plus any gRPC call to auth). A route whose handler does nothing is mounted twice, with and
without the caller dependency, and timed per credential kind: no credential, an access token
verified locally (the default), the same verified by auth over gRPC (token_verification=auth),
an API key (a gRPC call to auth and a SQL lookup every request), and an access token acting
for a team via X-Account-Id (one ResolveAccount gRPC call). Reported: p50/p90 per request and
the median overhead over the unauthenticated route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from agentry.auth.config import AuthSettings
from agentry.auth.main import start as start_auth
from agentry.gateway.config import GatewaySettings
from agentry.gateway.deps import CallerDep
from agentry.gateway.tokens import JwksVerifier
from agentry.gateway.upstreams import open_upstreams


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(n: int) -> list[str]:
    import json

    from cryptography.hazmat.primitives.asymmetric import ec

    from agentry.api.auth.v1 import auth_pb2
    from agentry.auth.domain import Principal
    from agentry.auth.tokens import TokenService, public_jwk

    key = ec.generate_private_key(ec.SECP256R1())
    service = TokenService(key, issuer="agentry-local", audience="authenticated", ttl_seconds=900)
    token = service.issue(Principal("u", "a", "ada@example.com", session_id="s")).access_token

    class Auth:
        async def GetJwks(self, request):
            return auth_pb2.GetJwksResponse(jwks_json=json.dumps({"keys": [public_jwk(key.public_key())]}))

    gateway = JwksVerifier(Auth(), issuer="agentry-local", audience="authenticated")
    await gateway.verify(token)
    lines = []
    for name, call in (("gateway JwksVerifier.verify (ES256, local)", lambda: gateway.verify(token)),):
        start = time.perf_counter()
        for _ in range(n):
            await call()
        elapsed = time.perf_counter() - start
        lines.append(f"| {name} | {n / elapsed:,.0f}/s | {elapsed / n * 1e6:,.0f} us |")
    start = time.perf_counter()
    for _ in range(n):
        service.verify(token)
    elapsed = time.perf_counter() - start
    lines.append(f"| auth TokenService.verify (ES256, no I/O) | {n / elapsed:,.0f}/s | {elapsed / n * 1e6:,.0f} us |")
    start = time.perf_counter()
    for _ in range(n):
        service.issue(Principal("u", "a", "ada@example.com", session_id="s"))
    elapsed = time.perf_counter() - start
    lines.append(f"| auth TokenService.issue (ES256 sign) | {n / elapsed:,.0f}/s | {elapsed / n * 1e6:,.0f} us |")
    lines.append(await _supabase_throughput(n))
    return lines


async def _supabase_throughput(n: int) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    import agentry.auth
    from agentry.auth.adapters.sql import SqlUserRepository
    from agentry.auth.adapters.supabase import SupabaseIdentityProvider
    from agentry.auth.fake_gotrue import FakeGoTrue
    from agentry.auth.tokens import TokenService
    from agentry.servicekit.db import open_database

    with tempfile.TemporaryDirectory() as tmp, FakeGoTrue() as gotrue:
        async with contextlib.AsyncExitStack() as stack:
            engine = await open_database(
                f"sqlite+aiosqlite:///{tmp}/auth.db",
                migrations_dir=Path(agentry.auth.__file__).parent / "migrations",
                version_table="alembic_version_auth",
                stack=stack,
            )
            provider = SupabaseIdentityProvider(
                url=gotrue.url,
                anon_key=gotrue.anon_key,
                service_role_key=gotrue.service_role_key,
                jwt_secret=None,
                users=SqlUserRepository(engine),
                stream_tokens=TokenService(
                    ec.generate_private_key(ec.SECP256R1()), issuer="i", audience="a", ttl_seconds=60
                ),
            )
            stack.push_async_callback(provider.close)
            await provider.sign_up("ada@example.com", "correct horse battery")
            token = (await provider.sign_in("ada@example.com", "correct horse battery")).access_token
            await provider.verify(token)
            start = time.perf_counter()
            for _ in range(n):
                await provider.verify(token)
            elapsed = time.perf_counter() - start
    return (
        f"| supabase provider verify (ES256, cached JWKS, personal account cached after the first token) | "
        f"{n / elapsed:,.0f}/s | {elapsed / n * 1e6:,.0f} us |"
    )


async def overhead(n: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            auth = await start_auth(
                AuthSettings(port=0, database_url=f"sqlite+aiosqlite:///{tmp}/auth.db", key_path=Path(tmp) / "key.pem"),
                stack,
            )
            rows = []
            for verification in ("local", "auth"):
                settings = GatewaySettings(auth_target=auth.target, token_verification=verification)
                upstreams = await open_upstreams(settings, stack)
                app = FastAPI()
                app.state.settings, app.state.upstreams = settings, upstreams

                @app.get("/open")
                async def open_route():
                    return {}

                @app.get("/closed")
                async def closed_route(caller: CallerDep):
                    return {}

                from agentry.gateway.errors import install_error_handlers

                install_error_handlers(app)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                    creds = await _credentials(upstreams)
                    cases = [("no credential (route without auth)", "/open", {})] if verification == "local" else []
                    cases.append(
                        (
                            f"access token, verified {'locally (JWKS)' if verification == 'local' else 'by auth over gRPC'}",
                            "/closed",
                            {"Authorization": f"Bearer {creds['token']}"},
                        )
                    )
                    if verification == "local":
                        cases += [
                            ("API key (gRPC + SQL per request)", "/closed", {"X-API-Key": creds["key"]}),
                            (
                                "access token + X-Account-Id of a team (gRPC ResolveAccount)",
                                "/closed",
                                {"Authorization": f"Bearer {creds['token']}", "X-Account-Id": creds["team"]},
                            ),
                        ]
                    for name, path, headers in cases:
                        for _ in range(50):
                            assert (await client.get(path, headers=headers)).status_code == 200
                        times = []
                        for _ in range(n):
                            start = time.perf_counter()
                            await client.get(path, headers=headers)
                            times.append(time.perf_counter() - start)
                        rows.append((name, statistics.median(times), _pct(times, 0.9)))
    base = rows[0][1]
    return [
        f"| {name} | {p50 * 1e3:.3f} ms | {p90 * 1e3:.3f} ms | {(p50 - base) * 1e3:+.3f} ms |"
        for name, p50, p90 in rows
    ]


async def _credentials(upstreams) -> dict:
    from agentry.api.auth.v1 import auth_pb2

    auth = upstreams.auth
    email = f"bench-{time.monotonic_ns()}@example.com"
    await auth.SignUp(auth_pb2.SignUpRequest(email=email, password="correct horse battery"))
    signed = await auth.SignIn(auth_pb2.SignInRequest(email=email, password="correct horse battery"))
    principal = (await auth.VerifyToken(auth_pb2.VerifyTokenRequest(token=signed.access_token))).principal
    key = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(principal=principal, name="bench", token=signed.access_token)
    )
    team = await auth.CreateTeam(auth_pb2.CreateTeamRequest(principal=principal, name="bench team"))
    return {"token": signed.access_token, "key": key.key, "team": team.account_id}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    print("| verifier | tokens/s | per token |\n|---|---|---|")
    print("\n".join(await throughput(args.n)))
    print("\n| credential | p50 | p90 | p50 over no auth |\n|---|---|---|---|")
    print("\n".join(await overhead(args.n)))


if __name__ == "__main__":
    asyncio.run(main())
