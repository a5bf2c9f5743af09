"""Reading the conflict register: listings, one conflict, runs.

SQL and JSON only, without the geometry libraries, so that ``blueprint conflicts list|show|runs``
start at once. Writing a run is spatial/conflicts/register.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

ROW_SQL = """
    c.id, c.rule, c.severity, c.status, c.area_m2, c.district_code, c.district_name, c.a_layer, c.a_fid,
    c.b_layer, c.b_fid, c.run_id, c.last_run_id, c.a_version_id, c.b_version_id, c.closed_at
"""
ROW_KEYS = ("id", "rule", "severity", "status", "area_m2", "district", "district_name", "a_layer", "a_fid",
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


def where_sql(filters: Filters) -> tuple[str, dict]:
    """The ``WHERE`` clause (empty when nothing is filtered) over ``conflict c`` and its parameters."""
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
    :data:`ROW_KEYS` and ``geometry`` (a GeoJSON mapping) when asked.
    """
    where, params = where_sql(filters)
    total = conn.execute(sa.text(f"SELECT count(*) FROM conflict c{where}"), params).scalar_one()
    geom_sql = f", {_geojson_sql(srid)}" if geometry else ""
    rows = conn.execute(sa.text(
        f"""
        SELECT {ROW_SQL}{geom_sql} FROM conflict c{where}
        ORDER BY array_position(ARRAY['critical','major','minor'], c.severity), c.area_m2 DESC, c.id
        LIMIT :limit OFFSET :offset
        """), {**params, "limit": page_size, "offset": (page - 1) * page_size}).all()
    items = []
    for row in rows:
        item = _item(row)
        if geometry:
            item["geometry"] = json.loads(row[len(ROW_KEYS)])
        items.append(item)
    return items, total


def get_conflict(conn, conflict_id: int, *, srid: int = 4326) -> dict | None:
    """One conflict with its source attributes and geometry, or None."""
    row = conn.execute(sa.text(
        f"SELECT {ROW_SQL}, c.a_attrs, c.b_attrs, {_geojson_sql(srid)} FROM conflict c WHERE c.id = :id"),
        {"id": conflict_id}).first()
    if row is None:
        return None
    item = _item(row)
    item["a_attrs"], item["b_attrs"] = row[len(ROW_KEYS)], row[len(ROW_KEYS) + 1]
    item["geometry"] = json.loads(row[len(ROW_KEYS) + 2])
    return item


def _item(row) -> dict:
    """The :data:`ROW_KEYS` of a register row, ``closed_at`` as ISO text."""
    item = dict(zip(ROW_KEYS, row[:len(ROW_KEYS)], strict=True))
    item["closed_at"] = item["closed_at"].isoformat() if item["closed_at"] else None
    return item


def _geojson_sql(srid: int) -> str:
    """The conflict's geometry as GeoJSON in ``srid``: 8 decimals of a degree, else mm."""
    digits = 8 if srid == 4326 else 3
    return f"ST_AsGeoJSON(ST_Transform(c.geom, {int(srid)}), {digits})"


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
