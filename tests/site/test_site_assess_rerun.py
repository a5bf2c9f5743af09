"""`blueprint assess` on unchanged inputs keeps the stored results (no new versions); a changed input,
another validity or --force assesses again. Runs on its own database: it adds versions to layers."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import geopandas as gpd
import pytest
import sqlalchemy as sa

from api.cli.main import main
from layers import db
from layers.catalogue import load_catalogue
from layers.ingest import load_frame
from layers.settings import Settings
from spatial.assessment import load_assessment_rules
from tests.databases import database_name
from tests.site.city import CITY, FEATURES, load_city

STORED_TYPES = {t.name: t.minor.code for t in load_assessment_rules().types if t.inputs}
"""The types the rules can assess, with their result layers (the others store nothing)."""


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Iterator[SimpleNamespace]:
    settings = Settings().on_database(database_name("assess_rerun"))
    engine = db.fresh_database(settings)
    load_city(engine, settings, tmp_path_factory.mktemp("assess-rerun"))
    yield SimpleNamespace(settings=settings, engine=engine)
    engine.dispose()


@pytest.fixture
def run(city, capsys, monkeypatch):
    if city.settings.database.database_url:
        monkeypatch.setenv("DATABASE_URL", city.settings.database.database_url)
    else:
        monkeypatch.setenv("BLUEPRINT_DATABASE", city.settings.database.embedded_database)

    def invoke(*args) -> SimpleNamespace:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert code == 0, err
        return SimpleNamespace(stdout=out, stderr=err)

    return invoke


def result_versions(engine) -> dict[str, int]:
    """Layer code → number of versions, for the result layers."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT layer_code, count(*) FROM layer_version WHERE layer_code = ANY(:c) "
                                    "GROUP BY layer_code"), {"c": list(STORED_TYPES.values())}).all()
    return dict(rows)


def test_unchanged_inputs_add_no_version_and_a_changed_input_reruns_its_types(city, run):
    run("assess", "DZ01")
    first = result_versions(city.engine)
    assert set(first) <= set(STORED_TYPES.values()) and len(first) >= 4

    again = run("assess", "DZ01")
    assert result_versions(city.engine) == first
    assert again.stdout.count("\n") == 1, again.stdout
    assert f"zone DZ01: {len(first)} stored results unchanged" in again.stdout and "flood_impact fail (3207 v1)" \
        in again.stdout

    # a new version of the flood layer (2504) is read only by flood_impact: that type alone is assessed again
    geoms, attrs = zip(*FEATURES["2504"], strict=True)
    flood = gpd.GeoDataFrame(list(attrs), geometry=list(geoms), crs=4548).assign(fid=range(1, len(geoms) + 1))
    load_frame(city.engine, city.settings, flood, minor=load_catalogue().minor("2504"), source_name="2504-v2",
               checksum="2504-v2", coverage=CITY)
    changed = run("assess", "DZ01")
    assert result_versions(city.engine) == {**first, "3207": first["3207"] + 1}
    assert f"{len(first) - 1} stored results unchanged" in changed.stdout and "; 1 to assess" in changed.stdout
    assert "flood_impact             fail" in changed.stdout and "→ layer 3207 v2" in changed.stdout

    forced = run("assess", "DZ01", "--type", "archaeology", "--force")
    assert "→ layer 3208 v2" in forced.stdout
    longer = run("assess", "DZ01", "--type", "archaeology", "--valid-years", "2")
    assert "→ layer 3208 v3" in longer.stdout
    same = run("assess", "DZ01", "--type", "archaeology", "--valid-years", "2")
    assert "1 stored results unchanged" in same.stdout and "3208 v3" in same.stdout
    assert result_versions(city.engine)["3208"] == first["3208"] + 2
