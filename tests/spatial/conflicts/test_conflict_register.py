"""The register across runs: geometry matching, carried statuses, closed and new conflicts."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa

from spatial.conflicts import lifecycle
from spatial.conflicts.register import match
from spatial.conflicts.run import run_conflicts
from tests.spatial.conflicts.conftest import YDLB, jagged, load

CONSTRUCTION = [v for v in YDLB if v[0] in "RABMWSUGH"]


def frame(geoms, rule="CT03", a_layer="2201", b_layer="2301"):
    n = len(geoms)
    return gpd.GeoDataFrame({"rule": [rule] * n, "a_layer": [a_layer] * n, "b_layer": [b_layer] * n},
                            geometry=list(geoms))


def test_match_by_iou_or_centroid_and_area():
    square = shapely.box(0, 0, 100, 100)
    old = frame([square, shapely.box(500, 0, 600, 100), shapely.box(1000, 0, 1100, 100)])
    new = frame([
        shapely.box(0, 0, 100, 105),           # IoU 0.952: the same conflict
        shapely.box(560, 0, 660, 100),          # IoU 0.25, centroids outside each other: different
        shapely.Polygon([(1000, 0), (1100, 0), (1100, 100), (1050, 100.5), (1000, 100)]),  # area +0.25 %
    ])
    new_idx, old_idx = match(old, new)
    assert new_idx.tolist() == [0, 2] and old_idx.tolist() == [0, 2]
    # same place, another rule or other layers: never the same conflict
    assert len(match(old, frame([square], rule="CT04"))[0]) == 0
    assert len(match(old, frame([square], b_layer="2103"))[0]) == 0
    # centroids inside each other but area off by more than 1 %, IoU below 0.9: different
    assert len(match(frame([square]), frame([shapely.box(0, 0, 100, 112)]))[0]) == 0
    # moved by a fifth but the same size, each centroid inside the other: the same conflict
    assert len(match(frame([square]), frame([shapely.box(20, 0, 120, 100)]))[0]) == 1


def test_match_is_one_to_one_best_first():
    old = frame([shapely.box(0, 0, 100, 100), shapely.box(0, 0, 100, 101)])
    new = frame([shapely.box(0, 0, 100, 100.9)])
    new_idx, old_idx = match(old, new)
    assert new_idx.tolist() == [0] and old_idx.tolist() == [1]  # IoU 0.999 beats 0.991


def live(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT id, rule, status, a_fid, b_fid, run_id, last_run_id, b_version_id, "
                                   "closed_at FROM conflict ORDER BY id"), conn)


def test_rerun_after_layer_update_keeps_closes_and_opens(city, empty_store, settings):
    first = run_conflicts(empty_store, settings)
    before = live(empty_store)
    redline = city["2301"]
    gone_fid = int(redline.fid.iloc[0])
    ct03 = before[before.rule == "CT03"]
    staying = ct03[ct03.b_fid != gone_fid].id.iloc[:2].tolist()
    leaving = int(ct03[ct03.b_fid == gone_fid].id.iloc[0])
    with empty_store.begin() as conn:
        lifecycle.set_status(conn, staying[0], "assigned", by="规划科")
        lifecycle.set_status(conn, staying[1], "assigned", by="规划科")
        lifecycle.set_status(conn, staying[1], "resolved", adjusted_plan="a", by="张工", note="调整城规")
        lifecycle.set_status(conn, leaving, "assigned", by="规划科")

    # the red line is reloaded: one zone dropped, the rest nudged by 1 mm and renumbered, one added
    rng = np.random.default_rng(99)
    added = jagged(rng, 1, radius=(90, 120))[0]
    kept = redline[redline.fid != gone_fid]
    update = gpd.GeoDataFrame({"fid": np.r_[kept.fid.to_numpy() + 100, 500],
                               "redline_type": [*kept.redline_type, "karst"]},
                              geometry=[*shapely.transform(kept.geometry.values, lambda xy: xy + 0.001), added],
                              crs=4548)
    load(empty_store, settings, "2301", update, source="2301.update")
    second = run_conflicts(empty_store, settings)

    # independent expectations: conflicts of the dropped zone close, those of the new zone open
    construction = city["2201"][city["2201"].ydlb.isin(CONSTRUCTION)]
    farmland = city["2103"]
    closing = before[((before.rule == "CT03") & (before.b_fid == gone_fid))
                     | ((before.rule == "CT11") & (before.a_fid == gone_fid))]
    opening = (int((shapely.area(shapely.intersection(construction.geometry.values, added)) >= 1).sum())
               + int((shapely.area(shapely.intersection(farmland.geometry.values, added)) >= 1).sum()))
    assert len(closing) > 0 and opening > 0
    assert second.changes.as_dict() == {"kept": len(before) - len(closing), "closed": len(closing), "new": opening}
    assert second.summary["changes"] == second.changes.as_dict()

    after = live(empty_store).set_index("id")
    assert after.loc[staying[0], "status"] == "assigned" and after.loc[staying[1], "status"] == "resolved"
    assert after.loc[staying[0], "last_run_id"] == second.run_id and after.loc[staying[0], "run_id"] == first.run_id
    # a kept conflict points at the new version's renumbered feature
    old_b = before.set_index("id").loc[staying[0], "b_fid"]
    assert after.loc[staying[0], "b_fid"] == old_b + 100
    assert after.loc[staying[0], "b_version_id"] == second.versions["2301"]
    assert after.loc[leaving, "status"] == "closed" and after.loc[leaving, "closed_at"] is not pd.NaT
    assert (after.loc[closing.id, "status"] == "closed").all()
    fresh = after[after.run_id == second.run_id]
    assert len(fresh) == opening and (fresh.status == "open").all()
    assert set(fresh.rule) <= {"CT03", "CT11"}
    with empty_store.connect() as conn:
        events = lifecycle.history(conn, leaving)
    assert [e["status"] for e in events] == ["open", "assigned", "closed"]
    assert events[-1]["note"] == f"no longer found by run {second.run_id}"
    # conflicts of rules the reload did not touch are all kept, none closed
    untouched = after[~after.rule.isin(["CT03", "CT11"])]
    assert (untouched.last_run_id == second.run_id).all() and untouched.closed_at.isna().all()


def test_rule_not_evaluated_keeps_its_conflicts(city, empty_store, settings):
    run_conflicts(empty_store, settings)
    with empty_store.begin() as conn:  # the forest layer loses its current version
        conn.execute(sa.text("UPDATE layer SET current_version_id = NULL WHERE code = '2402'"))
    second = run_conflicts(empty_store, settings)
    assert {n["rule"] for n in second.not_evaluated} == {"CT06"}
    after = live(empty_store)
    ct06 = after[after.rule == "CT06"]
    assert len(ct06) > 0 and ct06.closed_at.isna().all() and (ct06.last_run_id == second.run_id - 1).all()
    assert second.changes.closed == 0


def test_identical_rerun_keeps_everything(city, empty_store, settings):
    first = run_conflicts(empty_store, settings)
    second = run_conflicts(empty_store, settings)
    assert second.changes.as_dict() == {"kept": first.changes.new, "closed": 0, "new": 0}
    assert second.summary["total"] == pytest.approx(first.summary["total"])
