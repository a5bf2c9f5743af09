"""Site-check tests run on their own database, ``blueprint_test_site``, holding the synthetic city of
tests/site/city.py (loaded once per session through the real ingest path, regional assessment of
zone DZ01 included), so they neither see nor disturb other tests' layers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from layers import db
from layers.settings import Settings
from spatial.assessment import assess_zone
from tests.site.city import SITE_DATABASE, City, load_city


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings().on_database(SITE_DATABASE)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[sa.Engine]:
    eng = db.fresh_database(settings)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def city(engine, settings, tmp_path_factory) -> City:
    folder = tmp_path_factory.mktemp("site-city")
    loaded = load_city(engine, settings, folder)
    loaded.assessment = assess_zone(engine, settings, "DZ01")
    return loaded


@pytest.fixture(scope="session")
def client(settings, city) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
