"""The tile store: built vector tiles kept in PostGIS (table ``vector_tile``) by (layer version, z, x, y).

A layer version never changes, so a stored tile never goes stale; its rows go when the version is
deleted (foreign key, ON DELETE CASCADE). A tile is stored in its gzip form (what browsers ask for),
zero bytes when no feature shows, so an empty area is looked up, not built again. Each row records how
it was built (:class:`TileRecipe`): a row built with another tile encoding or feature cap is not served.

The tile endpoint reads a tile here before building it, and writes what it built in the background
(:class:`BackgroundWrites`; a failed write is logged, never the request's failure).
``blueprint tiles seed`` (:mod:`viewer.tile_seed`) fills the store ahead of the first user.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

log = logging.getLogger("blueprint.tiles")

TileKey = tuple[int, int, int, int]
"""(layer version id, z, x, y)."""
GZIP_LEVEL = 1
"""zlib level 1, since the first request of a tile waits for it: on 60 z12–z14 tiles of the tile benchmark's
parcels (52 kB each on average) it left 56 % of the bytes (level 6: 53 %) in 40 % of level 6's time."""
WRITER_OPTIONS = "-c synchronous_commit=off"
"""libpq ``options`` of connections that write tiles: the store holds derived data (a tile lost in a crash
is built again), so a write need not wait for its WAL flush. The embedded cluster runs so anyway; on a
server that waits, a 15 kB tile's write took 0.8 ms instead of 0.45 ms (measured on a 2-core VM)."""


@dataclass(frozen=True)
class TileRecipe:
    """How tiles are built: the encoding's revision (``viewer.tiles.TILE_REVISION``) and the feature cap."""

    revision: int
    feature_limit: int


def gzip_tile(data: bytes) -> bytes:
    """The stored (gzip) form of MVT bytes; empty stays empty.

    Examples
    --------
    >>> gunzip_tile(gzip_tile(b"\\x1a\\x00")), gzip_tile(b"")
    (b'\\x1a\\x00', b'')
    """
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if data else b""


def gunzip_tile(gzipped: bytes) -> bytes:
    """The MVT bytes of a stored tile (for the rare client that does not accept gzip)."""
    return gzip.decompress(gzipped) if gzipped else b""


_READ = ("SELECT data FROM vector_tile WHERE version_id = %s AND z = %s AND x = %s AND y = %s "
         "AND revision = %s AND feature_limit = %s")
_WRITE = """
    INSERT INTO vector_tile (version_id, z, x, y, revision, feature_limit, data) VALUES (%s, %s, %s, %s, %s, %s, %b)
    ON CONFLICT (version_id, z, x, y) DO UPDATE
        SET revision = EXCLUDED.revision, feature_limit = EXCLUDED.feature_limit, data = EXCLUDED.data
"""
_STORED = ("SELECT z, x, y, length(data) > 0 FROM vector_tile WHERE version_id = %s "
           "AND revision = %s AND feature_limit = %s")


async def read_tile(conn: psycopg.AsyncConnection, key: TileKey, recipe: TileRecipe) -> bytes | None:
    """The stored gzip bytes of a tile (``b""``: no feature shows), or None when it is not stored."""
    cursor = await conn.execute(_READ, (*key, recipe.revision, recipe.feature_limit), binary=True)
    row = await cursor.fetchone()
    return None if row is None else bytes(row[0])


def write_tile(conn: psycopg.Connection, key: TileKey, recipe: TileRecipe, gzipped: bytes) -> None:
    """Store a tile's gzip bytes (replacing a row built another way), on an autocommit connection."""
    conn.execute(_WRITE, _write_params(key, recipe, gzipped))


def _write_params(key: TileKey, recipe: TileRecipe, gzipped: bytes) -> tuple:
    return (*key, recipe.revision, recipe.feature_limit, gzipped)


def stored_tiles(conn: psycopg.Connection, version_id: int, recipe: TileRecipe) -> dict[tuple[int, int, int], bool]:
    """The version's tiles stored with this recipe: (z, x, y) → whether a feature shows in it."""
    rows = conn.execute(_STORED, (version_id, recipe.revision, recipe.feature_limit)).fetchall()
    return {(z, x, y): shows for z, x, y, shows in rows}


class BackgroundWrites:
    """Writes tiles built by requests to the store after the response, on the endpoint's pool.

    A failed write is logged and dropped: the tile was served, and the next request that misses it
    builds it again. :meth:`drain` waits for writes still running (at shutdown).
    """

    def __init__(self, pool: AsyncConnectionPool, recipe: TileRecipe) -> None:
        self.pool, self.recipe = pool, recipe
        self._running: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        """Writes submitted and not finished yet."""
        return len(self._running)

    def submit(self, key: TileKey, gzipped: bytes) -> None:
        """Store a built tile's gzip bytes once the caller has moved on."""
        task = asyncio.create_task(self._write(key, gzipped))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _write(self, key: TileKey, gzipped: bytes) -> None:
        try:
            async with self.pool.connection() as conn:
                await conn.execute(_WRITE, _write_params(key, self.recipe, gzipped))
        except Exception as exc:  # best effort: the tile was served already
            log.warning("tile %s/%s/%s of version %s not stored: %s", *key[1:], key[0], exc)

    async def drain(self) -> None:
        """Wait for the writes still running."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
