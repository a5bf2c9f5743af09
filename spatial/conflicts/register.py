"""The conflict register: persisting a run, carrying conflicts over from the previous run.

A rerun matches its conflicts to the live ones of the same rule and layers by geometry (feature ids
change when a plan is reloaded): intersection over union ≥ 0.9, or each one's centroid inside the
other with areas within 1 %. Matches are one-to-one, best IoU first. A matched conflict keeps its id
and status and takes the new geometry, versions and ids; a live conflict of an evaluated rule that
found no match is closed; an unmatched new one is opened. Rules the run could not evaluate leave
their conflicts untouched. Reading the register is spatial/conflicts/listing.py.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from psycopg.types.json import Jsonb

IOU_MIN = 0.9
AREA_TOLERANCE = 0.01

CONFLICT_COLUMNS = ("rule", "severity", "a_layer", "a_version_id", "a_fid", "b_layer", "b_version_id", "b_fid",
                    "a_attrs", "b_attrs", "area_m2", "district_code", "district_name")
"""The columns of a run's conflict frame besides ``geometry`` (see spatial/conflicts/run.py)."""


@dataclass
class RunRecord:
    """What a run read and how long it took; written with its conflicts in one transaction."""

    started_at: dt.datetime
    rules_checksum: str
    versions: dict[str, int]
    evaluated: list[str]
    not_evaluated: list[dict]
    timings: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Changes:
    """How a run changed the register."""

    run_id: int
    kept: int
    closed: int
    new: int

    def as_dict(self) -> dict:
        return {"kept": self.kept, "closed": self.closed, "new": self.new}


def match(old: gpd.GeoDataFrame, new: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Pair new conflicts with old ones that are the same conflict.

    Parameters
    ----------
    old, new : GeoDataFrame
        With columns ``rule``, ``a_layer``, ``b_layer`` and geometries in one projected CRS.

    Returns
    -------
    (new_index, old_index) : positional indices of matched rows, one-to-one.

    Examples
    --------
    >>> import shapely
    >>> row = {"rule": ["CT03"], "a_layer": ["2201"], "b_layer": ["2301"]}
    >>> old = gpd.GeoDataFrame(row, geometry=[shapely.box(0, 0, 10, 10)])
    >>> new = gpd.GeoDataFrame(row, geometry=[shapely.box(0, 0, 10, 10.5)])
    >>> match(old, new)
    (array([0]), array([0]))
    """
    if len(old) == 0 or len(new) == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    og, ng = as_multi(np.asarray(old.geometry.values)), as_multi(np.asarray(new.geometry.values))
    ni, oi = shapely.STRtree(og).query(ng)  # boxes only: the cheap tests below prune first
    key = lambda f: (f["rule"].astype(str) + "|" + f["a_layer"].astype(str) + "|"  # noqa: E731
                     + f["b_layer"].fillna("").astype(str)).to_numpy()
    na, oa = shapely.area(ng)[ni], shapely.area(og)[oi]
    # IoU ≤ smaller area / larger area, and "area within 1 %" needs that ratio ≥ 0.99
    keep = (key(new)[ni] == key(old)[oi]) & (np.minimum(na, oa) >= IOU_MIN * np.maximum(na, oa))
    ni, oi, na, oa = ni[keep], oi[keep], na[keep], oa[keep]
    iou = np.zeros(len(ni))
    same = shapely.equals_exact(ng[ni], og[oi])  # an unchanged conflict: no overlay needed
    iou[same] = 1.0
    rest = np.flatnonzero(~same)
    inter = shapely.area(shapely.intersection(ng[ni[rest]], og[oi[rest]]))
    iou[rest] = inter / np.maximum(na[rest] + oa[rest] - inter, np.finfo(float).tiny)
    close = np.abs(na - oa) <= AREA_TOLERANCE * np.maximum(na, oa)
    test = rest[close[rest] & (iou[rest] < IOU_MIN)]
    inside = np.zeros(len(ni), dtype=bool)
    inside[test] = (shapely.within(shapely.centroid(ng[ni[test]]), og[oi[test]])
                    & shapely.within(shapely.centroid(og[oi[test]]), ng[ni[test]]))
    ok = (iou >= IOU_MIN) | (inside & close)
    ni, oi, iou = ni[ok], oi[ok], iou[ok]
    taken_new, taken_old = set(), set()
    out_new, out_old = [], []
    for k in np.argsort(-iou, kind="stable"):
        n, o = int(ni[k]), int(oi[k])
        if n in taken_new or o in taken_old:
            continue
        taken_new.add(n)
        taken_old.add(o)
        out_new.append(n)
        out_old.append(o)
    order = np.argsort(out_new)
    return np.asarray(out_new, np.intp)[order], np.asarray(out_old, np.intp)[order]


def as_multi(geoms: np.ndarray) -> np.ndarray:
    """Polygons as one-part MultiPolygons (the register's column type); MultiPolygons unchanged."""
    parts, index = shapely.get_parts(geoms, return_index=True)
    out = shapely.multipolygons(parts, indices=index)
    if len(out) != len(geoms):
        raise ValueError("a conflict geometry is empty")
    return out


def live_conflicts(conn: psycopg.Connection, rules: list[str], srid: int) -> gpd.GeoDataFrame:
    """The open (not closed) conflicts of some rules, with id, rule, layers and geometry."""
    with conn.cursor(binary=True) as cur:
        cur.execute(
            "SELECT id, rule, a_layer, b_layer, ST_AsBinary(geom) FROM conflict "
            "WHERE closed_at IS NULL AND rule = ANY(%s) ORDER BY id", (rules,))
        rows = cur.fetchall()
    ids, rule, a_layer, b_layer, wkb = (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 5
    return gpd.GeoDataFrame({"id": pd.Series(ids, dtype="int64"), "rule": pd.Series(rule, dtype=object),
                             "a_layer": pd.Series(a_layer, dtype=object), "b_layer": pd.Series(b_layer, dtype=object)},
                            geometry=shapely.from_wkb(wkb) if wkb else [], crs=f"EPSG:{srid}")


def write_run(conn: psycopg.Connection, record: RunRecord, conflicts: gpd.GeoDataFrame, *, srid: int) -> Changes:
    """Store a run and update the register from its conflicts, in one transaction.

    Parameters
    ----------
    conn : a psycopg connection in autocommit mode (the transaction is opened here).
    record : what the run read; ``record.summary`` gets the ``changes`` counts.
    conflicts : one row per conflict with :data:`CONFLICT_COLUMNS` and a polygonal geometry.

    Returns
    -------
    Changes
        The run id and the kept / closed / new counts.
    """
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        # one run at a time: matching reads the register that the other run would change
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('conflict-run'))")
        cur.execute(
            "INSERT INTO conflict_run (started_at, rules_checksum, versions, not_evaluated) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (record.started_at, record.rules_checksum, Jsonb(record.versions), Jsonb(record.not_evaluated)))
        run_id = cur.fetchone()[0]
        old = live_conflicts(conn, record.evaluated, srid)
        new_pos, old_pos = match(old, conflicts)
        match_id = np.full(len(conflicts), -1, dtype=np.int64)
        match_id[new_pos] = old["id"].to_numpy()[old_pos]
        _copy_run_conflicts(cur, conflicts, match_id, srid)
        cur.execute(
            """
            UPDATE conflict c SET last_run_id = %(run)s, severity = r.severity,
                a_version_id = r.a_version_id, a_fid = r.a_fid, b_version_id = r.b_version_id,
                b_fid = r.b_fid, a_attrs = r.a_attrs, b_attrs = r.b_attrs, area_m2 = r.area_m2,
                district_code = r.district_code, district_name = r.district_name, geom = r.geom
            FROM run_conflict r WHERE r.match_id = c.id
            """, {"run": run_id})
        kept = cur.rowcount
        cur.execute(
            """
            WITH opened AS (
                INSERT INTO conflict (run_id, last_run_id, rule, severity, a_layer, a_version_id, a_fid,
                                      b_layer, b_version_id, b_fid, a_attrs, b_attrs, area_m2,
                                      district_code, district_name, geom)
                SELECT %(run)s, %(run)s, rule, severity, a_layer, a_version_id, a_fid, b_layer,
                       b_version_id, b_fid, a_attrs, b_attrs, area_m2, district_code, district_name, geom
                FROM run_conflict WHERE match_id IS NULL ORDER BY n
                RETURNING id
            )
            INSERT INTO conflict_event (conflict_id, status, note, "by")
            SELECT id, 'open', %(note)s, 'conflict run' FROM opened
            """, {"run": run_id, "note": f"found by run {run_id}"})
        opened = cur.rowcount
        cur.execute(
            """
            WITH gone AS (
                UPDATE conflict SET status = 'closed', closed_at = now()
                WHERE closed_at IS NULL AND rule = ANY(%(rules)s) AND last_run_id <> %(run)s
                RETURNING id
            )
            INSERT INTO conflict_event (conflict_id, status, note, "by")
            SELECT id, 'closed', %(note)s, 'conflict run' FROM gone
            """, {"rules": record.evaluated, "run": run_id, "note": f"no longer found by run {run_id}"})
        closed = cur.rowcount
        changes = Changes(run_id, kept, closed, opened)
        record.summary["changes"] = changes.as_dict()
        record.timings["write"] = round(time.perf_counter() - started, 4)
        record.timings["total"] = round(record.timings.get("total", 0.0) + record.timings["write"], 4)
        cur.execute(
            "UPDATE conflict_run SET finished_at = clock_timestamp(), timings = %s, summary = %s WHERE id = %s",
            (Jsonb(record.timings), Jsonb(record.summary), run_id))
    return changes


def _copy_run_conflicts(cur: psycopg.Cursor, conflicts: gpd.GeoDataFrame, match_id: np.ndarray, srid: int) -> None:
    cur.execute(
        f"""
        CREATE TEMP TABLE run_conflict (
            n integer, match_id bigint, rule text, severity text, a_layer text, a_version_id integer,
            a_fid bigint, b_layer text, b_version_id integer, b_fid bigint, a_attrs jsonb, b_attrs jsonb,
            area_m2 double precision, district_code text, district_name text,
            geom geometry(MultiPolygon, {srid})
        ) ON COMMIT DROP
        """)
    if len(conflicts) == 0:
        return
    multi = as_multi(np.asarray(conflicts.geometry.values))
    ewkb = shapely.to_wkb(shapely.set_srid(multi, srid), hex=True, include_srid=True)
    columns = []
    for name in CONFLICT_COLUMNS:
        values = conflicts[name].tolist()
        if name.endswith("_attrs"):
            values = [json.dumps(v, ensure_ascii=False, default=str) if isinstance(v, dict) else None for v in values]
        else:
            values = [None if v is None or v is pd.NA or v != v else v for v in values]  # v != v: NaN
        columns.append(values)
    with cur.copy(f"COPY run_conflict (n, match_id, {', '.join(CONFLICT_COLUMNS)}, geom) FROM STDIN") as cp:
        for n, (mid, geom, *row) in enumerate(zip(match_id.tolist(), ewkb, *columns, strict=True)):
            cp.write_row((n, None if mid < 0 else mid, *row, geom))
    cur.execute("CREATE INDEX ON run_conflict (match_id)")
