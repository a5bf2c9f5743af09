"""Exports of the register: GeoPackage in the storage CRS, GeoJSON in EPSG:4326, Excel with summaries."""

from __future__ import annotations

import json

import geopandas as gpd
import openpyxl
import pytest
import shapely
import sqlalchemy as sa

from layers.errors import InvalidInput
from spatial.conflicts.export import export_conflicts, write_frame
from spatial.conflicts.listing import Filters
from spatial.conflicts.run import run_conflicts


@pytest.fixture
def ran(city, empty_store, settings):
    result = run_conflicts(empty_store, settings)
    with empty_store.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*), sum(area_m2) FROM conflict")).one()
    return result, stored


def test_gpkg_keeps_storage_crs_and_areas(ran, empty_store, tmp_path):
    result, (count, area) = ran
    with empty_store.connect() as conn:
        assert export_conflicts(conn, tmp_path / "c.gpkg") == count
    back = gpd.read_file(tmp_path / "c.gpkg")
    assert back.crs.to_epsg() == 4548 and len(back) == count
    assert back.area.sum() == pytest.approx(area, rel=1e-9)
    assert back.area_m2.sum() == pytest.approx(area, rel=1e-12)
    row = back[back.rule == "CT03"].iloc[0]
    assert row.name_zh == "建设用地占用生态保护红线" and row.prevails == "b"
    assert "ydlb" in json.loads(row.a_attrs) and "redline_type" in json.loads(row.b_attrs)
    assert back[back.rule == "CT08"].b_fid.isna().all()


def test_geojson_is_wgs84_and_filters_apply(ran, empty_store, tmp_path):
    result, _ = ran
    with empty_store.connect() as conn:
        n = export_conflicts(conn, tmp_path / "c.geojson", filters=Filters(rule="CT04", district="370102"))
    doc = json.loads((tmp_path / "c.geojson").read_text(encoding="utf-8"))
    assert n == len(doc["features"]) > 0
    assert {f["properties"]["rule"] for f in doc["features"]} == {"CT04"}
    assert {f["properties"]["district"] for f in doc["features"]} == {"370102"}
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0][0]
    assert 116 < lon < 118 and 35 < lat < 37


def test_xlsx_has_conflicts_and_summaries(ran, empty_store, tmp_path):
    result, (count, area) = ran
    with empty_store.connect() as conn:
        export_conflicts(conn, tmp_path / "c.xlsx", filters=Filters(run_id=result.run_id))
    book = openpyxl.load_workbook(tmp_path / "c.xlsx", read_only=True)
    rows = list(book["conflicts"].values)
    header = rows[0]
    assert len(rows) - 1 == count and "centroid_lon" in header and "area_m2" in header
    by_type = list(book["by type 按类型"].values)
    totals = {r[0]: (r[-2], r[-1]) for r in by_type[1:]}
    for code, row in result.summary["by_type"].items():
        assert totals[code][0] == row["count"]
        assert totals[code][1] == pytest.approx(row["area_m2"], rel=1e-9)


def test_bad_format_is_refused(ran, empty_store, tmp_path):
    with pytest.raises(InvalidInput, match="export format"), empty_store.connect() as conn:
        export_conflicts(conn, tmp_path / "c.csv")


def test_a_failed_write_keeps_the_file_it_would_replace(tmp_path):
    target = tmp_path / "out.gpkg"
    target.write_bytes(b"the previous export")
    # GeoPackage field names are case-insensitive: GDAL refuses the second column.
    clash = gpd.GeoDataFrame({"a": [1], "A": [2]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4548)
    with pytest.raises(Exception, match="'A'"):
        write_frame(clash, target)
    assert target.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["out.gpkg"]  # no partial file left


def test_nested_attributes_go_to_excel_as_json(tmp_path):
    frame = gpd.GeoDataFrame({"zoning": [{"far": 2.5, "用途": "居住"}]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4548)
    write_frame(frame, tmp_path / "nested.xlsx")
    sheet = openpyxl.load_workbook(tmp_path / "nested.xlsx")["features"]
    assert json.loads(sheet["A2"].value) == {"far": 2.5, "用途": "居住"}


def test_an_output_that_cannot_be_made_is_refused_in_one_line(tmp_path):
    frame = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4548)
    for path, message in [(tmp_path / "none" / "x.gpkg", "folder .* does not exist"), (tmp_path, "it is a folder"),
                          ("/proc/x.gpkg", "cannot write /proc/x.gpkg"), ("/proc/x.xlsx", "cannot write /proc/x.xlsx"),
                          ("/proc/x.geojson", "cannot write /proc/x.geojson")]:
        with pytest.raises(InvalidInput, match=message) as info:
            write_frame(frame, path, fmt="gpkg" if path == tmp_path else None)
        assert "\n" not in str(info.value)
