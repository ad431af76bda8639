"""The sandbox API through the gateway: files both ways, lifecycle, previews, and what it refuses
(paths out of the workspace, another account's sandbox, oversized uploads). On the embedded dev stack."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}
PASSWORD = "correct horse battery staple"
UPLOAD_LIMIT = 256 * 1024


@dataclass
class Stack:
    url: str
    sandbox_target: str


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
    with ThreadedFakeLLMServer({"sbx-quick": Script(turns=(Turn(text="done"),))}) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[Stack]:
    data_dir = _traversable(tmp_path_factory.mktemp("sandbox-api"))
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=data_dir,
            llm_api_base=llm.base_url,
            ports=PORTS,
            gateway_overrides={"max_upload_bytes": UPLOAD_LIMIT},
        )
        yield Stack(dev.gateway_url, f"127.0.0.1:{dev.ports['sandbox']}")


@pytest_asyncio.fixture(loop_scope="module")
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
        yield client


async def _user(system: Stack, email: str) -> User:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
        signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
        assert signup.status_code == 201, signup.text
        token = await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})
        return User(signup.json()["account_id"], token.json()["access_token"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def alice(system) -> User:
    return await _user(system, "alice.sandbox@example.com")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bob(system) -> User:
    return await _user(system, "bob.sandbox@example.com")


@pytest_asyncio.fixture(loop_scope="module")
async def thread(client, alice) -> dict:
    created = await client.post("/api/threads", json={}, headers=alice.headers)
    assert created.status_code == 201, created.text
    return created.json()


async def _exec(system: Stack, account_id: str, sandbox_id: str, command: str) -> bytes:
    async with open_channel(system.sandbox_target, DEV_INTERNAL_TOKEN) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        out = b""
        async for chunk in stub.Exec(
            sandbox_pb2.ExecRequest(account_id=account_id, sandbox_id=sandbox_id, command=command)
        ):
            out += chunk.output
        return out


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def test_threads_carry_their_projects_sandbox(client, alice, thread) -> None:
    assert thread["sandbox_id"].startswith("sbx_")
    got = await client.get(f"/api/threads/{thread['thread_id']}", headers=alice.headers)
    assert got.status_code == 200 and got.json() == thread
    box = await client.get(f"/api/sandboxes/{thread['sandbox_id']}", headers=alice.headers)
    assert box.json()["state"] == "creating" and box.json()["project_id"] == thread["project_id"]


async def test_upload_list_download_delete(client, alice, thread) -> None:
    sid = thread["sandbox_id"]
    payload = os.urandom(200_000)
    up = await client.post(
        f"/api/sandboxes/{sid}/files",
        headers=alice.headers,
        files={"path": (None, "docs/data.bin"), "file": ("data.bin", payload)},
    )
    assert up.status_code == 201, up.text
    assert up.json() == {"path": "docs/data.bin", "size": len(payload)}
    listed = await client.get(f"/api/sandboxes/{sid}/files", params={"path": "docs"}, headers=alice.headers)
    assert [(f["name"], f["path"], f["size"], f["is_dir"], f["mode"]) for f in listed.json()["files"]] == [
        ("data.bin", "docs/data.bin", len(payload), False, 0o644)
    ]
    down = await client.get(
        f"/api/sandboxes/{sid}/files/content", params={"path": "docs/data.bin"}, headers=alice.headers
    )
    assert down.status_code == 200 and down.content == payload
    assert down.headers["content-type"] == "application/octet-stream"
    # What the user uploaded, a command in the sandbox reads (as the agent's tools would).
    assert await _exec(client._system, alice.account_id, sid, "wc -c < docs/data.bin") == b"200000\n"
    gone = await client.delete(f"/api/sandboxes/{sid}/files", params={"path": "docs/data.bin"}, headers=alice.headers)
    assert gone.status_code == 204
    _error(
        await client.get(
            f"/api/sandboxes/{sid}/files/content", params={"path": "docs/data.bin"}, headers=alice.headers
        ),
        404,
        "file_not_found",
    )


@pytest.fixture(autouse=True)
def _bind_system(client, system):
    client._system = system


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "../../../../etc/passwd",
        "/etc/passwd",
        "docs/../../etc/passwd",
        "/workspace/../etc/passwd",
    ],
)
async def test_paths_out_of_the_workspace_are_refused(client, alice, thread, path) -> None:
    sid = thread["sandbox_id"]
    for response in (
        await client.get(f"/api/sandboxes/{sid}/files/content", params={"path": path}, headers=alice.headers),
        await client.get(f"/api/sandboxes/{sid}/files", params={"path": path}, headers=alice.headers),
        await client.delete(f"/api/sandboxes/{sid}/files", params={"path": path}, headers=alice.headers),
        await client.post(
            f"/api/sandboxes/{sid}/files", headers=alice.headers, files={"path": (None, path), "file": ("x", b"x")}
        ),
    ):
        error = _error(response, 422, "path_outside_sandbox")
        assert "outside the sandbox" in error["message"]


async def test_url_encoded_traversal_is_refused_or_stays_inside(client, alice, thread) -> None:
    sid = thread["sandbox_id"]
    base = f"{str(client.base_url).rstrip('/')}/api/sandboxes/{sid}/files/content"
    # Encoded once: the gateway decodes it to ../../etc/passwd, which is refused.
    once = await client.get(f"{base}?path=..%2F..%2F..%2Fetc%2Fpasswd", headers=alice.headers)
    _error(once, 422, "path_outside_sandbox")
    once_dots = await client.get(f"{base}?path=%2e%2e/%2e%2e/%2e%2e/etc/passwd", headers=alice.headers)
    _error(once_dots, 422, "path_outside_sandbox")
    # Encoded twice: after one decoding it is a literal name inside the workspace, which does not exist.
    twice = await client.get(f"{base}?path=%252e%252e%252f%252e%252e%252fetc%252fpasswd", headers=alice.headers)
    _error(twice, 404, "file_not_found")
    # In the route's path itself, a traversal never reaches another route.
    sneaky = await client.get(
        f"{str(client.base_url).rstrip('/')}/api/sandboxes/{sid}/files/..%2F..%2F..%2Fetc%2Fpasswd",
        headers=alice.headers,
    )
    assert sneaky.status_code == 404 and b"root:" not in sneaky.content


async def test_a_symlink_the_agent_made_does_not_lead_out(client, alice, thread) -> None:
    sid = thread["sandbox_id"]
    await _exec(client._system, alice.account_id, sid, "ln -s /etc etc_link && ln -s /etc/passwd pw")
    for path in ("etc_link/passwd", "pw"):
        down = await client.get(f"/api/sandboxes/{sid}/files/content", params={"path": path}, headers=alice.headers)
        _error(down, 422, "path_outside_sandbox")
    up = await client.post(
        f"/api/sandboxes/{sid}/files",
        headers=alice.headers,
        files={"path": (None, "etc_link/evil"), "file": ("x", b"x")},
    )
    _error(up, 422, "path_outside_sandbox")
    # Deleting the link removes the link, not what it points to.
    assert (
        await client.delete(f"/api/sandboxes/{sid}/files", params={"path": "pw"}, headers=alice.headers)
    ).status_code == 204
    assert Path("/etc/passwd").exists()


async def test_another_accounts_sandbox_is_404_on_every_route(client, alice, bob, thread) -> None:
    sid = thread["sandbox_id"]
    await client.post(
        f"/api/sandboxes/{sid}/files",
        headers=alice.headers,
        files={"path": (None, "secret.txt"), "file": ("s", b"alice's")},
    )
    for target in (sid, "sbx_does_not_exist"):
        responses = [
            await client.get(f"/api/sandboxes/{target}", headers=bob.headers),
            await client.get(f"/api/sandboxes/{target}/files", headers=bob.headers),
            await client.get(
                f"/api/sandboxes/{target}/files/content", params={"path": "secret.txt"}, headers=bob.headers
            ),
            await client.post(
                f"/api/sandboxes/{target}/files",
                headers=bob.headers,
                files={"path": (None, "secret.txt"), "file": ("s", b"bob's")},
            ),
            await client.delete(f"/api/sandboxes/{target}/files", params={"path": "secret.txt"}, headers=bob.headers),
            await client.delete(f"/api/sandboxes/{target}", headers=bob.headers),
            await client.get(f"/api/sandboxes/{target}/preview/8080", headers=bob.headers),
            await client.get(f"/api/sandboxes/{target}/preview/8080/proxy/", headers=bob.headers),
        ]
        for response in responses:
            _error(response, 404)
    _error(await client.post(f"/api/projects/{thread['project_id']}/sandbox/ensure-active", headers=bob.headers), 404)
    _error(await client.get(f"/api/threads/{thread['thread_id']}", headers=bob.headers), 404)
    assert (await client.get("/api/sandboxes", headers=bob.headers)).json() == {"sandboxes": []}
    kept = await client.get(f"/api/sandboxes/{sid}/files/content", params={"path": "secret.txt"}, headers=alice.headers)
    assert kept.content == b"alice's"


async def test_oversized_uploads_are_413_and_leave_nothing(client, alice, thread) -> None:
    sid = thread["sandbox_id"]
    big = b"x" * (UPLOAD_LIMIT + 1)
    declared = await client.post(
        f"/api/sandboxes/{sid}/files",
        headers=alice.headers,
        files={"path": (None, "big.bin"), "file": ("big.bin", big)},
    )
    _error(declared, 413, "file_too_large")

    boundary = "agentryboundary"

    async def chunked():  # no Content-Length: the limit is found while streaming
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\nbig2.bin\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
        ).encode()
        for _ in range(8):
            yield b"y" * (UPLOAD_LIMIT // 4)
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = await client.post(
        f"/api/sandboxes/{sid}/files",
        content=chunked(),
        headers={**alice.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    _error(streamed, 413, "file_too_large")
    names = [
        f["name"] for f in (await client.get(f"/api/sandboxes/{sid}/files", headers=alice.headers)).json()["files"]
    ]
    assert "big.bin" not in names and "big2.bin" not in names and not [n for n in names if ".upload-" in n]


async def test_bad_upload_forms_are_4xx_naming_the_field(client, alice, thread) -> None:
    sid = thread["sandbox_id"]
    _error(
        await client.post(f"/api/sandboxes/{sid}/files", headers=alice.headers, files={"file": ("x", b"x")}),
        422,
        "invalid_upload",
    )
    _error(
        await client.post(f"/api/sandboxes/{sid}/files", headers=alice.headers, files={"path": (None, "only-a-path")}),
        422,
        "invalid_upload",
    )
    _error(await client.post(f"/api/sandboxes/{sid}/files", headers=alice.headers, json={"path": "x"}), 415)


async def test_ensure_active_restarts_a_stopped_sandbox_and_delete_gives_a_new_one(client, system, alice) -> None:
    created = (await client.post("/api/threads", json={}, headers=alice.headers)).json()
    sid = created["sandbox_id"]
    await client.post(
        f"/api/sandboxes/{sid}/files", headers=alice.headers, files={"path": (None, "keep.txt"), "file": ("k", b"kept")}
    )
    async with open_channel(system.sandbox_target, DEV_INTERNAL_TOKEN) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        stopped = await stub.StopSandbox(sandbox_pb2.SandboxRequest(account_id=alice.account_id, sandbox_id=sid))
        assert stopped.state == "stopped"
    active = await client.post(f"/api/projects/{created['project_id']}/sandbox/ensure-active", headers=alice.headers)
    assert active.status_code == 200 and active.json()["state"] == "started"
    kept = await client.get(f"/api/sandboxes/{sid}/files/content", params={"path": "keep.txt"}, headers=alice.headers)
    assert kept.content == b"kept"
    assert (await client.delete(f"/api/sandboxes/{sid}", headers=alice.headers)).status_code == 204
    _error(await client.get(f"/api/sandboxes/{sid}/files", headers=alice.headers), 404, "sandbox_not_found")


async def test_preview_of_a_sandbox_without_network_is_refused(client, alice, thread) -> None:
    sid = thread["sandbox_id"]
    _error(await client.get(f"/api/sandboxes/{sid}/preview/8080", headers=alice.headers), 409, "sandbox_has_no_network")
    _error(await client.get(f"/api/sandboxes/{sid}/preview/0", headers=alice.headers), 422, "invalid_port")


async def test_a_networked_sandboxs_port_opens_through_the_owner_only_proxy(client, system, alice, bob) -> None:
    import asyncio
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with open_channel(system.sandbox_target, DEV_INTERNAL_TOKEN) as channel:
        stub = sandbox_pb2_grpc.SandboxServiceStub(channel)
        box = await stub.CreateSandbox(
            sandbox_pb2.CreateSandboxRequest(
                account_id=alice.account_id, project_id="proj-preview", spec=sandbox_pb2.SandboxSpec(network=True)
            )
        )
        ids = {"account_id": alice.account_id, "sandbox_id": box.sandbox_id}
        await stub.WriteFile(sandbox_pb2.WriteFileRequest(**ids, path="site/index.html", content=b"<h1>hi</h1>"))
        server = await stub.StartProcess(
            sandbox_pb2.StartProcessRequest(
                **ids, command=f"python3 -m http.server {port} --bind 127.0.0.1", cwd="site"
            )
        )
        try:
            link = await client.get(f"/api/sandboxes/{box.sandbox_id}/preview/{port}", headers=alice.headers)
            assert link.status_code == 200 and link.json()["token"] is None
            url = link.json()["url"]
            assert url.endswith(f"/api/sandboxes/{box.sandbox_id}/preview/{port}/proxy/")
            for _ in range(100):
                page = await client.get(url + "index.html", headers=alice.headers)
                if page.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert page.status_code == 200 and page.text == "<h1>hi</h1>"
            _error(await client.get(url + "index.html"), 401)
            _error(await client.get(url + "index.html", headers=bob.headers), 404)
        finally:
            await stub.StopProcess(sandbox_pb2.StopProcessRequest(**ids, process_id=server.process_id))
