"""Private Redis and PostgreSQL servers, a PgBouncer, and a TCP proxy that tests may stop,
restart and cut.

Fault tests must never touch the machine's shared servers, so each fixture starts its own on a
spare loopback port in a temporary directory and removes it on exit. RabbitMQ is too heavy to
start privately: put a `TcpProxy` in front of the shared broker and cut the proxy instead.

Every blocking method has an `a`-prefixed twin (`arestart`, ...) that runs it on a worker thread,
so a test can restart a server while its own event loop keeps clients busy.

PostgreSQL: `initdb` and `pg_ctl` refuse to run as root. When this process is root (CI and the
development machines are), both run as the `postgres` OS user through `runuser`, and the cluster's
temporary directory is handed to that user; otherwise they run as the current user.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PrivatePostgres", "PrivateRedis", "TcpProxy", "free_port"]


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on right now, never one this process was given before:
    the kernel may hand a port it just released out again, and two services of one stack given
    the same port leave one of them unable to bind (seen in CI: auth and runner on one port)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {timeout:.0f}s")
        time.sleep(0.02)  # a child process starting: there is nothing to be woken by


class _Server:
    """Start/stop bookkeeping shared by the private servers: context managers, async twins, cleanup."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"agentry-{type(self).__name__.lower()}-"))
        self._closed = False
        atexit.register(self.close)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    def restart(self, downtime_seconds: float = 0.0, **stop_kwargs: Any) -> None:
        """Stops the server, keeps it down for `downtime_seconds`, starts it on the same port."""
        self.stop(**stop_kwargs)
        time.sleep(downtime_seconds)
        self.start()

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self, **kwargs: Any) -> None:
        await asyncio.to_thread(self.stop, **kwargs)

    async def arestart(self, downtime_seconds: float = 0.0, **stop_kwargs: Any) -> None:
        await asyncio.to_thread(self.restart, downtime_seconds, **stop_kwargs)

    def close(self) -> None:
        """Stops the server for good and removes its directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._teardown()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        try:
            await self.astart()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)


class PrivateRedis(_Server):
    """A throw-away `redis-server` on a spare loopback port that keeps nothing on disk by default.

    `extra_args` go to redis-server as they are (`("--appendonly", "yes")` makes a restart keep
    the data, since a graceful stop then flushes the append-only file).
    """

    def __init__(self, *, executable: str = "redis-server", extra_args: tuple[str, ...] = ()) -> None:
        binary = shutil.which(executable)
        if binary is None:
            raise FileNotFoundError(f"{executable} is not on PATH")
        self._binary = binary
        self._extra = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        super().__init__()

    @staticmethod
    def available(executable: str = "redis-server") -> bool:
        return shutil.which(executable) is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        args = [
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            *self._extra,
        ]
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        with log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        _wait_until(self._answers_ping, timeout, f"redis-server on port {self.port}")

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown) or, with `kill=True`, SIGKILL (a crash); waits for the exit."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _teardown(self) -> None:
        self.stop(kill=True)

    def _answers_ping(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {self._proc.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _postgres_bindir() -> Path:
    explicit = os.environ.get("AGENTRY_PG_BINDIR")
    if explicit:
        return Path(explicit)
    # Debian's layout; the newest major version wins.
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise FileNotFoundError("no PostgreSQL binaries: set AGENTRY_PG_BINDIR or install postgresql")
    return Path(initdb).resolve().parent


def _os_user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PrivatePostgres(_Server):
    """A throw-away PostgreSQL cluster (trust auth) on a spare loopback port.

    The cluster's Unix socket lives in its temporary directory, so it never meets the shared
    server's. `url` is for asyncpg through SQLAlchemy; `dsn` for asyncpg itself.
    """

    def __init__(self, *, user: str = "postgres", database: str = "postgres") -> None:
        self._bindir = _postgres_bindir()
        self.user = user
        self.database = database
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres and not _os_user_exists("postgres"):
            raise RuntimeError("running as root, initdb needs the 'postgres' OS user (none exists)")
        super().__init__()
        self._data = self.dir / "data"
        self._initialised = False

    @staticmethod
    def available() -> bool:
        try:
            _postgres_bindir()
        except FileNotFoundError:
            return False
        return os.geteuid() != 0 or (_os_user_exists("postgres") and shutil.which("runuser") is not None)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [str(self._bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.dir, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.dir / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{args[0]} {args[1] if len(args) > 1 else ''} failed "
                f"({done.returncode}): {done.stderr.decode(errors='replace')}{tail}"
            )

    def _init(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-A",
            "trust",
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        self._initialised = True

    def start(self, timeout: float = 60.0) -> None:
        if not self._initialised:
            self._init()
        # fsync off keeps start and stop fast and only loses data when the machine crashes; an
        # `immediate` stop (a server crash) keeps every commit, as synchronous_commit stays on.
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self._data),
            "-l",
            str(self.dir / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 5,
        )

    def stop(self, *, mode: str = "fast", timeout: float = 60.0) -> None:
        """`fast` ends sessions and shuts down cleanly; `immediate` is a crash (recovery on start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self.running:
            return
        self._run(
            "pg_ctl", "-D", str(self._data), "-m", mode, "-w", "-t", str(int(timeout)), "stop", timeout=timeout + 5
        )

    @property
    def running(self) -> bool:
        return self._initialised and (self._data / "postmaster.pid").exists()

    def _teardown(self) -> None:
        if self.running:
            try:
                self.stop(mode="immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pid = int((self._data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)


class PrivatePgBouncer(_Server):
    """A throw-away PgBouncer (Debian's `pgbouncer`) on a spare loopback port in front of a
    PostgreSQL server, in `pool_mode` (transaction, as Supabase's pooler on port 6543), with
    `pool_size` server connections per database and user (1 makes every client share one).

    PgBouncer refuses to run as root: as root it runs as the `postgres` OS user via `runuser`.
    """

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 5432,
        *,
        pool_mode: str = "transaction",
        pool_size: int = 1,
        user: str = "postgres",
    ) -> None:
        super().__init__()
        self.user = user
        self._as_postgres = os.geteuid() == 0
        self._proc: subprocess.Popen[bytes] | None = None
        (self.dir / "users.txt").write_text(f'"{user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={target_host} port={target_port}\n\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\npool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
            f"max_client_conn = 200\nserver_lifetime = 3600\n"
            f"ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
            for name in ("users.txt", "pgbouncer.ini"):
                shutil.chown(self.dir / name, "postgres", "postgres")

    @staticmethod
    def available() -> bool:
        return shutil.which("pgbouncer") is not None and (
            os.geteuid() != 0 or (_os_user_exists("postgres") and shutil.which("runuser") is not None)
        )

    def url(self, database: str) -> str:
        """The SQLAlchemy asyncpg URL of `database` through this pooler."""
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        command = [shutil.which("pgbouncer") or "pgbouncer", str(self.dir / "pgbouncer.ini")]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )

        def listening() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                log = self.dir / "pgbouncer.log"
                raise RuntimeError(
                    f"pgbouncer exited ({self._proc.returncode}): "
                    f"{log.read_text(errors='replace')[-2000:] if log.exists() else ''}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
            return False

        _wait_until(listening, timeout, "pgbouncer")

    def stop(self, *, timeout: float = 10.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGINT)  # PgBouncer's immediate shutdown
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def _teardown(self) -> None:
        self.stop()


class TcpProxy:
    """A TCP forwarder on a spare loopback port in front of `target_host:target_port`.

    It runs an asyncio loop on a thread of its own, so it keeps forwarding while the caller
    blocks (a test waiting for subprocesses, say). `cut()` drops every open connection and
    refuses new ones, as if the server had gone away, until `restore()`.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy-{self.port}", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.WriteTransport] = set()
        self._silenced: set[asyncio.WriteTransport] = set()  # see blackhole()
        self._handlers: set[asyncio.Task[None]] = set()
        self.connections_total = 0

    @classmethod
    def for_url(cls, url: str, **kwargs: Any) -> TcpProxy:
        """A proxy in front of the server a URL names (`amqp://guest:guest@127.0.0.1:5672/`)."""
        parts = urlsplit(url)
        default_ports = {"amqp": 5672, "redis": 6379, "postgresql": 5432}
        scheme = parts.scheme.split("+", 1)[0]
        return cls(parts.hostname or "127.0.0.1", parts.port or default_ports[scheme], **kwargs)

    def url_for(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's (user, path and query kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def cut_off(self) -> bool:
        return self._server is None

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._listen())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._cut())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def cut(self) -> None:
        """Closes every open connection and refuses new ones; returns once all are closed."""
        self._call(self._cut())

    def restore(self) -> None:
        """Accepts and forwards connections again, on the same port."""
        self._call(self._listen())

    def blackhole(self) -> None:
        """Every connection open now stops carrying data, both ways, and stays open, as across a
        network partition: what either side sends is dropped, nothing is closed. New connections
        are forwarded as usual."""
        self._call(self._blackhole())

    async def _blackhole(self) -> None:
        self._silenced.update(self._transports)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        if server is not None:
            await server.wait_closed()
        if self._handlers:  # they end as soon as their sockets are gone
            await asyncio.wait(list(self._handlers), timeout=2)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._forward(client_reader, client_writer)
        finally:
            self._handlers.discard(task)

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            client_writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except (OSError, TimeoutError):
            client_writer.transport.abort()
            return
        if self._server is None:  # cut while connecting
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self.connections_total += 1
        pair = (client_writer.transport, upstream_writer.transport)
        self._transports.update(pair)
        try:
            await asyncio.gather(
                _pipe(client_reader, upstream_writer, self._silenced),
                _pipe(upstream_reader, client_writer, self._silenced),
            )
        finally:
            for transport in pair:
                self._transports.discard(transport)
                self._silenced.discard(transport)
                transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, silenced: set) -> None:
    try:
        while data := await reader.read(65536):
            if writer.transport in silenced:
                continue  # blackholed: dropped
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()
