"""Issue 4's acceptance on the demo city: every planted conflict is found with its manifest area,
nothing else above the sliver tolerance, and the blueprint covers the city once."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
import sqlalchemy as sa

from spatial.conflicts.rules import load_rules
from spatial.conflicts.run import run_conflicts


@pytest.fixture(scope="module")
def demo_run(demo_city):
    result = run_conflicts(demo_city.engine, demo_city.settings)
    with demo_city.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT rule, a_layer, a_fid, b_layer, b_fid, area_m2, ST_AsBinary(geom) FROM conflict "
            "WHERE last_run_id = (SELECT max(id) FROM conflict_run) AND closed_at IS NULL"
        )).all()
    return result, rows


def test_every_rule_was_evaluated(demo_run):
    result, _ = demo_run
    assert not result.not_evaluated
    assert set(result.timings["rules"]) == {rule.code for rule in load_rules().rules}


def test_every_planted_conflict_is_found_with_its_area(demo_city, demo_run):
    _, rows = demo_run
    found = {(r.rule, r.a_layer, r.a_fid, r.b_layer, r.b_fid): r for r in rows}
    for case in demo_city.manifest["conflicts"]:
        key = (case["rule"], case["a_layer"], case["a_fid"], case["b_layer"], case["b_fid"])
        assert key in found, f"planted {case['rule']} a_fid={case['a_fid']} not found"
        row = found[key]
        assert row.area_m2 == pytest.approx(case["area_m2"], abs=0.01), key
        expected = shapely.from_wkt(case["wkt"])
        got = shapely.from_wkb(row[6])
        assert shapely.symmetric_difference(got, expected).area < 0.01, key


def test_nothing_else_above_the_sliver_tolerance(demo_city, demo_run):
    _, rows = demo_run
    planted = {(c["rule"], c["a_fid"], c["b_fid"]) for c in demo_city.manifest["conflicts"]}
    tolerance = {rule.code: rule.min_area_m2 for rule in load_rules().rules}
    extra = [(r.rule, r.a_fid, r.b_fid, r.area_m2) for r in rows
             if (r.rule, r.a_fid, r.b_fid) not in planted and r.area_m2 >= tolerance[r.rule]]
    assert extra == []
    assert len(rows) == len(demo_city.manifest["conflicts"])


def test_blueprint_covers_the_city_once(demo_city, demo_run):
    from spatial.blueprint import synthesize

    synthesize(demo_city.engine, demo_city.settings)
    city = gpd.read_parquet(demo_city.out_dir / "coverage.parquet").geometry.area.sum()
    with demo_city.engine.connect() as conn:
        total, union = conn.execute(sa.text(
            "SELECT sum(ST_Area(geom)), ST_Area(ST_Union(geom)) FROM feature "
            "WHERE version_id = (SELECT current_version_id FROM layer WHERE code = '3105')")).one()
    assert total == pytest.approx(city, rel=1e-6)
    assert union == pytest.approx(total, rel=1e-6)  # no overlaps
