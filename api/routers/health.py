"""GET /api/v1/health: is the database reachable, which PostGIS."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import EngineDep

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get("/health")
def health(engine: EngineDep) -> JSONResponse:
    try:
        with engine.connect() as conn:
            postgis = conn.execute(sa.text("SELECT postgis_lib_version()")).scalar_one()
            postgres = conn.execute(sa.text("SHOW server_version")).scalar_one()
            srid = conn.execute(sa.text("SELECT storage_srid FROM deployment")).scalar_one()
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return JSONResponse({"status": "unavailable", "database": {"reachable": False, "error": reason}},
                            status_code=503)
    return JSONResponse({
        "status": "ok",
        "database": {"reachable": True, "postgres": postgres, "postgis": postgis},
        "storage_crs": f"EPSG:{srid}",
    })
