"""Site checks and regional assessments over HTTP.

- ``POST /api/v1/sites/check``: constraints, planning conditions, terrain and assessment coverage
  of a site; the check is stored and its ``check_id`` returned.
- ``GET /api/v1/sites/{check_id}``: a stored check, as it was answered.
- ``GET /api/v1/sites/{check_id}/conditions.html``: the planning-conditions document (printable).
- ``POST /api/v1/assessments/{zone_id}``, ``GET /api/v1/assessments/{zone_id}``: run, or read, the
  regional assessment of a zone.

The check body is read and parsed here rather than by a pydantic model so that every mistake gets
its own reason and JSON pointer, NaN is refused, and the size limit is enforced while reading.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from api.deps import ConnDep, SettingsDep
from layers.errors import InputTooLarge
from spatial import assessment
from spatial.site import check_site, parse_json, parse_request
from spatial.site.document import conditions_html
from spatial.site.records import read_check, read_check_json
from spatial.site.request import parse_date

router = APIRouter(prefix="/api/v1", tags=["sites"])


class SiteCheckBody(BaseModel):
    """The request of ``POST /api/v1/sites/check`` (documentation only; parsing is stricter)."""

    geometry: dict[str, Any] = Field(description="GeoJSON Polygon or MultiPolygon (or a Feature holding one)")
    crs: str = Field("EPSG:4326", description="EPSG:4326 (RFC 7946, the default), EPSG:4490 or the storage CRS")
    as_of: str | None = Field(None, description="YYYY-MM-DD: check against the layer versions in force that day")
    buffer_m: float = Field(0, ge=0, le=2000, description="also check this margin around the site (m)")


class AssessBody(BaseModel):
    as_of: str | None = Field(None, description="read the layer versions in force on this date")
    valid_years: int | None = Field(None, ge=1, le=30, description="validity of the results (default from rules)")
    types: list[str] | None = Field(None, description="assessment types to run (default: all)")


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before or while reading it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InputTooLarge(f"the request body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputTooLarge(f"the request body exceeds {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check(engine, settings, body: bytes) -> bytes:
    started = time.perf_counter()
    req = parse_request(parse_json(body), storage_srid=settings.storage.storage_srid,
                        max_vertices=settings.server.max_site_vertices)
    parsed = {"parse": (time.perf_counter() - started) * 1000}
    # Autocommit: no BEGIN/COMMIT round trips. The reads are one statement (one snapshot, and the
    # versions it names never change) and so is the insert.
    with engine.connect() as conn:
        return check_site(conn.execution_options(isolation_level="AUTOCOMMIT"), req, timings=parsed).json


@router.post(
    "/sites/check",
    summary="What applies to this piece of land",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": SiteCheckBody.model_json_schema()}}}},
    responses={413: {"description": "Body over the size limit"},
               422: {"description": "Invalid site (problem+json with the reason and a JSON pointer)"}},
)
async def check(request: Request, settings: SettingsDep) -> Response:
    """Constraints of every constraining layer (hit / clear / unknown), the verdict, planning
    conditions, terrain, and which regional assessments cover the site. Stored as ``check_id``.

    Bad input is a 422 ``application/problem+json`` with the reason, a JSON ``pointer`` and, for an
    invalid polygon, the ``location`` in the request's CRS: not a Polygon/MultiPolygon, empty,
    an unclosed ring, NaN or Infinity, coordinates out of range or in latitude/longitude order,
    an unknown CRS, more than 10,000 vertices. **Self-intersecting and otherwise invalid polygons
    are rejected, never repaired** (``input.repaired`` is always false): a repaired boundary is a
    guess at the land. A body over 2 MB is a 413.
    """
    body = await read_limited(request, settings.server.max_request_bytes)
    payload = await run_in_threadpool(_check, request.app.state.engine, settings, body)
    return Response(payload, media_type="application/json")


@router.get("/sites/{check_id}", summary="A stored site check")
def stored_check(check_id: str, conn: ConnDep) -> Response:
    return Response(read_check_json(conn, check_id), media_type="application/json")


@router.get("/sites/{check_id}/conditions.html", response_class=HTMLResponse,
            summary="The planning-conditions document of a stored check (prints cleanly)")
def conditions_document(check_id: str, conn: ConnDep) -> HTMLResponse:
    return HTMLResponse(conditions_html(read_check(conn, check_id)))


@router.post("/assessments/{zone_id}", summary="Run the regional assessment of a zone and store the results")
def assess(zone_id: str, request: Request, settings: SettingsDep, body: AssessBody | None = None) -> dict:
    """Overlay the zone with the hazard and resource layers; store one result per assessment type."""
    options = body or AssessBody()
    return assessment.assess_zone(request.app.state.engine, settings, zone_id, as_of=parse_date(options.as_of),
                                  valid_years=options.valid_years, types=options.types)


@router.get("/assessments/{zone_id}", summary="The stored regional-assessment results of a zone")
def assessment_results(zone_id: str, conn: ConnDep) -> dict:
    return assessment.zone_results(conn, zone_id)
