"""Geometries as WKB on their way to storage: every numpy shortcut in ``layers.ingest.wkb`` must
answer what shapely answers (golden: ``shapely.to_wkb``, ``get_coordinates``, ``total_bounds``,
``transform``), and files must arrive with their own ids, CRS and columns."""

from __future__ import annotations

import json
import struct

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
import sqlalchemy as sa
from pyproj import Transformer

from layers.catalogue import load_catalogue
from layers.errors import InvalidInput
from layers.ingest import load_layer, wkb
from layers.ingest.prepare import check_geometries
from tests.specimens import X0, Y0, redline_frame, star_polygons


def mixed() -> np.ndarray:
    """One-ring polygons among everything else a file may hold, shuffled."""
    stars = list(star_polygons(12, seed=3))
    holed = shapely.Polygon(shapely.box(0, 0, 10, 10).exterior.coords, [shapely.box(1, 1, 2, 2).exterior.coords])
    geoms = np.array(stars + [
        holed, shapely.MultiPolygon([stars[0], stars[1]]), shapely.Point(X0, Y0),
        shapely.LineString([(X0, Y0), (X0 + 5, Y0 + 9)]), shapely.box(X0 - 9e3, Y0 - 1, X0 - 8e3, Y0 + 2e4),
    ], dtype=object)
    np.random.default_rng(4).shuffle(geoms)
    return geoms


def as_array(values) -> pa.LargeBinaryArray:
    return wkb.as_wkb_array(np.asarray(values, dtype=object))


OPEN_RING = struct.pack("<BIII", 1, 3, 1, 4) + np.array([[0, 0], [1, 0], [1, 1], [0, 1]], "<f8").tobytes()


def is_plain_ring(geom) -> bool:
    return (shapely.get_type_id(geom) == 3 and shapely.get_num_interior_rings(geom) == 0
            and not shapely.has_z(geom) and shapely.get_num_coordinates(geom) >= 4)


def test_plain_rings_are_found_from_the_heads_alone():
    geoms = mixed()
    little = shapely.to_wkb(geoms, byte_order=1)
    expected = [is_plain_ring(g) for g in geoms]
    assert wkb.plain_rings(as_array(little)).tolist() == expected
    # Big-endian, Z, empty, missing and truncated elements are never read by numpy.
    odd = [shapely.to_wkb(geoms[0], byte_order=0), shapely.to_wkb(shapely.force_3d(geoms[0], 1.0), byte_order=1),
           shapely.to_wkb(shapely.Polygon(), byte_order=1), None, little[0][:20], b"", OPEN_RING]
    assert not wkb.plain_rings(as_array(odd)).any()


def test_ring_coordinates_are_shapelys():
    rings = star_polygons(300, seed=1, vertices=7)
    xy, counts = wkb.ring_coordinates(wkb.wkb_array(rings))
    np.testing.assert_array_equal(xy, shapely.get_coordinates(rings))
    np.testing.assert_array_equal(counts, shapely.get_num_coordinates(rings))


def test_ring_chunks_cover_the_positions_in_order(monkeypatch):
    rings = star_polygons(50, seed=2, vertices=5)
    monkeypatch.setattr(wkb, "RING_CHUNK", 3)
    where = np.array([0, 1, 2, 7, 9, 10, 30, 49])
    seen = []
    for positions, xy, counts in wkb.ring_chunks(wkb.wkb_array(rings), where):
        assert len(positions) <= 3
        np.testing.assert_array_equal(xy, shapely.get_coordinates(rings[positions]))
        np.testing.assert_array_equal(counts, shapely.get_num_coordinates(rings[positions]))
        seen += positions.tolist()
    assert seen == where.tolist()


def test_wkb_array_and_replace_keep_order():
    geoms = mixed()
    encoded = wkb.wkb_array(geoms)
    assert encoded.to_pylist() == shapely.to_wkb(geoms, byte_order=1, output_dimension=2).tolist()
    positions = np.array([1, 5, 6])
    swapped = wkb.replace(encoded, positions, wkb.wkb_array(geoms[positions][::-1]))
    expected = geoms.copy()
    expected[positions] = geoms[positions][::-1]
    assert swapped.to_pylist() == shapely.to_wkb(expected, byte_order=1, output_dimension=2).tolist()


def test_total_bounds_are_shapelys(monkeypatch):
    monkeypatch.setattr(wkb, "RING_CHUNK", 4)  # bounds gathered over several chunks
    geoms = mixed()
    assert wkb.total_bounds(wkb.wkb_array(geoms)) == tuple(shapely.total_bounds(geoms))


def test_transform_is_shapelys_through_pyproj(monkeypatch):
    monkeypatch.setattr(wkb, "RING_CHUNK", 5)
    geoms = mixed()
    to_4490 = Transformer.from_crs(4548, 4490, always_xy=True)
    got = wkb.objects(wkb.transform(wkb.wkb_array(geoms), to_4490.transform))
    expected = shapely.transform(geoms, lambda xy: np.column_stack(to_4490.transform(xy[:, 0], xy[:, 1])))
    assert all(g.equals_exact(e, tolerance=0) for g, e in zip(got, expected, strict=True))


def test_check_geometries_normalises_what_files_hold():
    minor = load_catalogue().minor("2301")
    stars = star_polygons(4, seed=6)
    given = [shapely.to_wkb(stars[0], byte_order=0),  # big-endian
             shapely.to_wkb(shapely.force_3d(stars[1], 5.0), byte_order=1),  # Z
             shapely.to_wkb(shapely.MultiPolygon([stars[2]]), byte_order=1, include_srid=False),
             shapely.to_wkb(shapely.set_srid(stars[3], 4548), byte_order=1, include_srid=True)]  # EWKB
    got = check_geometries(as_array(given), minor=minor, fids=np.arange(1, 5))
    expected = [stars[0], stars[1], shapely.MultiPolygon([stars[2]]), stars[3]]
    assert got.to_pylist() == shapely.to_wkb(expected, byte_order=1, output_dimension=2).tolist()


@pytest.mark.parametrize(("element", "message"), [
    (b"\x01\x03\x00\x00\x00\xff\xff", "unreadable geometries \\(fid 2\\)"),
    (OPEN_RING, "unreadable geometries \\(fid 2\\)"),  # a ring that does not end where it starts
    (None, "no geometry \\(fid 2\\)"),
    (shapely.to_wkb(shapely.Point(X0, Y0)), "takes polygon geometries but 1 features are Point \\(fid 2\\)"),
])
def test_check_geometries_names_bad_elements(element, message):
    minor = load_catalogue().minor("2301")
    given = as_array([shapely.to_wkb(star_polygons(1)[0]), element, shapely.to_wkb(star_polygons(1)[0])])
    with pytest.raises(InvalidInput, match=message):
        check_geometries(given, minor=minor, fids=np.array([1, 2, 3]))


# --- what files bring along ---------------------------------------------------------------------

def stored_fids(engine, version_id: int) -> list[int]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT fid FROM feature WHERE version_id = :v ORDER BY fid"),
                            {"v": version_id}).scalars().all()


def test_a_geopackages_own_feature_ids_are_kept(empty_store, settings, tmp_path):
    frame = redline_frame(4)
    frame["fid"] = [10, 20, 35, 36]  # the GeoPackage's primary key
    path = tmp_path / "ids.gpkg"
    frame.to_file(path)
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    assert stored_fids(empty_store, report.version_id) == [10, 20, 35, 36]
    assert "fid" not in report.extra_attributes


def test_geoparquet_without_a_crs_key_is_crs84_and_its_bbox_column_is_not_an_attribute(
        empty_store, settings, tmp_path):
    frame = redline_frame(3).to_crs(4326)
    path = tmp_path / "crs84.parquet"
    frame.to_parquet(path, write_covering_bbox=True)
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    del geo["columns"]["geometry"]["crs"]  # GeoParquet: no "crs" means OGC:CRS84
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"geo": json.dumps(geo).encode()}), path)
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    assert report.reprojected and "CRS84" in report.source_crs
    assert report.extra_attributes == []
    with empty_store.connect() as conn:
        area = conn.execute(sa.text("SELECT sum(ST_Area(geom)) FROM feature WHERE version_id = :v"),
                            {"v": report.version_id}).scalar_one()
    assert area == pytest.approx(redline_frame(3).geometry.area.sum(), rel=1e-6)


def test_geoparquet_with_native_geoarrow_encoding_is_read(empty_store, settings, tmp_path):
    frame = redline_frame(5)
    path = tmp_path / "native.parquet"
    frame.to_parquet(path, geometry_encoding="geoarrow")
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    assert report.features == 5
    with empty_store.connect() as conn:
        area = conn.execute(sa.text("SELECT sum(ST_Area(geom)) FROM feature WHERE version_id = :v"),
                            {"v": report.version_id}).scalar_one()
    assert area == pytest.approx(frame.geometry.area.sum(), rel=1e-9)


def test_a_frame_and_its_file_store_the_same_bytes(empty_store, settings, tmp_path):
    frame = gpd.GeoDataFrame(redline_frame(30))
    frame.loc[3, "geometry"] = shapely.MultiPolygon([frame.geometry[3], shapely.box(X0 - 900, Y0, X0 - 800, Y0 + 9)])
    path = tmp_path / "same.parquet"
    frame.to_parquet(path)
    report = load_layer(empty_store, settings, path=path, layer_code="2301")
    with empty_store.connect() as conn:
        stored = conn.execute(sa.text(
            "SELECT ST_AsBinary(geom, 'NDR') FROM feature WHERE version_id = :v ORDER BY fid"),
            {"v": report.version_id}).scalars().all()
    assert [bytes(b) for b in stored] == shapely.to_wkb(frame.geometry.values, byte_order=1).tolist()
