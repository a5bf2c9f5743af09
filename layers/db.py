"""Connecting to PostGIS: the embedded cluster by default, ``DATABASE_URL`` when set."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine

from layers import embedded
from layers.errors import DatabaseUnavailable, SetupError
from layers.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def embedded_cluster(settings: Settings) -> embedded.Cluster:
    return embedded.Cluster(settings.storage.data_dir)


def database_url(settings: Settings, *, start: bool = True) -> str:
    """The SQLAlchemy URL to use, starting the embedded cluster on demand."""
    if settings.database.database_url:
        return settings.database.database_url
    cluster = embedded_cluster(settings)
    if start:
        embedded.start(cluster)
    elif not cluster.port_file.exists():
        raise DatabaseUnavailable("the embedded database is not set up: run `blueprint db up`")
    return cluster.url(settings.database.embedded_database)


def libpq_url(url: str) -> str:
    """The same URL for psycopg (no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(settings: Settings, *, start: bool = True, **kwargs) -> Engine:
    """An engine on the platform's database. Checks it answers, with a one-line error if not."""
    url = database_url(settings, start=start)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    engine = sa.create_engine(url, **kwargs)
    sa.event.listen(engine, "checkout", _replace_if_closed_by_server)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        hint = "run `blueprint db up`" if not settings.database.database_url else "check DATABASE_URL"
        raise DatabaseUnavailable(f"database not reachable ({reason}): {hint}") from None
    return engine


def _replace_if_closed_by_server(dbapi_conn: psycopg.Connection, record, proxy) -> None:
    """Hand out no pooled connection the server has closed (a restart, ``pg_terminate_backend``).

    An idle connection has nothing to read unless the server said goodbye, so a zero-timeout poll of
    its socket finds those without the round trip ``pool_pre_ping`` makes on every checkout (a
    quarter of a millisecond, a sixth of a simple request). ``DisconnectionError`` makes the pool
    open a new connection instead. A connection that breaks in use still fails its query, and
    SQLAlchemy then invalidates the whole pool.
    """
    if dbapi_conn.closed:
        raise sa.exc.DisconnectionError("this pooled connection is closed")
    poller = select.poll()  # not select.select: it fails on descriptors above 1023
    poller.register(dbapi_conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        raise sa.exc.DisconnectionError("the server closed this pooled connection")


@contextmanager
def autocommit_connection(engine: Engine) -> Iterator[psycopg.Connection]:
    """A plain psycopg connection from the engine's pool in autocommit mode, for code that opens
    its own transactions (``conn.transaction()``) and COPYs; back to the pool as it was."""
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        conn.autocommit = True
        try:
            yield conn
        finally:
            conn.autocommit = False


def _server_url(url: str) -> tuple[str, str]:
    """(URL of the server's maintenance database, name of the database in ``url``)."""
    parsed = sa.engine.make_url(url)
    return parsed.set(database="postgres").render_as_string(hide_password=False), parsed.database


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; return whether it was created."""
    admin_url, name = _server_url(url)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def drop_database(url: str) -> None:
    admin_url, name = _server_url(url)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def migrate(settings: Settings, url: str | None = None) -> str:
    """Create the database if needed, run Alembic ``upgrade head`` and mirror the catalogue.

    Returns the revision the database is at.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    from layers import store  # the catalogue mirror; not imported for plain connections

    url = url or database_url(settings)
    ensure_database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["storage_srid"] = settings.storage.storage_srid
    command.upgrade(config, "heads")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            revision = ",".join(sorted(MigrationContext.configure(conn).get_current_heads()))
            srid = storage_srid(conn)
            store.sync_catalogue(conn)
    finally:
        engine.dispose()
    if srid != settings.storage.storage_srid:
        raise SetupError(
            f"this database stores EPSG:{srid} but BLUEPRINT_STORAGE_SRID is "
            f"{settings.storage.storage_srid}: use a new database or the original CRS"
        )
    return revision or "base"


def fresh_database(settings: Settings) -> Engine:
    """Drop, recreate and migrate the settings' database; return an engine on it (tests, benchmarks)."""
    url = database_url(settings)
    drop_database(url)
    migrate(settings, url)
    return make_engine(settings)


def storage_srid(conn: sa.Connection) -> int:
    return conn.execute(sa.text("select storage_srid from deployment")).scalar_one()
