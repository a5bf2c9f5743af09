"""The `blueprint` command line: catalogue commands and the embedded database."""

import json
import os
import subprocess
import sys

import geopandas as gpd
import numpy as np
import sqlalchemy as sa

from layers import db
from layers.catalogue import load_catalogue
from layers.ingest import load_layer
from tests.databases import database_name
from tests.specimens import redline_frame, write


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_catalogue_validate_and_list_json():
    result = run("catalogue", "validate")
    assert result.returncode == 0 and "4 major, 11 middle" in result.stdout
    listed = run("catalogue", "list", "--format", "json")
    assert json.loads(listed.stdout) == load_catalogue().hierarchy()


def imported(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``code``."""
    probe = f"import sys; {code}; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()


def test_the_parser_is_built_without_the_heavy_libraries():
    heavy = ("geopandas", "pandas", "shapely", "sqlalchemy", "psycopg", "pyarrow", "numpy", "pydantic", "jsonschema")
    assert imported("from api.cli.main import build_parser; build_parser()", heavy) == []


def test_the_tiles_seed_help_names_the_seeders_default_zoom():
    # The parser does not import the seeder (see above), so the help repeats its default.
    from viewer.tile_seed import DEFAULT_MAX_ZOOM

    assert f"(default {DEFAULT_MAX_ZOOM})" in run("tiles", "seed", "--help").stdout


def test_reading_the_registers_and_layer_listings_needs_no_geometry_library():
    # `conflicts list|show|runs|status` and `layers list|versions` start in ~1 s instead of ~2 s.
    readers = "import spatial.conflicts.query, spatial.conflicts.listing, spatial.conflicts.lifecycle, layers.store"
    assert imported(readers, ("geopandas", "pandas", "shapely", "numpy", "pyarrow")) == []


def test_a_reader_that_stops_early_ends_the_command_quietly():
    with subprocess.Popen([sys.executable, "-m", "api.cli.main", "catalogue", "list", "--format", "json"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # gone before the command writes, as `| head` may be
        stderr = proc.stderr.read().decode()
        assert proc.wait() == 141, stderr
    assert stderr == ""


def test_catalogue_validate_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "catalogue.yaml"
    broken.write_text("majors: [{code: '1'}]\n")
    result = run("catalogue", "validate", str(broken))
    assert result.returncode == 2
    assert result.stderr.startswith("blueprint: error: catalogue invalid") and result.stderr.count("\n") == 1


def test_db_up_is_idempotent_and_url_is_stable(settings, engine):
    env = {"BLUEPRINT_DATABASE": settings.database.embedded_database}
    first = run("db", "up", env=env)
    url_after_first = run("db", "url", env=env).stdout
    second = run("db", "up", env=env)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "schema at revision" in second.stdout
    assert url_after_first.strip() and run("db", "url", env=env).stdout == url_after_first


def test_db_up_creates_and_migrates_the_named_database(settings):
    named = settings.on_database(database_name("db_up"))
    url = db.database_url(named)
    db.drop_database(url)
    env = ({"DATABASE_URL": named.database.database_url} if named.database.database_url
           else {"BLUEPRINT_DATABASE": named.database.embedded_database})
    try:
        result = run("db", "up", env=env)
        assert result.returncode == 0, result.stderr
        engine = db.make_engine(named, start=False)
        with engine.connect() as conn:
            layers = conn.execute(sa.text("SELECT count(*) FROM layer")).scalar_one()
        engine.dispose()
        assert layers == len(load_catalogue().minors) and f"{layers} catalogue layers" in result.stdout
    finally:
        db.drop_database(url)


def _database_env(settings) -> dict:
    if settings.database.database_url:
        return {"DATABASE_URL": settings.database.database_url}
    return {"BLUEPRINT_DATABASE": settings.database.embedded_database}


def test_layers_export_writes_the_current_or_an_earlier_version(empty_store, settings, tmp_path):
    first, second = redline_frame(6, seed=1), redline_frame(4, seed=2)
    load_layer(empty_store, settings, path=write(first, tmp_path / "v1.gpkg"), layer_code="2301",
               valid_from="2025-01-01")
    load_layer(empty_store, settings, path=write(second, tmp_path / "v2.gpkg"), layer_code="2301",
               valid_from="2026-01-01")
    env = _database_env(settings)
    for args, source, version in [((), second, 2), (("--version", "1"), first, 1),
                                  (("--as-of", "2025-12-31"), first, 1)]:
        out = tmp_path / f"out-{version}-{len(args)}.gpkg"
        result = run("layers", "export", "2301", "-o", str(out), *args, env=env)
        assert result.returncode == 0, result.stderr
        assert f"wrote layer 2301 v{version} ({len(source)} features" in result.stdout
        assert result.stderr.splitlines() == [f"  layer 2301: reading v{version} ({len(source)} features)",
                                              "  layer 2301: writing gpkg"]
        back = gpd.read_file(out, fid_as_index=True).sort_index()  # GDAL keeps "fid" as the GeoPackage key
        assert list(back.index) == list(source["fid"])
        assert back.crs.to_epsg() == 4548 and list(back["name"]) == list(source["name"])
        # Areas in the storage CRS, against shapely on the frame that was loaded.
        np.testing.assert_allclose(back.geometry.area.to_numpy(), source.geometry.area.to_numpy(), rtol=1e-12)
    for args, message in [(("--version", "3"), "has no version 3"),
                          (("--as-of", "2024-12-31"), "had no version in force on 2024-12-31"),
                          (("--version", "1", "--as-of", "2025-12-31"), "not allowed with argument"),
                          (("--format", "shp"), "invalid choice")]:
        result = run("layers", "export", "2301", "-o", str(tmp_path / "bad.gpkg"), *args, env=env)
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "bad.gpkg").exists()


def test_progress_prints_each_stage_start_and_end_and_throttles_between(capsys):
    from api.cli.output import ProgressPrinter

    progress = ProgressPrinter("f.gpkg", interval=3600)
    for done in (0, 10, 20, 30):
        progress("copy", done, 30)
    progress("index", 0, 1)
    assert capsys.readouterr().err.splitlines() == [
        "  f.gpkg: copy 0/30   0.0%", "  f.gpkg: copy 30/30 100.0%", "  f.gpkg: index"]
