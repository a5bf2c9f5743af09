"""Reading what lies under a site from PostGIS: one statement for every layer, sent in pipeline
mode so that the caller can work (read the rasters) while the server runs it.

The statement names the version ids as literals (``version_id = ANY('{…}')``) so PostgreSQL
prunes the ``feature`` partitions while planning, and its text only changes when a layer gets a
new version or the kind of site changes, so psycopg prepares it after a few uses and later checks
skip planning. Each partition is probed through its own GiST index.

- *area* layers: features intersecting the checked polygon, clipped to it (``NULL`` when the
  feature covers it all, the common case for big zones);
- *reach* layers (control lines with setbacks): features within ``reach`` metres of it, clipped to
  its envelope grown by ``reach``, so setback strips can be drawn in Python;
- big features come from their pieces in ``site_piece`` (:mod:`spatial.site.pieces`) and a site
  of more than ``LARGE_SITE`` vertices is cut into pieces too, so no test ever walks a 50,000-vertex
  boundary;
- one extra row carries the stamp of the layer versions, read in the same snapshot, so the
  versions chosen from memory are confirmed without another round trip.

Distances to the site are measured in Python (GEOS indexes them; PostGIS walks every pair of
segments). Layer coverages are read once per version and kept prepared: a version never changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import shapely
import sqlalchemy as sa

from layers import store
from layers.store import VersionInfo
from spatial.site import pieces

T = TypeVar("T")


@dataclass(frozen=True)
class Hit:
    """One stored feature near a site."""

    fid: int
    props: dict
    piece: shapely.Geometry
    """The feature clipped to the checked polygon (area layers) or to the reach box (reach layers)."""
    covers_site: bool
    distance_m: float
    """Distance from the feature to the site itself (0 when they touch or overlap)."""


def _ids(ids: list[int]) -> str:
    return "'{" + ",".join(str(int(i)) for i in sorted(ids)) + "}'::int[]"


LARGE_SITE = 256
"""Sites with more vertices than this are cut into pieces in the statement, so that every feature
is intersected with the few pieces it meets rather than with the whole boundary."""


def fetch_hits(conn: sa.Connection, *, site: shapely.Geometry, checked: shapely.Geometry, srid: int,
               area_versions: list[int], reach_versions: list[int], reach_m: float,
               meanwhile: Callable[[], T]) -> tuple[dict[int, list[Hit]], tuple, T]:
    """Features of the given versions under (or near) a site, grouped by version id.

    Parameters
    ----------
    site, checked : the site, and the polygon being checked (the site grown by ``buffer_m``; the
        same object when there is no buffer), both in the storage CRS ``srid``.
    area_versions : versions whose features are clipped to ``checked``.
    reach_versions : versions whose features within ``reach_m`` of ``checked`` are returned.
    meanwhile : the caller's other work, run once the statement is sent, while the server executes it.

    The versions' big features must have been subdivided (:func:`spatial.site.pieces.ensure_pieces`).

    Returns the hits, the stamp of the versions (:data:`STAMP`), read in the same snapshot (if it
    differs from the one the version ids were chosen under, the caller chooses again), and what
    ``meanwhile()`` returned.
    """
    buffered = checked is not site
    large = shapely.get_num_coordinates(checked) > LARGE_SITE
    sql = _statement(srid=srid, area=_ids(area_versions) if area_versions else None,
                     reach=_ids(reach_versions) if reach_versions else None, reach_m=reach_m,
                     buffered=buffered, large=large)
    params = {"checked": shapely.to_wkb(checked)}
    if buffered:
        params["site"] = shapely.to_wkb(site)
    # Pipeline mode sends the statement without waiting for its rows (psycopg prepares it all the
    # same); leaving the pipeline costs one more small round trip.
    driver = conn.connection.driver_connection
    with driver.pipeline(), driver.cursor() as cursor:
        cursor.execute(sql, params)
        done = meanwhile()
        rows = cursor.fetchall()
    stamp = tuple(next(r[2] for r in rows if r[0] == -1))
    rows = [r for r in rows if r[0] != -1]
    geoms = shapely.from_wkb([r[3] for r in rows])
    site_area = float(site.area)
    reach_ids = set(reach_versions)
    out: dict[int, list[Hit]] = {}
    for row, piece in zip(rows, geoms, strict=True):
        geom = checked if piece is None else piece
        covers = row[4]
        if covers is None:  # cut in pieces: the feature covers the site when it holds all of its area
            full = site_area * (1 - 1e-9)
            covers = shapely.area(geom) >= full and shapely.area(intersect(geom, site) if buffered else geom) >= full
        # GEOS finds distances to a large site far faster than PostGIS does, so they are taken here.
        # A clipped piece keeps the feature's nearest point: it lies within the clipping box.
        distance = 0.0  # an empty piece is a feature that only touches: distance 0
        if (buffered or row[0] in reach_ids) and not geom.is_empty and not shapely.intersects(site, geom):
            distance = float(shapely.distance(site, geom))
        out.setdefault(row[0], []).append(Hit(row[1], row[2], geom, bool(covers), distance))
    return out, stamp, done


def intersect(piece: shapely.Geometry, polygon: shapely.Geometry) -> shapely.Geometry:
    """``piece ∩ polygon``, skipping the overlay when a (prepared) ``polygon`` contains the piece."""
    return piece if shapely.contains(polygon, piece) else shapely.intersection(piece, polygon)


def _statement(*, srid: int, area: str | None, reach: str | None, reach_m: float, buffered: bool,
               large: bool) -> str:
    """The one statement of a check. Its text depends only on the version ids and the kind of site,
    so psycopg prepares it after a few checks and later ones skip planning.

    Rows: version id, fid, props, the feature clipped (NULL: it covers the checked polygon) and
    whether it covers the site (NULL: decided from areas in Python); one more row, version id -1,
    carries the versions' stamp. Small features come whole from ``feature``; big ones from
    ``site_piece``, their pieces unioned back per feature. A large site is itself cut into pieces
    (``sp``) and joined the same way.
    """
    box = f"ST_Expand(s.checked, {reach_m!r})"
    clip, sources = ("sp.g", "s, sp") if large else ("s.checked", "s")
    covers = "NULL::boolean" if large else "ST_CoveredBy(s.site, f.geom)"
    pieced = """
        SELECT f.version_id, f.fid, (array_agg(f.props))[1],
               ST_AsBinary(ST_CollectionExtract(ST_Union(ST_Intersection(f.geom, {clip})), 3)), NULL::boolean
        FROM {table} f, {sources}
        WHERE f.version_id = ANY({ids}) AND {test}{small}
        GROUP BY f.version_id, f.fid"""
    parts = []
    if area and large:
        parts.append(pieced.format(table="feature", ids=area, clip=clip, sources=sources,
                                   test=f"ST_Intersects(f.geom, {clip})", small=f" AND {pieces.SMALL}"))
    elif area:
        parts.append(f"""
        SELECT f.version_id, f.fid, f.props,
               CASE WHEN ST_CoveredBy(s.checked, f.geom) THEN NULL
                    ELSE ST_AsBinary(ST_CollectionExtract(ST_Intersection(f.geom, s.checked), 3)) END, {covers}
        FROM feature f, s
        WHERE f.version_id = ANY({area}) AND ST_Intersects(f.geom, s.checked) AND {pieces.SMALL}""")
    if area:
        parts.append(pieced.format(table="site_piece", ids=area, clip=clip, sources=sources,
                                   test=f"ST_Intersects(f.geom, {clip})", small=""))
    if reach:
        within = f"ST_DWithin(f.geom, {clip}, {reach_m!r})"
        if large:
            parts.append(pieced.format(table="feature", ids=reach, clip=box, sources=sources, test=within,
                                       small=f" AND {pieces.SMALL}"))
        else:
            parts.append(f"""
        SELECT f.version_id, f.fid, f.props, ST_AsBinary(ST_CollectionExtract(ST_Intersection(f.geom, {box}), 3)),
               {covers}
        FROM feature f, s
        WHERE f.version_id = ANY({reach}) AND {within} AND {pieces.SMALL}""")
        parts.append(pieced.format(table="site_piece", ids=reach, clip=box, sources=sources, test=within, small=""))
    parts.append(f"SELECT -1, 0::bigint, ({STAMP}), NULL::bytea, NULL::boolean")
    site = f"ST_GeomFromWKB(%(site)s, {srid})" if buffered else f"ST_GeomFromWKB(%(checked)s, {srid})"
    head = f"WITH s AS (SELECT ST_GeomFromWKB(%(checked)s, {srid}) AS checked, {site} AS site)"
    if large:
        head += f", sp AS MATERIALIZED (SELECT ST_Subdivide(s.checked, {pieces.MAX_VERTICES}) AS g FROM s)"
    return head + " UNION ALL ".join(parts)


# A one-row fingerprint of every layer's versions and current pointer: it changes whenever a
# version is loaded, superseded, re-pointed or removed.
STAMP = """
    SELECT jsonb_build_array(
        (SELECT string_agg(coalesce(current_version_id, 0)::text, ',' ORDER BY code) FROM layer),
        max(id), count(*), max(loaded_at)::text, max(valid_from)::text, max(superseded_at)::text)
    FROM layer_version
"""


@dataclass(frozen=True)
class Versions:
    """The layer versions in force for a date (None: now), and the stamp they were read under."""

    stamp: tuple
    by_code: dict[str, VersionInfo]


_versions: dict[tuple, Versions] = {}
_latest: dict[tuple, Versions] = {}


def versions_in_force(conn: sa.Connection, as_of) -> Versions:
    """``store.versions_as_of``, read again only when the stamp has changed."""
    stamp = tuple(conn.exec_driver_sql(STAMP).scalar_one())
    url = conn.engine.url.render_as_string(hide_password=True)
    found = _versions.get((url, stamp, as_of))
    if found is None:
        found = Versions(stamp, store.versions_as_of(conn, as_of))
        with _lock:
            if len(_versions) > 1_000:
                _versions.clear()
            _versions[(url, stamp, as_of)] = found
    _latest[(url, as_of)] = found
    return found


def last_versions(conn: sa.Connection, as_of) -> Versions | None:
    """The versions the last check for this date used, to be confirmed by the stamp it returns."""
    return _latest.get((conn.engine.url.render_as_string(hide_password=True), as_of))


_coverages: dict[tuple, shapely.Geometry] = {}
_shapes: dict[bytes, shapely.Geometry] = {}
_lock = threading.Lock()


def coverages(conn: sa.Connection, versions: list[VersionInfo]) -> dict[int, shapely.Geometry]:
    """The prepared coverage polygon of each version (None when a version has none)."""
    url = conn.engine.url.render_as_string(hide_password=True)
    keys = {v.id: (url, v.id, v.loaded_at) for v in versions}
    missing = [vid for vid, key in keys.items() if key not in _coverages]
    if missing:
        rows = conn.exec_driver_sql(
            "SELECT id, ST_AsBinary(coverage) FROM layer_version WHERE id = ANY(%(ids)s)", {"ids": missing}).all()
        with _lock:
            if len(_coverages) > 5_000:  # many databases in one process (tests): start again
                _coverages.clear()
                _shapes.clear()
            for vid, wkb in rows:
                # Layers loaded with one city boundary share one prepared geometry (and one test).
                if wkb is not None and bytes(wkb) not in _shapes:
                    _shapes[bytes(wkb)] = shapely.from_wkb(wkb)
                    shapely.prepare(_shapes[bytes(wkb)])
                _coverages[keys[vid]] = None if wkb is None else _shapes[bytes(wkb)]
    return {vid: _coverages.get(key) for vid, key in keys.items()}


def covered_share(coverage: shapely.Geometry | None, polygon: shapely.Geometry) -> float:
    """The share of ``polygon`` inside ``coverage`` (1.0 without a coverage: the whole layer extent)."""
    if coverage is None or shapely.covers(coverage, polygon):
        return 1.0
    if not shapely.intersects(coverage, polygon):
        return 0.0
    return float(shapely.area(shapely.intersection(coverage, polygon)) / polygon.area)


def props_value(props: dict, name: str):
    value = props.get(name)
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
