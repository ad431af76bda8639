"""A small Daytona-compatible server for tests: the control plane the SDK calls and a toolbox
that really runs commands and keeps files (one host directory per sandbox, as its filesystem root).

For tests and offline demos only (it needs fastapi and uvicorn, which the workspace has).
Wire facts: ../shared/reference/vendors.md. JSON is camelCase; the toolbox is served under
`{base}/toolbox/{sandbox_id}/...` and advertised as each sandbox's `toolboxProxyUrl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

API_KEY = "fake-daytona-key"


@dataclass
class _Box:
    id: str
    name: str
    root: Path
    env: dict[str, str]
    labels: dict[str, str]
    network_block_all: bool
    cpu: int
    memory: int
    disk: int
    snapshot: str | None
    state: str = "started"
    sessions: dict[str, dict[str, dict]] = field(default_factory=dict)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"statusCode": status, "message": message, "error": message}, status_code=status)


class FakeDaytona:
    """Start with `await fake.start()`; `base_url` is what DAYTONA_API_URL points at."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.boxes: dict[str, _Box] = {}
        self.requests: list[tuple[str, str]] = []
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        self.app = self._build()

    async def start(self) -> None:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for box in self.boxes.values():
            for session in box.sessions.values():
                for command in session.values():
                    _kill(command)
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    # Helpers

    def _json(self, box: _Box) -> dict:
        return {
            "id": box.id,
            "organizationId": "org-1",
            "name": box.name,
            "snapshot": box.snapshot,
            "user": "daytona",
            "env": box.env,
            "labels": box.labels,
            "public": False,
            "networkBlockAll": box.network_block_all,
            "kvm": False,
            "target": "us",
            "cpu": box.cpu,
            "gpu": 0,
            "memory": box.memory,
            "disk": box.disk,
            "state": box.state,
            "toolboxProxyUrl": f"{self.base_url}/toolbox",
            "createdAt": datetime.now(UTC).isoformat(),
        }

    def _find(self, key: str) -> _Box | None:
        return self.boxes.get(key) or next((b for b in self.boxes.values() if b.name == key), None)

    def _host(self, box: _Box, path: str) -> Path:
        # The sandbox's "/" is its host directory; relative paths start in /home/daytona.
        absolute = path if path.startswith("/") else f"/home/daytona/{path}"
        return box.root / os.path.normpath(absolute).lstrip("/")

    def _in_host(self, box: _Box, command: str) -> str:
        # Commands run on this host, not in a container: the sandbox's home is its host directory.
        return command.replace("/home/daytona", str(box.root / "home/daytona"))

    def _build(self) -> FastAPI:
        app = FastAPI()
        fake = self

        @app.middleware("http")
        async def authorize(request: Request, call_next):
            fake.requests.append((request.method, request.url.path))
            if request.headers.get("authorization") != f"Bearer {API_KEY}":
                return _error(401, "Unauthorized")
            return await call_next(request)

        def box_or_404(key: str) -> _Box | JSONResponse:
            box = fake._find(key)
            return box if box is not None else _error(404, f"Sandbox with ID or name {key} not found")

        @app.post("/sandbox")
        async def create(request: Request):
            body = await request.json()
            name = body.get("name") or str(uuid.uuid4())
            if fake._find(name) is not None:
                return _error(409, f"Sandbox with name {name} already exists")
            box_id = str(uuid.uuid4())
            root = fake.root / box_id
            (root / "home/daytona").mkdir(parents=True)
            (root / "tmp").mkdir()
            box = _Box(
                id=box_id,
                name=name,
                root=root,
                env=body.get("env") or {},
                labels=body.get("labels") or {},
                network_block_all=bool(body.get("networkBlockAll")),
                cpu=body.get("cpu") or 1,
                memory=body.get("memory") or 1,
                disk=body.get("disk") or 3,
                snapshot=body.get("snapshot"),
            )
            fake.boxes[box_id] = box
            return fake._json(box)

        @app.get("/sandbox/{key}")
        async def get(key: str):
            box = box_or_404(key)
            return box if isinstance(box, JSONResponse) else fake._json(box)

        @app.post("/sandbox/{key}/{action}")
        async def lifecycle(key: str, action: str):
            box = box_or_404(key)
            if isinstance(box, JSONResponse):
                return box
            if action == "stop" or action == "archive":
                for session in box.sessions.values():
                    for command in session.values():
                        _kill(command)
                box.sessions.clear()
                box.state = "stopped" if action == "stop" else "archived"
            elif action == "start":
                box.state = "started"
            else:
                return _error(404, f"no action {action}")
            return fake._json(box)

        @app.delete("/sandbox/{key}")
        async def delete(key: str):
            box = box_or_404(key)
            if isinstance(box, JSONResponse):
                return box
            for session in box.sessions.values():
                for command in session.values():
                    _kill(command)
            del fake.boxes[box.id]
            shutil.rmtree(box.root, ignore_errors=True)
            box.state = "destroyed"
            return fake._json(box)

        @app.get("/sandbox/{key}/ports/{port}/preview-url")
        async def preview(key: str, port: int):
            box = box_or_404(key)
            if isinstance(box, JSONResponse):
                return box
            return {
                "sandboxId": box.id,
                "url": f"https://{port}-{box.id}.proxy.daytona.example",
                "token": f"tok-{box.id[:8]}-{port}",
            }

        @app.get("/sandbox/{key}/toolbox-proxy-url")
        async def toolbox_url(key: str):
            return {"url": f"{fake.base_url}/toolbox"}

        # Toolbox

        def running(key: str) -> _Box | JSONResponse:
            box = box_or_404(key)
            if isinstance(box, JSONResponse):
                return box
            if box.state != "started":
                return _error(409, "sandbox is not started")
            return box

        @app.post("/toolbox/{key}/process/execute")
        async def execute(key: str, request: Request):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            body = await request.json()
            cwd = fake._host(box, body.get("cwd") or "/home/daytona")
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": str(box.root / "home/daytona"),
                **box.env,
                **(body.get("envs") or {}),
            }
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                fake._in_host(box, body["command"]),
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                output, _ = await asyncio.wait_for(process.communicate(), body.get("timeout") or 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, 9)
                await process.wait()
                return _error(408, "command execution timeout")
            return {"exitCode": process.returncode, "result": output.decode("utf-8", "replace")}

        @app.get("/toolbox/{key}/files")
        async def list_files(key: str, path: str = ""):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            target = fake._host(box, path or ".")
            if not target.exists():
                return _error(404, f"{path} not found")
            if not target.is_dir():
                return _error(400, f"{path} is not a directory")
            return [_info(target / name) for name in sorted(os.listdir(target))]

        @app.get("/toolbox/{key}/files/info")
        async def info(key: str, path: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            target = fake._host(box, path)
            if not target.exists() and not target.is_symlink():
                return _error(404, f"{path} not found")
            return _info(target)

        @app.post("/toolbox/{key}/files/folder")
        async def folder(key: str, path: str, mode: str = "755"):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            target = fake._host(box, path)
            if target.exists() and not target.is_dir():
                return _error(409, f"{path} exists")
            target.mkdir(parents=True, exist_ok=True, mode=int(mode, 8))
            return Response(status_code=201)

        @app.delete("/toolbox/{key}/files")
        async def delete_file(key: str, path: str, recursive: bool = False):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            target = fake._host(box, path)
            if not target.exists() and not target.is_symlink():
                return _error(404, f"{path} not found")
            if target.is_dir() and not target.is_symlink():
                if not recursive and any(target.iterdir()):
                    return _error(400, f"{path} is a non-empty directory; delete it recursively")
                shutil.rmtree(target)
            else:
                target.unlink()
            return Response(status_code=204)

        @app.post("/toolbox/{key}/files/move")
        async def move(key: str, source: str, destination: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            origin, target = fake._host(box, source), fake._host(box, destination)
            if not origin.exists():
                return _error(404, f"{source} not found")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(origin, target)
            return Response(status_code=200)

        @app.post("/toolbox/{key}/files/bulk-upload")
        async def upload(key: str, request: Request):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            form = await request.form(max_part_size=1 << 40)
            index = 0
            while f"files[{index}].path" in form:
                target = fake._host(box, str(form[f"files[{index}].path"]))
                target.parent.mkdir(parents=True, exist_ok=True)
                source = form[f"files[{index}].file"]
                assert isinstance(source, UploadFile), "a multipart file part"
                with open(target, "wb") as out:
                    while chunk := await source.read(1 << 20):
                        out.write(chunk)
                index += 1
            return Response(status_code=200)

        @app.post("/toolbox/{key}/files/bulk-download")
        async def download(key: str, request: Request):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            paths = (await request.json())["paths"]
            boundary = secrets.token_hex(12)

            async def body():
                for path in paths:
                    target = fake._host(box, path)
                    if target.is_file():
                        yield (
                            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                            f'filename="{path}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                        ).encode()
                        with open(target, "rb") as source:
                            while chunk := source.read(1 << 20):
                                yield chunk
                    else:
                        yield (
                            f'--{boundary}\r\nContent-Disposition: form-data; name="error"; '
                            f'filename="{path}"\r\nContent-Type: application/json\r\n\r\n'
                            f'{{"message": "file not found: {path}", "statusCode": 404}}'
                        ).encode()
                    yield b"\r\n"
                yield f"--{boundary}--\r\n".encode()

            return StreamingResponse(body(), media_type=f"multipart/form-data; boundary={boundary}")

        @app.post("/toolbox/{key}/process/session")
        async def create_session(key: str, request: Request):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            session_id = (await request.json())["sessionId"]
            if session_id in box.sessions:
                return _error(409, "session exists")
            box.sessions[session_id] = {}
            return Response(status_code=201)

        @app.get("/toolbox/{key}/process/session")
        async def list_sessions(key: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            return [_session(sid, commands) for sid, commands in box.sessions.items()]

        @app.get("/toolbox/{key}/process/session/{sid}")
        async def get_session(key: str, sid: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            if sid not in box.sessions:
                return _error(404, "session not found")
            return _session(sid, box.sessions[sid])

        @app.delete("/toolbox/{key}/process/session/{sid}")
        async def delete_session(key: str, sid: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            for command in box.sessions.pop(sid, {}).values():
                _kill(command)
            return Response(status_code=204)

        @app.post("/toolbox/{key}/process/session/{sid}/exec")
        async def session_exec(key: str, sid: str, request: Request):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            if sid not in box.sessions:
                return _error(404, "session not found")
            body = await request.json()
            cmd_id = str(uuid.uuid4())
            log = box.root / "tmp" / f"{cmd_id}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    ["/bin/sh", "-c", fake._in_host(box, body["command"])],
                    cwd=box.root / "home/daytona",
                    env={"PATH": "/usr/local/bin:/usr/bin:/bin", **box.env},
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            box.sessions[sid][cmd_id] = {"id": cmd_id, "command": body["command"], "process": process, "log": log}
            return JSONResponse({"cmdId": cmd_id}, status_code=202)

        @app.get("/toolbox/{key}/process/session/{sid}/command/{cid}")
        async def get_command(key: str, sid: str, cid: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            command = box.sessions.get(sid, {}).get(cid)
            return _command(command) if command else _error(404, "command not found")

        @app.get("/toolbox/{key}/process/session/{sid}/command/{cid}/logs")
        async def logs(key: str, sid: str, cid: str):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            command = box.sessions.get(sid, {}).get(cid)
            if not command:
                return _error(404, "command not found")
            text = command["log"].read_bytes().decode("utf-8", "replace")
            return {"output": text, "stdout": text, "stderr": ""}

        @app.post("/toolbox/{key}/process/session/{sid}/command/{cid}/input")
        async def send_input(key: str, sid: str, cid: str, request: Request):
            box = running(key)
            if isinstance(box, JSONResponse):
                return box
            command = box.sessions.get(sid, {}).get(cid)
            if not command:
                return _error(404, "command not found")
            process = command["process"]
            process.stdin.write((await request.json())["data"].encode())
            process.stdin.flush()
            return Response(status_code=200)

        return app


def _kill(command: dict) -> None:
    process = command["process"]
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait()


def _command(command: dict) -> dict:
    return {"id": command["id"], "command": command["command"], "exitCode": command["process"].poll()}


def _session(session_id: str, commands: dict) -> dict:
    return {"sessionId": session_id, "commands": [_command(c) for c in commands.values()]}


def _info(target: Path) -> dict:
    status = os.lstat(target)
    modified = datetime.fromtimestamp(status.st_mtime, UTC)
    return {
        "name": target.name,
        "isDir": stat.S_ISDIR(status.st_mode),
        "size": status.st_size,
        "mode": stat.filemode(status.st_mode),
        "permissions": oct(stat.S_IMODE(status.st_mode))[2:].zfill(4),
        "modTime": str(modified),
        "modifiedAt": modified.isoformat(),
        "owner": "daytona",
        "group": "daytona",
        "path": str(target),
    }
