"""Engines for the feedback store and its migrations.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``: a commit is on disk before the caller is
told, so acknowledged feedback survives ``kill -9`` and power loss, while readers never wait for the writer.
PostgreSQL (compose, Kubernetes) is reached through psycopg 3. Migrations are Alembic revisions, applied at start-up
under an advisory lock on PostgreSQL so that replicas starting together migrate once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, event, make_url, text

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_ID = 0x5651_4642  # "VQFB": any constant shared by every replica


class StoreConfigError(ValueError):
    """The store URL or path cannot be used; the message says which setting to fix."""


def store_url(url: str | None, password: str | None, sqlite_path: Path) -> URL:
    """The SQLAlchemy URL of the store: ``url`` (with ``password`` filled in) or SQLite at ``sqlite_path``."""
    if url is None:
        return URL.create("sqlite+pysqlite", database=str(sqlite_path))
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError; keep the URL (it may hold a password) out of it
        raise StoreConfigError("VQA_STORE_URL is not a database URL (e.g. postgresql+psycopg://vqa@db/vqa)") from exc
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        raise StoreConfigError(f"VQA_STORE_URL: backend {parsed.get_backend_name()!r}; use postgresql or sqlite")
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if password and parsed.password is None:
        parsed = parsed.set(password=password)
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def open_engine(url: URL) -> Engine:
    """An engine with the pragmas (SQLite) or pool settings (PostgreSQL) the store relies on."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=10)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "app/store/migrations has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns it. Safe to run from several replicas at once."""
    config = _alembic_config()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return head_revision()
