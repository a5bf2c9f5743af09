"""The fast ingest path: chunked, threaded binary COPY rows must store exactly what was given.

Timing itself is measured by ``bench/ingest.py``, not here (a shared machine makes speed
assertions flaky); these tests pin down the encoding tricks the speed relies on.
"""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from layers.catalogue import load_catalogue
from layers.errors import InvalidInput
from layers.ingest import load_frame, write
from layers.ingest.copy_rows import copy_rows, json_values
from layers.ingest.prepare import (
    GeometryRepair,
    PrepareReport,
    check_geometries,
    prepare_features,
)
from layers.ingest.sources import PlanFeatures
from layers.ingest.wkb import objects, wkb_array
from tests.specimens import BOWTIE, X0, Y0, star_polygons

TRICKY_TEXT = ['quote " and backslash \\', "line\nbreak\ttab", "生态红线 🌿", "", None, "{\"json\": [1]}", "\u2028"]


def tricky_frame(n: int) -> gpd.GeoDataFrame:
    """Polygons, a polygon with a hole and multipolygons, with awkward attribute values."""
    geoms = list(star_polygons(n, seed=4))
    hole = shapely.Polygon(shapely.box(X0, Y0 - 500, X0 + 100, Y0 - 400).exterior.coords,
                           [shapely.box(X0 + 40, Y0 - 460, X0 + 60, Y0 - 440).exterior.coords])
    multi = shapely.MultiPolygon([shapely.box(X0 - 500, Y0, X0 - 450, Y0 + 50),
                                  shapely.box(X0 - 400, Y0, X0 - 350, Y0 + 50)])
    geoms[0], geoms[1] = hole, multi
    rng = np.random.default_rng(7)
    return gpd.GeoDataFrame({
        "fid": np.arange(1000, 1000 + n) * 3,  # not 1..n: ids come from the file
        "redline_type": ["karst", "biodiversity"] * (n // 2) + ["karst"] * (n % 2),
        "name": [TRICKY_TEXT[i % len(TRICKY_TEXT)] for i in range(n)],
        "ratio": rng.uniform(-1e6, 1e6, n).round(6),
        "count": rng.integers(-2**40, 2**40, n),
        "flag": rng.integers(0, 2, n).astype(bool),
    }, geometry=geoms, crs=4548)


def stored_rows(engine, version_id: int) -> dict[int, tuple[dict, bytes, int]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT fid, props::text, ST_AsBinary(geom), ST_SRID(geom) FROM feature WHERE version_id = :v"
        ), {"v": version_id}).all()
    return {fid: (json.loads(props), bytes(wkb), srid) for fid, props, wkb, srid in rows}


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few rows, so that a small frame crosses many chunk boundaries."""
    monkeypatch.setattr(write, "FIRST_CHUNK_ROWS", 3)
    monkeypatch.setattr(write, "CHUNK_ROWS", 7)


@pytest.fixture(params=[1, 2], ids=["one stream", "two streams"])
def streams(request, monkeypatch):
    """The test twice: layers written as one COPY stream, and as two parts of a few rows each."""
    monkeypatch.setattr(write, "ROWS_PER_STREAM", 10**9 if request.param == 1 else 20)
    return request.param


def test_rows_round_trip_across_chunks(empty_store, settings, small_chunks, streams):
    frame = tricky_frame(101)
    minor = load_catalogue().minor("2301")
    report = load_frame(empty_store, settings, frame, minor=minor, source_name="tricky", checksum="x")
    assert len(version_parts(empty_store, report.version_id)) == (0 if streams == 1 else 2)
    stored = stored_rows(empty_store, report.version_id)
    assert sorted(stored) == sorted(frame["fid"].tolist())
    for row in frame.itertuples(index=False):
        props, wkb, srid = stored[row.fid]
        assert srid == settings.storage.storage_srid
        assert shapely.from_wkb(wkb).equals_exact(row.geometry, tolerance=0)
        assert shapely.get_type_id(shapely.from_wkb(wkb)) == shapely.get_type_id(row.geometry)
        assert props["redline_type"] == row.redline_type
        assert props["name"] == (None if pd.isna(row.name) else row.name)
        assert props["count"] == row.count and props["flag"] == row.flag
        assert math.isclose(props["ratio"], row.ratio, rel_tol=1e-14)


def test_encoder_failure_rolls_back_everything(empty_store, settings, small_chunks, streams, monkeypatch):
    minor = load_catalogue().minor("2301")
    first = load_frame(empty_store, settings, tricky_frame(10), minor=minor, source_name="a", checksum="a")
    calls = {"n": 0}
    real = write.copy_rows

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 4:  # a chunk in the middle of the stream
            raise InvalidInput("boom in chunk 4")
        return real(*args)

    monkeypatch.setattr(write, "copy_rows", failing)
    with pytest.raises(InvalidInput, match="boom"):
        load_frame(empty_store, settings, tricky_frame(60), minor=minor, source_name="b", checksum="b")
    with empty_store.connect() as conn:
        assert conn.execute(sa.text("SELECT array_agg(id) FROM layer_version")).scalar_one() == [first.version_id]
        assert conn.execute(sa.text("SELECT count(*) FROM feature")).scalar_one() == 10
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'feature_v%' AND relkind = 'r'")).scalar_one() == 1


def test_copy_rows_match_the_copy_binary_layout():
    geoms = np.array([shapely.box(0, 0, 1, 1), shapely.Point(3, 4)])
    wkb = shapely.to_wkb(geoms, byte_order=1).tolist()
    data = copy_rows(42, np.array([7, 2**40]), pd.DataFrame({"a": [1, None]}, dtype="Int64"),
                     wkb_array(geoms)).to_pybytes()
    # Parsed back by hand, field by field, as PostgreSQL's binary COPY reads it.
    pos, rows = 0, []
    while pos < len(data):
        (fields,) = np.frombuffer(data, ">i2", 1, pos)
        pos += 2
        values = []
        for _ in range(fields):
            (size,) = np.frombuffer(data, ">i4", 1, pos)
            values.append(data[pos + 4:pos + 4 + size])
            pos += 4 + size
        rows.append(values)
    assert [int.from_bytes(r[0], "big") for r in rows] == [42, 42]
    assert [int.from_bytes(r[1], "big") for r in rows] == [7, 2**40]
    assert [r[2] for r in rows] == [b'\x01{"a":1}', b'\x01{"a":null}']
    assert [r[3] for r in rows] == wkb


def test_z_is_dropped():
    minor = load_catalogue().minor("2301")
    flat = star_polygons(5)
    raised = shapely.force_3d(flat, 9.0)
    for geometry in (raised, pa.array(shapely.to_wkb(raised), pa.large_binary())):  # objects, as from a file
        got = objects(check_geometries(geometry, minor=minor, fids=np.arange(1, 6)))
        assert not shapely.has_z(got).any()
        assert all(g.equals_exact(f, tolerance=0) for g, f in zip(got, flat, strict=True))


def prepare(frame: gpd.GeoDataFrame, minor, report: PrepareReport):
    return prepare_features(PlanFeatures.from_frame(frame), minor=minor, srid=4548, crs_override=None, report=report)


def write_prepared(engine, frame: gpd.GeoDataFrame, streams: int | None = None) -> tuple[int, PrepareReport]:
    """The writer on its own: cheap checks here, validity and repair beside the COPY."""
    minor = load_catalogue().minor("2301")
    report = PrepareReport()
    fids, wkb, attributes = prepare(frame, minor, report)
    new = write.NewVersion(layer_code="2301", source_name="t", source_checksum="t", source_crs="EPSG:4548",
                           srid=4548, valid_from=None, report={"repaired": report.repaired}, coverage_wkb=None)
    repair = GeometryRepair(minor=minor, report=report)
    version_id, _ = write.write_version(engine, new, fids=fids, attributes=attributes, wkb=wkb,
                                        repair=repair, streams=streams)
    return version_id, report


def test_validity_beside_the_copy_repairs_and_reports_in_order(empty_store, small_chunks, streams):
    frame = tricky_frame(60)
    bowtie_rows = [4, 5, 33, 59]  # in the first chunk, twice in the second, and in the last
    for i in bowtie_rows:
        frame.loc[i, "geometry"] = shapely.affinity.translate(BOWTIE, X0 + 10 * i, Y0 - 1000)
    version_id, report = write_prepared(empty_store, frame)
    expected_fids = frame["fid"].to_numpy()[bowtie_rows].tolist()
    assert report.repaired == 4 and [r["fid"] for r in report.repairs] == expected_fids
    assert all("Self-intersection" in r["reason"] for r in report.repairs)
    stored = stored_rows(empty_store, version_id)
    for i in bowtie_rows:
        geom = shapely.from_wkb(stored[int(frame["fid"].iloc[i])][1])
        assert geom.is_valid and geom.area == pytest.approx(50.0)  # two triangles of 25 m²
    with empty_store.connect() as conn:
        count, doc = conn.execute(sa.text("SELECT repaired_count, report FROM layer_version WHERE id = :v"),
                                  {"v": version_id}).one()
    assert count == 4 and [r["fid"] for r in doc["repairs"]] == expected_fids


def test_unrepairable_geometry_beside_the_copy_rolls_back(empty_store, small_chunks, streams, monkeypatch):
    frame = tricky_frame(40)
    frame.loc[30, "geometry"] = shapely.affinity.translate(BOWTIE, X0, Y0 - 1000)
    monkeypatch.setattr("layers.ingest.prepare.shapely.make_valid", lambda g: shapely.buffer(g, -1e9))
    with pytest.raises(InvalidInput, match=f"could not be repaired \\(fid {frame['fid'].iloc[30]}\\)"):
        write_prepared(empty_store, frame)
    with empty_store.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM layer_version")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'feature_v%'")).scalar_one() == 0


def test_repair_beside_the_copy_updates_the_extent(empty_store):
    # make_valid drops this polygon's zero-width spike, which reaches far beyond every other
    # feature: the version's extent (and its default coverage) must shrink with it.
    frame = tricky_frame(10)
    tip = Y0 + 50_000
    spike = shapely.Polygon([(X0, Y0 - 900), (X0 + 10, Y0 - 900), (X0 + 10, Y0 - 890), (X0 + 5, Y0 - 890),
                             (X0 + 5, tip), (X0 + 5, Y0 - 890), (X0, Y0 - 890), (X0, Y0 - 900)])
    assert not spike.is_valid and shapely.total_bounds(frame.geometry.values)[3] < tip
    frame.loc[3, "geometry"] = spike
    version_id, report = write_prepared(empty_store, frame)
    assert report.repaired == 1
    with empty_store.connect() as conn:
        extent, coverage, stored = conn.execute(sa.text(
            "SELECT ST_AsBinary(extent), ST_AsBinary(coverage),"
            " (SELECT ST_AsBinary(ST_Envelope(ST_Extent(geom)::geometry)) FROM feature WHERE version_id = :v)"
            " FROM layer_version WHERE id = :v"), {"v": version_id}).one()
    extent = shapely.from_wkb(bytes(extent))
    assert extent.equals(shapely.from_wkb(bytes(stored)))
    assert extent.bounds[3] < tip
    assert shapely.from_wkb(bytes(coverage)).equals(extent)


def version_parts(engine, version_id: int) -> list[tuple[str, str, int, int, int]]:
    """(name, partition bound, rows, lowest fid, highest fid) of each table under a version's table."""
    with engine.connect() as conn:
        names = conn.execute(sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t) ORDER BY 1"),
            {"t": f"feature_v{version_id}"}).all()
        return [(name, bound, *conn.execute(sa.text(f"SELECT count(*), min(fid), max(fid) FROM {name}")).one())
                for name, bound in names]


def test_two_streams_split_the_version_by_fid_range(empty_store, small_chunks):
    frame = tricky_frame(101).sample(frac=1, random_state=5)  # fids in no order
    minor = load_catalogue().minor("2301")
    report = PrepareReport()
    fids, wkb, attributes = prepare(frame, minor, report)
    geoms = objects(wkb)
    new = write.NewVersion(layer_code="2301", source_name="t", source_checksum="t", source_crs="EPSG:4548",
                           srid=4548, valid_from=None, report={}, coverage_wkb=None)
    version_id, _ = write.write_version(empty_store, new, fids=fids, attributes=attributes, wkb=wkb, streams=2)
    ordered = np.sort(fids)
    split = int(ordered[50])
    assert version_parts(empty_store, version_id) == [
        (f"feature_v{version_id}_p0", f"FOR VALUES FROM (MINVALUE) TO ('{split}')", 50, ordered[0], ordered[49]),
        (f"feature_v{version_id}_p1", f"FOR VALUES FROM ('{split}') TO (MAXVALUE)", 51, split, ordered[-1]),
    ]
    stored = stored_rows(empty_store, version_id)
    assert sorted(stored) == sorted(fids.tolist())
    for fid, geom in zip(fids.tolist(), geoms, strict=True):
        assert shapely.from_wkb(stored[fid][1]).equals_exact(geom, tolerance=0)
    with empty_store.connect() as conn:
        indexed = conn.execute(sa.text(
            "SELECT count(*) FROM pg_index WHERE indrelid::regclass::text LIKE :t"),
            {"t": f"feature_v{version_id}_p_"}).scalar_one()
        # A spatial query through ``feature`` finds what shapely finds, from both parts.
        window = shapely.box(X0 - 2000, Y0 - 2000, X0 + 3000, Y0 + 3000)
        found = conn.execute(sa.text(
            "SELECT array_agg(fid ORDER BY fid) FROM feature WHERE version_id = :v"
            " AND ST_Intersects(geom, ST_GeomFromText(:w, 4548))"), {"v": version_id, "w": window.wkt}).scalar_one()
    assert indexed == 2
    expected = sorted(fids[shapely.intersects(geoms, window)].tolist())
    assert found == expected and any(f < split for f in expected) and any(f >= split for f in expected)


def test_a_failing_helper_stream_rolls_back_every_part(empty_store, small_chunks, monkeypatch):
    real = write._fill_part

    def failing(cur, version_id, part, *args):
        if part.table.endswith("_p1"):
            raise InvalidInput("boom in the helper stream")
        return real(cur, version_id, part, *args)

    monkeypatch.setattr(write, "_fill_part", failing)
    with pytest.raises(InvalidInput, match="boom in the helper"):
        write_prepared(empty_store, tricky_frame(60), streams=2)
    with empty_store.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM layer_version")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'feature_v%'")).scalar_one() == 0


def test_abandoned_parts_are_dropped_by_the_next_load(empty_store, engine):
    # What a load killed between its helper's commit and its own leaves: a committed part that
    # nothing attached. One whose load still runs (its version's lock held) must stay.
    with engine.begin() as conn:
        for name in ("feature_v900001_p1", "feature_v900002_p1"):
            conn.execute(sa.text(f"CREATE TABLE {name} (LIKE feature INCLUDING DEFAULTS)"))
            conn.execute(sa.text(f"INSERT INTO {name} SELECT 1, 1, '{{}}', ST_GeomFromText('POINT(0 0)', 4548)"))
    with engine.connect() as running:
        running.execute(sa.text("SELECT pg_advisory_lock(:space, 900002)"), {"space": write.PART_LOCK_SPACE})
        try:
            write_prepared(empty_store, tricky_frame(5))
            with engine.connect() as conn:
                left = conn.execute(sa.text(
                    "SELECT array_agg(relname ORDER BY relname) FROM pg_class WHERE relname ~ '^feature_v9000'"
                    " AND relkind = 'r'")).scalar_one()
        finally:
            running.execute(sa.text("SELECT pg_advisory_unlock(:space, 900002)"), {"space": write.PART_LOCK_SPACE})
            running.execute(sa.text("DROP TABLE IF EXISTS feature_v900001_p1, feature_v900002_p1"))
            running.commit()
    assert left == ["feature_v900002_p1"]


def mixed_geometries() -> np.ndarray:
    """Every kind the layers take, single and multi-part, a polygon with holes, in shuffled order."""
    stars = list(star_polygons(20, seed=5))
    holed = shapely.Polygon(shapely.box(0, 0, 10, 10).exterior.coords,
                            [shapely.box(1, 1, 2, 2).exterior.coords, shapely.box(5, 5, 6, 7).exterior.coords])
    geoms = stars + [
        holed, shapely.MultiPolygon([stars[0], holed]),
        shapely.Point(1.5, -2.25), shapely.MultiPoint([(0, 0), (1e7, -1e-9)]),
        shapely.LineString([(0, 0), (1, 1), (2, 0.5)]),
        shapely.MultiLineString([[(0, 0), (1, 1)], [(3, 3), (4, 5), (6, 6)]]),
        shapely.force_3d(shapely.box(0, 0, 1, 1), 7.0),  # Z is not stored
    ]
    out = np.array(geoms, dtype=object)
    np.random.default_rng(11).shuffle(out)
    return out


def test_wkb_array_equals_shapely_wkb_for_every_kind():
    geoms = mixed_geometries()
    expected = shapely.to_wkb(geoms, byte_order=1, output_dimension=2).tolist()
    assert wkb_array(geoms).to_pylist() == expected
    for kind in (0, 1, 3):  # and each fast path on its own
        same = geoms[shapely.get_type_id(geoms) == kind]
        assert wkb_array(same).to_pylist() == shapely.to_wkb(same, byte_order=1, output_dimension=2).tolist()


@given(st.lists(st.one_of(st.none(), st.text(), st.floats(allow_nan=True), st.integers(-2**62, 2**62),
                          st.booleans()), min_size=1, max_size=30))
def test_json_values_read_back_as_the_values(values):
    for series in (pd.Series(values, dtype=object), *typed_columns(values)):
        decoded = [json.loads(v) for v in json_values(series).to_pylist()]
        expected = [None if pd.isna(v) or (isinstance(v, float) and math.isinf(v)) else v
                    for v in series.astype(object)]
        assert decoded == expected


def typed_columns(values: list) -> list[pd.Series]:
    """The same values as pandas' typed columns, where they all fit one type."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in present):
        half = len(values) // 2  # and kept by pandas in Arrow, in two chunks, as GeoParquet reads give
        chunked = pa.chunked_array([pa.array(values[:half], pa.large_string()),
                                    pa.array(values[half:], pa.large_string())])
        return [pd.Series(values, dtype="string"), pd.Series(pd.arrays.ArrowExtensionArray(chunked))]
    if all(isinstance(v, bool) for v in present):
        return [pd.Series(values, dtype="boolean")]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return [pd.Series(values, dtype="Int64")]
    if all(isinstance(v, float) for v in present):
        return [pd.Series(values, dtype="float64")]
    return []
