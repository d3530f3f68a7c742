"""PostgreSQL's own programs (pg_dump, pg_restore) and whole-server tasks, for backups and restores.

The programs run with `asyncio.create_subprocess_exec` (never a shell) under a time limit. The
password never appears on a command line or in a log: it is taken out of the URL and handed to the
program in `PGPASSWORD`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from adapters.base import DependencyError

# Lines of a failing program's stderr kept for the error message.
_STDERR_TAIL = 8
# How long a program gets to exit after SIGTERM before it is killed.
_KILL_GRACE = 5.0
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)")
_OWN_VARIABLES = frozenset({"PGPASSWORD", "PGAPPNAME", "PGOPTIONS", "PGCONNECT_TIMEOUT"})
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def split_password(dsn: str) -> tuple[str, str | None]:
    """Return the URL without its password, and the password (decoded), if any."""
    parts = urlsplit(dsn)
    password = unquote(parts.password) if parts.password is not None else None
    query = parse_qsl(parts.query, keep_blank_values=True)
    for key, value in query:
        if key == "password":
            password = value
    netloc = parts.hostname or ""
    if parts.hostname and ":" in parts.hostname:
        netloc = f"[{parts.hostname}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username is not None:
        netloc = f"{parts.username}@{netloc}"
    kept = urlencode([(key, value) for key, value in query if key != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, kept, "")), password


def with_database(dsn: str, database: str) -> str:
    """Return the same server's URL naming another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class PgTools:
    """The platform's PostgreSQL server as pg_dump and pg_restore see it."""

    name = "pg-tools"

    def __init__(self, dsn: str, timeout: float, lock_timeout: float = 60.0) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.database = urlsplit(dsn).path.lstrip("/") or "postgres"

    # --- programs -------------------------------------------------------------------------------

    async def program_version(self, program: str) -> str:
        """Return the version of pg_dump or pg_restore, e.g. `15.20`."""
        if program not in ("pg_dump", "pg_restore"):
            raise ValueError(program)
        output = await self._run([program, "--version"], {}, self.timeout, capture=True)
        match = _VERSION.search(output)
        if match is None:
            raise DependencyError("unexpected answer", f"{program} --version said {output.strip()[:80]!r}")
        return match.group(1)

    async def dump(
        self,
        path: Path,
        *,
        timeout: float,
        snapshot: str | None = None,
        application_name: str | None = None,
    ) -> None:
        """Write a custom-format dump of the database to `path` (inside `snapshot` if given)."""
        url, password = split_password(self.dsn)
        argv = ["pg_dump", "--format=custom", "--no-password", f"--file={path}", f"--dbname={url}"]
        if snapshot is not None:
            argv.append(f"--snapshot={snapshot}")
        await self._run(argv, self._env(password, application_name), timeout)

    async def restore(
        self,
        path: Path,
        *,
        timeout: float,
        database: str | None = None,
        clean: bool = True,
        keep_owners: bool = True,
        application_name: str | None = None,
    ) -> None:
        """Restore a custom-format dump in one transaction: all of it, or nothing at all.

        `--single-transaction` makes pg_restore stop at the first error, and the server rolls
        everything back; a killed pg_restore or a dropped connection rolls back the same way.
        """
        target = with_database(self.dsn, database) if database else self.dsn
        url, password = split_password(target)
        argv = ["pg_restore", "--single-transaction", "--no-password", f"--dbname={url}"]
        if clean:
            argv += ["--clean", "--if-exists"]
        if not keep_owners:
            argv += ["--no-owner", "--no-privileges"]
        argv.append(str(path))
        env = self._env(password, application_name)
        # A restore must not wait forever behind someone else's lock: it fails, and rolls back.
        env["PGOPTIONS"] = f"-c lock_timeout={int(self.lock_timeout * 1000)}"
        try:
            await self._run(argv, env, timeout)
        except BaseException:
            # pg_restore may be gone while its server session still holds the transaction open.
            if application_name is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.terminate_sessions(application_name))
            raise

    def _env(self, password: str | None, application_name: str | None) -> dict[str, str]:
        # Settings of our own replace the caller's; the rest (PGSSLROOTCERT, PGPASSFILE...) pass on.
        env = {key: value for key, value in os.environ.items() if key not in _OWN_VARIABLES}
        if password is not None:
            env["PGPASSWORD"] = password
        env["PGAPPNAME"] = application_name or f"chatops-{secrets.token_hex(4)}"
        env["PGCONNECT_TIMEOUT"] = str(max(2, int(self.timeout + 0.999)))
        return env

    async def _run(self, argv: list[str], env: dict[str, str], timeout: float, capture: bool = False) -> str:
        """Run a program with a time limit; stop it (and its session) on timeout or cancellation."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env or None,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise DependencyError("not found", f"{argv[0]} is not installed") from None
        tail: deque[str] = deque(maxlen=_STDERR_TAIL)

        async def read_stderr() -> None:
            assert process.stderr is not None
            async for raw in process.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line:
                    tail.append(line)

        try:
            async with asyncio.timeout(timeout):
                reader = asyncio.create_task(read_stderr())
                output = await process.stdout.read() if capture and process.stdout else b""
                code = await process.wait()
                await reader
        except TimeoutError:
            await _stop(process)
            raise DependencyError("timeout", f"{argv[0]} did not finish within {timeout:g} s") from None
        except BaseException:
            await _stop(process)
            raise
        if code != 0:
            detail = " | ".join(tail) or f"exit code {code}"
            raise DependencyError("error", f"{argv[0]} failed: {detail}"[:600])
        return output.decode(errors="replace")

    # --- the server -----------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, database: str | None = None) -> AsyncIterator[asyncpg.Connection]:
        """Open a connection to a database of this server (the platform's by default)."""
        target = with_database(self.dsn, database) if database else self.dsn
        conn = await asyncpg.connect(target, timeout=self.timeout, command_timeout=max(self.timeout, 30.0))
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=self.timeout)

    async def create_database(self, name: str) -> None:
        """Create an empty database (a scratch database for a test restore)."""
        _check_database_name(name)
        async with self.connect("postgres") as conn:
            await conn.execute(f'CREATE DATABASE "{name}"', timeout=self.timeout * 5)

    async def drop_database(self, name: str) -> None:
        """Drop a database, ending its sessions first."""
        _check_database_name(name)
        if name == self.database:
            raise ValueError("refusing to drop the platform's own database")
        async with self.connect("postgres") as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=self.timeout * 15)

    async def terminate_sessions(self, application_name: str) -> int:
        """End every server session opened under `application_name`; return how many."""
        async with self.connect("postgres") as conn:
            ended = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND pid <> pg_backend_pid()",
                application_name,
                timeout=self.timeout,
            )
        return int(ended or 0)

    async def ping(self) -> str:
        """Check that pg_dump and pg_restore are installed."""
        dump, restore = await asyncio.gather(
            self.program_version("pg_dump"), self.program_version("pg_restore")
        )
        return f"pg_dump {dump}, pg_restore {restore}"


def _check_database_name(name: str) -> None:
    # Only simple names are ever made here, so quoting can never be escaped.
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"unexpected database name {name!r}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Stop a program: SIGTERM to its process group, then SIGKILL if it lingers."""
    if process.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, _KILL_GRACE)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout=wait)
            return
        except TimeoutError:
            continue
