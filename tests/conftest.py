"""Shared fixtures: a real PostGIS (the embedded cluster, or DATABASE_URL), migrated by Alembic.

Tests get their own databases on that server so a user's data is never touched:
``blueprint_test`` (see tests/databases.py; emptied between tests that load layers) and, for tests that need the demo
city, ``blueprint_test_demo`` (loaded once per session by the ``demo_city`` fixture below).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from layers import db
from layers.settings import Settings
from tests.databases import database_name

TEST_DATABASE = database_name()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings().on_database(TEST_DATABASE)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[sa.Engine]:
    eng = db.fresh_database(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def conn(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose transaction is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


def reset_layers(engine: sa.Engine) -> None:
    """Remove every loaded version (partitions and rows) so a test starts from no data."""
    with engine.begin() as connection:
        partitions = connection.execute(sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'feature'"
        )).scalars().all()
        for name in partitions:
            connection.execute(sa.text(f"DROP TABLE {name}"))
        connection.execute(sa.text("UPDATE layer SET current_version_id = NULL"))
        connection.execute(sa.text("DELETE FROM layer_version"))


@pytest.fixture
def empty_store(engine: sa.Engine) -> Iterator[sa.Engine]:
    """The test database with no layer loaded, emptied again afterwards."""
    reset_layers(engine)
    yield engine
    reset_layers(engine)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    """In CI a skipped test is a failure: every test must really run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("CI") and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = 1


DEMO_DATABASE = database_name("demo")


class DemoCity:
    """The demo city at scale 1, loaded through the real ingest path into its own database."""

    def __init__(self, settings: Settings, engine: sa.Engine, out_dir, manifest: dict) -> None:
        self.settings = settings
        self.engine = engine
        self.out_dir = out_dir
        self.manifest = manifest


@pytest.fixture(scope="session")
def demo_city() -> Iterator[DemoCity]:
    """Generate (cached in the data folder: generation is deterministic) and load the demo city."""
    from dataclasses import asdict

    from layers.demo import cached_city
    from layers.demo.load import load_demo

    demo_settings = Settings().on_database(DEMO_DATABASE)
    out_dir = demo_settings.storage.data_dir / "demo" / "scale1-seed0"
    manifest = asdict(cached_city(out_dir, scale=1, seed=0))
    eng = db.fresh_database(demo_settings)
    load_demo(eng, demo_settings, out_dir)
    yield DemoCity(demo_settings, eng, out_dir, manifest)
    eng.dispose()
