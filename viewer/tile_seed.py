"""Seeding the tile store: every tile over the current layer versions' data, built before anyone asks.

For each layer version, zoom by zoom from its first zoom (by default the zoom from which the viewer
draws it, :func:`viewer.pages.layer_min_zoom`) to ``max_zoom``: the tiles whose box meets the
version's extent at the first zoom; at each next zoom the children of the tiles that have a feature
meeting their box (a child's box lies inside its parent's, so a tile with none has no child with any).
Each tile is built by PostGIS, gzip-compressed and written to the store; a tile where no feature
shows is stored as an empty row, so the endpoint answers it from the store too. Tiles already stored
(with the same recipe) are skipped, so a second run builds nothing. Tiles are built on ``jobs``
connections at once (PostgreSQL does the work, so threads are enough).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass

import psycopg

from layers.catalogue import Catalogue, Minor, load_catalogue
from layers.db import database_url, libpq_url
from layers.errors import InvalidInput, NotFound
from layers.settings import Settings
from spatial.site.request import transformer
from viewer.tile_store import WRITER_OPTIONS, TileRecipe, gzip_tile, stored_tiles, write_tile
from viewer.tiles import MAX_ZOOM, TILE_REVISION, build_tile, extra_attributes, tile_at, tile_plan

DEFAULT_MAX_ZOOM = 14
DEFAULT_JOBS = min(os.cpu_count() or 2, 8)  # tiles built at once, one connection each
Progress = Callable[[str, int, int], None]
TileAddress = tuple[int, int, int]
Box = tuple[float, float, float, float]

_VERSIONS_SQL = """
    SELECT l.code, v.id, v.feature_count, ST_XMin(v.extent), ST_YMin(v.extent), ST_XMax(v.extent),
           ST_YMax(v.extent), v.report -> 'extra_attributes'
    FROM layer l JOIN layer_version v ON v.id = l.current_version_id
    WHERE v.raster_path IS NULL AND v.extent IS NOT NULL
    ORDER BY l.code
"""


@dataclass(frozen=True)
class SeedVersion:
    """A layer's current version as the seeder needs it."""

    minor: Minor
    id: int
    feature_count: int
    extent: Box
    extra: list[str] | None


@dataclass
class LayerSeed:
    """What seeding one layer version did: tiles built (with features / empty), already stored, bytes, time."""

    layer: str
    version_id: int
    min_zoom: int
    max_zoom: int
    built: int = 0
    empty: int = 0
    already_stored: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def versions_to_seed(conn: psycopg.Connection, catalogue: Catalogue, codes: Sequence[str] | None) -> list[SeedVersion]:
    """The current version of each named vector layer (all loaded ones when ``codes`` is None).

    Raises NotFound for an unknown code or a layer with no version, InvalidInput for a raster layer.
    """
    wanted = list(dict.fromkeys(catalogue.minor(code).code for code in codes)) if codes else None
    for code in wanted or ():
        if catalogue.minor(code).geometry_type == "raster":
            raise InvalidInput(f"layer {code} is a raster layer: it has no vector tiles")
    found = {}
    for code, vid, count, x0, y0, x1, y1, extra in conn.execute(_VERSIONS_SQL):  # vector versions only
        if code in catalogue.minors:
            found[code] = SeedVersion(catalogue.minor(code), vid, count, (x0, y0, x1, y1), extra_attributes(extra))
    missing = [code for code in wanted or () if code not in found]
    if missing:
        raise NotFound(f"layer {', '.join(missing)} has no loaded version: load it first (blueprint layers load)")
    return [found[code] for code in wanted] if wanted is not None else list(found.values())


def _meets(box: Box | None, extent: Box) -> bool:
    return (box is not None and box[0] <= extent[2] and box[2] >= extent[0]
            and box[1] <= extent[3] and box[3] >= extent[1])


def tiles_over(extent: Box, zoom: int, srid: int) -> list[TileAddress]:
    """The tiles at ``zoom`` whose (buffered) box meets ``extent`` (storage CRS).

    Examples
    --------
    >>> tiles_over((500_000, 4_000_000, 500_100, 4_000_100), 14, 4548)
    [(14, 13516, 6426)]
    """
    w, s, e, n = transformer(srid, 4326).transform_bounds(*extent, densify_pts=21)
    (x0, y0), (x1, y1) = tile_at(w, n, zoom), tile_at(e, s, zoom)
    last = (1 << zoom) - 1
    # One tile more on each side: a neighbour's buffer may reach the extent.
    xs = range(max(x0 - 1, 0), min(x1 + 1, last) + 1)
    ys = range(max(y0 - 1, 0), min(y1 + 1, last) + 1)
    return [(zoom, x, y) for x in xs for y in ys if _meets(tile_plan(zoom, x, y, srid).box, extent)]


def children_over(tile: TileAddress, extent: Box, srid: int) -> list[TileAddress]:
    """The four tiles of the next zoom inside ``tile`` whose box meets ``extent``."""
    z, x, y = tile
    return [(z + 1, cx, cy) for cx in (2 * x, 2 * x + 1) for cy in (2 * y, 2 * y + 1)
            if _meets(tile_plan(z + 1, cx, cy, srid).box, extent)]


class _Connections:
    """One autocommit connection per worker thread, all closed at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = psycopg.connect(self.url, autocommit=True, options=WRITER_OPTIONS)
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        for conn in self._all:
            conn.close()


def _any_feature(conn: psycopg.Connection, version: SeedVersion, box: Box, srid: int) -> bool:
    """Whether a feature meets ``box`` (asked only of tiles where none shows; the version id in the text
    prunes partitions). Not just its bounding box: a long river's box spans many tiles it never enters."""
    return conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM feature WHERE version_id = {int(version.id)} "
        "AND ST_Intersects(geom, ST_MakeEnvelope(%s, %s, %s, %s, %s)))", (*box, srid)).fetchone()[0]


def seed_tiles(settings: Settings, *, codes: Sequence[str] | None = None, min_zoom: int | None = None,
               max_zoom: int | None = None, jobs: int | None = None,
               progress: Progress | None = None) -> list[LayerSeed]:
    """Build and store every tile of the current versions of ``codes`` (all vector layers: None) up to ``max_zoom``.

    ``min_zoom`` (default: each layer's first zoom in the viewer) is where each layer starts;
    ``jobs`` (default: the CPU count, at most 8) is how many tiles are built at once.

    Examples
    --------
    >>> seeds = seed_tiles(Settings(), codes=["2301"], max_zoom=12)  # doctest: +SKIP
    >>> seeds[0].built, seeds[0].already_stored  # doctest: +SKIP
    (57, 0)
    """
    from viewer.pages import layer_min_zoom  # the page module, only for the viewer's first zooms

    max_zoom = DEFAULT_MAX_ZOOM if max_zoom is None else max_zoom
    if not 0 <= max_zoom <= MAX_ZOOM:
        raise InvalidInput(f"max zoom {max_zoom} is outside 0–{MAX_ZOOM}")
    if min_zoom is not None and not 0 <= min_zoom <= max_zoom:
        raise InvalidInput(f"min zoom {min_zoom} is outside 0–{max_zoom} (the max zoom)")
    srid = settings.storage.storage_srid
    recipe = TileRecipe(TILE_REVISION, settings.server.tile_feature_limit)
    url = libpq_url(database_url(settings))
    connections = _Connections(url)
    workers = DEFAULT_JOBS if jobs is None else max(jobs, 1)
    with psycopg.connect(url, autocommit=True) as conn, ThreadPoolExecutor(workers) as pool:
        try:
            versions = versions_to_seed(conn, load_catalogue(), codes)
            seeds = []
            for version in versions:
                first = (min_zoom if min_zoom is not None
                         else layer_min_zoom(version.feature_count, version.extent, srid))
                seed = LayerSeed(version.minor.code, version.id, first, max_zoom)
                started = time.perf_counter()
                stored = stored_tiles(conn, version.id, recipe)
                if first <= max_zoom:
                    _seed_version(pool, connections, version, seed, stored, recipe, srid, progress)
                seed.seconds = round(time.perf_counter() - started, 3)
                seeds.append(seed)
            return seeds
        finally:
            pool.shutdown(cancel_futures=True)
            connections.close()


def _seed_version(pool: ThreadPoolExecutor, connections: _Connections, version: SeedVersion, seed: LayerSeed,
                  stored: dict[TileAddress, bool], recipe: TileRecipe, srid: int, progress: Progress | None) -> None:
    """Zoom by zoom: build the candidates in parallel, then descend into those with a feature in their box."""

    def one(tile: TileAddress) -> tuple[int | None, list[TileAddress]]:
        """(gzip bytes stored now, None if stored before; the next zoom's candidates under the tile)."""
        conn = connections.get()
        z, x, y = tile
        if tile in stored:
            nbytes, shows = None, stored[tile]
        else:
            data = build_tile(conn, version.minor, version_id=version.id, z=z, x=x, y=y, srid=srid,
                              limit=recipe.feature_limit, extra=version.extra)
            gzipped = gzip_tile(data)
            write_tile(conn, (version.id, z, x, y), recipe, gzipped)
            nbytes, shows = len(gzipped), bool(data)
        if z == seed.max_zoom or not (shows or _any_feature(conn, version, tile_plan(z, x, y, srid).box, srid)):
            return nbytes, []
        return nbytes, children_over(tile, version.extent, srid)

    candidates = tiles_over(version.extent, seed.min_zoom, srid)
    for zoom in range(seed.min_zoom, seed.max_zoom + 1):
        stage = f"layer {version.minor.code} z{zoom}"
        below: list[TileAddress] = []
        for done, future in enumerate(as_completed([pool.submit(one, t) for t in candidates]), 1):
            nbytes, children = future.result()
            if nbytes is None:
                seed.already_stored += 1
            elif nbytes:
                seed.built += 1
                seed.bytes += nbytes
            else:
                seed.empty += 1
            below.extend(children)
            if progress is not None:
                progress(stage, done, len(candidates))
        candidates = sorted(below)  # neighbours together: their features share index and table pages


def store_bytes(settings: Settings) -> int:
    """The tile store's size on disk (table, TOAST and index), bytes."""
    with psycopg.connect(libpq_url(database_url(settings)), autocommit=True) as conn:
        return int(conn.execute("SELECT pg_total_relation_size('vector_tile')").fetchone()[0])
