"""Vector tiles and feature look-ups for the web map.

``GET /tiles/{layer}/{z}/{x}/{y}.pbf``: a Mapbox vector tile of the layer's current version.
``GET /api/v1/layers/{code}/features``: features at a point, by fid or in a box, as GeoJSON (EPSG:4326).

Tiles are served by an ``async`` endpoint on a pool of autocommit psycopg connections opened in this
router's lifespan: no worker-thread hop, no BEGIN/ROLLBACK or ping round trips per tile, which matters
when a tile itself takes a millisecond or two. A tile is looked for in memory (by version, z, x, y,
:mod:`viewer.tile_cache`), then in the database's tile store (one primary-key look-up,
:mod:`viewer.tile_store`, filled ahead by ``blueprint tiles seed``), and only then built, and the built
tile is stored in the background. Each layer's current version is remembered for a second, so a tile
asked for again costs no database round trip at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated

import psycopg
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.deps import CatalogueDep, ConnDep, SettingsDep
from api.params import parse_bbox
from layers import store
from layers.catalogue import Catalogue, Minor, load_catalogue
from layers.db import database_url, libpq_url
from layers.errors import DatabaseUnavailable, InvalidInput, NotFound
from spatial.site.request import parse_date
from viewer.tile_cache import CurrentVersions, LayerVersion, Tile, TileCache
from viewer.tile_store import WRITER_OPTIONS, BackgroundWrites, TileRecipe, gzip_tile, read_tile
from viewer.tiles import TILE_REVISION, InvalidTile, check_address, extra_attributes, tile_query

log = logging.getLogger("blueprint.tiles")

MVT = "application/vnd.mapbox-vector-tile"
POOL_SIZE = 8
_INT = re.compile(r"^[0-9]{1,8}$")
_VERSION_SQL = (
    "SELECT l.current_version_id, v.report -> 'extra_attributes' FROM layer l "
    "JOIN layer_version v ON v.id = l.current_version_id WHERE l.code = %s"
)


@asynccontextmanager
async def tile_pool(app: FastAPI) -> AsyncIterator[None]:
    """Open the tile connection pool, the tile caches and the store writer with the application, close them
    with it (waiting for the store writes still running)."""
    server = app.state.settings.server
    pool = AsyncConnectionPool(libpq_url(database_url(app.state.settings)), min_size=1, max_size=POOL_SIZE,
                               kwargs={"autocommit": True, "options": WRITER_OPTIONS}, timeout=10, open=False,
                               name="tiles")
    await pool.open(wait=False)
    app.state.tile_pool = pool
    app.state.tile_cache = TileCache(server.tile_cache_bytes)
    app.state.tile_versions = CurrentVersions(server.tile_version_ttl)
    app.state.tile_recipe = TileRecipe(TILE_REVISION, server.tile_feature_limit)
    app.state.tile_writes = BackgroundWrites(pool, app.state.tile_recipe) if server.tile_store else None
    try:
        yield
    finally:
        if app.state.tile_writes is not None:
            await app.state.tile_writes.drain()
        await pool.close()


router = APIRouter(tags=["tiles"], lifespan=tile_pool)


def vector_minor(catalogue: Catalogue, code: str) -> Minor:
    """The catalogue class of a vector layer, or NotFound (unknown code, raster layer)."""
    minor = catalogue.minor(code)
    if minor.geometry_type == "raster":
        raise NotFound(f"layer {code} is a raster layer: it has no vector tiles or features")
    return minor


@asynccontextmanager
async def _tile_connection(request: Request) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection of the tile pool; a database that does not answer is a 503."""
    pool: AsyncConnectionPool = request.app.state.tile_pool
    try:
        async with pool.connection() as conn:
            yield conn
    except (PoolTimeout, psycopg.OperationalError) as exc:
        log.warning("%s: %s", request.url.path, exc)
        raise DatabaseUnavailable("the database did not answer the tile request; try again") from None


async def _current_version(request: Request, code: str, expected: int | None) -> LayerVersion:
    """The layer's current version, remembered for a moment; looked up now when the client names a newer
    one (version ids only grow: a page read after a load names the new version in its tile URLs)."""
    versions: CurrentVersions = request.app.state.tile_versions
    known = versions.get(code)
    if known is not None and (expected is None or expected <= known.id):
        return known
    async with _tile_connection(request) as conn:
        row = await (await conn.execute(_VERSION_SQL, (code,))).fetchone()
    if row is None:
        raise NotFound(f"layer {code} has no loaded version")
    version = LayerVersion(int(row[0]), extra_attributes(row[1]))
    versions.put(code, version)
    return version


async def _load_tile(request: Request, minor: Minor, version: LayerVersion, z: int, x: int, y: int) -> Tile:
    """One tile from the tile store, else built by PostGIS (and then stored in the background)."""
    state = request.app.state
    key = (version.id, z, x, y)
    query = tile_query(minor, version_id=version.id, z=z, x=x, y=y, extra=version.extra,
                       srid=state.settings.storage.storage_srid, limit=state.tile_recipe.feature_limit)
    if query is None:  # outside the storage CRS's area: nothing can be there, nothing to store
        return Tile(b"")
    async with _tile_connection(request) as conn:
        if state.tile_writes is not None:
            stored = await read_tile(conn, key, state.tile_recipe)
            if stored is not None:
                return Tile(gzipped=stored)
        # Binary results: the bytea comes as is, not hex-encoded by PostgreSQL and decoded here.
        row = await (await conn.execute(*query, binary=True)).fetchone()
    data = bytes(row[0]) if row and row[0] is not None else b""
    if state.tile_writes is None:
        return Tile(data)
    # Compressed once, off the event loop: the store keeps this form and the response reuses it.
    gzipped = await asyncio.to_thread(gzip_tile, data)
    state.tile_writes.submit(key, gzipped)
    return Tile(data, gzipped)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names ``etag`` (weak comparison) or is ``*``."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (``gzip``, ``x-gzip`` or ``*`` with a q above 0)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params.strip() or float(q) > 0
            except ValueError:
                return False
    return False


def _tile_number(name: str, text: str) -> int:
    if not _INT.match(text):
        raise InvalidTile(f"tile {name} must be a non-negative integer, not {text[:20]!r}")
    return int(text)


def _version_param(text: str | None) -> int | None:
    if text is None:
        return None
    if not _INT.match(text):
        raise InvalidInput(f"v must be a layer version id (an integer), not {text[:20]!r}")
    return int(text)


async def tile(request: Request) -> Response:
    """``GET /tiles/{layer}/{z}/{x}/{y}.pbf[?v=<version id>]``: one vector tile of a layer's current
    version (one MVT layer named by the layer code).

    Features carry ``fid`` as the tile feature id and the catalogue attributes. A tile holds at most
    ``BLUEPRINT_TILE_FEATURE_LIMIT`` features. The ETag is the version id (``-gzip`` appended for the
    gzip form, sent when the client accepts it): a reload after a new version is loaded fetches new
    tiles, otherwise answers 304. With ``?v=<current version id>`` the tile is cacheable for a day
    (the viewer puts the version in its tile URLs).

    A plain Starlette route, not a FastAPI one (so not in the OpenAPI document): FastAPI's parameter
    handling cost 0.3–0.4 ms a request in a minimal app (measured once while writing this).
    Errors still answer problem+json.
    """
    if not hasattr(request.app.state, "tile_cache"):
        raise DatabaseUnavailable("the tile service is not started (the application lifespan did not run)")
    path = request.path_params
    zi, xi, yi = _tile_number("z", path["z"]), _tile_number("x", path["x"]), _tile_number("y", path["y"])
    check_address(zi, xi, yi)
    minor = vector_minor(load_catalogue(), path["layer"])
    v = _version_param(request.query_params.get("v"))
    version = await _current_version(request, minor.code, v)
    use_gzip = _accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = f'"{version.id}.{TILE_REVISION}{"-gzip" if use_gzip else ""}"'
    headers = {"ETag": etag, "Vary": "Accept-Encoding",
               "Cache-Control": "public, max-age=86400, immutable" if v == version.id
               else "public, max-age=0, must-revalidate"}
    if _etag_matches(request.headers.get("if-none-match", ""), etag):
        return Response(status_code=304, headers=headers)
    cache: TileCache = request.app.state.tile_cache
    key = (version.id, zi, xi, yi)
    found = await cache.get_or_build(key, partial(_load_tile, request, minor, version, zi, xi, yi))
    if found.empty:
        return Response(status_code=204, headers=headers)
    body = cache.encoded(key, found, gzipped=use_gzip)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=MVT, headers=headers)


router.add_route("/tiles/{layer}/{z}/{x}/{y}.pbf", tile, methods=["GET"], include_in_schema=False)


def _parse_fids(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(re.fullmatch(r"-?[0-9]{1,18}", p) for p in parts):
        raise InvalidInput("fid must be a comma-separated list of integers")
    if len(parts) > 1000:
        raise InvalidInput("at most 1000 fids per request")
    return [int(p) for p in parts]


@router.get("/api/v1/layers/{code}/features")
def layer_features(
    code: str, conn: ConnDep, settings: SettingsDep, catalogue: CatalogueDep,
    lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    tolerance_m: Annotated[float, Query(ge=0, le=5000, description="search radius around lon/lat")] = 0.0,
    fid: Annotated[str | None, Query(description="comma-separated feature ids")] = None,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    geometry: bool = True,
    version: Annotated[int | None, Query(ge=1, description="the layer's version number (default: current)")] = None,
    as_of: Annotated[str | None, Query(description="YYYY-MM-DD: the version in force that day")] = None,
) -> JSONResponse:
    """Features of a layer's current version (or of ``version``, or of the one in force ``as_of`` a
    date) as a GeoJSON FeatureCollection (EPSG:4326).

    At most one selector: ``lon``+``lat`` (features within ``tolerance_m`` of the point, nearest
    first), ``fid`` (those features) or ``bbox``; with none, the first ``limit`` features by fid.
    ``geometry=false`` leaves geometries out (attribute look-ups).
    """
    minor = vector_minor(catalogue, code)
    srid = settings.storage.storage_srid
    if (lon is None) != (lat is None):
        raise InvalidInput("give both lon and lat, or neither")
    selectors = [s for s in (lon is not None, fid is not None, bbox is not None) if s]
    if len(selectors) > 1:
        raise InvalidInput("give one of lon/lat, fid or bbox")
    chosen = store.chosen_version(conn, minor.code, number=version, as_of=parse_date(as_of))
    params: dict = {"limit": limit, "srid": srid}
    where, order = "", "fid"
    if lon is not None:
        params.update(lon=lon, lat=lat, tol=tolerance_m)
        point = "ST_Transform(ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :srid)"
        where = f"AND ST_DWithin(geom, {point}, :tol)"
        order = f"ST_Distance(geom, {point}), fid"
    elif fid is not None:
        params["fids"] = _parse_fids(fid)
        where = "AND fid = ANY(:fids)"
    elif bbox is not None:
        params.update(zip(("x0", "y0", "x1", "y1"), parse_bbox(bbox), strict=True))
        where = "AND geom && ST_Transform(ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4326), :srid)"
    geom_sql = "ST_AsGeoJSON(ST_Transform(geom, 4326), 7)" if geometry else "NULL"
    rows = conn.execute(sa.text(
        f"SELECT fid, props, {geom_sql} FROM feature WHERE version_id = {chosen.id} {where} "
        f"ORDER BY {order} LIMIT :limit"
    ), params).all()
    features = [
        {"type": "Feature", "id": row[0], "properties": {"fid": row[0], **row[1]},
         "geometry": json.loads(row[2]) if row[2] else None}
        for row in rows
    ]
    return JSONResponse({
        "type": "FeatureCollection",
        "layer": {"code": minor.code, "name_zh": minor.name_zh, "name_en": minor.name_en,
                  "geometry_type": minor.geometry_type, "version": chosen.version, "version_id": chosen.id,
                  "valid_from": chosen.valid_from.isoformat(),
                  "superseded_at": chosen.superseded_at.isoformat() if chosen.superseded_at else None},
        "number_returned": len(features),
        "features": features,
    })
