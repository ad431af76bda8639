"""Identity in split mode: sessions in PostgreSQL, rate limits in Redis shared by the gateway's
workers, API keys and team accounts across processes."""

from __future__ import annotations

import httpx
import pytest

pytestmark = [pytest.mark.integration]

PASSWORD = "correct horse battery staple"
GUESS = "a guessed password Zq9"


@pytest.mark.parametrize("system", ["split"], indirect=True)
async def test_sessions_keys_teams_and_limits_in_split_mode(system):
    async with httpx.AsyncClient(base_url=f"{system.gateway_url}/api", timeout=30) as client:
        credentials = {"email": "split-id@example.com", "password": PASSWORD}
        assert (await client.post("/auth/signup", json=credentials)).status_code == 201
        first = (await client.post("/auth/token", json=credentials)).json()
        auth = {"Authorization": f"Bearer {first['access_token']}"}

        second = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        reused = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reused.status_code == 401 and reused.json()["error"]["code"] == "refresh_token_reused"
        assert (
            await client.post("/auth/refresh", json={"refresh_token": second.json()["refresh_token"]})
        ).status_code == 401

        # The reuse ended the session: its access token still passes the gateway's local check until
        # it expires, but not auth's confirmation before a key is made.
        assert (await client.post("/api-keys", json={"name": "split"}, headers=auth)).status_code == 401
        auth = {
            "Authorization": f"Bearer {(await client.post('/auth/token', json=credentials)).json()['access_token']}"
        }
        key = (await client.post("/api-keys", json={"name": "split"}, headers=auth)).json()
        team = (await client.post("/accounts", json={"name": "Split team"}, headers=auth)).json()
        in_team = await client.post("/threads", json={}, headers={**auth, "X-Account-Id": team["id"]})
        assert in_team.status_code == 201
        thread_id = in_team.json()["thread_id"]
        assert (await client.get(f"/threads/{thread_id}/messages", headers=auth)).status_code == 404
        assert (await client.post("/threads", json={}, headers={"X-API-Key": key["key"]})).status_code == 201
        assert (await client.delete(f"/api-keys/{key['id']}", headers=auth)).status_code == 204
        assert (await client.post("/threads", json={}, headers={"X-API-Key": key["key"]})).status_code == 401

        # Failed sign-ins per email are counted in Redis: the 11th attempt waits.
        statuses = [
            (await client.post("/auth/token", json={**credentials, "password": GUESS})).status_code for _ in range(11)
        ]
        assert statuses == [401] * 10 + [429]
        limited = await client.post("/auth/token", json=credentials)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1

    # Every process's log (each service's stdout and stderr): no password, token or key in a line.
    logs = {path.name: path.read_text(errors="replace") for path in (system.data_dir / "logs").glob("*.log")}
    assert {"auth.log", "gateway.log"} <= set(logs) and logs["auth.log"].strip()
    secrets = [
        PASSWORD,
        GUESS,
        first["access_token"],
        first["refresh_token"],
        second.json()["access_token"],
        second.json()["refresh_token"],
        key["key"],
        auth["Authorization"].removeprefix("Bearer "),
    ]
    for name, text in logs.items():
        for secret in secrets:
            parts = [secret] + [p for p in secret.split(".") if len(p) > 16]
            assert not any(p in text for p in parts), (name, secret[:12])
