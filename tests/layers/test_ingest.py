"""Loading plan files: round trips, reprojection, repair, atomic versions, and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from pyproj import Transformer

from layers import frames, store
from layers.errors import InvalidInput, NotFound
from layers.ingest import load_layer
from tests.specimens import BOWTIE, EMPTY_POLYGON, redline_frame, write


def feature_table_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'feature_v%' "
                                    "AND relkind = 'r'")).scalar_one()


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".fgb", ".shp", ".parquet"])
def test_round_trip_keeps_count_and_area(empty_store, settings, tmp_path, suffix):
    frame = redline_frame(50)
    path = write(frame, tmp_path / f"redline{suffix}")
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    assert report.features == 50 and report.version == 1 and report.repaired == 0
    with empty_store.connect() as conn:
        stored = frames.read_layer(conn, "2301", srid=settings.storage.storage_srid)
        db_area = conn.execute(sa.text(
            "SELECT sum(ST_Area(geom)) FROM feature WHERE version_id = :v"), {"v": report.version_id}).scalar_one()
    expected = frame.geometry.area.sum()
    assert len(stored) == 50
    assert db_area == pytest.approx(expected, rel=1e-9)
    assert stored.geometry.area.sum() == pytest.approx(expected, rel=1e-9)
    assert sorted(stored["redline_type"].unique()) == sorted(frame["redline_type"].unique())


def test_zipped_shapefile(empty_store, settings, tmp_path):
    shp = write(redline_frame(7), tmp_path / "plan.shp")
    archive = tmp_path / "plan.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in tmp_path.glob("plan.*"):
            if part.suffix != ".zip":
                zf.write(part, part.name)
    report = load_layer(empty_store, settings, path=archive, layer_code="2301")
    assert report.features == 7 and shp.exists()


def test_reprojection_matches_pyproj(empty_store, settings, tmp_path):
    frame = redline_frame(5)
    to_4490 = Transformer.from_crs(4548, 4490, always_xy=True)
    geographic = frame.copy()
    geographic["geometry"] = shapely.transform(
        frame.geometry.values, lambda xy: np.column_stack(to_4490.transform(xy[:, 0], xy[:, 1])))
    geographic = geographic.set_crs(4490, allow_override=True)
    path = write(geographic, tmp_path / "geo.gpkg")
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    assert report.reprojected
    to_4548 = Transformer.from_crs(4490, 4548, always_xy=True)
    with empty_store.connect() as conn:
        stored = frames.read_layer(conn, "2301", srid=4548).sort_values("fid")
    for src, got in zip(geographic.geometry.values, stored.geometry.values, strict=True):
        sx, sy = to_4548.transform(*np.asarray(src.exterior.coords).T)
        gx, gy = np.asarray(got.exterior.coords).T
        np.testing.assert_allclose(gx, sx, atol=1e-6)
        np.testing.assert_allclose(gy, sy, atol=1e-6)


def test_crs_override_for_files_without_crs(empty_store, settings, tmp_path):
    path = write(redline_frame(3, crs=None), tmp_path / "nocrs.geojson")
    report = load_layer(empty_store, settings, path=path, layer_code="2301", crs="EPSG:4548")
    assert report.features == 3


def test_invalid_geometries_are_repaired_and_reported(empty_store, settings, tmp_path):
    frame = redline_frame(4)
    frame.loc[2, "geometry"] = shapely.affinity.translate(BOWTIE, 500_000, 4_000_000)
    path = write(frame, tmp_path / "bowtie.gpkg")
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    assert report.repaired == 1
    assert report.repairs[0]["fid"] == 3 and "Self-intersection" in report.repairs[0]["reason"]
    with empty_store.connect() as conn:
        valid, area = conn.execute(sa.text(
            "SELECT bool_and(ST_IsValid(geom)), sum(ST_Area(geom)) FROM feature WHERE fid = 3 AND version_id = :v"
        ), {"v": report.version_id}).one()
    assert valid and area == pytest.approx(50.0)  # two triangles of 25 m²


def test_reload_makes_a_new_version_and_keeps_the_old(empty_store, settings, tmp_path):
    first = load_layer(empty_store, settings, path=write(redline_frame(10), tmp_path / "a.gpkg"), layer_code="2301")
    second = load_layer(empty_store, settings, path=write(redline_frame(12, seed=1), tmp_path / "b.gpkg"),
                        layer_code="2301")
    assert (first.version, second.version) == (1, 2)
    with empty_store.connect() as conn:
        versions = store.layer_versions(conn, "2301")
        assert [v.feature_count for v in versions] == [10, 12]
        assert versions[0].superseded_at is not None and versions[1].superseded_at is None
        assert store.current_versions(conn)["2301"].id == second.version_id
        old = frames.read_features(conn, version_id=first.version_id, srid=4548)
        as_of = store.versions_as_of(conn, versions[0].valid_from)
    assert len(old) == 10
    assert as_of["2301"].id == first.version_id
    with empty_store.connect() as conn:
        listed = {row["code"]: row for row in store.list_layers(conn)}
    assert listed["2301"]["feature_count"] == 12 and listed["2301"]["versions"] == 2


def test_concurrent_reader_never_sees_a_mixture(empty_store, settings, tmp_path):
    paths = [write(redline_frame(n, seed=n), tmp_path / f"v{n}.parquet") for n in (3000, 5000, 7000)]
    load_layer(empty_store, settings, path=paths[0], layer_code="2301")
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader() -> None:
        with empty_store.connect() as conn:
            while not stop.is_set():
                rows = conn.execute(sa.text(
                    "SELECT version_id, count(*) FROM feature "
                    "WHERE version_id = (SELECT current_version_id FROM layer WHERE code = '2301') "
                    "GROUP BY version_id")).all()
                conn.commit()
                seen.extend((int(v), int(c)) for v, c in rows)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for path in paths[1:]:
            load_layer(empty_store, settings, path=path, layer_code="2301")
    finally:
        stop.set()
        thread.join()
    counts_by_version: dict[int, set[int]] = {}
    for version_id, count in seen:
        counts_by_version.setdefault(version_id, set()).add(count)
    # Every version the reader saw had all its rows, always the same number, and the reader did
    # read across at least one switch.
    assert all(len(counts) == 1 for counts in counts_by_version.values()), counts_by_version
    assert {count for counts in counts_by_version.values() for count in counts} <= {3000, 5000, 7000}
    assert len(counts_by_version) >= 2, counts_by_version


def test_killed_load_leaves_the_old_version_and_no_rows(empty_store, settings, tmp_path):
    load_layer(empty_store, settings, path=write(redline_frame(20), tmp_path / "small.gpkg"), layer_code="2301")
    big = write(redline_frame(150_000, seed=3), tmp_path / "big.parquet")
    tables_before = feature_table_count(empty_store)
    env = {**os.environ, "BLUEPRINT_DATABASE": settings.database.embedded_database}
    if settings.database.database_url:
        env["DATABASE_URL"] = settings.database.database_url
    proc = subprocess.Popen([sys.executable, "-m", "api.cli.main", "layers", "load", str(big), "--layer", "2301"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    copying = False
    with empty_store.connect() as conn:
        while time.monotonic() < deadline and not copying:
            copying = bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY feature_v%'")).scalar_one())
            conn.commit()
            time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert copying, "the load never reached COPY"
    time.sleep(0.5)  # let the server notice the dead client and roll back
    with empty_store.connect() as conn:
        current = store.current_versions(conn)["2301"]
        versions = store.layer_versions(conn, "2301")
        rows = conn.execute(sa.text("SELECT count(*) FROM feature")).scalar_one()
    assert current.feature_count == 20 and len(versions) == 1
    assert rows == 20
    assert feature_table_count(empty_store) == tables_before


# --- bad input: a one-line error and nothing changed -------------------------------------------

def _bad_files(tmp_path):
    frame = redline_frame(3)
    cases = {}
    cases["unknown layer"] = (write(frame, tmp_path / "ok.gpkg"), "9999", NotFound, "unknown layer code")
    corrupt = tmp_path / "corrupt.gpkg"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x13" * 2000)
    cases["corrupt"] = (corrupt, "2301", InvalidInput, "not a readable")
    cases["no crs"] = (write(redline_frame(3, crs=None), tmp_path / "nocrs.shp"), "2301", InvalidInput, "no CRS")
    lines = gpd.GeoDataFrame({"redline_type": ["karst"]}, geometry=[shapely.LineString([(0, 0), (1, 1)])], crs=4548)
    cases["wrong type"] = (write(lines, tmp_path / "lines.gpkg"), "2301", InvalidInput, "takes polygon")
    bad_value = frame.copy()
    bad_value.loc[1, "redline_type"] = "volcano"
    cases["bad value"] = (write(bad_value, tmp_path / "value.gpkg"), "2301", InvalidInput, "volcano")
    missing = frame.drop(columns=["redline_type"])
    cases["missing attr"] = (write(missing, tmp_path / "missing.gpkg"), "2301", InvalidInput, "redline_type")
    empty_file = tmp_path / "empty.geojson"
    empty_file.write_text("")
    cases["empty file"] = (empty_file, "2301", InvalidInput, "empty")
    no_features = tmp_path / "nofeatures.geojson"
    no_features.write_text('{"type": "FeatureCollection", "features": []}')
    cases["no features"] = (no_features, "2301", InvalidInput, "no features")
    empty_geom = frame.copy()
    empty_geom.loc[0, "geometry"] = EMPTY_POLYGON
    cases["empty geometry"] = (write(empty_geom, tmp_path / "emptygeom.parquet"), "2301", InvalidInput, "no geometry")
    plain_parquet = tmp_path / "plain.parquet"
    pd.DataFrame(frame.drop(columns="geometry")).to_parquet(plain_parquet)
    cases["parquet, not geoparquet"] = (plain_parquet, "2301", InvalidInput, "without GeoParquet's 'geo' metadata")
    not_parquet = tmp_path / "junk.parquet"
    not_parquet.write_bytes(b"PAR1" + b"\x00" * 100)
    cases["corrupt parquet"] = (not_parquet, "2301", InvalidInput, "not a readable GeoParquet file")
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../evil.geojson", '{"type": "FeatureCollection", "features": []}')
    cases["zip slip"] = (slip, "2301", InvalidInput, "escapes")
    vrt = tmp_path / "plan.geojson"
    vrt.write_text('<OGRVRTDataSource><OGRVRTLayer name="x"><SrcDataSource>/etc/passwd</SrcDataSource>'
                   "</OGRVRTLayer></OGRVRTDataSource>")
    cases["vrt"] = (vrt, "2301", InvalidInput, "virtual")
    vrt_ext = tmp_path / "plan.vrt"
    vrt_ext.write_text("<OGRVRTDataSource/>")
    cases["vrt suffix"] = (vrt_ext, "2301", InvalidInput, "virtual")
    cases["network"] = ("/vsicurl/http://example.com/plan.gpkg", "2301", InvalidInput, "network path")
    cases["url"] = ("https://example.com/plan.geojson", "2301", InvalidInput, "network path")
    out_of_range = frame.copy()
    out_of_range = out_of_range.set_crs(4326, allow_override=True)
    cases["bad coordinates"] = (write(out_of_range, tmp_path / "range.gpkg"), "2301", InvalidInput, "transformed")
    return cases


def test_bad_inputs_give_one_line_errors_and_change_nothing(empty_store, settings, tmp_path):
    load_layer(empty_store, settings, path=write(redline_frame(5), tmp_path / "base.gpkg"), layer_code="2301")
    for name, (path, code, error, message) in _bad_files(tmp_path).items():
        with pytest.raises(error, match=message) as info:
            load_layer(empty_store, settings, path=path, layer_code=code)
        assert "\n" not in str(info.value), name
        with empty_store.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM layer_version")).scalar_one() == 1, name
            assert conn.execute(sa.text("SELECT count(*) FROM feature")).scalar_one() == 5, name


def test_a_raster_path_is_checked_as_a_vector_one(engine, settings, tmp_path):
    vrt = ('<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand band="1"><SimpleSource>'
           "<SourceFilename>/etc/passwd</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>")
    cases = {"/vsicurl/https://example.com/dem.tif": "is a network path",
             "https://example.com/dem.tif": "is a network path",
             "/vsizip/dem.zip/dem.tif": "is a network path",
             str(tmp_path / "none.tif"): "no such file",
             str(tmp_path): "is a folder: give the plan file in it"}
    for name in ("dem.vrt", "dem.tif"):  # a VRT by name, and one dressed as a GeoTIFF
        (tmp_path / name).write_text(vrt)
        cases[str(tmp_path / name)] = f"{name} is a GDAL virtual/remote dataset"
    for path, message in cases.items():
        errors = []
        for code in ("2301", "1102"):  # the red line (vector), the DEM (raster)
            with pytest.raises(InvalidInput, match=message) as info:
                load_layer(engine, settings, path=path, layer_code=code)
            errors.append(str(info.value))
        assert errors[0] == errors[1] and "\n" not in errors[0], path


def test_cli_bad_input_is_one_line_and_nonzero(settings, tmp_path):
    env = {**os.environ, "BLUEPRINT_DATABASE": settings.database.embedded_database}
    result = subprocess.run([sys.executable, "-m", "api.cli.main", "layers", "load", str(tmp_path / "none.gpkg"),
                             "--layer", "2301"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr


def test_reloading_the_same_file_is_unchanged_unless_forced(empty_store, settings, tmp_path):
    path = write(redline_frame(6), tmp_path / "same.gpkg")
    first = load_layer(empty_store, settings, path=path, layer_code="2301")
    again = load_layer(empty_store, settings, path=path, layer_code="2301")
    forced = load_layer(empty_store, settings, path=path, layer_code="2301", force=True)
    assert not first.unchanged and again.unchanged and again.version_id == first.version_id
    assert "unchanged" in again.summary()
    assert forced.version == 2 and not forced.unchanged


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".fgb"])
def test_a_layer_reads_the_same_in_one_arrow_batch_or_many(tmp_path, monkeypatch, suffix):
    from layers.ingest import sources

    path = write(redline_frame(11), tmp_path / f"plan{suffix}")
    monkeypatch.setattr(sources, "GDAL_BATCH_ROWS", 3)
    read = {}
    for name, budget in (("one", 1 << 30), ("many", 1)):  # a budget of 1 byte keeps GDAL's batches of 3
        monkeypatch.setattr(sources, "ONE_BATCH_BYTES", budget)
        source = sources.open_source(path)
        assert sources._batch_rows(source, 11) == (11 if name == "one" else 3)
        read[name] = sources.read_features(source)
    one, many = read["one"], read["many"]
    assert one.geometry.to_pylist() == many.geometry.to_pylist() and len(one.geometry) == 11
    pd.testing.assert_frame_equal(one.attributes, many.attributes)
    assert (one.fids is None) == (many.fids is None) and (one.fids is None or list(one.fids) == list(many.fids))


def test_a_zipped_layer_keeps_gdals_batches(tmp_path):
    from layers.ingest import sources

    write(redline_frame(3), tmp_path / "plan.shp")
    archive = tmp_path / "plan.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for part in tmp_path.glob("plan.*"):
            if part != archive:
                zf.write(part, part.name)
    assert sources._batch_rows(sources.open_source(archive), 3) == sources.GDAL_BATCH_ROWS


def test_extreme_attribute_values_read_back_as_loaded(empty_store, settings):
    from layers.catalogue import load_catalogue
    from layers.ingest import load_frame

    frame = redline_frame(3).assign(big_float=[1e20, 1e300, -2.5e-300], big_int=[2**63 - 1, -(2**63), 0],
                                    nested=["a\"b\\c", "换行\n", None])
    report = load_frame(empty_store, settings, frame, minor=load_catalogue().minor("2301"), source_name="x",
                        checksum="x")
    with empty_store.connect() as conn:
        back = frames.read_features(conn, version_id=report.version_id, srid=4548).sort_values("fid")
    assert back["big_float"].tolist() == [1e20, 1e300, -2.5e-300]
    assert back["big_int"].tolist() == [2**63 - 1, -(2**63), 0]
    assert back["nested"].tolist()[:2] == ["a\"b\\c", "换行\n"] and back["nested"].isna().tolist()[2]
