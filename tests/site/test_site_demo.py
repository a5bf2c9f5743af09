"""The planted sites of the demo city (tests/conftest.py ``demo_city``) give their known answers.

Expectations come from the generator's manifest and the generated files, read independently.
Layers the demo does not generate have no version, so they are "unknown", never "clear".
"""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from layers.catalogue import load_catalogue
from spatial.assessment import assess_zone
from spatial.site import check_site, parse_request

CATALOGUE = load_catalogue()
CONSTRAINING = {m.code for m in CATALOGUE.minors.values() if m.constrains}


@pytest.fixture(scope="module")
def demo(demo_city):
    """The demo city and a check function for its planted sites (sent as the manifest's GeoJSON)."""

    def check(name: str) -> dict:
        body = {"geometry": demo_city.manifest["sites"][name]["geojson"]}
        req = parse_request(body, storage_srid=4548, max_vertices=10_000)
        with demo_city.engine.connect() as conn:
            return check_site(conn, req, save=False).result

    demo_city.check = check
    demo_city.missing = sorted(CONSTRAINING - set(demo_city.manifest["layers"]) - set(demo_city.manifest["rasters"]))
    return demo_city


def layers(result: dict) -> dict[str, dict]:
    return {e["layer"]: e for e in result["constraints"]}


def test_clear_site(demo):
    expected = demo.manifest["sites"]["clear"]
    result = demo.check("clear")
    # The demo generates every constraining layer, so the clear site is fully known and allowed.
    assert demo.missing == []
    entries = layers(result)
    for code, entry in entries.items():
        assert entry["status"] in ("clear", "hit") and entry["control_level"] in (None, "allowed"), code
    assert result["verdict"]["unknown_layers"] == []
    assert result["verdict"]["level"] == "allowed" and result["verdict"]["complete"] is True
    assert all(r["level"] == "allowed" or r["relation"] == "unknown" for r in result["verdict"]["reasons"])
    assert entries["2102"]["features"][0]["attributes"]["zone_type"] == expected["2102_zone_type"]
    assert entries["2304"]["features"][0]["attributes"]["zone_class"] == expected["2304_zone_class"]
    parcels = [(p["fid"], p["parcel_id"], p["share"]) for p in result["planning_conditions"]["parcels"]]
    assert parcels == [(p["fid"], p["parcel_id"], pytest.approx(p["share"], abs=1e-5)) for p in expected["parcels"]]


def test_redline_site(demo):
    expected = demo.manifest["sites"]["redline"]
    result = demo.check("redline")
    red = layers(result)["2301"]
    assert red["status"] == "hit" and red["control_level"] == "prohibited"
    assert [f["fid"] for f in red["features"]] == [expected["redline_fid"]]
    assert red["overlap_m2"] == pytest.approx(expected["area_m2"], abs=0.05)  # lon/lat round trip
    assert result["verdict"]["level"] == "prohibited"


def test_straddle_site_binds_the_strictest_parcel_values(demo):
    expected = demo.manifest["sites"]["straddle"]
    result = demo.check("straddle")
    pc = result["planning_conditions"]
    got = sorted((p["fid"], p["parcel_id"], p["share"]) for p in pc["parcels"])
    assert got == sorted((p["fid"], p["parcel_id"], pytest.approx(p["share"], abs=1e-5)) for p in expected["parcels"])
    frame = gpd.read_parquet(demo.out_dir / demo.manifest["layers"]["2203"]["file"])
    rows = frame.iloc[[p["fid"] - 1 for p in expected["parcels"]]]
    assert sorted(rows["parcel_id"]) == sorted(p["parcel_id"] for p in expected["parcels"])
    assert pc["binding"]["far_max"]["value"] == pytest.approx(rows["far_max"].min())
    assert pc["binding"]["height_max_m"]["value"] == pytest.approx(rows["height_max_m"].min())
    assert pc["binding"]["green_ratio_min"]["value"] == pytest.approx(rows["green_ratio_min"].max())
    assert pc["binding"]["density_max"]["value"] == pytest.approx(rows["density_max"].min())
    assert pc["binding"]["land_use"]["value"] is None  # R2 and B1
    assert bool(pc["contradictions"]) == bool(rows["far_min"].max() > rows["far_max"].min())


def test_assessed_site_is_covered_after_the_zone_is_assessed(demo):
    expected = demo.manifest["sites"]["assessed"]
    before = demo.check("assessed")
    assert {z["zone_id"]: z["contains_site"] for z in before["zones"]} == {expected["zone_id"]: True}
    run = assess_zone(demo.engine, demo.settings, expected["zone_id"])
    usable = {r["type"] for r in run["results"] if r["result"] in ("pass", "conditional")}
    after = demo.check("assessed")["assessments"]
    assert usable and {c["type"] for c in after["covered"]} == usable
    assert all(c["zone_id"] == expected["zone_id"] for c in after["covered"])


def test_site_outside_the_city_is_unknown_not_clear(demo):
    result = demo.check("outside")
    assert {e["status"] for e in result["constraints"]} == {"unknown"}
    assert result["verdict"]["complete"] is False and result["verdict"]["level"] != "allowed"
    assert result["planning_conditions"]["status"] == "unknown"
    city = gpd.read_parquet(demo.out_dir / demo.manifest["coverage"]).to_crs(4548).union_all()
    assert not city.intersects(shapely.from_wkt(demo.manifest["sites"]["outside"]["wkt"]))
