"""A real local PostgreSQL 16 server (pgserver's bundled binaries) on 127.0.0.1, no Docker.

`LocalPostgres` runs `initdb` once into a work directory and the `postgres` server as a child
process listening on a free TCP port (trust auth, user `postgres`), so callers get a plain DSN
`postgresql://postgres@127.0.0.1:<port>/postgres` that asyncpg accepts. It can be stopped,
killed (crash) and started again on the same port and data for the chaos suite.
`create_database()` / `drop_database()` work against any server DSN (local or a container).

The binaries come from the PyPI package `pgserver` (PostgreSQL 16). Its own `get_server()` API is
not used: it only listens on a unix socket, ties the server's life to `atexit`, and has no
restart; the binaries are driven directly instead. As root, PostgreSQL refuses to run, so the
server runs as the system user `pgserver` (created if missing, as pgserver itself does).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

from shelfcast.services.kafka_broker import free_port, log_tail, stop_process
from shelfcast.services.local_service import LocalService

__all__ = [
    "LocalPostgres",
    "PostgresStartError",
    "create_database",
    "drop_database",
    "dsn_with_database",
    "postgres_bin_dir",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_SYSTEM_USER = "pgserver"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresStartError(RuntimeError):
    """The local PostgreSQL could not be initialised or started; the message has the log tail."""


def postgres_bin_dir() -> Path:
    """The `bin` directory of the PostgreSQL build shipped in the `pgserver` wheel."""
    spec = importlib.util.find_spec("pgserver")  # no import: pgserver's import has side effects
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError("the PyPI package `pgserver` is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise PostgresStartError(f"no postgres binary in {bin_dir}")
    return bin_dir


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def _check_name(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


async def create_database(server_dsn: str, name: str | None = None) -> str:
    """Create database `name` (default: a unique `t_<hex>`) on the server; return its DSN."""
    import asyncpg  # imported on demand

    name = _check_name(name or f"t_{uuid.uuid4().hex[:16]}")
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn_with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database `name` (if it exists), disconnecting whoever is still on it."""
    import asyncpg  # imported on demand

    name = _check_name(name)
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _run_sync(factory: Callable[[], Awaitable[_T]], timeout: float = 60.0) -> _T:
    """Run a coroutine on a private loop in a helper thread (works inside a running loop too)."""
    box: dict[str, object] = {}

    def run() -> None:
        async def main() -> _T:
            return await factory()

        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="postgres-sync", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"database call did not finish in {timeout:.0f}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _ensure_traversable(path: Path) -> None:
    """Give 'others' search permission on `path` and its parents where it is missing (root)."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            _log.info("chmod o+x %s so the postgres user can reach its files", part)
            part.chmod(mode | stat.S_IXOTH)


class LocalPostgres(LocalService):
    """One PostgreSQL 16 server on 127.0.0.1:<free port> with trust auth, run as a child process.

    Use as a context manager or call `start()` / `close()`. `stop()` + `start()` (or
    `restart()`) bring it back on the same port and data; `kill()` crashes it (SIGKILL to the
    postmaster and its backends) and the next `start()` runs crash recovery. `close()` stops it
    and removes a workdir it created itself. `fsync` is off by default (test speed).
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        port: int | None = None,
        fsync: bool = False,
        settings: Mapping[str, str | int] | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 20.0,
    ) -> None:
        super().__init__(workdir, prefix="shelfcast-pg-")
        self.port = port or free_port()
        self.fsync = fsync
        self.extra_settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.user = "postgres"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.startup_seconds: float | None = None
        self._run_as: pwd.struct_passwd | None = None

    # ---- info
    @property
    def dsn(self) -> str:
        """DSN of the `postgres` database (asyncpg / libpq URI)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        """DSN of another database on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def __repr__(self) -> str:
        return f"LocalPostgres(dsn={self.dsn!r}, running={self.running})"

    # ---- lifecycle
    def start(self) -> Self:
        """Initialise the cluster the first time, start the server and wait until it is ready."""
        self._check_open()
        if self.running:
            return self
        began = time.monotonic()
        bin_dir = postgres_bin_dir()
        self._prepare_dirs(bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        cmd = [str(bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in self._settings().items():
            cmd += ["-c", f"{key}={value}"]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user_kwargs(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        _log.info("PostgreSQL ready at %s in %.1fs", self.dsn, self.startup_seconds)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint), SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self._kill_tree(proc)
        proc.wait()

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster and its backends. Data stays."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._kill_tree(proc)

    # ---- databases
    def create_database(self, name: str | None = None) -> str:
        """Create a database (default: unique name) and return its DSN. Sync; see the async
        module function `create_database(server_dsn, name)` for use inside a loop."""
        return _run_sync(lambda: create_database(self.dsn, name))

    def drop_database(self, name: str) -> None:
        """Drop a database (sync)."""
        _run_sync(lambda: drop_database(self.dsn, name))

    # ---- internals
    def _settings(self) -> dict[str, str]:
        settings: dict[str, str | int] = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": "",
            "max_connections": 200,
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ",
        }
        settings.update(self.extra_settings)
        return {k: str(v) for k, v in settings.items()}

    def _user_kwargs(self) -> dict[str, int]:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid}

    def _prepare_dirs(self, bin_dir: Path) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        self._run_as = _ensure_system_user(_SYSTEM_USER)
        self.workdir.chmod(self.workdir.stat().st_mode | 0o755)
        _ensure_traversable(self.workdir)
        _ensure_traversable(bin_dir)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, self._run_as.pw_uid, self._run_as.pw_gid)

    def _initdb(self, bin_dir: Path) -> None:
        cmd = [
            str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, **self._user_kwargs()
        )
        with open(self.log_path, "a") as log:
            log.write(f"=== initdb: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            raise PostgresStartError(
                f"initdb failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )

    def _ready_in_pidfile(self) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise PostgresStartError(
                    f"postgres exited with code {self._proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if self._ready_in_pidfile():
                with contextlib.suppress(OSError):
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                        return
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"postgres not ready after {self.startup_timeout:.0f}s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the postmaster and every backend it forked, and reap the postmaster."""
        import psutil  # a dependency of pgserver; imported on demand

        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(proc.pid).children(recursive=True)
        stop_process(proc, 10.0, kill=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(children, timeout=10.0)
