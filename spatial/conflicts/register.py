"""The conflict register: persisting a run, carrying conflicts over from the previous run, reading.

A rerun matches its conflicts to the live ones of the same rule and layers by geometry (feature ids
change when a plan is reloaded): intersection over union ≥ 0.9, or each one's centroid inside the
other with areas within 1 %. Matches are one-to-one, best IoU first. A matched conflict keeps its id
and status and takes the new geometry, versions and ids; a live conflict of an evaluated rule that
found no match is closed; an unmatched new one is opened. Rules the run could not evaluate leave
their conflicts untouched.
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
import sqlalchemy as sa
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


# Reading the register ------------------------------------------------------------------------

_ROW = """
    c.id, c.rule, c.severity, c.status, c.area_m2, c.district_code, c.district_name, c.a_layer, c.a_fid,
    c.b_layer, c.b_fid, c.run_id, c.last_run_id, c.a_version_id, c.b_version_id, c.closed_at
"""
_KEYS = ("id", "rule", "severity", "status", "area_m2", "district", "district_name", "a_layer", "a_fid",
         "b_layer", "b_fid", "run_id", "last_run_id", "a_version_id", "b_version_id", "closed_at")


@dataclass(frozen=True)
class Filters:
    """Filters of a register listing; ``None`` means any. Closed conflicts only on ``status='closed'``."""

    rule: str | None = None
    severity: str | None = None
    district: str | None = None
    status: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # EPSG:4326
    run_id: int | None = None


def _where(filters: Filters) -> tuple[str, dict]:
    clauses, params = [], {}
    for column, value in (("rule", filters.rule), ("severity", filters.severity),
                          ("district_code", filters.district)):
        if value is not None:
            clauses.append(f"c.{column} = :{column}")
            params[column] = value
    if filters.status is not None:
        clauses.append("c.status = :status")
        params["status"] = filters.status
    elif filters.run_id is None:
        clauses.append("c.closed_at IS NULL")
    if filters.run_id is not None:
        clauses.append(":run BETWEEN c.run_id AND c.last_run_id")
        params["run"] = filters.run_id
    if filters.bbox is not None:
        # the box is densified so its transformed outline follows the projection's curvature
        clauses.append(
            "ST_Intersects(c.geom, ST_Transform(ST_Segmentize(ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326), 0.001), "
            "ST_SRID(c.geom)))")
        params.update(zip(("x0", "y0", "x1", "y1"), filters.bbox, strict=True))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def list_conflicts(conn, filters: Filters, *, page: int = 1, page_size: int = 100,
                   srid: int = 4326, geometry: bool = True) -> tuple[list[dict], int]:
    """One page of the register and the total count matching the filters.

    Parameters
    ----------
    conn : sqlalchemy.Connection
    srid : the CRS of the returned GeoJSON geometries (default EPSG:4326, RFC 7946).
    page_size : rows per page; ``page`` counts from 1.

    Returns
    -------
    (items, total): items ordered by severity then area (largest first), each a dict with
    :data:`_KEYS` and ``geometry`` (a GeoJSON mapping) when asked.
    """
    where, params = _where(filters)
    total = conn.execute(sa.text(f"SELECT count(*) FROM conflict c{where}"), params).scalar_one()
    digits = 8 if srid == 4326 else 3
    geom_sql = f", ST_AsGeoJSON(ST_Transform(c.geom, {int(srid)}), {digits})" if geometry else ""
    rows = conn.execute(sa.text(
        f"""
        SELECT {_ROW}{geom_sql} FROM conflict c{where}
        ORDER BY array_position(ARRAY['critical','major','minor'], c.severity), c.area_m2 DESC, c.id
        LIMIT :limit OFFSET :offset
        """), {**params, "limit": page_size, "offset": (page - 1) * page_size}).all()
    items = []
    for row in rows:
        item = dict(zip(_KEYS, row[:len(_KEYS)], strict=True))
        item["closed_at"] = item["closed_at"].isoformat() if item["closed_at"] else None
        if geometry:
            item["geometry"] = json.loads(row[len(_KEYS)])
        items.append(item)
    return items, total


def get_conflict(conn, conflict_id: int, *, srid: int = 4326) -> dict | None:
    """One conflict with its source attributes and geometry, or None."""
    digits = 8 if srid == 4326 else 3
    row = conn.execute(sa.text(
        f"SELECT {_ROW}, c.a_attrs, c.b_attrs, ST_AsGeoJSON(ST_Transform(c.geom, {int(srid)}), {digits}) "
        "FROM conflict c WHERE c.id = :id"), {"id": conflict_id}).first()
    if row is None:
        return None
    item = dict(zip(_KEYS, row[:len(_KEYS)], strict=True))
    item["closed_at"] = item["closed_at"].isoformat() if item["closed_at"] else None
    item["a_attrs"], item["b_attrs"] = row[len(_KEYS)], row[len(_KEYS) + 1]
    item["geometry"] = json.loads(row[len(_KEYS) + 2])
    return item


def read_frame(conn, filters: Filters) -> gpd.GeoDataFrame:
    """Every conflict matching the filters as a GeoDataFrame in the storage CRS (for exports)."""
    where, params = _where(filters)
    rows = conn.execute(sa.text(
        f"SELECT {_ROW}, c.a_attrs, c.b_attrs, ST_AsBinary(c.geom), ST_SRID(c.geom) FROM conflict c{where} "
        "ORDER BY c.id"), params).all()
    srid = rows[0][-1] if rows else conn.execute(sa.text("SELECT storage_srid FROM deployment")).scalar_one()
    frame = pd.DataFrame([r[:len(_KEYS) + 2] for r in rows], columns=[*_KEYS, "a_attrs", "b_attrs"])
    geometry = shapely.from_wkb([bytes(r[-2]) for r in rows]) if rows else []
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=f"EPSG:{srid}")


_RUN = "id, started_at, finished_at, rules_checksum, versions, timings, summary, not_evaluated"


def _run_dict(row) -> dict:
    run = dict(zip(_RUN.split(", "), row, strict=True))
    for key in ("started_at", "finished_at"):
        run[key] = run[key].isoformat() if run[key] else None
    return run


def list_runs(conn) -> list[dict]:
    """Every run, newest first, with its totals and register changes (no per-district detail)."""
    rows = conn.execute(sa.text(f"SELECT {_RUN} FROM conflict_run ORDER BY id DESC")).all()
    out = []
    for row in rows:
        run = _run_dict(row)
        summary = run.pop("summary")
        run.pop("timings")
        run["total"] = summary.get("total", {})
        run["changes"] = summary.get("changes", {})
        run["not_evaluated"] = [n["rule"] for n in run["not_evaluated"]]
        out.append(run)
    return out


def get_run(conn, run_id: int) -> dict | None:
    """One run: versions read, timings, summary by type and district, changes, rules not evaluated."""
    row = conn.execute(sa.text(f"SELECT {_RUN} FROM conflict_run WHERE id = :id"), {"id": run_id}).first()
    return _run_dict(row) if row else None
