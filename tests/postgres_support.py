"""A throwaway Postgres cluster for the tests: ``initdb`` in a temporary folder, on a free loopback port.

It runs Debian's server binaries (``/usr/lib/postgresql/<version>/bin``; ``scripts/test`` installs
them where missing). ``initdb`` refuses to run as root, so under root the cluster is made and run
as the ``postgres`` user, in a folder it owns. Each test gets a database of its own; the cluster
lives for the whole session. No binaries is an error, never a skip: the suite must run on both.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from fluxserve.db import DATABASE_FILE
from tests.helpers import TEST_TIMEOUT
from tests.servers import free_port

DATABASES = ("sqlite", "postgres")
BOTH_DATABASES = pytest.mark.parametrize("database_url", DATABASES, indirect=True)
"""A module's ``pytestmark`` (or a test's mark): its servers run on SQLite, then on a fresh Postgres database."""
SUPERUSER = "postgres"
INSTALL_HINT = "Postgres is not installed: scripts/test installs it (Debian: apt-get install postgresql)"


def server_binaries() -> Path:
    """The newest Postgres server's bin folder; AssertionError (a failure, not a skip) without one."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise AssertionError(INSTALL_HINT)
    return Path(on_path).parent


class Cluster:
    """One Postgres server on 127.0.0.1:``port``, its data in ``root``; ``stop`` and ``start`` it at will."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root, self.bin = root, bin_dir
        self.data, self.log = root / "data", root / "server.log"
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-locale", "-N"
        )

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_owner, str(self.bin / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TEST_TIMEOUT, check=False)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}{log}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: sessions are ended, as an operator's restart does; ``immediate``: a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = "test_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")  # from template1: quick
        return self.url(name)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started cluster in a fresh temporary folder, stopped and removed afterwards."""
    bin_dir = server_binaries()
    root = Path(tempfile.mkdtemp(prefix="fluxserve-pg-"))
    try:
        cluster = Cluster(root, bin_dir)
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(RuntimeError):
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fetch_all(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the database at ``url``, as dicts, on a connection of their own."""
    with psycopg.connect(url, row_factory=dict_row) as connection:
        return list(connection.execute(sql, params).fetchall())


def stored_jobs(data_dir: Path, database_url: str | None, columns: str = "*") -> dict[str, dict[str, Any]]:
    """Every job as a server on ``data_dir`` and ``database_url`` stored it, read straight from the
    database (SQLite read-only), by id. Postgres rows have ``rowid`` too, as SQLite's hidden one."""
    sql = f"SELECT {columns} FROM jobs"
    if database_url is not None:
        return {row["id"]: row for row in fetch_all(database_url, sql)}
    path = data_dir / DATABASE_FILE
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        connection.row_factory = sqlite3.Row
        return {row["id"]: dict(row) for row in connection.execute(sql).fetchall()}
