"""A real PostgreSQL server for tests: Debian's binaries, a temporary folder, a free port.

``postgres_server()`` runs ``initdb`` and ``pg_ctl start`` as the ``postgres``
user when the tests run as root (the server refuses root), as the current
user otherwise. The cluster lives in a temporary folder, listens on
127.0.0.1 and on a unix socket in that folder, trusts every local connection
and skips fsync; it is stopped and its folder removed on the way out, also
when the tests fail. ``fresh_database(url)`` gives each test a database of
its own on it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

__all__ = [
    "PostgresMissingError",
    "find_bin_dir",
    "fresh_database",
    "postgres_server",
    "with_database",
]

#: The superuser ``initdb`` creates, whoever runs it; the URLs connect as it.
SUPERUSER = "postgres"
#: Where Debian's postgresql packages put each version's programs.
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"
#: Settings for a throwaway server: no durability, room for the soak tests' pools.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
}
_START_ATTEMPTS = 3
#: The collation of the test databases: a usual server's, where "a" sorts before "B",
#: so that code relying on the default order, not byte order, fails its tests.
COLLATION = "en-US"


class PostgresMissingError(RuntimeError):
    """PostgreSQL's server programs are not installed."""


def find_bin_dir() -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``: on PATH, else Debian's newest.

    Raises:
        PostgresMissingError: neither has them; says how to install them.
    """
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(os.path.realpath(on_path)).parent
    found = sorted(
        Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/") + "/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    raise PostgresMissingError(
        f"PostgreSQL's initdb was found neither on PATH nor in {DEBIAN_BIN_DIRS}: "
        "`make test` installs Debian's postgresql package (or run "
        "`apt-get install postgresql` yourself)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Runner:
    """Runs the server's programs as a user the server accepts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)
            os.chown(folder, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", SUPERUSER, "--"]

    def run(self, argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
        # The folder as the working directory: the postgres user may not enter ours.
        return subprocess.run(
            [*self.prefix, *map(str, argv)],
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )

    def check(self, argv: list[str | Path], what: str) -> None:
        done = self.run(argv)
        if done.returncode:
            raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL server for the duration of the block.

    Yields:
        ``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust authentication).

    Raises:
        PostgresMissingError: the server's programs are not installed.
        RuntimeError: ``initdb`` or ``pg_ctl start`` failed (the server's log is quoted).
    """
    bin_dir = find_bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="kastore-postgres-"))
    data = folder / "data"
    log = folder / "server.log"
    try:
        runner = _Runner(folder)
        runner.check(
            [
                bin_dir / "initdb",
                "--pgdata",
                data,
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            "initdb",
        )
        settings = {**SETTINGS, "unix_socket_directories": f"'{folder}'"}
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        port = _start(runner, bin_dir, data, log)
        try:
            yield f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        finally:
            runner.run([bin_dir / "pg_ctl", "stop", "--pgdata", data, "--mode", "immediate"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start(runner: _Runner, bin_dir: Path, data: Path, log: Path) -> int:
    """Start the server on a free port (another one if that port was taken meanwhile)."""
    for _ in range(_START_ATTEMPTS):
        port = _free_port()
        done = runner.run(
            [
                bin_dir / "pg_ctl",
                "start",
                "--pgdata",
                data,
                "--log",
                log,
                "--wait",
                "--timeout",
                "60",
                "-o",
                f"-p {port}",
            ]
        )
        if done.returncode == 0:
            return port
    server_log = log.read_text(errors="replace") if log.exists() else "(no log)"
    raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{server_log[-4000:]}")


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database of the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@contextlib.contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty database on the server at ``url``, dropped after the block.

    It sorts text as ``COLLATION`` does unless told otherwise.

    Yields:
        Its URL. Connections still open to it at the end are closed by the server.
    """
    database = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f'CREATE DATABASE "{database}" TEMPLATE template0 '
            f"LOCALE_PROVIDER icu ICU_LOCALE '{COLLATION}' LOCALE 'C'"
        )
    try:
        yield with_database(url, database)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
