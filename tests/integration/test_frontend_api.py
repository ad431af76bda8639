"""The API a frontend needs, walked as a frontend does, on the embedded dev stack; and the OpenAPI
document checked against every answer the gateway gives here (status documented, JSON body valid
against the documented schema, each run event valid against its event schema).

Every request of the module goes through one client whose response hook validates the answer
against /openapi.json; the last test checks that every documented operation was answered, and
answered with an error at least once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jsonschema
import orjson
import pytest
import pytest_asyncio

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
UPLOAD_LIMIT = 64 * 1024
REPORT = "report.md"
REPORT_TEXT = "# Report\nTwo files read.\n"
SCRIPTS = {
    "fe-writer": Script(
        turns=(
            Turn(
                text="Reading.", tool_calls=(ScriptedToolCall("create_file", {"path": REPORT, "content": REPORT_TEXT}),)
            ),
            Turn(text="The report is in report.md."),
        )
    ),
    "fe-quick": Script(turns=(Turn(text="Hello."),)),
    "fe-slow": Script(turns=(Turn(text=" ".join(f"w{i}" for i in range(40))),), tokens_per_second=40),
}


@dataclass
class Conformance:
    """Checks each answer against the OpenAPI document and records which operations answered what."""

    doc: dict
    seen: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._routes = []
        for path in self.doc["paths"]:
            pattern = re.sub(r"\{(\w+)\}", lambda m: "(.+)" if m.group(1) == "path" else "([^/]+)", path)
            self._routes.append((path.count("{"), re.compile(f"^{pattern}$"), path))
        self._routes.sort(key=lambda r: r[0])  # the most literal template wins

    def template(self, path: str) -> str | None:
        return next((t for _, rx, t in self._routes if rx.match(path)), None)

    def schema_for(self, ref_or_schema: dict) -> dict:
        return {**ref_or_schema, "components": self.doc["components"]}

    def validate(self, instance, schema: dict, where: str) -> None:
        try:
            jsonschema.Draft202012Validator(self.schema_for(schema)).validate(instance)
        except jsonschema.ValidationError as exc:
            self.problems.append(f"{where}: {exc.message}")

    async def check(self, response: httpx.Response) -> None:
        request = response.request
        path = request.url.path
        template = self.template(path)
        if template is None or not path.startswith("/api"):
            return
        method = request.method.lower()
        operation = self.doc["paths"][template].get(method)
        where = f"{request.method} {template} -> {response.status_code}"
        if operation is None:
            self.problems.append(f"{where}: method not documented")
            return
        self.seen.setdefault((template, method), set()).add(response.status_code)
        documented = operation["responses"].get(str(response.status_code))
        if documented is None:
            self.problems.append(f"{where}: status not documented")
            return
        media = response.headers.get("content-type", "").split(";")[0]
        if media == "application/json":
            await response.aread()
            content = documented.get("content", {}).get("application/json")
            if content is None:
                self.problems.append(f"{where}: JSON answer where none is documented")
            elif "schema" in content:
                self.validate(response.json(), content["schema"], where)
        elif media and response.status_code != 204 and media not in documented.get("content", {}):
            self.problems.append(f"{where}: {media} not documented")


@dataclass
class Stack:
    url: str
    data_dir: Path
    conformance: Conformance


@dataclass
class User:
    account_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _traversable(path: Path) -> Path:
    # pytest's temporary directories are 0700; a sandbox's own user must reach its workspace.
    for directory in [path, *path.parents]:
        if not directory.stat().st_mode & 0o001:
            directory.chmod(directory.stat().st_mode | 0o001)
    return path


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[Stack]:
    data_dir = _traversable(tmp_path_factory.mktemp("frontend"))
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=data_dir,
            llm_api_base=llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
            gateway_overrides={"max_upload_bytes": UPLOAD_LIMIT},
        )
        async with httpx.AsyncClient(base_url=dev.gateway_url) as plain:
            doc = (await plain.get("/openapi.json")).json()
        yield Stack(dev.gateway_url, data_dir, Conformance(doc))


@pytest_asyncio.fixture(loop_scope="module")
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=system.url, timeout=30, event_hooks={"response": [system.conformance.check]}
    ) as client:
        yield client


async def _user(client: httpx.AsyncClient, email: str) -> User:
    signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})
    return User(signup.json()["account_id"], token.json()["access_token"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def users(system) -> tuple[User, User]:
    async with httpx.AsyncClient(
        base_url=system.url, timeout=30, event_hooks={"response": [system.conformance.check]}
    ) as client:
        return await _user(client, "alice@frontend.test"), await _user(client, "bob@frontend.test")


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def _events(
    client: httpx.AsyncClient, run_id: str, headers: dict, *, last_event_id: str | None = None
) -> list[tuple[str, dict]]:
    """(id, event) of every frame until the stream ends."""
    headers = {**headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    frames: list[tuple[str, dict]] = []
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        current = ""
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                current = line[4:]
            elif line.startswith("data: "):
                frames.append((current, orjson.loads(line[6:])))
    return frames


def _check_events(system: Stack, frames: list[tuple[str, dict]]) -> None:
    ref = {"$ref": "#/components/schemas/RunEvent"}
    for frame_id, event in frames:
        system.conformance.validate(event, ref, f"event {event.get('type')}")
        assert int(frame_id) == event["seq"]


async def _initiate(client, user: User, prompt: str, files: list[tuple[str, bytes]], model: str = "fe-writer"):
    fields = [("prompt", (None, prompt)), ("model_name", (None, f"openai/{model}"))]  # always multipart
    return await client.post(
        "/api/agent/initiate",
        headers=user.headers,
        files=fields + [("files", (name, content)) for name, content in files],
    )


def _tie_timestamps(data_dir: Path, thread_id: str) -> None:
    """Gives every message of the thread the same created_at (what a fast agent's burst looks like)."""
    with contextlib.closing(sqlite3.connect(data_dir / "runner.db")) as db:
        db.execute("UPDATE messages SET created_at = 1700000000.0 WHERE thread_id = ?", (thread_id,))
        db.commit()


async def _all_pages(client, user: User, thread_id: str, order: str, limit: int) -> list[str]:
    ids, cursor = [], None
    while True:
        params = {"order": order, "limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"/api/threads/{thread_id}/messages", headers=user.headers, params=params)
        assert page.status_code == 200, page.text
        ids += [m["message_id"] for m in page.json()["messages"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


async def test_a_frontend_walks_from_sign_up_to_delete_and_another_account_sees_none_of_it(
    system, client, users
) -> None:
    alice, bob = users
    older = await client.post("/api/threads", headers=alice.headers, json={"name": "older"})
    assert older.status_code == 201

    started = await _initiate(
        client,
        alice,
        "Read both files and write a report.",
        [("notes.txt", b"first file\n"), ("../../etc/passwd", b"not where it says\n")],
    )
    assert started.status_code == 201, started.text
    ids = started.json()
    assert ids["files"] == ["uploads/notes.txt", "uploads/passwd"]
    assert ids["sandbox_id"] and ids["thread_id"] and ids["agent_run_id"] and ids["project_id"]
    thread_id, run_id, sandbox_id = ids["thread_id"], ids["agent_run_id"], ids["sandbox_id"]

    listed = await client.get("/api/threads", headers=alice.headers)
    assert listed.status_code == 200
    first = listed.json()["threads"][0]
    assert first["thread_id"] == thread_id and first["sandbox_id"] == sandbox_id
    assert [t["thread_id"] for t in listed.json()["threads"]][1] == older.json()["thread_id"]

    got = await client.get(f"/api/threads/{thread_id}", headers=alice.headers)
    assert got.status_code == 200 and got.json()["project_id"] == ids["project_id"]
    assert got.json()["sandbox_id"] == sandbox_id

    frames = await _events(client, run_id, alice.headers)
    _check_events(system, frames)
    assert frames[-1][1]["type"] == "run_finished" and frames[-1][1]["reason"] == "completed"
    assert any(e["type"] == "tool_call_finished" and e["name"] == "create_file" for _, e in frames)

    runs = await client.get(f"/api/threads/{thread_id}/runs", headers=alice.headers)
    assert [(r["agent_run_id"], r["status"]) for r in runs.json()["runs"]] == [(run_id, "completed")]
    assert runs.json()["next_cursor"] is None

    everything = (await client.get(f"/api/threads/{thread_id}/messages", headers=alice.headers)).json()["messages"]
    prompt = everything[0]["content"]
    assert everything[0]["type"] == "user" and "/workspace/uploads/notes.txt" in orjson.dumps(prompt).decode()
    in_order = [m["message_id"] for m in everything]
    assert len(in_order) >= 4
    _tie_timestamps(system.data_dir, thread_id)
    assert await _all_pages(client, alice, thread_id, "asc", 2) == in_order
    assert await _all_pages(client, alice, thread_id, "desc", 3) == in_order[::-1]

    report = await client.get(
        f"/api/sandboxes/{sandbox_id}/files/content", headers=alice.headers, params={"path": REPORT}
    )
    assert report.status_code == 200 and report.text == REPORT_TEXT
    uploaded = await client.get(
        f"/api/sandboxes/{sandbox_id}/files/content", headers=alice.headers, params={"path": "uploads/passwd"}
    )
    assert uploaded.content == b"not where it says\n"

    renamed = await client.patch(f"/api/threads/{thread_id}", headers=alice.headers, json={"name": " Report "})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Report"

    other = bob.headers
    for response in (
        await client.get(f"/api/threads/{thread_id}", headers=other),
        await client.patch(f"/api/threads/{thread_id}", headers=other, json={"name": "mine"}),
        await client.get(f"/api/threads/{thread_id}/runs", headers=other),
        await client.get(f"/api/threads/{thread_id}/messages", headers=other),
        await client.delete(f"/api/threads/{thread_id}/messages/{in_order[-1]}", headers=other),
        await client.get(f"/api/agent-run/{run_id}", headers=other),
        await client.get(f"/api/agent-run/{run_id}/stream", headers=other),
        await client.get(f"/api/sandboxes/{sandbox_id}", headers=other),
        await client.get(f"/api/sandboxes/{sandbox_id}/files", headers=other),
        await client.get(f"/api/sandboxes/{sandbox_id}/files/content", headers=other, params={"path": REPORT}),
        await client.delete(f"/api/threads/{thread_id}", headers=other),
    ):
        _error(response, 404)
    assert thread_id not in [
        t["thread_id"] for t in (await client.get("/api/threads", headers=other)).json()["threads"]
    ]

    deleted_message = await client.delete(f"/api/threads/{thread_id}/messages/{in_order[-1]}", headers=alice.headers)
    assert deleted_message.status_code == 204
    _error(
        await client.delete(f"/api/threads/{thread_id}/messages/{in_order[-1]}", headers=alice.headers),
        404,
        "message_not_found",
    )

    assert (await client.delete(f"/api/threads/{thread_id}", headers=alice.headers)).status_code == 204
    for response in (
        await client.get(f"/api/threads/{thread_id}", headers=alice.headers),
        await client.get(f"/api/agent-run/{run_id}", headers=alice.headers),
        await client.get(f"/api/sandboxes/{sandbox_id}", headers=alice.headers),  # went with the project
        await client.get(f"/api/threads/{thread_id}", headers=other),
    ):
        _error(response, 404)
    left = [t["thread_id"] for t in (await client.get("/api/threads", headers=alice.headers)).json()["threads"]]
    assert left == [older.json()["thread_id"]]


async def test_thread_pages_are_newest_first_and_end(client, users) -> None:
    alice, _ = users
    made = [
        (await client.post("/api/threads", headers=alice.headers, json={"name": f"p{n}"})).json()["thread_id"]
        for n in range(3)
    ]
    first = (await client.get("/api/threads", headers=alice.headers, params={"limit": 2})).json()
    assert [t["thread_id"] for t in first["threads"]] == made[::-1][:2] and first["next_cursor"]
    rest = await client.get("/api/threads", headers=alice.headers, params={"limit": 2, "cursor": first["next_cursor"]})
    assert rest.json()["threads"][0]["thread_id"] == made[0]
    _error(await client.get("/api/threads", headers=alice.headers, params={"limit": 101}), 422, "validation_error")
    _error(await client.get("/api/threads", headers=alice.headers, params={"cursor": "not-ours"}), 422)


async def test_me_names_the_user_their_accounts_and_balance(client, users) -> None:
    alice, _ = users
    me = await client.get("/api/me", headers=alice.headers)
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["user"]["email"] == "alice@frontend.test"
    assert body["active_account"] == {"id": alice.account_id, "role": "owner"}
    assert alice.account_id in [a["id"] for a in body["accounts"]]
    assert isinstance(body["balance_micros"], int)
    _error(await client.get("/api/me"), 401, "unauthenticated")


async def test_initiate_refuses_bad_input_and_leaves_nothing_behind(client, users) -> None:
    alice, _ = users
    before = len((await client.get("/api/threads", headers=alice.headers, params={"limit": 100})).json()["threads"])

    blank = await _initiate(client, alice, "   ", [("a.txt", b"a")])
    assert _error(blank, 422, "validation_error")["fields"] == [
        {"field": "body.prompt", "message": "must not be empty"}
    ]
    nul = await _initiate(client, alice, "hi\x00there", [])
    assert _error(nul, 422)["fields"][0]["field"] == "body.prompt"
    too_big = await _initiate(client, alice, "take this", [("big.bin", b"x" * (UPLOAD_LIMIT + 1))])
    _error(too_big, 413, "file_too_large")
    _error(await client.post("/api/agent/initiate", headers=alice.headers, json={"prompt": "hi"}), 415)
    _error(await client.post("/api/agent/initiate", json={"prompt": "hi"}), 401)

    after = len((await client.get("/api/threads", headers=alice.headers, params={"limit": 100})).json()["threads"])
    assert after == before


async def test_a_blank_prompt_on_start_is_refused_unless_a_user_message_waits(client, users) -> None:
    alice, _ = users
    thread_id = (await client.post("/api/threads", headers=alice.headers, json={})).json()["thread_id"]
    refused = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        headers=alice.headers,
        json={"prompt": "  ", "model_name": "openai/fe-quick"},
    )
    assert _error(refused, 422, "validation_error")["fields"][0]["field"] == "body.prompt"
    added = await client.post(f"/api/threads/{thread_id}/messages", headers=alice.headers, json={"content": "hi"})
    assert added.status_code == 201
    accepted = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        headers=alice.headers,
        json={"prompt": "", "model_name": "openai/fe-quick"},
    )
    assert accepted.status_code == 202, accepted.text
    assert (await _events(client, accepted.json()["agent_run_id"], alice.headers))[-1][1]["type"] == "run_finished"
    busy_delete = await client.delete(
        f"/api/threads/{thread_id}/messages/{added.json()['message_id']}", headers=alice.headers
    )
    assert busy_delete.status_code in (204, 409)  # 409 run_active only while the run still held the thread


async def test_every_last_event_id_has_a_defined_answer(system, client, users) -> None:
    alice, _ = users
    thread_id = (await client.post("/api/threads", headers=alice.headers, json={})).json()["thread_id"]
    start = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        headers=alice.headers,
        json={"prompt": "hi", "model_name": "openai/fe-quick"},
    )
    run_id = start.json()["agent_run_id"]
    full = await _events(client, run_id, alice.headers)
    terminal = full[-1][0]

    resumed = await _events(client, run_id, alice.headers, last_event_id=full[0][0])
    assert resumed == full[1:]
    for at_or_past_end in (terminal, str(int(terminal) + 1), str(2**63 - 1)):
        done = await client.get(
            f"/api/agent-run/{run_id}/stream", headers={**alice.headers, "Last-Event-ID": at_or_past_end}
        )
        assert done.status_code == 204 and done.content == b"", at_or_past_end
    for garbage in ("abc", "-1", "1.5", "\u00b2".encode(), str(2**63), "7 7"):
        answer = await client.get(
            f"/api/agent-run/{run_id}/stream", headers={**alice.headers, "Last-Event-ID": garbage}
        )
        _error(answer, 422, "invalid_last_event_id")

    # A live run and a number it has not reached: the stream waits, then ends with run_finished.
    slow = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        headers=alice.headers,
        json={"prompt": "talk", "model_name": "openai/fe-slow"},
    )
    live = await asyncio.wait_for(
        _events(client, slow.json()["agent_run_id"], alice.headers, last_event_id="1000000"), timeout=20
    )
    assert [e["type"] for _, e in live] == ["run_finished"]
    _check_events(system, live)


async def test_exec_streams_output_then_the_exit_code_and_only_for_the_owner(system, client, users) -> None:
    alice, bob = users
    sandbox_id = (await client.post("/api/threads", headers=alice.headers, json={})).json()["sandbox_id"]
    url = f"/api/sandboxes/{sandbox_id}/exec"
    ran = await client.post(
        url,
        headers=alice.headers,
        json={"command": "printf 'h\\303\\251'; echo; echo oops >&2; exit 3", "env": {"A": "1"}},
    )
    assert ran.status_code == 200 and ran.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in ran.text.splitlines()]
    schemas = {"output": "ExecOutputLine", "exit": "ExecExitLine"}
    for line in lines:
        system.conformance.validate(line, {"$ref": f"#/components/schemas/{schemas[line['type']]}"}, "exec line")
    assert "".join(line["data"] for line in lines[:-1]) == "h\u00e9\noops\n"
    assert lines[-1]["type"] == "exit" and lines[-1]["exit_code"] == 3 and not lines[-1]["timed_out"]
    slow = await client.post(url, headers=alice.headers, json={"command": "sleep 5", "timeout_s": 0.5})
    assert orjson.loads(slow.text.splitlines()[-1])["timed_out"] is True
    _error(await client.post(url, headers=bob.headers, json={"command": "ls"}), 404)
    _error(await client.post(url, headers=alice.headers, json={"command": ""}), 422, "validation_error")


async def test_docs_and_their_assets_are_served_by_the_gateway(client) -> None:
    for page, marker in (("/docs", "SwaggerUIBundle"), ("/redoc", "<redoc")):
        html = await client.get(page)
        assert html.status_code == 200 and marker in html.text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: '([^']+)'", html.text)
        assert assets and all(a.startswith("/") for a in assets), assets  # nothing from another host
        for asset in assets:
            fetched = await client.get(asset)
            assert fetched.status_code == 200 and fetched.content, asset
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        **spec["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids)


async def test_zz_every_answer_matched_the_document_and_every_operation_was_answered(system, client, users) -> None:
    """Runs last in the module (pytest keeps file order): covers the operations the walk did not."""
    alice, bob = users
    conformance = system.conformance
    await _sweep_the_rest(client, alice, bob, conformance.doc)
    assert conformance.problems == [], "\n".join(conformance.problems)
    operations = {(path, method) for path, item in conformance.doc["paths"].items() for method in item}
    unanswered = operations - conformance.seen.keys()
    assert unanswered == set()
    without_error = {op for op, statuses in conformance.seen.items() if not any(s >= 400 for s in statuses)}
    assert without_error == {("/api/health/live", "get")}  # it has no error to give


async def _sweep_the_rest(client: httpx.AsyncClient, alice: User, bob: User, doc: dict) -> None:
    """One success where the walk had none, and an error for every operation (401 without a
    credential, 404 for another account's ids, 422 for bad input)."""
    h = alice.headers
    thread = (await client.post("/api/threads", headers=h, json={"name": "sweep"})).json()
    tid, sid, pid = thread["thread_id"], thread["sandbox_id"], thread["project_id"]
    run = (
        await client.post(
            f"/api/threads/{tid}/agent/start", headers=h, json={"prompt": "hi", "model_name": "openai/fe-quick"}
        )
    ).json()
    rid = run["agent_run_id"]
    await _events(client, rid, h)
    await client.get(f"/api/agent-run/{rid}", headers=h)
    await client.post(f"/api/agent-run/{rid}/stop", headers=h)
    await client.post(f"/api/agent-run/{rid}/resume", headers=h, json={"content": "x"})  # 409: not waiting
    await client.post(f"/api/agent-run/{rid}/stream-token", headers=h)
    await client.post(f"/api/threads/{tid}/stream-token", headers=h)
    async with client.stream("GET", f"/api/threads/{tid}/stream", headers=h) as response:
        assert response.status_code == 200
    await client.post(f"/api/sandboxes/{sid}/files", headers=h, data={"path": "a.txt"}, files={"file": ("a", b"a")})
    await client.get(f"/api/sandboxes/{sid}/files", headers=h)
    await client.delete(f"/api/sandboxes/{sid}/files", headers=h, params={"path": "a.txt"})
    await client.get("/api/sandboxes", headers=h)
    await client.post(f"/api/projects/{pid}/sandbox/ensure-active", headers=h)
    await client.get(f"/api/sandboxes/{sid}/preview/8080", headers=h)
    await client.get(f"/api/sandboxes/{sid}/preview/8080/proxy/index.html", headers=h)
    await client.delete(f"/api/sandboxes/{sid}", headers=h)
    await client.get("/api/accounts", headers=h)
    team = (await client.post("/api/accounts", headers=h, json={"name": "Team"})).json()
    await client.get(f"/api/accounts/{team['id']}/members", headers=h)
    invite = (
        await client.post(
            f"/api/accounts/{team['id']}/invitations", headers=h, json={"email": "bob@frontend.test", "role": "member"}
        )
    ).json()
    await client.post("/api/accounts/invitations/accept", headers=bob.headers, json={"token": invite["token"]})
    await client.patch(f"/api/accounts/{team['id']}/members/{bob.account_id}", headers=h, json={"role": "admin"})
    await client.delete(f"/api/accounts/{team['id']}/members/{bob.account_id}", headers=h)
    key = (await client.post("/api/api-keys", headers=h, json={"name": "ci"})).json()
    await client.get("/api/api-keys", headers=h)
    await client.delete(f"/api/api-keys/{key.get('id', 'none')}", headers=h)
    await client.get("/api/auth/.well-known/jwks.json")
    await client.get("/api/health")
    await client.get("/api/health/live")
    tokens = (await client.post("/api/auth/token", json={"email": "bob@frontend.test", "password": PASSWORD})).json()
    await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await client.post(
        "/api/auth/password",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        json={"current_password": PASSWORD, "new_password": PASSWORD + "!"},
    )
    await client.post("/api/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    # Errors: no credential, another account's ids, bad input.
    for method, path in [(m, p) for p, item in doc["paths"].items() for m in item]:
        url = path.format(
            thread_id=tid,
            run_id=rid,
            sandbox_id=sid,
            project_id=pid,
            account_id=team["id"],
            user_id=bob.account_id,
            api_key_id="none",
            message_id="none",
            port=8080,
            path="x",
        )
        await client.request(method.upper(), url)  # 401 (or 422 / 404 where no credential is needed)
    await client.post("/api/auth/signup", json={"email": "x", "password": ""})
    await client.post("/api/auth/token", json={"email": "bob@frontend.test", "password": "wrong"})
    await client.post("/api/auth/refresh", json={"refresh_token": "nope"})
    await client.get("/api/auth/.well-known/jwks.json", params={"x": "\x00"})
    await client.get("/api/health", params={"x": "\x00"})
    await client.get("/api/health/live", params={"x": "\x00"})
