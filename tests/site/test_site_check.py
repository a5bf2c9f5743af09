"""Planted sites of the synthetic city give their known answers, computed independently with shapely."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
import sqlalchemy as sa

from layers.catalogue import load_catalogue
from spatial.site import check_site, parse_request
from spatial.site.records import read_check
from tests.site.city import CITY, FEATURES, SITES, dem_values, raster_grid, slope_values
from tests.specimens import X0, Y0

CONSTRAINING = sorted(m.code for m in load_catalogue().minors.values() if m.constrains)


def body(geom: shapely.Geometry, **options) -> dict:
    return {"geometry": shapely.geometry.mapping(geom), "crs": "EPSG:4548", **options}


def run(engine, geom: shapely.Geometry, *, save: bool = False, **options) -> dict:
    req = parse_request(body(geom, **options), storage_srid=4548, max_vertices=10_000)
    with engine.connect() as conn:
        return check_site(conn, req, save=save).result


def layers(result: dict) -> dict[str, dict]:
    return {e["layer"]: e for e in result["constraints"]}


def test_every_constraining_layer_is_reported(city, engine):
    result = run(engine, SITES["clear"])
    assert sorted(layers(result)) == CONSTRAINING


def test_clear_site_is_allowed_and_complete(city, engine):
    result = run(engine, SITES["clear"])
    statuses = {code: e["status"] for code, e in layers(result).items()}
    assert statuses.pop("2202") == "hit"  # inside the urban development boundary: allowed
    assert set(statuses.values()) == {"clear"}, statuses
    assert result["verdict"]["level"] == "allowed" and result["verdict"]["complete"] is True
    assert [r["layer"] for r in result["verdict"]["reasons"]] == ["2202"]


def test_site_outside_all_coverage_is_unknown_not_clear(city, engine):
    result = run(engine, SITES["outside"])
    assert {e["status"] for e in result["constraints"]} == {"unknown"}
    assert result["verdict"]["complete"] is False
    assert result["verdict"]["level"] == "conditional"  # never "allowed" on what we do not know
    assert sorted(result["verdict"]["unknown_layers"]) == CONSTRAINING
    assert result["planning_conditions"]["status"] == "unknown"
    assert result["terrain"]["elevation"]["status"] == "unknown"


def test_redline_site_is_prohibited_with_the_overlap_shapely_gives(city, engine):
    site = SITES["redline"]
    result = run(engine, site)
    red = layers(result)["2301"]
    expected = shapely.intersection(site, FEATURES["2301"][0][0]).area
    assert red["status"] == "hit" and red["control_level"] == "prohibited"
    assert red["overlap_m2"] == pytest.approx(expected, abs=1e-3) and expected == pytest.approx(2_500)
    assert red["share"] == pytest.approx(expected / site.area, abs=1e-6)
    assert red["features"][0]["fid"] == 1 and red["features"][0]["attributes"]["redline_type"] == "biodiversity"
    assert red["rule"]["text_zh"].startswith("生态保护红线")
    top = result["verdict"]["reasons"][0]
    assert result["verdict"]["level"] == "prohibited" and (top["layer"], top["level"]) == ("2301", "prohibited")


def test_nested_zones_count_each_square_metre_once_at_its_strictest_level(city, engine):
    site = SITES["water"]
    entry = layers(run(engine, site))["2302"]
    grade2, grade1 = (g for g, _ in FEATURES["2302"])
    inner = shapely.intersection(site, grade1).area
    total = shapely.intersection(site, shapely.union(grade1, grade2)).area
    parts = {p["level"]: p["area_m2"] for p in entry["parts"]}
    assert parts == pytest.approx({"prohibited": inner, "restricted": total - inner}, abs=1e-3)
    assert entry["overlap_m2"] == pytest.approx(total, abs=1e-3) and entry["control_level"] == "prohibited"
    assert sorted(f["level"] for f in entry["features"]) == ["prohibited", "restricted"]


def test_setback_strip_of_a_blue_line(city, engine):
    site = SITES["blue_setback"]
    blue = FEATURES["2205"][0][0]
    entry = layers(run(engine, site))["2205"]
    strip = shapely.intersection(shapely.buffer(blue, 30), site).area
    assert entry["status"] == "hit" and entry["overlap_m2"] == 0
    assert entry["parts"] == [pytest.approx({"level": "restricted", "relation": "setback", "area_m2": strip,
                                             "share": strip / site.area, "text_zh": entry["parts"][0]["text_zh"],
                                             "text_en": entry["parts"][0]["text_en"]}, abs=1e-3)]
    assert "30" in entry["parts"][0]["text_zh"] and entry["features"][0]["distance_m"] == pytest.approx(10)


def test_outside_the_development_boundary_is_restricted(city, engine):
    site = SITES["assessed"]
    entry = layers(run(engine, site))["2202"]
    assert entry["overlap_m2"] == 0 and entry["status"] == "hit"
    assert entry["parts"][0]["relation"] == "outside" and entry["parts"][0]["level"] == "restricted"
    assert entry["parts"][0]["area_m2"] == pytest.approx(site.area)


def test_buffer_widens_the_checked_area(city, engine):
    site = SITES["redline"]
    plain, wide = run(engine, site), run(engine, site, buffer_m=20)
    checked = shapely.buffer(site, 20, quad_segs=8)
    assert wide["site"]["checked_area_m2"] == pytest.approx(checked.area, abs=1e-3)
    red = layers(wide)["2301"]
    assert red["overlap_m2"] == pytest.approx(shapely.intersection(checked, FEATURES["2301"][0][0]).area, abs=1e-3)
    assert red["overlap_m2"] > layers(plain)["2301"]["overlap_m2"]


def test_planning_conditions_bind_the_strictest_value(city, engine):
    site = SITES["straddle"]
    pc = run(engine, site)["planning_conditions"]
    (p1, a1), (p2, a2) = FEATURES["2203"]
    assert pc["status"] == "complete"
    shares = {p["parcel_id"]: p["share"] for p in pc["parcels"]}
    assert shares == pytest.approx({"P1": shapely.intersection(site, p1).area / site.area,
                                    "P2": shapely.intersection(site, p2).area / site.area}, abs=1e-6)
    binding = {k: v["value"] for k, v in pc["binding"].items()}
    assert binding == {"land_use": None, "far_max": 2.5, "far_min": 1.0, "density_max": 0.3, "height_max_m": 54,
                       "green_ratio_min": 0.35, "parking_per_100m2": 1.0, "setback_road_m": 15}
    assert pc["binding"]["setback_road_m"]["parcel_id"] == "P2"
    assert "1 parcel(s) do not set it" in pc["binding"]["far_min"]["reason"]
    assert [u["value"] for u in pc["binding"]["land_use"]["uses"]] == ["R2", "B1"] or \
        [u["value"] for u in pc["binding"]["land_use"]["uses"]] == ["B1", "R2"]


def test_setbacks_report_the_nearest_line(city, engine):
    site = SITES["straddle"]
    setbacks = {s["layer"]: s for s in run(engine, site)["planning_conditions"]["setbacks"]}
    hv = FEATURES["2502"][0][0]
    assert setbacks["2502"]["status"] == "none_nearby"  # 100 m away, beyond the 50 m look-around
    near = shapely.box(X0 + 850, Y0 + 880, X0 + 950, Y0 + 940)
    setbacks = {s["layer"]: s for s in run(engine, near)["planning_conditions"]["setbacks"]}
    assert setbacks["2502"]["nearest_m"] == pytest.approx(shapely.distance(near, hv))
    assert setbacks["2502"]["status"] == "beyond_setback" and setbacks["2205"]["status"] == "none_nearby"


def test_site_in_no_parcel(city, engine):
    pc = run(engine, SITES["clear"])["planning_conditions"]
    assert pc["status"] == "none" and pc["parcels"] == [] and pc["between_parcels_share"] == pytest.approx(1)


def independent_raster_stats(site: shapely.Geometry, values: np.ndarray) -> tuple[float, float, float, float]:
    """Exact coverage by intersecting every 10 m cell with the site: (area with data, mean, min, max)."""
    xs, ys = raster_grid()
    cells = shapely.box(xs[None, :] - 5, ys[:, None] - 5, xs[None, :] + 5, ys[:, None] + 5)
    area = shapely.area(shapely.intersection(cells, site))
    valid = (area > 0) & (values != -9999)
    w, v = area[valid], values[valid].astype(np.float32).astype(float)
    return float(w.sum()), float((w * v).sum() / w.sum()), float(v.min()), float(v.max())


@pytest.mark.parametrize("name", ["redline", "steep", "straddle"])
def test_terrain_uses_exact_cell_coverage(city, engine, name):
    site = shapely.affinity.rotate(SITES[name], 17, origin="centroid")  # cells cut at odd angles
    terrain = run(engine, site)["terrain"]
    area, mean, low, high = independent_raster_stats(site, dem_values())
    elev = terrain["elevation"]["statistics"]
    assert elev["area_m2"] == pytest.approx(area, abs=0.01) and elev["nodata_m2"] == pytest.approx(0, abs=0.01)
    assert (elev["mean"], elev["min"], elev["max"]) == pytest.approx((mean, low, high), abs=1e-3)


def test_steep_and_nodata_slopes(city, engine):
    steep = run(engine, SITES["steep"])
    slope = layers(steep)["1103"]
    assert slope["status"] == "hit" and slope["control_level"] == "conditional"
    assert slope["share"] == pytest.approx(1.0)
    histogram = steep["terrain"]["slope"]["statistics"]["histogram"]
    assert histogram[-1]["from"] == 25 and histogram[-1]["share"] == pytest.approx(1.0)
    gentle = layers(run(engine, SITES["clear"]))["1103"]
    assert gentle["status"] == "clear" and gentle["overlap_m2"] == 0
    part = layers(run(engine, SITES["nodata"]))["1103"]
    assert part["status"] == "unknown" and part["coverage_share"] == pytest.approx(0.5)
    slope_raster = slope_values()
    assert slope_raster.max() == 30.0  # the planted steep block exists


def test_as_of_reads_the_version_in_force(city, engine):
    site = SITES["wetland_v1"]
    now = layers(run(engine, site))["1302"]
    then = layers(run(engine, site, as_of="2022-06-01"))["1302"]
    before = layers(run(engine, site, as_of="2019-01-01"))["1302"]
    assert (now["status"], now["version"]) == ("clear", 2)
    assert (then["status"], then["version"], then["overlap_m2"]) == ("hit", 1, pytest.approx(10_000))
    assert before["status"] == "unknown" and "as of 2019-01-01" in before["reason"]


def test_check_is_stored_with_input_versions_and_result(city, engine):
    site = SITES["redline"]
    result = run(engine, site, save=True)
    with engine.connect() as conn:
        stored = read_check(conn, result["check_id"])
        row = conn.execute(sa.text("SELECT verdict, complete, versions, input_crs FROM site_check WHERE id = :id"),
                           {"id": result["check_id"]}).one()
    assert stored["site"].equals(site)
    assert stored["request"]["geometry"]["type"] == "Polygon"
    assert row[0] == "prohibited" and row[1] is True and row[3] == "EPSG:4548"
    assert row[2]["2301"]["version"] == city.versions["2301"]
    expected = json.loads(json.dumps({k: v for k, v in result.items() if k not in ("check_id", "timings_ms")}))
    assert {k: v for k, v in stored["result"].items() if k != "timings_ms"} == expected


def test_blueprint_designation(city, engine):
    site = shapely.box(X0 + 950, Y0 + 1800, X0 + 1050, Y0 + 1900)
    bp = run(engine, site)["blueprint"]
    assert bp["status"] == "known"
    assert {c["unified_class"]: c["share"] for c in bp["classes"]} == pytest.approx({"construction": 0.5,
                                                                                   "ecological": 0.5})


def test_site_crossing_the_coverage_edge_is_unknown_unless_hit(city, engine):
    across = shapely.box(X0 + 1990, Y0 + 1000, X0 + 2090, Y0 + 1100)
    entries = layers(run(engine, across))
    assert entries["2301"]["status"] == "unknown" and entries["2301"]["coverage_share"] == pytest.approx(0.1)
    assert CITY.contains(shapely.box(X0 + 1990, Y0 + 1000, X0 + 2000, Y0 + 1100))


def test_big_features_are_read_from_their_pieces(city, engine):
    from tests.site.city import PURPLE, RESERVE

    with engine.connect() as conn:
        pieces = dict(conn.execute(sa.text(
            "SELECT l.code, count(*) FROM site_piece p JOIN layer_version v ON v.id = p.version_id "
            "JOIN layer l ON l.code = v.layer_code GROUP BY l.code")).all())
    assert pieces["2303"] > 1 and pieces["2206"] > 1 and pieces["3201"] > 1
    site = SITES["reserve_edge"]
    reserve = layers(run(engine, site))["2303"]
    expected = shapely.intersection(site, RESERVE).area
    assert 0 < expected < site.area
    assert reserve["overlap_m2"] == pytest.approx(expected, abs=1e-3) and reserve["control_level"] == "prohibited"
    assert [f["fid"] for f in reserve["features"]] == [1]
    site = SITES["purple_setback"]
    purple = layers(run(engine, site))["2206"]
    strip = shapely.intersection(shapely.buffer(PURPLE, 20, quad_segs=8), site).area
    assert purple["overlap_m2"] == 0 and purple["parts"][0]["relation"] == "setback"
    assert purple["parts"][0]["area_m2"] == pytest.approx(strip, abs=1e-2)
    assert purple["features"][0]["distance_m"] == pytest.approx(shapely.distance(PURPLE, site), abs=1e-6)


def test_a_new_version_is_seen_by_the_next_check(city, engine):
    from tests.site.city import FILLER, _load, b, filler_attributes

    site = b(1800, 1200, 1850, 1250)
    assert layers(run(engine, site))["2404"]["status"] == "clear"
    minor = load_catalogue().minor("2404")
    _load(city, minor, [(FILLER, filler_attributes(minor)), (b(1790, 1190, 1860, 1260), {"name": "新湿地公园"})])
    after = layers(run(engine, site))["2404"]
    assert (after["status"], after["version"], after["overlap_m2"]) == ("hit", city.versions["2404"],
                                                                        pytest.approx(site.area))


def test_an_unreadable_raster_is_unknown_not_an_error(city, engine, settings, tmp_path):
    import shutil

    import rasterio
    from rasterio.transform import from_origin

    from layers.ingest.pipeline import load_raster

    source = tmp_path / "slope.tif"
    with rasterio.open(source, "w", driver="GTiff", width=20, height=20, count=1, dtype="float32", crs="EPSG:4548",
                       transform=from_origin(X0, Y0 + 2000, 100, 100), nodata=-9999.0) as dst:
        dst.write(np.full((20, 20), 7.0, dtype="float32"), 1)
    minor = load_catalogue().minor("1103")
    path_of = sa.text("SELECT raster_path FROM layer_version WHERE id = :v")
    with engine.connect() as conn:
        current = conn.execute(sa.text("SELECT current_version_id FROM layer WHERE code = '1103'")).scalar_one()
        original = conn.execute(path_of, {"v": current}).scalar_one()
    report = load_raster(engine, settings, path=source, minor=minor, valid_from="2099-01-01")
    with engine.connect() as conn:
        stored = conn.execute(path_of, {"v": report.version_id}).scalar_one()
    shutil.move(stored, tmp_path / "moved.tif")
    try:
        result = run(engine, SITES["steep"], as_of="2099-06-01")
        slope = layers(result)["1103"]
        assert slope["status"] == "unknown" and "cannot be read" in slope["reason"]
        assert result["terrain"]["slope"]["status"] == "unknown"
    finally:
        shutil.move(tmp_path / "moved.tif", stored)
        again = shutil.copy(original, tmp_path / "again.tif")  # load_raster refuses its own stored file
        load_raster(engine, settings, path=again, minor=minor, valid_from="2020-01-01")  # current again


def test_contradicting_parcel_limits_are_named():
    from spatial.site.conditions import _binding, contradictions
    from spatial.site.rules import load_site_rules

    rules = load_site_rules()
    parcels = [{"parcel_id": "A", "share": 0.6, "attributes": {"land_use": "R2", "far_max": 2.6, "far_min": 1.0}},
               {"parcel_id": "B", "share": 0.4, "attributes": {"land_use": "R2", "far_max": 5.0, "far_min": 3.1}}]
    binding = _binding(parcels, rules)
    assert (binding["far_max"]["value"], binding["far_min"]["value"]) == (2.6, 3.1)
    (found,) = contradictions(binding, rules)
    assert (found["lower_value"], found["upper_value"]) == (3.1, 2.6)
    assert "parcel B" in found["reason"] and "parcel A" in found["reason"]
    parcels[1]["attributes"]["far_min"] = 2.0
    assert contradictions(_binding(parcels, rules), rules) == []


def test_straddle_site_has_consistent_limits(city, engine):
    assert run(engine, SITES["straddle"])["planning_conditions"]["contradictions"] == []
