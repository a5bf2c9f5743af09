"""The conflict run on PostGIS: per-rule areas against an independent geopandas.overlay, slivers,
rules that cannot be evaluated, invalid rules files, and what a run records."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from spatial.conflicts.rules import RULES_PATH, RulesError
from spatial.conflicts.run import read_plans, run_conflicts
from tests.spatial.conflicts.conftest import (
    CITY,
    GHDL,
    LAND_USE,
    SLIVER_GREEN,
    SLIVER_PARCEL,
    YDLB,
    city_layers,
    frame,
    load,
)

# The selections written out by hand from the rules file's intent, not through its harmonisation code.
URBAN_CONSTRUCTION = [v for v in YDLB if v[0] in "RABMWSUGH"]
LANDUSE_CONSTRUCTION = [v for v in GHDL if v[0] == "2"]
PARCEL_CONSTRUCTION = [v for v in LAND_USE if v not in ("G1", "G2", "G3")]


def expected_pairs(layers: dict[str, gpd.GeoDataFrame]) -> dict[str, pd.DataFrame]:
    """Each default rule's conflicts from geopandas.overlay: a_fid, b_fid, area (≥ 1 m²)."""
    plan, landuse, parcels = layers["2201"], layers["2104"], layers["2203"]
    construction = plan[plan.ydlb.isin(URBAN_CONSTRUCTION)]
    select = {
        "CT01": (construction, landuse[~landuse.ghdl.isin(LANDUSE_CONSTRUCTION)]),
        "CT02": (landuse[landuse.ghdl.isin(LANDUSE_CONSTRUCTION)], plan[~plan.ydlb.isin(URBAN_CONSTRUCTION)]),
        "CT03": (construction, layers["2301"]),
        "CT04": (construction, layers["2103"]),
        "CT05": (construction, layers["2401"][layers["2401"].grade.isin(["I", "II"])]),
        "CT06": (construction, layers["2402"]),
        "CT07": (construction, layers["2302"][layers["2302"].grade == "1"]),
        "CT10": (layers["2103"], layers["2401"]),
        "CT11": (layers["2301"], layers["2103"]),
        "CT12": (parcels[parcels.land_use.isin(PARCEL_CONSTRUCTION)], layers["2205"]),
        "CT13": (parcels[parcels.land_use.isin(PARCEL_CONSTRUCTION)], layers["2204"]),
    }
    out = {}
    for code, (a, b) in select.items():
        pieces = gpd.overlay(a[["fid", "geometry"]].rename(columns={"fid": "a_fid"}),
                             b[["fid", "geometry"]].rename(columns={"fid": "b_fid"}),
                             how="intersection", keep_geom_type=True)
        out[code] = pieces.assign(area=pieces.area)[["a_fid", "b_fid", "area"]]
    # CT08: urban construction land (but H2/H3) outside every development boundary
    urban = construction[~construction.ydlb.isin(["H2", "H3"])]
    rest = gpd.overlay(urban[["fid", "geometry"]], layers["2202"][["geometry"]], how="difference")
    out["CT08"] = pd.DataFrame({"a_fid": rest["fid"], "b_fid": pd.NA, "area": rest.area})
    # CT09: parcels whose GB 50137 major class (first letter) differs from the master plan's
    both = gpd.overlay(parcels[["fid", "land_use", "geometry"]].rename(columns={"fid": "a_fid"}),
                       plan[["fid", "ydlb", "geometry"]].rename(columns={"fid": "b_fid"}),
                       how="intersection", keep_geom_type=True)
    both = both[both.land_use.str[0] != both.ydlb.str[0]]
    out["CT09"] = both.assign(area=both.area)[["a_fid", "b_fid", "area"]]
    return {code: frame[frame.area >= 1.0] for code, frame in out.items()}


def register_rows(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT rule, a_fid, b_fid, area_m2, ST_Area(geom) AS geom_area, district_code "
                                   "FROM conflict WHERE closed_at IS NULL"), conn)


def test_every_rule_matches_geopandas_overlay(city, empty_store, settings):
    result = run_conflicts(empty_store, settings, threads=2)
    rows = register_rows(empty_store)
    expected = expected_pairs(city)
    assert sorted(expected) == sorted(result.summary["by_type"])
    problems = []
    for code, want in expected.items():
        got = rows[rows.rule == code]
        assert len(want) > 0, f"{code}: the synthetic city should produce conflicts"
        total = got.area_m2.sum()
        if total != pytest.approx(want.area.sum(), rel=1e-6):
            problems.append(f"{code}: area {total} != {want.area.sum()}")
        pairs = set(zip(got.a_fid, got.b_fid.fillna(-1), strict=True))
        if pairs != set(zip(want.a_fid, want.b_fid.fillna(-1), strict=True)):
            problems.append(f"{code}: pairs differ")
        assert result.summary["by_type"][code]["count"] == len(want)
    assert not problems, problems
    # the stored polygons carry the stored areas
    assert rows.geom_area.to_numpy() == pytest.approx(rows.area_m2.to_numpy(), rel=1e-9)
    assert result.changes.as_dict() == {"kept": 0, "closed": 0, "new": len(rows)}


def test_sliver_below_tolerance_is_not_a_conflict(city, empty_store, settings):
    parcels, green = city["2203"], city["2204"]
    overlap = parcels[parcels.fid == SLIVER_PARCEL].geometry.iloc[0].intersection(
        green[green.fid == SLIVER_GREEN].geometry.iloc[0]).area
    assert overlap == pytest.approx(0.5)
    run_conflicts(empty_store, settings)
    rows = register_rows(empty_store)
    ct13 = rows[rows.rule == "CT13"]
    assert not ((ct13.a_fid == SLIVER_PARCEL) & (ct13.b_fid == SLIVER_GREEN)).any()
    assert (rows.area_m2 >= 1.0).all()


def test_districts_take_the_largest_share(city, empty_store, settings):
    run_conflicts(empty_store, settings)
    rows = register_rows(empty_store)
    with empty_store.connect() as conn:
        found = pd.read_sql(sa.text("SELECT id, district_code, ST_X(ST_Centroid(geom)) AS x, ST_Area(geom) AS a, "
                                    "ST_Area(ST_Intersection(geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4548))) AS w "
                                    "FROM conflict"),
                            conn, params=dict(zip(("x0", "y0", "x1", "y1"), city["1101"].geometry.iloc[0].bounds,
                                                  strict=True)))
    west = found.w > found.a / 2
    assert (found.district_code[west] == "370102").all() and (found.district_code[~west] == "370103").all()
    assert set(rows.district_code) == {"370102", "370103"}


def test_rule_with_missing_layer_is_reported_not_evaluated(register, settings):
    layers = city_layers()
    for code in ("2201", "2104", "2301"):
        load(register, settings, code, layers[code])
    result = run_conflicts(register, settings)
    evaluated = set(result.summary["by_type"])
    assert evaluated == {"CT01", "CT02", "CT03"}
    reasons = {item["rule"]: item["reason"] for item in result.not_evaluated}
    assert set(reasons) == {f"CT{i:02d}" for i in range(4, 14)}
    assert "layer 2103 has no current version" in reasons["CT04"]
    assert "layer 2203 has no current version" in reasons["CT09"]
    with register.connect() as conn:
        stored = conn.execute(sa.text("SELECT not_evaluated, versions FROM conflict_run")).one()
    assert {n["rule"] for n in stored.not_evaluated} == set(reasons)
    assert set(stored.versions) == {"2201", "2104", "2301"}


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["rules"][2]["b"].update(layer="9999"), "unknown layer '9999'"),
    (lambda r: r["rules"][4]["b"]["where"].update(colour=["red"]), "no attribute 'colour'"),
    (lambda r: r["rules"][4]["b"]["where"].update(grade=["I", "V"]), "'V' is not an allowed value"),
    (lambda r: r["blueprint"]["priority"].append(dict(r["blueprint"]["priority"][0], control_level="allowed")),
     "contradicting"),
])
def test_invalid_rules_fail_before_any_work(register, settings, tmp_path, edit, message):
    raw = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))
    edit(raw)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RulesError, match=message):
        run_conflicts(register, settings, rules_path=path)
    with register.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM conflict_run")).scalar_one() == 0


def test_run_records_versions_checksum_and_timings(city, empty_store, settings):
    import hashlib

    result = run_conflicts(empty_store, settings)
    with empty_store.connect() as conn:
        run = conn.execute(sa.text("SELECT * FROM conflict_run WHERE id = :id"), {"id": result.run_id}).mappings().one()
        current = dict(conn.execute(sa.text("SELECT code, current_version_id FROM layer "
                                            "WHERE current_version_id IS NOT NULL")).all())
    assert run["rules_checksum"] == hashlib.sha256(RULES_PATH.read_bytes()).hexdigest()
    assert run["versions"] == {code: current[code] for code in run["versions"]}
    assert set(run["versions"]) == {"1101", "2201", "2104", "2301", "2103", "2401", "2402", "2302", "2202",
                                    "2203", "2204", "2205"}
    assert set(run["timings"]["rules"]) == set(result.summary["by_type"])
    assert run["timings"]["total"] >= run["timings"]["write"] > 0
    assert run["summary"]["changes"] == result.changes.as_dict()
    by_district = run["summary"]["by_district"]
    assert sum(d["count"] for d in by_district.values()) == run["summary"]["total"]["count"]
    assert run["finished_at"] >= run["started_at"]


def test_each_layer_is_read_once_with_the_union_of_filters(city, empty_store, settings):
    from layers import store
    from layers.catalogue import load_catalogue
    from spatial.conflicts.rules import load_rules

    with empty_store.connect() as conn:
        current = store.current_versions(conn)
    plans = read_plans(load_rules().rules, current, load_catalogue())
    # 2201 is read whole (CT02 wants its non-construction land, CT09 all of it); 2401 only grades I/II
    # or any grade for CT10 -> whole; 2302 only grade 1
    assert plans["2201"].predicates is None
    assert plans["2302"].predicates == [{"grade": ("1",)}]
    ct12 = plans["2203"].predicates
    assert ct12 is None  # CT09 reads every parcel
    assert plans["2104"].predicates is not None and len(plans["2104"].predicates) == 2



def test_rule_on_an_attribute_no_feature_has_is_not_evaluated(register, settings, tmp_path):
    raw = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))
    raw["rules"].append(dict(raw["rules"][2], code="CT14", b={"layer": "2502", "where": {"voltage_kv": [500]}}))
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    line = frame([CITY.buffer(-100)], utility_type=["hv_line"], width_m=[50.0])
    layers = {"2201": city_layers()["2201"], "2502": line}
    for code, gdf in layers.items():
        load(register, settings, code, gdf)
    result = run_conflicts(register, settings, rules_path=path)
    reasons = {n["rule"]: n["reason"] for n in result.not_evaluated}
    assert "voltage_kv" in reasons["CT14"] and "CT14" not in result.summary["by_type"]
    # once some feature carries it, the rule runs (and here finds the construction land under a 500 kV line)
    load(register, settings, "2502", layers["2502"].assign(voltage_kv=[500]))
    again = run_conflicts(register, settings, rules_path=path)
    assert again.summary["by_type"]["CT14"]["count"] > 0


def test_run_on_an_empty_store_evaluates_nothing_and_says_why(register, settings):
    result = run_conflicts(register, settings)
    assert result.summary["total"] == {"count": 0, "area_m2": 0.0} and result.summary["by_type"] == {}
    assert len(result.not_evaluated) == 13 and result.changes.as_dict() == {"kept": 0, "closed": 0, "new": 0}
    with register.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM conflict_run")).scalar_one() == 1


def test_partner_extents_limit_what_is_read():
    from types import SimpleNamespace

    from layers.catalogue import load_catalogue
    from spatial.conflicts.rules import load_rules

    small, large = (0.0, 0.0, 10.0, 10.0), (-100.0, -100.0, 100.0, 100.0)
    current = {"2201": SimpleNamespace(extent=small), "2301": SimpleNamespace(extent=large),
               "2202": SimpleNamespace(extent=large)}
    plans = read_plans(load_rules().rules, current, load_catalogue())
    assert plans["2301"].bbox == small  # the red line only where the urban plan is (CT03)
    assert plans["2202"].bbox == small  # the boundary only where the urban plan is (CT08's b side)
    assert plans["2201"].bbox is None  # CT08 needs all construction land, outside any boundary too
    assert set(plans) == {"2201", "2301", "2202"}


def test_difference_rule_on_big_polygons_matches_geopandas(register, settings):
    import numpy as np

    from tests.spatial.conflicts.conftest import jagged

    rng = np.random.default_rng(5)
    big = jagged(rng, 4, radius=(200, 300), vertices=400)  # above the kernel's 256-vertex subdivision limit
    plan = frame(big, ydlb=["R2", "M1", "B1", "A1"])
    boundary = frame([CITY.buffer(-300)], boundary_type=["central_city"])
    load(register, settings, "2201", plan)
    load(register, settings, "2202", boundary)
    run_conflicts(register, settings)
    rows = register_rows(register)
    rest = gpd.overlay(plan[["fid", "geometry"]], boundary[["geometry"]], how="difference")
    want = dict(zip(rest.fid, rest.area, strict=True))
    got = dict(zip(rows[rows.rule == "CT08"].a_fid, rows[rows.rule == "CT08"].area_m2, strict=True))
    assert set(got) == {k for k, v in want.items() if v >= 1}
    assert all(got[k] == pytest.approx(want[k], rel=1e-9) for k in got)
