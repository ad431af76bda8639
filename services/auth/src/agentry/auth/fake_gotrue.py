"""A small stateful GoTrue (Supabase Auth) for tests and offline demos, speaking its wire format.

It serves the endpoints the `supabase` auth client calls under `/auth/v1` (signup, token with the
password and refresh_token grants, user, logout, admin/users, the JWKS), signs access tokens like
GoTrue (ES256 with a `kid`, or the legacy HS256 secret), rotates refresh tokens and revokes the
whole session when a used one comes back. Runs in a thread on a loopback port.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
import jwt.algorithms
from cryptography.hazmat.primitives.asymmetric import ec

API_VERSION = "2024-01-01"


@dataclass
class _User:
    id: str
    email: str
    password: str
    created_at: float


@dataclass
class _State:
    users: dict[str, _User] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)  # session id -> user id (live sessions only)
    refresh: dict[str, tuple[str, bool]] = field(default_factory=dict)  # token -> (session id, used)


class FakeGoTrue:
    """`with FakeGoTrue() as gotrue:` then point SUPABASE_URL at `gotrue.url`."""

    def __init__(
        self,
        *,
        anon_key: str = "anon-key-for-tests",
        service_role_key: str = "service-role-key-for-tests",
        jwt_secret: str | None = None,
        access_token_ttl: int = 3600,
    ) -> None:
        self.anon_key, self.service_role_key, self.jwt_secret = anon_key, service_role_key, jwt_secret
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = uuid.uuid4().hex
        self.ttl = access_token_ttl
        self.state = _State()
        self.requests: list[tuple[str, str]] = []  # (method, path): what the client called
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/auth/v1"

    def __enter__(self) -> FakeGoTrue:
        fake = self

        class Handler(_Handler):
            gotrue = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="fake-gotrue", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def jwks(self) -> dict:
        if self.jwt_secret:
            return {"keys": []}  # legacy projects publish no key: the secret is symmetric
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"]}]}

    def sign(self, claims: dict) -> str:
        if self.jwt_secret:
            return jwt.encode(claims, self.jwt_secret, algorithm="HS256")
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": self.kid})

    def claims(self, user: _User, session_id: str, now: int | None = None) -> dict:
        now = int(time.time()) if now is None else now
        return {
            "iss": self.issuer,
            "aud": "authenticated",
            "sub": user.id,
            "exp": now + self.ttl,
            "iat": now,
            "email": user.email,
            "phone": "",
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": session_id,
            "is_anonymous": False,
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": {},
        }

    # --- the server's rules, called with the lock held ---

    def user_json(self, user: _User) -> dict:
        created = datetime.fromtimestamp(user.created_at, UTC).isoformat()
        return {
            "id": user.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": user.email,
            "email_confirmed_at": created,
            "confirmed_at": created,
            "created_at": created,
            "updated_at": created,
            "app_metadata": {"provider": "email", "providers": ["email"]},
            "user_metadata": {},
            "identities": [],
            "is_anonymous": False,
        }

    def new_session(self, user: _User, session_id: str | None = None) -> dict:
        session_id = session_id or str(uuid.uuid4())
        self.state.sessions[session_id] = user.id
        refresh = secrets.token_urlsafe(12)
        self.state.refresh[refresh] = (session_id, False)
        now = int(time.time())
        return {
            "access_token": self.sign(self.claims(user, session_id, now)),
            "token_type": "bearer",
            "expires_in": self.ttl,
            "expires_at": now + self.ttl,
            "refresh_token": refresh,
            "user": self.user_json(user),
        }

    def end_sessions(self, session_ids: set[str]) -> None:
        for sid in session_ids:
            self.state.sessions.pop(sid, None)
        for token, (sid, _used) in list(self.state.refresh.items()):
            if sid in session_ids:
                del self.state.refresh[token]

    def verify(self, token: str) -> tuple[_User, str] | None:
        try:
            if self.jwt_secret:
                claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], audience="authenticated")
            else:
                claims = jwt.decode(token, self.key.public_key(), algorithms=["ES256"], audience="authenticated")
        except jwt.PyJWTError:
            return None
        user = self.state.users.get(claims.get("sub", ""))
        sid = claims.get("session_id", "")
        if user is None or self.state.sessions.get(sid) != user.id:
            return None  # signed out: GoTrue's /user refuses the token although it still verifies
        return user, sid


class _Handler(BaseHTTPRequestHandler):
    gotrue: FakeGoTrue

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _answer(self, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Supabase-Api-Version", API_VERSION)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._answer(status, {"code": code, "error_code": code, "message": message, "msg": message})

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _bearer(self) -> str:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" else ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        g = self.gotrue
        url = urlparse(self.path)
        path = url.path.removeprefix("/auth/v1")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        g.requests.append((method, path))
        public = (method, path) == ("GET", "/.well-known/jwks.json")  # any JWT library may fetch it
        if not public and self.headers.get("apikey") not in (g.anon_key, g.service_role_key):
            return self._error(401, "no_authorization", "No API key found in request")
        body = self._body() if method in ("POST", "PUT") else {}
        with g._lock:
            if (method, path) == ("GET", "/.well-known/jwks.json"):
                return self._answer(200, g.jwks())
            if (method, path) == ("POST", "/signup"):
                return self._signup(body)
            if (method, path) == ("POST", "/token"):
                return self._token(query.get("grant_type", ""), body)
            if (method, path) == ("GET", "/user"):
                found = g.verify(self._bearer())
                if found is None:
                    return self._error(403, "session_not_found", "Session from session_id claim in JWT does not exist")
                return self._answer(200, g.user_json(found[0]))
            if (method, path) == ("POST", "/logout"):
                return self._logout(query.get("scope", "global"))
            if method == "PUT" and path.startswith("/admin/users/"):
                return self._admin_update(path.removeprefix("/admin/users/"), body)
        return self._error(404, "not_found", "not found")

    def _signup(self, body: dict) -> None:
        g = self.gotrue
        email, password = str(body.get("email", "")).strip().lower(), str(body.get("password", ""))
        if not email or len(password) < 6:
            return self._error(422, "weak_password", "Password should be at least 6 characters.")
        if any(u.email == email for u in g.state.users.values()):
            return self._error(422, "user_already_exists", "User already registered")
        user = _User(id=str(uuid.uuid4()), email=email, password=password, created_at=time.time())
        g.state.users[user.id] = user
        return self._answer(200, g.new_session(user))  # autoconfirm: a session at once

    def _token(self, grant: str, body: dict) -> None:
        g = self.gotrue
        if grant == "password":
            email, password = str(body.get("email", "")).strip().lower(), str(body.get("password", ""))
            user = next((u for u in g.state.users.values() if u.email == email), None)
            if user is None or not secrets.compare_digest(user.password, password):
                return self._error(400, "invalid_credentials", "Invalid login credentials")
            return self._answer(200, g.new_session(user))
        if grant == "refresh_token":
            token = str(body.get("refresh_token", ""))
            if token not in g.state.refresh:
                return self._error(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
            session_id, used = g.state.refresh[token]
            if used:
                g.end_sessions({session_id})
                return self._error(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")
            g.state.refresh[token] = (session_id, True)
            user = g.state.users[g.state.sessions[session_id]]
            return self._answer(200, g.new_session(user, session_id))
        return self._error(400, "unsupported_grant_type", "unsupported grant_type")

    def _logout(self, scope: str) -> None:
        g = self.gotrue
        found = g.verify(self._bearer())
        if found is None:
            return self._answer(204)  # GoTrue ignores a logout of an ended session
        user, sid = found
        mine = {s for s, uid in g.state.sessions.items() if uid == user.id}
        g.end_sessions({sid} if scope == "local" else mine - {sid} if scope == "others" else mine)
        return self._answer(204)

    def _admin_update(self, user_id: str, body: dict) -> None:
        g = self.gotrue
        if self._bearer() != g.service_role_key:
            return self._error(403, "not_admin", "User not allowed")
        user = g.state.users.get(user_id)
        if user is None:
            return self._error(404, "user_not_found", "User not found")
        if "password" in body:
            user.password = str(body["password"])
        return self._answer(200, g.user_json(user))
