"""The conflict register over HTTP.

GET  /api/v1/conflicts                 filters type, severity, district, status, bbox (EPSG:4326); paged
GET  /api/v1/conflicts/{id}            attributes, advice, prevailing plan, events, run ids
POST /api/v1/conflicts/{id}/status     {"status": "assigned|resolved|accepted", "adjusted_plan", "note", "by"}
GET  /api/v1/conflicts/runs            every run, newest first
GET  /api/v1/conflicts/runs/{id}       summary by type and district, versions read, timings
POST /api/v1/conflicts/runs            run every rule now (synchronous)

Geometries are GeoJSON in EPSG:4326 (RFC 7946) unless ``crs`` names another CRS.
"""

from __future__ import annotations

import re
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from api.deps import ConnDep, EngineDep, SettingsDep
from api.params import parse_bbox
from layers.errors import InvalidInput, NotFound
from spatial.conflicts import lifecycle
from spatial.conflicts.listing import get_run, list_conflicts, list_runs
from spatial.conflicts.query import checked_filters, conflict_detail
from spatial.conflicts.rules import load_rules
from spatial.conflicts.run import run_conflicts

router = APIRouter(prefix="/api/v1/conflicts", tags=["conflicts"])

LIST_KEYS = ("id", "rule", "name_zh", "name_en", "severity", "status", "area_m2", "district", "district_name",
             "a_layer", "a_fid", "b_layer", "b_fid", "geometry")
CrsQuery = Annotated[str | None, Query(description="output CRS, e.g. EPSG:4548 (default EPSG:4326)")]


class StatusChange(BaseModel):
    """A lifecycle step for one conflict."""

    model_config = ConfigDict(extra="forbid")

    status: str
    adjusted_plan: str | None = None
    note: str | None = None
    by: str | None = None


@router.get("")
def conflicts(
    conn: ConnDep,
    type: Annotated[str | None, Query(description="rule code, e.g. CT03")] = None,  # noqa: A002 - API name
    severity: Annotated[str | None, Query(description="critical, major or minor")] = None,
    district: Annotated[str | None, Query(description="district code (layer 1101), e.g. 370102")] = None,
    status: Annotated[str | None, Query(description="open, assigned, resolved, accepted or closed")] = None,
    bbox: Annotated[str | None, Query(description="minx,miny,maxx,maxy in EPSG:4326")] = None,
    run: Annotated[int | None, Query(ge=1, description="only conflicts found by this run")] = None,
    crs: CrsQuery = None,
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    """One page of the conflict register (closed conflicts only with ``status=closed``)."""
    rules = load_rules()
    filters = checked_filters(conn, rule=type, severity=severity, district=district, status=status,
                              run_id=run, bbox=_bbox(bbox), rules=rules)
    items, total = list_conflicts(conn, filters, page=page, page_size=page_size, srid=_srid(conn, crs))
    names = {r.code: r for r in rules.rules}
    out = []
    for item in items:
        rule = names.get(item["rule"])
        item["name_zh"], item["name_en"] = (rule.name_zh, rule.name_en) if rule else (None, None)
        out.append({k: item[k] for k in LIST_KEYS})
    return {"items": out, "total": total, "page": page, "page_size": page_size}


@router.get("/runs")
def runs(conn: ConnDep) -> dict:
    """Every conflict run, newest first, with totals and register changes."""
    items = list_runs(conn)
    return {"items": items, "total": len(items)}


@router.post("/runs", status_code=201)
def start_run(engine: EngineDep, settings: SettingsDep) -> dict:
    """Evaluate every rule on the current layer versions now and return the run."""
    result = run_conflicts(engine, settings)
    with engine.connect() as conn:
        return get_run(conn, result.run_id)


@router.get("/runs/{run_id}")
def run_detail(run_id: int, conn: ConnDep) -> dict:
    """One run: versions read, rules checksum, timings, summary by type and district, changes."""
    found = get_run(conn, run_id)
    if found is None:
        raise NotFound(f"no conflict run {run_id}")
    return found


@router.get("/{conflict_id}")
def conflict(conflict_id: int, conn: ConnDep, crs: CrsQuery = None) -> dict:
    """One conflict with both features' attributes, the rule's advice and its event history."""
    return conflict_detail(conn, conflict_id, srid=_srid(conn, crs))


@router.post("/{conflict_id}/status")
def change_status(conflict_id: int, change: StatusChange, engine: EngineDep) -> dict:
    """Assign, resolve (naming the adjusted plan, a or b) or accept a conflict as an exception."""
    if change.adjusted_plan is not None and change.adjusted_plan not in ("a", "b"):
        raise InvalidInput(f"adjusted_plan must be a or b, not {change.adjusted_plan!r}")
    with engine.begin() as conn:
        event = lifecycle.set_status(conn, conflict_id, change.status, adjusted_plan=change.adjusted_plan,
                                     note=change.note, by=change.by)
    with engine.connect() as conn:
        return {**conflict_detail(conn, conflict_id), "event": event}


# Parameter checks (the filters' are spatial/conflicts/query.py): an unknown value is a 422 ---------

def _bbox(text: str | None) -> tuple[float, float, float, float] | None:
    return None if text is None else parse_bbox(text)


_CRS = re.compile(r"^(?:EPSG:|urn:ogc:def:crs:EPSG::|https?://www\.opengis\.net/def/crs/EPSG/0/)?(\d{4,6})$",
                  re.IGNORECASE)


def _srid(conn: sa.Connection, crs: str | None) -> int:
    """The SRID a ``crs`` parameter names (EPSG:XXXX, its OGC URI, or CRS84); 422 if unknown."""
    if crs is None or crs.upper() in ("CRS84", "OGC:CRS84", "HTTP://WWW.OPENGIS.NET/DEF/CRS/OGC/1.3/CRS84"):
        return 4326
    match = _CRS.match(crs.strip())
    srid = int(match.group(1)) if match else None
    if srid is None or not conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM spatial_ref_sys WHERE srid = :s)"),
                                        {"s": srid}).scalar_one():
        raise InvalidInput(f"unknown crs {crs!r}; give it as EPSG:XXXX")
    return srid
