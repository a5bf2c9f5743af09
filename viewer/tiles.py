"""Mapbox vector tiles of a layer version, built by PostGIS (``ST_AsMVT``) in one query.

The query filters on the storage CRS's GiST index with the tile's box in that CRS, clips each
feature to that box in the storage CRS, brings it to tile coordinates, snaps it to the tile grid
and encodes the lot with ``ST_AsMVT``. Bringing geometries to tile coordinates is the costly step
when done with ``ST_Transform`` (a projection per vertex); within one tile the storage CRS →
Web Mercator mapping is so close to affine that one ``ST_Affine`` does it to a fraction of a tile
unit. :func:`tile_plan` fits that affine map per tile and measures its worst error over the tile;
where the error would exceed :data:`AFFINE_MAX_ERROR` (low zooms, large tiles) the exact
``ST_Transform`` path is used instead. Either way geometries are simplified to a quarter pixel
(:data:`SIMPLIFY`) before snapping, which drops features smaller than that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import psycopg
from pyproj import CRS

from layers.catalogue import Minor
from layers.errors import BlueprintError, NotFound
from spatial.site.request import transformer

EXTENT = 4096
"""Tile coordinate grid (MVT default)."""
BUFFER = 64
"""Tile units kept beyond each edge so strokes do not show seams."""
MAX_ZOOM = 22
TILE_REVISION = 1
"""Bump when the tile encoding changes: clients' cached tiles (ETag) and stored tiles are not reused."""
AFFINE_MAX_ERROR = 2.0
"""Largest deviation (tile units; 1/8 of a pixel on a 256 px tile) accepted from the affine map."""
SIMPLIFY = 4.0
"""Douglas-Peucker tolerance in tile units (1/4 of a pixel): invisible, but a tile of small
polygons seen from afar shrinks to a third and draws that much faster in the browser."""
HALF_WORLD = 20037508.342789244  # Web Mercator half-width, metres


class InvalidTile(BlueprintError):
    """A tile address that is not a tile (answers 400)."""

    title = "Invalid tile address"


@dataclass(frozen=True)
class TilePlan:
    """How to build one tile: the filter box in the storage CRS and the map to tile coordinates.

    ``affine`` is ``(a, b, d, e, xoff, yoff)`` from storage coordinates to tile units (y down),
    or None when the exact path is needed; ``mercator`` maps Web Mercator to tile units as
    ``(scale, xoff, yoff)`` (u = scale·X + xoff, v = −scale·Y + yoff). ``tolerance`` is
    :data:`SIMPLIFY` tile units in storage units (simplification on the exact path). ``box`` is
    None when the tile lies outside the storage CRS's area of use (no feature can be there).
    """

    box: tuple[float, float, float, float] | None
    affine: tuple[float, float, float, float, float, float] | None
    mercator: tuple[float, float, float]
    tolerance: float
    error: float


def check_address(z: int, x: int, y: int) -> None:
    """Raise :class:`InvalidTile` for a zoom outside 0–22, :class:`NotFound` for x/y off the grid.

    Examples
    --------
    >>> check_address(14, 13530, 6358)
    """
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidTile(f"zoom {z} is outside 0–{MAX_ZOOM}")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise NotFound(f"tile {z}/{x}/{y} does not exist: x and y run from 0 to {n - 1} at zoom {z}")


def tile_at(lon: float, lat: float, z: int) -> tuple[int, int]:
    """(x, y) of the tile at zoom ``z`` holding the point (EPSG:4326); points off the grid get the edge tile.

    Examples
    --------
    >>> tile_at(117.0, 36.65, 14)
    (13516, 6397)
    """
    n = 1 << z
    lat = min(max(lat, -85.05), 85.05)
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


@lru_cache(maxsize=8)
def _usable_lonlat(srid: int) -> tuple[float, float, float, float]:
    """Where the storage CRS gives sane numbers: its area of use widened by 3°."""
    area = CRS.from_epsg(srid).area_of_use
    if area is None:
        return (-180.0, -85.0, 180.0, 85.0)
    return (max(area.west - 3, -180.0), max(area.south - 3, -85.0),
            min(area.east + 3, 180.0), min(area.north + 3, 85.0))


def _lon(x: float) -> float:
    return x / HALF_WORLD * 180.0


def _lat(y: float) -> float:
    return math.degrees(math.atan(math.sinh(y / HALF_WORLD * math.pi)))


def _merc(lon: float, lat: float) -> tuple[float, float]:
    return lon / 180.0 * HALF_WORLD, math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * HALF_WORLD / math.pi


# The affine fit is least squares on a 7×7 grid spanning the unit square (s, t), the same for every
# tile: its pseudo-inverse is computed once and each tile's fit is one small matrix product.
_UNIT_S, _UNIT_T = (g.ravel() for g in np.meshgrid(np.linspace(0.0, 1.0, 7), np.linspace(0.0, 1.0, 7)))
_UNIT_DESIGN = np.column_stack([_UNIT_S, _UNIT_T, np.ones_like(_UNIT_S)])
_UNIT_FIT = np.linalg.pinv(_UNIT_DESIGN)


@lru_cache(maxsize=16384)
def tile_plan(z: int, x: int, y: int, srid: int) -> TilePlan:
    """Plan one tile (cached): its storage-CRS box and the affine map if it is accurate enough.

    Examples
    --------
    >>> plan = tile_plan(14, 13530, 6358, 4548)
    >>> plan.affine is not None and plan.error < AFFINE_MAX_ERROR
    True
    """
    size = 2 * HALF_WORLD / (1 << z)
    minx, maxy = -HALF_WORLD + x * size, HALF_WORLD - y * size
    scale = EXTENT / size
    mercator = (scale, -minx * scale, maxy * scale)
    margin = BUFFER / scale
    # The buffered tile, cut to where the storage CRS is usable, in lon/lat.
    w, s, e, n = _usable_lonlat(srid)
    lon0, lat0 = max(_lon(minx - margin), w), max(_lat(maxy - size - margin), s)
    lon1, lat1 = min(_lon(minx + size + margin), e), min(_lat(maxy + margin), n)
    if lon0 >= lon1 or lat0 >= lat1:
        return TilePlan(None, None, mercator, 0.0, 0.0)
    (mx0, my0), (mx1, my1) = _merc(lon0, lat0), _merc(lon1, lat1)
    to_merc, from_merc = transformer(srid, 3857), transformer(3857, srid)
    box = from_merc.transform_bounds(mx0, my0, mx1, my1, densify_pts=21)
    tolerance = SIMPLIFY * (box[2] - box[0]) / ((mx1 - mx0) * scale)
    # Fit storage → tile units on a 7×7 grid over the box and keep it if its worst error is small.
    width, height = box[2] - box[0], box[3] - box[1]
    mx, my = to_merc.transform(box[0] + _UNIT_S * width, box[1] + _UNIT_T * height)
    uv = np.column_stack([np.asarray(mx) * scale + mercator[1], -np.asarray(my) * scale + mercator[2]])
    coef = _UNIT_FIT @ uv  # rows: per unit s, per unit t, constant; columns: u, v
    error = float(np.abs(_UNIT_DESIGN @ coef - uv).max())
    if not math.isfinite(error) or error > AFFINE_MAX_ERROR:
        return TilePlan(tuple(box), None, mercator, tolerance, error)
    (us, vs), (ut, vt), (u0, v0) = coef.tolist()
    a, b, d, e = us / width, ut / height, vs / width, vt / height
    affine = (a, b, d, e, u0 - a * box[0] - b * box[1], v0 - d * box[0] - e * box[1])
    return TilePlan(tuple(box), affine, mercator, tolerance, error)


def _attribute_sql(minor: Minor, extra: list[str] | None) -> str:
    """The catalogue attributes as one jsonb (ST_AsMVT makes its keys typed tile attributes).

    ``extra`` names the attributes the version kept beyond the catalogue (its load report):
    removing those from ``props`` is much cheaper than building a new object per feature, which
    is the fallback when they are not known.
    """
    if extra is not None:
        return "props" if not extra else "(props - %(extra)s::text[])"
    if not minor.attributes:
        return "'{}'::jsonb"
    pairs = ", ".join(f"'{a.name}', props -> '{a.name}'" for a in minor.attributes)
    return f"jsonb_strip_nulls(jsonb_build_object({pairs}))"


def tile_sql(minor: Minor, version_id: int, plan: TilePlan, extra: list[str] | None = None) -> str:
    """The one SQL statement that builds the tile (parameters: box, affine/mercator, limit).

    The version id is an integer from the database written into the text so the planner prunes
    the partitions at plan time; attribute names come from the validated catalogue.
    """
    clip = ("CASE WHEN geom @ b.box THEN geom ELSE ST_ClipByBox2D(geom, b.box) END"
            if minor.geometry_type != "point" else "geom")
    if plan.affine is not None:
        to_tile = f"ST_Simplify(ST_Affine({clip}, %(a)s, %(b)s, %(d)s, %(e)s, %(xoff)s, %(yoff)s), {SIMPLIFY})"
    else:
        simplified = f"ST_Simplify({clip}, %(tolerance)s)" if minor.geometry_type != "point" else clip
        to_tile = f"ST_Affine(ST_Transform({simplified}, 3857), %(scale)s, 0, 0, -%(scale)s, %(mx)s, %(my)s)"
    return f"""
        WITH b AS (SELECT ST_MakeEnvelope(%(x0)s, %(y0)s, %(x1)s, %(y1)s, %(srid)s) AS box)
        SELECT ST_AsMVT(t, %(layer)s, {EXTENT}, 'geom', 'fid') FROM (
            SELECT fid, attrs, g AS geom FROM (
                SELECT fid, {_attribute_sql(minor, extra)} AS attrs,
                       ST_ForcePolygonCCW(ST_SnapToGrid({to_tile}, 1)) AS g
                FROM feature, b
                WHERE version_id = {int(version_id)} AND geom && b.box
                LIMIT %(limit)s
            ) s WHERE g IS NOT NULL AND NOT ST_IsEmpty(g)
        ) t
    """


def tile_params(minor: Minor, plan: TilePlan, *, srid: int, limit: int, extra: list[str] | None = None) -> dict:
    """The parameters of :func:`tile_sql` for one tile."""
    assert plan.box is not None
    x0, y0, x1, y1 = plan.box
    params = {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "srid": srid, "layer": minor.code, "limit": limit}
    if extra:
        params["extra"] = list(extra)
    if plan.affine is not None:
        params.update(zip(("a", "b", "d", "e", "xoff", "yoff"), plan.affine, strict=True))
    else:
        scale, mx, my = plan.mercator
        params.update(scale=scale, mx=mx, my=my, tolerance=plan.tolerance)
    return params


def tile_query(minor: Minor, *, version_id: int, z: int, x: int, y: int, srid: int, limit: int,
               extra: list[str] | None = None) -> tuple[str, dict] | None:
    """The SQL and parameters of one tile of one layer version, or None if no feature can be there.

    ``extra`` names the attributes the version holds beyond the catalogue's (None: unknown);
    tiles leave them out. Raises :class:`InvalidTile` or NotFound for a bad address.
    """
    check_address(z, x, y)
    plan = tile_plan(z, x, y, srid)
    if plan.box is None:
        return None
    return (tile_sql(minor, version_id, plan, extra),
            tile_params(minor, plan, srid=srid, limit=limit, extra=extra))


def extra_attributes(report_value: object) -> list[str] | None:
    """The attributes a version keeps beyond the catalogue, from its load report (None: not recorded)."""
    if isinstance(report_value, list) and all(isinstance(k, str) for k in report_value):
        return report_value
    return None


def build_tile(conn: psycopg.Connection, minor: Minor, *, version_id: int, z: int, x: int, y: int, srid: int,
               limit: int, extra: list[str] | None = None) -> bytes:
    """The MVT bytes of one tile of one layer version (empty bytes when no feature shows).

    The HTTP endpoint runs the same :func:`tile_query` on an asynchronous pool; this is the seeder's.

    Examples
    --------
    >>> data = build_tile(conn, catalogue.minor("2301"), version_id=7, z=14, x=13530, y=6358,
    ...                   srid=4548, limit=20_000)  # doctest: +SKIP
    """
    query = tile_query(minor, version_id=version_id, z=z, x=x, y=y, srid=srid, limit=limit, extra=extra)
    if query is None:
        return b""
    row = conn.execute(*query, binary=True).fetchone()  # the bytea as is, not hex-encoded
    return bytes(row[0]) if row and row[0] is not None else b""
