"""Postgres as the store: the database_url setting, start-up, concurrent migrations, and an outage
(the session's cluster really stopped and started again) under a live server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fluxserve.accounts.keystore import KeyStore
from fluxserve.cli.main import main
from fluxserve.db import DATABASE_FILE, Database
from fluxserve.db.postgres import PostgresDatabase, placeholders
from fluxserve.db.sqlite import MIGRATIONS
from fluxserve.errors import InvalidRequest, NotFound
from fluxserve.settings import load_settings
from tests.helpers import PREFER_WAIT, TEST_TIMEOUT, wait_for, without_log_lines
from tests.jobs_support import JOBS, QUICK, SLOW, LiveServer
from tests.postgres_support import Cluster, fetch_all
from tests.servers import free_port


def test_database_url_is_postgres_or_unset_for_sqlite() -> None:
    assert load_settings(environ={}).database_url is None
    url = "postgresql://fluxserve:secret@db.internal:5432/fluxserve"
    assert load_settings(environ={"FLUXSERVE_DATABASE_URL": url}).database_url == url
    assert load_settings(environ={"FLUXSERVE_DATABASE_URL": "postgres://db/fluxserve"}).database_url


@pytest.mark.parametrize("url", ["mysql://db/fluxserve", "db.internal:5432", "postgresql://db:99999/fluxserve", "x"])
def test_a_bad_database_url_is_a_clear_error_naming_the_setting(url: str) -> None:
    with pytest.raises(InvalidRequest, match=r"setting database_url: .*postgresql://") as raised:
        load_settings(environ={"FLUXSERVE_DATABASE_URL": url})
    assert raised.value.param == "database_url"


def test_an_option_libpq_does_not_know_is_refused_before_connecting() -> None:
    with pytest.raises(InvalidRequest, match="setting database_url") as raised:
        PostgresDatabase("postgresql://db.internal/fluxserve?colour=blue")
    assert raised.value.param == "database_url"


def test_serve_on_an_unreachable_database_exits_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUXSERVE_DATABASE_URL", f"postgresql://nobody:hunter2@127.0.0.1:{free_port()}/fluxserve")
    monkeypatch.setenv("FLUXSERVE_DATABASE_TIMEOUT_SECONDS", "2")
    assert main(["serve", "--model", "tiny-random", "--data-dir", str(tmp_path), "--offline"]) == 1
    error = without_log_lines(capsys.readouterr().err)
    assert error.startswith("fluxserve: error: cannot reach the database at 127.0.0.1:")
    assert "hunter2" not in error


def test_the_keys_cli_works_on_the_database_the_settings_name(
    postgres_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_cluster.create_database()
    monkeypatch.setenv("FLUXSERVE_DATABASE_URL", url)
    assert main(["keys", "create", "--name", "bob", "--data-dir", str(tmp_path)]) == 0
    secret = capsys.readouterr().out.strip()
    database = PostgresDatabase(url)
    try:
        assert KeyStore(database).authenticate(secret).name == "bob"
    finally:
        database.close()
    assert not (tmp_path / DATABASE_FILE).exists()  # nothing went to SQLite


def test_placeholders_outside_string_literals_become_psycopgs() -> None:
    sql = "SELECT * FROM t WHERE a = ? AND b LIKE '100%?' AND c = 'it''s ?' AND d = ?"
    assert placeholders(sql) == "SELECT * FROM t WHERE a = %s AND b LIKE '100%%?' AND c = 'it''s ?' AND d = %s"


def test_text_with_nul_is_a_400_not_a_driver_error(database: Database) -> None:
    keys = KeyStore(database)
    if database.dialect.name == "postgres":  # Postgres text cannot hold NUL; SQLite's can
        with pytest.raises(InvalidRequest, match="NUL"):
            keys.get("key_\x00")
    else:
        with pytest.raises(NotFound):
            keys.get("key_\x00")


def test_processes_starting_at_once_migrate_once(postgres_cluster: Cluster) -> None:
    url = postgres_cluster.create_database()
    opened: list[PostgresDatabase] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(PostgresDatabase(url, pool_size=1))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TEST_TIMEOUT)
    try:
        assert failures == []
        assert [db.schema_version for db in opened] == [len(MIGRATIONS)] * 4
        assert fetch_all(url, "SELECT version FROM schema_version") == [{"version": len(MIGRATIONS)}]
    finally:
        for db in opened:
            db.close()


def poll(server: LiveServer, job_id: str) -> dict[str, Any] | None:
    """The job, or None while the server answers 503 (the database is coming back)."""
    response = server.http.get(f"{JOBS}/{job_id}")
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "error": {
            "message": "the server's database cannot be reached just now; try again shortly",
            "type": "service_unavailable",
            "param": None,
            "code": "database_unavailable",
        }
    }


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_down_is_a_503_and_work_resumes_when_it_is_back(
    make_server: Callable[..., LiveServer], postgres_cluster: Cluster
) -> None:
    server = make_server(models=["tiny-random-base"], database_timeout_seconds=1)
    # A job of a second or more, running while the database goes away: the worker's writes wait for it
    # (or it finished already: either way it must end succeeded).
    running = server.submit(SLOW)
    wait_for(lambda: (poll(server, running["id"]) or {}).get("status") == "running", "the job running")

    postgres_cluster.stop()
    try:
        assert_unavailable(server.http.get(f"{JOBS}/{running['id']}"))
        assert_unavailable(server.http.post(JOBS, json=QUICK))
        assert_unavailable(server.http.get(JOBS))
        assert server.http.get("/health").status_code == 200
    finally:
        postgres_cluster.start()

    wait_for(lambda: poll(server, running["id"]) is not None, "the server answering again")
    finished = server.wait_status(running["id"], "succeeded", "failed", "canceled")
    assert finished["status"] == "succeeded", finished
    assert server.http.get(finished["images"][0]["url"]).status_code == 200
    again = server.submit(QUICK, headers=PREFER_WAIT)
    assert again["status"] == "succeeded"


def test_notices_come_on_a_connection_of_their_own(postgres_cluster: Cluster) -> None:
    database = PostgresDatabase(postgres_cluster.create_database(), pool_size=1)
    notices = database.listen("fluxserve_test")
    try:
        assert notices.wait(0) is True  # just connected: whatever was sent before is to be read
        assert notices.wait(0) is False  # nothing sent since
        database.execute("SELECT pg_notify('fluxserve_test', '42')")  # the one pooled connection is not the listener's
        assert notices.wait(TEST_TIMEOUT) is True
        assert notices.wait(0) is False
        with pytest.raises(ValueError, match="not a channel name"):
            database.listen("jobs; DROP TABLE jobs")
    finally:
        notices.close()
        database.close()
