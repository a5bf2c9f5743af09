"""The tile store: tiles kept in PostGIS by layer version, served after the memory cache is gone,
never across versions or recipes, filled by `blueprint tiles seed`, gone with their version."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import geopandas as gpd
import httpx
import psycopg
import pytest
import sqlalchemy as sa

from layers import db
from layers.catalogue import load_catalogue
from layers.ingest import load_frame
from layers.settings import Settings
from tests.databases import database_name
from tests.viewer.conftest import box, run_server, with_server_settings
from tests.viewer.test_tile_cache import GZIP, PLAIN, feature_ids, tile_url
from tests.viewer.test_tiles import expected, tile_of
from viewer.tile_cache import TileCache
from viewer.tile_seed import seed_tiles
from viewer.tile_store import TileRecipe, gunzip_tile, gzip_tile, write_tile
from viewer.tiles import TILE_REVISION

STORE_DATABASE = database_name("tile_store")
FRAMES = {
    "2301": gpd.GeoDataFrame({"fid": [1, 2], "redline_type": ["karst", "biodiversity"], "name": ["甲", "乙"]},
                             geometry=[box(0, 0, 1_000, 1_000), box(4_000, 2_500, 4_600, 3_100)], crs="EPSG:4548"),
    "2201": gpd.GeoDataFrame({"fid": [1, 2, 3], "ydlb": ["R2", "M1", "G1"]},
                             geometry=[box(-4_000, -4_000, -3_000, -3_000), box(2_000, 1_000, 3_500, 2_500),
                                       box(-500, 3_000, 500, 4_000)], crs="EPSG:4548"),
}


def load(engine: sa.Engine, settings: Settings, code: str, frame: gpd.GeoDataFrame, name: str) -> int:
    return load_frame(engine, settings, frame, minor=load_catalogue().minor(code), source_name=name,
                      checksum=name).version_id


@pytest.fixture(scope="module")
def store_settings() -> Settings:
    return with_server_settings(Settings().on_database(STORE_DATABASE), basemap_url=None, tile_version_ttl=0.0)


@pytest.fixture(scope="module")
def store_engine(store_settings: Settings) -> Iterator[sa.Engine]:
    """A database of its own, with two small layers loaded."""
    engine = db.fresh_database(store_settings)
    for code, frame in FRAMES.items():
        load(engine, store_settings, code, frame, f"store-{code}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def store_server(store_engine, store_settings):  # noqa: ARG001 - data first
    yield from run_server(store_settings)


@pytest.fixture(scope="module")
def builder_server(store_engine, store_settings):  # noqa: ARG001 - data first
    """A server that builds every tile (no memory cache, no store): the reference for what a tile holds."""
    yield from run_server(with_server_settings(store_settings, tile_store=False, tile_cache_bytes=0))


def current_version(engine: sa.Engine, code: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT current_version_id FROM layer WHERE code = :c"), {"c": code}).scalar_one()


def stored_row(engine: sa.Engine, key: tuple[int, int, int, int]) -> tuple[bytes, int, int] | None:
    """(data, revision, feature_limit) of a stored tile, or None."""
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT data, revision, feature_limit FROM vector_tile WHERE version_id = :v AND z = :z AND x = :x "
            "AND y = :y"), dict(zip("vzxy", key, strict=True))).first()
    return None if row is None else (bytes(row[0]), row[1], row[2])


SERVED = TileRecipe(TILE_REVISION, 20_000)
"""How the test servers build tiles."""


def wait_for_row(engine: sa.Engine, key, *, seconds: float = 5.0) -> bytes:
    """The stored bytes of a tile once a background write of the servers' recipe has landed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = stored_row(engine, key)
        if row is not None and row[1:] == (SERVED.revision, SERVED.feature_limit):
            return row[0]
        time.sleep(0.05)
    raise AssertionError(f"tile {key} was not stored within {seconds} s")


def raw_gzip(url: str) -> bytes:
    with httpx.stream("GET", url, headers=GZIP) as response:
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
        return b"".join(response.iter_raw())


def test_a_stored_tile_is_served_the_same_after_the_memory_cache_is_cleared(store_server, store_engine,
                                                                           store_settings):
    version = current_version(store_engine, "2301")
    x, y = tile_of(*box(0, 0, 1_000, 1_000).centroid.coords[0], 13)
    url = tile_url(store_server, "2301", 13, x, y)
    served = raw_gzip(url)
    plain = httpx.get(url, headers=PLAIN).content
    assert feature_ids(plain, "2301") == sorted(expected(FRAMES["2301"], 13, x, y)) != []
    # The store keeps exactly what was served, in its gzip form, with how it was built.
    assert wait_for_row(store_engine, (version, 13, x, y)) == served
    # Memory gone: the tile comes from the store (a built tile has its plain bytes; a stored one only gzip).
    store_server.app.state.tile_cache = TileCache(64 * 1024 * 1024)
    assert raw_gzip(url) == served
    entry = store_server.app.state.tile_cache.get((version, 13, x, y))
    assert entry.data is None and entry.gzipped == served
    # A new server process (a restart): the same bytes, plain ones unzipped from the store.
    for restarted in run_server(store_settings):
        assert httpx.get(tile_url(restarted, "2301", 13, x, y), headers=PLAIN).content == plain
        assert raw_gzip(tile_url(restarted, "2301", 13, x, y)) == served


def test_an_empty_tile_is_stored_as_an_empty_row_and_answered_from_it(store_server, store_engine):
    version = current_version(store_engine, "2301")
    x, y = tile_of(*box(30_000, 30_000, 30_001, 30_001).bounds[:2], 14)  # no red line there
    url = tile_url(store_server, "2301", 14, x, y)
    assert httpx.get(url).status_code == 204
    assert wait_for_row(store_engine, (version, 14, x, y)) == b""
    store_server.app.state.tile_cache = TileCache(64 * 1024 * 1024)
    assert httpx.get(url).status_code == 204
    assert store_server.app.state.tile_cache.get((version, 14, x, y)).gzipped == b""


@pytest.mark.parametrize(("recipe", "zoom"), [(TileRecipe(TILE_REVISION, 2), 13),
                                              (TileRecipe(TILE_REVISION + 1, 20_000), 14)],
                         ids=["another feature cap", "another tile revision"])
def test_a_tile_stored_another_way_is_not_served_and_is_replaced(store_server, store_engine, store_settings,
                                                                  recipe, zoom):
    version = current_version(store_engine, "2301")
    x, y = tile_of(*box(4_000, 2_500, 4_600, 3_100).centroid.coords[0], zoom)
    key = (version, zoom, x, y)
    with psycopg.connect(db.libpq_url(db.database_url(store_settings)), autocommit=True) as conn:
        write_tile(conn, key, recipe, gzip_tile(b"not a tile of this recipe"))
    response = httpx.get(tile_url(store_server, "2301", zoom, x, y), headers=PLAIN)
    assert feature_ids(response.content, "2301") == sorted(expected(FRAMES["2301"], zoom, x, y)) != []
    assert gunzip_tile(wait_for_row(store_engine, key)) == response.content


def test_a_new_version_never_gets_the_old_versions_stored_tiles(store_server, store_engine, store_settings):
    first = load(store_engine, store_settings, "2202",
                 gpd.GeoDataFrame({"fid": [1], "boundary_type": ["town"]}, geometry=[box(-200, -200, 200, 200)],
                                  crs="EPSG:4548"), "store-udb-1")
    seed_tiles(store_settings, codes=["2202"], min_zoom=12, max_zoom=13, jobs=2)
    x, y = tile_of(*box(-200, -200, 200, 200).centroid.coords[0], 13)
    url = tile_url(store_server, "2202", 13, x, y)
    assert feature_ids(httpx.get(url, headers=PLAIN).content, "2202") == [1]
    old = stored_row(store_engine, (first, 13, x, y))[0]
    second = load(store_engine, store_settings, "2202",
                  gpd.GeoDataFrame({"fid": [1, 2], "boundary_type": ["town", "central_city"]},
                                   geometry=[box(-200, -200, 200, 200), box(300, 300, 600, 600)], crs="EPSG:4548"),
                  "store-udb-2")
    newer = httpx.get(url, headers=PLAIN)  # the server looks the current version up on every tile (TTL 0)
    assert feature_ids(newer.content, "2202") == [1, 2] and newer.headers["etag"] == f'"{second}.{TILE_REVISION}"'
    assert gunzip_tile(wait_for_row(store_engine, (second, 13, x, y))) == newer.content
    assert stored_row(store_engine, (first, 13, x, y))[0] == old  # the old version's tile stays its own


def test_seeding_stores_every_tile_with_features_once(store_engine, store_settings, builder_server):
    version = current_version(store_engine, "2201")
    first = seed_tiles(store_settings, codes=["2201"], min_zoom=10, max_zoom=13, jobs=2)
    # Independently: every tile near the layer that the endpoint, building it, answers with features.
    x0, y0, x1, y1 = FRAMES["2201"].total_bounds
    showing = set()
    for z in range(10, 14):
        (w, n), (e, s) = tile_of(x0, y1, z), tile_of(x1, y0, z)
        for x in range(w - 1, e + 2):
            for y in range(n - 1, s + 2):
                if httpx.get(tile_url(builder_server, "2201", z, x, y)).status_code == 200:
                    showing.add((z, x, y))
    with store_engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT z, x, y, length(data) FROM vector_tile WHERE version_id = :v"),
                            {"v": version}).all()
    assert {(z, x, y) for z, x, y, n in rows if n > 0} == showing
    assert {z for z, _, _ in showing} == {10, 11, 12, 13}
    assert (first[0].built, first[0].empty, first[0].already_stored) == (len(showing), len(rows) - len(showing), 0)
    assert first[0].bytes == sum(n for *_, n in rows)
    again = seed_tiles(store_settings, codes=["2201"], min_zoom=10, max_zoom=13, jobs=2)
    assert (again[0].built, again[0].empty, again[0].already_stored) == (0, 0, len(rows))


def test_a_failed_store_write_still_answers_the_tile(store_server, store_engine, caplog):
    version = current_version(store_engine, "2301")
    x, y = tile_of(*box(0, 0, 1_000, 1_000).centroid.coords[0], 11)
    with store_engine.begin() as conn:
        conn.execute(sa.text("CREATE FUNCTION refuse_tile() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN RAISE EXCEPTION 'the tile store refuses (test)'; END $$"))
        conn.execute(sa.text("CREATE TRIGGER refuse_tile BEFORE INSERT OR UPDATE ON vector_tile "
                             "FOR EACH ROW EXECUTE FUNCTION refuse_tile()"))
    try:
        with caplog.at_level(logging.WARNING, logger="blueprint.tiles"):
            response = httpx.get(tile_url(store_server, "2301", 11, x, y), headers=PLAIN)
            assert response.status_code == 200
            assert feature_ids(response.content, "2301") == sorted(expected(FRAMES["2301"], 11, x, y)) != []
            deadline = time.monotonic() + 5
            while "not stored" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "the tile store refuses" in caplog.text
        assert stored_row(store_engine, (version, 11, x, y)) is None
    finally:
        with store_engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse_tile ON vector_tile"))
            conn.execute(sa.text("DROP FUNCTION refuse_tile()"))


def test_a_removed_version_takes_its_stored_tiles_with_it(store_engine, store_settings):
    frame = gpd.GeoDataFrame({"fid": [1], "water_name": ["小清河"]}, geometry=[box(0, 0, 300, 300)], crs="EPSG:4548")
    old = load(store_engine, store_settings, "2205", frame, "store-blue-1")
    seed_tiles(store_settings, codes=["2205"], min_zoom=12, max_zoom=14, jobs=1)
    new = load(store_engine, store_settings, "2205", frame.assign(water_name="大明湖"), "store-blue-2")
    seed_tiles(store_settings, codes=["2205"], min_zoom=12, max_zoom=14, jobs=1)

    def count(version: int) -> int:
        with store_engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM vector_tile WHERE version_id = :v"),
                                {"v": version}).scalar_one()

    assert count(old) > 0 and count(new) == count(old)
    with store_engine.begin() as conn:  # as a clean-up removes a superseded version: partition, then row
        conn.execute(sa.text(f"DROP TABLE feature_v{int(old)}"))
        conn.execute(sa.text("DELETE FROM layer_version WHERE id = :v"), {"v": old})
    assert count(old) == 0 and count(new) > 0


def cli(*args: str, settings: Settings) -> subprocess.CompletedProcess:
    env = ({"DATABASE_URL": settings.database.database_url} if settings.database.database_url
           else {"BLUEPRINT_DATABASE": settings.database.embedded_database})
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_the_seed_command_prints_what_it_did(store_engine, store_settings):
    version = current_version(store_engine, "2301")

    def stored() -> tuple[int, int]:
        with store_engine.connect() as conn:
            return tuple(conn.execute(sa.text(
                "SELECT count(*) FILTER (WHERE length(data) > 0), count(*) FILTER (WHERE length(data) = 0) "
                "FROM vector_tile WHERE version_id = :v"), {"v": version}).one())

    (data_before, empty_before) = stored()
    result = cli("tiles", "seed", "--layer", "2301", "--min-zoom", "9", "--max-zoom", "14", settings=store_settings)
    assert result.returncode == 0, result.stderr
    (data_after, empty_after) = stored()
    lines = result.stdout.splitlines()
    row = next(line.split() for line in lines if line.startswith("2301 "))
    assert row[:3] == ["2301", str(version), "9–14"]
    built, made_empty, before = (int(v.replace(",", "")) for v in row[3:6])
    assert (built, made_empty) == (data_after - data_before, empty_after - empty_before) and built > 0
    assert before <= data_before + empty_before
    assert lines[-1].startswith(f"seeded 1 layers: {built:,} tiles built, {made_empty:,} empty")
    assert "tiles: layer 2301 z14" in result.stderr  # progress
    again = json.loads(cli("tiles", "seed", "--layer", "2301", "--min-zoom", "9", "--format", "json",
                           settings=store_settings).stdout)
    assert again["layers"][0]["built"] == again["layers"][0]["empty"] == 0
    assert again["layers"][0]["already_stored"] == built + made_empty + before
    assert again["store_bytes"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--layer", "9999"], "unknown layer code '9999'"),
    (["--layer", "1102"], "layer 1102 is a raster layer"),
    (["--layer", "2302"], "layer 2302 has no loaded version"),
    (["--max-zoom", "23"], "max zoom 23 is outside 0–22"),
])
def test_the_seed_command_refuses_bad_input_in_one_line(store_engine, store_settings, args, message):  # noqa: ARG001
    result = cli("tiles", "seed", *args, settings=store_settings)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("blueprint: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_loading_a_layer_from_the_command_line_seeds_the_new_versions_tiles(store_engine, store_settings, tmp_path):
    def stored(version: int) -> int:
        with store_engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM vector_tile WHERE version_id = :v"),
                                {"v": version}).scalar_one()

    frame = FRAMES["2301"].copy()
    frame.loc[1, "geometry"] = box(6_000, 2_500, 6_600, 3_100)
    path = tmp_path / "redline.gpkg"
    frame.to_file(path)
    result = cli("layers", "load", str(path), "--layer", "2301", "--format", "json", settings=store_settings)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    tiles = report["tiles"]
    assert tiles["layer"] == "2301"
    assert tiles["version_id"] == report["version_id"] == current_version(store_engine, "2301")
    assert tiles["built"] > 0 and stored(report["version_id"]) == tiles["built"] + tiles["empty"]
    assert "tiles: layer 2301 z14" in result.stderr  # progress

    frame.to_file(path := tmp_path / "again.gpkg")
    text = cli("layers", "load", str(path), "--layer", "2301", "--force", settings=store_settings)
    assert text.returncode == 0, text.stderr
    summary, tiles_line = text.stdout.splitlines()
    assert tiles_line.startswith("  map tiles z") and f"{tiles['built']:,} built" in tiles_line
    skipped = cli("layers", "load", str(path), "--layer", "2301", "--force", "--no-tiles", "--format", "json",
                  settings=store_settings)
    report = json.loads(skipped.stdout)
    assert report["tiles"] is None and stored(report["version_id"]) == 0
