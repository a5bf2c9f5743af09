"""Vector tiles kept in memory, and each layer's current version remembered for a moment.

:class:`TileCache` keeps tiles by ``(layer version id, z, x, y)``. A loaded version never changes, so
an entry never goes stale: a new version has new keys and the old version's tiles age out of the LRU.
It is bounded by bytes (``BLUEPRINT_TILE_CACHE_BYTES``, per worker process). A tile comes either built
(plain MVT bytes) or from the tile store (gzip bytes, :mod:`viewer.tile_store`); the other form is made
the first time a client asks for it and kept beside the first.

:class:`CurrentVersions` remembers each layer's current version for ``BLUEPRINT_TILE_VERSION_TTL``
seconds (at most a few), so a cached tile costs no database round trip. A newly loaded version is
therefore served at most that long after it is switched in — and at once to a client that names it
(``?v=<version id>``, as the viewer's tile URLs do: the endpoint looks up a version newer than the one
it remembers).

Both are thread-safe. :meth:`TileCache.get_or_build` builds a missing tile once however many requests
ask for it together; it must be called from one event loop (the application's).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from cachetools import LRUCache, TTLCache

from viewer.tile_store import TileKey, gunzip_tile, gzip_tile

ENTRY_OVERHEAD = 256
"""Bytes counted per entry beyond its data (key, objects), so empty tiles count towards the bound too."""


@dataclass(frozen=True)
class Tile:
    """One tile: its MVT bytes, their gzip form, or both (at least one; empty bytes when no feature shows)."""

    data: bytes | None = None
    gzipped: bytes | None = None

    def __post_init__(self) -> None:
        if self.data is None and self.gzipped is None:
            raise ValueError("a tile needs its MVT bytes or their gzip form")

    @property
    def empty(self) -> bool:
        """No feature shows (nothing to send)."""
        return not (self.data or self.gzipped)

    @property
    def nbytes(self) -> int:
        return ENTRY_OVERHEAD + len(self.data or b"") + len(self.gzipped or b"")


@dataclass(frozen=True)
class LayerVersion:
    """A layer's current version: its id and the attributes it keeps beyond the catalogue (None: unknown)."""

    id: int
    extra: list[str] | None


class TileCache:
    """Tiles by :data:`TileKey`, least recently used out first once ``max_bytes`` is reached (0: keep none).

    Examples
    --------
    >>> cache = TileCache(max_bytes=1 << 20)
    >>> cache.put((7, 14, 13530, 6358), Tile(b"\\x1a\\x00"))
    >>> cache.get((7, 14, 13530, 6358)).data
    b'\\x1a\\x00'
    >>> len(cache.encoded((7, 14, 13530, 6358), cache.get((7, 14, 13530, 6358)), gzipped=True)) > 0
    True
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._tiles: LRUCache[TileKey, Tile] = LRUCache(maxsize=max(max_bytes, 0), getsizeof=lambda t: t.nbytes)
        self._lock = threading.Lock()
        self._building: dict[TileKey, asyncio.Future[Tile]] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held now (as counted against ``max_bytes``)."""
        return int(self._tiles.currsize)

    def __len__(self) -> int:
        return len(self._tiles)

    def get(self, key: TileKey) -> Tile | None:
        """The cached tile (now the most recently used), or None."""
        with self._lock:
            return self._tiles.get(key)

    def put(self, key: TileKey, tile: Tile) -> None:
        """Keep a tile, evicting the least recently used to make room (one larger than the cache is not kept)."""
        if tile.nbytes > self.max_bytes:
            return
        with self._lock:
            self._tiles[key] = tile

    def encoded(self, key: TileKey, tile: Tile, *, gzipped: bool) -> bytes:
        """The tile's gzip or plain bytes; the form it lacks is made from the other on first use and kept."""
        if gzipped and tile.gzipped is None:
            tile = replace(tile, gzipped=gzip_tile(tile.data))
            self.put(key, tile)
        elif not gzipped and tile.data is None:
            tile = replace(tile, data=gunzip_tile(tile.gzipped))
            self.put(key, tile)
        return tile.gzipped if gzipped else tile.data

    async def get_or_build(self, key: TileKey, build: Callable[[], Awaitable[Tile]]) -> Tile:
        """The cached tile, or ``await build()`` kept; requests for a tile being built wait for that build."""
        while True:
            tile = self.get(key)
            if tile is not None:
                return tile
            pending = self._building.get(key)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled, not the build: give up
                # The request that was building went away: build it here.
        future: asyncio.Future[Tile] = asyncio.get_running_loop().create_future()
        self._building[key] = future
        try:
            tile = await build()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # the waiters (if any) get it; nobody else needs to
            raise
        finally:
            del self._building[key]
        self.put(key, tile)
        future.set_result(tile)
        return tile


class CurrentVersions:
    """Layer code → :class:`LayerVersion`, each remembered for ``ttl`` seconds (0: not at all)."""

    def __init__(self, ttl: float) -> None:
        self._versions: TTLCache[str, LayerVersion] | None = TTLCache(maxsize=4096, ttl=ttl) if ttl > 0 else None
        self._lock = threading.Lock()

    def get(self, code: str) -> LayerVersion | None:
        if self._versions is None:
            return None
        with self._lock:
            return self._versions.get(code)

    def put(self, code: str, version: LayerVersion) -> None:
        if self._versions is not None:
            with self._lock:
                self._versions[code] = version
