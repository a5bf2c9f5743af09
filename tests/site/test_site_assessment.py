"""Regional assessment: results per type from an independent overlay, stored as versioned layers with
validity dates, and reused by site checks for sites entirely inside the zone."""

from __future__ import annotations

import datetime as dt

import geopandas as gpd
import pytest
import shapely

from layers import frames
from layers.catalogue import load_catalogue
from layers.errors import InvalidInput, NotFound
from layers.ingest import load_frame
from spatial.assessment import assess_zone, load_assessment_rules
from spatial.site import check_site, parse_request
from tests.site.city import CITY, FEATURES, SITES, ZONE, b


def run_check(engine, geom, **options) -> dict:
    body = {"geometry": shapely.geometry.mapping(geom), "crs": "EPSG:4548", **options}
    with engine.connect() as conn:
        return check_site(conn, parse_request(body, storage_srid=4548, max_vertices=10_000), save=False).result


def test_every_catalogue_assessment_type_has_rules():
    types = {m.assessment_type for m in load_catalogue().minors.values() if m.assessment_type}
    assert {t.name for t in load_assessment_rules().types} == types


def test_results_follow_the_overlay(city):
    results = {r["type"]: r for r in city.assessment["results"]}
    assert {k: v["result"] for k, v in results.items()} == {
        "environment": "pass", "geological_hazard": "conditional", "mineral_overlay": "pass",
        "seismic_safety": "not_assessed", "soil_water_conservation": "pass", "flood_impact": "fail",
        "archaeology": "pass", "energy": "not_assessed"}
    floodway = FEATURES["2504"][0][0]
    stat = results["flood_impact"]["statistics"][0]
    assert stat["area_m2"] == pytest.approx(shapely.intersection(ZONE, floodway).area)
    assert stat["share"] == pytest.approx(0.25) and stat["effect"] == "fail"
    hazard = results["geological_hazard"]["statistics"]
    medium = shapely.intersection(ZONE, FEATURES["1304"][0][0]).area
    assert [s["area_m2"] for s in hazard[:2]] == pytest.approx([0, medium])
    assert any("中低风险" in c["zh"] for c in results["geological_hazard"]["conditions"])
    assert "fault" in results["seismic_safety"]["reason"]


def test_results_are_stored_as_versioned_layers_with_validity(city, engine, settings):
    today = dt.datetime.now(dt.UTC).date()
    with engine.connect() as conn:
        stored = frames.read_layer(conn, "3207", srid=4548)
    row = stored[stored["zone_id"] == "DZ01"].iloc[0]
    assert row["result"] == "fail" and row["valid_from"] == today.isoformat()
    assert row["valid_to"] == today.replace(year=today.year + 5).isoformat()
    assert row.geometry.equals(ZONE) and "行洪区" in row["conditions"]


def test_site_inside_the_zone_reuses_valid_results(city, engine):
    a = run_check(engine, SITES["assessed"])["assessments"]
    assert {c["type"] for c in a["covered"]} == {"environment", "geological_hazard", "mineral_overlay",
                                                 "soil_water_conservation", "archaeology"}
    not_covered = {c["type"]: c["reason"] for c in a["not_covered"]}
    assert "failed" in not_covered["flood_impact"]
    assert "not assessed regionally" in not_covered["seismic_safety"]
    geo = next(c for c in a["covered"] if c["type"] == "geological_hazard")
    assert geo["zone_id"] == "DZ01" and geo["result"] == "conditional" and len(geo["conditions"]) == 2


def test_site_beyond_the_zone_or_outside_validity_is_not_covered(city, engine):
    edge = run_check(engine, SITES["zone_edge"])["assessments"]
    assert edge["covered"] == [] and "extends beyond" in edge["not_covered"][0]["reason"]
    later = run_check(engine, SITES["assessed"], as_of="2099-01-01")["assessments"]
    assert later["covered"] == [] and "not on 2099-01-01" in later["not_covered"][0]["reason"]
    earlier = run_check(engine, SITES["assessed"], as_of="2021-01-01")["assessments"]
    assert earlier["covered"] == [] and "no regional assessment results" in earlier["not_covered"][0]["reason"]


def test_rerun_replaces_the_zone_and_keeps_other_zones(city, engine, settings):
    zones = gpd.GeoDataFrame([f[1] for f in FEATURES["3201"]] + [{"zone_id": "DZ02", "name": "西区",
                                                                  "zone_type": "industrial_park"}],
                             geometry=[ZONE, b(100, 1700, 300, 1900)], crs=4548)
    load_frame(engine, settings, zones, minor=load_catalogue().minor("3201"), source_name="zones-v2",
               checksum="zones-v2", coverage=CITY)
    first = assess_zone(engine, settings, "DZ02", types=["archaeology"], valid_years=2)
    again = assess_zone(engine, settings, "DZ01", types=["archaeology"])
    assert first["results"][0]["stored"]["features"] == 2  # DZ01 carried over, DZ02 added
    stored = again["results"][0]["stored"]
    assert stored["version"] == first["results"][0]["stored"]["version"] + 1 and stored["features"] == 2
    with engine.connect() as conn:
        layer = frames.read_layer(conn, "3208", srid=4548).set_index("zone_id")
    today = dt.datetime.now(dt.UTC).date()
    assert layer.loc["DZ02", "valid_to"] == today.replace(year=today.year + 2).isoformat()
    assert sorted(layer.index) == ["DZ01", "DZ02"]


def test_bad_assessment_requests(city, engine, settings):
    with pytest.raises(NotFound, match="no assessed zone 'DZ99'"):
        assess_zone(engine, settings, "DZ99", save=False)
    with pytest.raises(InvalidInput, match="unknown assessment type"):
        assess_zone(engine, settings, "DZ01", types=["feng_shui"], save=False)
    with pytest.raises(InvalidInput, match="valid_years"):
        assess_zone(engine, settings, "DZ01", valid_years=0, save=False)
