"""The tile cache: hits without the database, new versions never served stale, gzip, 304, the byte bound."""

from __future__ import annotations

import asyncio
import gzip
import time
from concurrent.futures import ThreadPoolExecutor

import geopandas as gpd
import httpx
import mapbox_vector_tile
import pytest

from layers.catalogue import load_catalogue
from layers.db import make_engine
from layers.ingest import load_frame
from tests.viewer.conftest import X0, Y0, box, run_server, with_server_settings
from tests.viewer.test_tiles import expected, tile_of
from viewer.tile_cache import ENTRY_OVERHEAD, Tile, TileCache
from viewer.tile_store import gzip_tile

PLAIN = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}


CACHE_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def steady_server(city, viewer_settings):  # noqa: ARG001 - data first
    """A server that remembers current versions for 5 s, so a test's requests all fall within the TTL."""
    yield from run_server(with_server_settings(viewer_settings, tile_cache_bytes=CACHE_BYTES, tile_version_ttl=5.0))


@pytest.fixture(scope="module")
def one_second_server(city, viewer_settings):  # noqa: ARG001 - data first
    """A server with the default version TTL of 1 s."""
    yield from run_server(with_server_settings(viewer_settings, tile_cache_bytes=CACHE_BYTES, tile_version_ttl=1.0))


@pytest.fixture(scope="module")
def small_cache_server(city, viewer_settings):  # noqa: ARG001 - data first
    """A server whose tile cache holds about two small tiles."""
    yield from run_server(with_server_settings(viewer_settings, tile_cache_bytes=2 * ENTRY_OVERHEAD + 400))


def tile_url(server, layer: str, z: int, x: int, y: int) -> str:
    return f"{server.url}/tiles/{layer}/{z}/{x}/{y}.pbf"


def pool_requests(server) -> int:
    """How many connections the tile endpoint has asked its pool for so far, once the tile store writes of
    earlier requests (in the background) are done."""
    deadline = time.monotonic() + 5
    while server.app.state.tile_writes.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.app.state.tile_pool.get_stats().get("requests_num", 0)


def run_async(make_coroutine):
    """Run a coroutine on a loop of its own thread (Playwright may hold this thread's event loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def feature_ids(data: bytes, layer: str) -> list[int]:
    tile = mapbox_vector_tile.decode(data)
    return sorted(f["id"] for f in tile[layer]["features"]) if layer in tile else []


def test_a_cached_tile_is_the_same_bytes_without_the_database(steady_server, city):
    x, y = tile_of(X0 - 500, Y0 + 500, 13)
    url = tile_url(steady_server, "2301", 13, x, y)
    first = httpx.get(url, headers=PLAIN)
    assert first.status_code == 200 and feature_ids(first.content, "2301") == [1]
    before = pool_requests(steady_server)
    again = httpx.get(url, headers=PLAIN)
    assert again.status_code == 200 and again.content == first.content
    assert pool_requests(steady_server) == before
    cached = steady_server.app.state.tile_cache.get((city.versions["2301"], 13, x, y))
    assert cached is not None and cached.data == first.content


def test_a_tile_with_nothing_is_cached_too(steady_server):
    x, y = tile_of(X0 + 50_000, Y0 + 50_000, 14)  # inside the storage CRS's area, no red line there
    url = tile_url(steady_server, "2301", 14, x, y)
    assert httpx.get(url).status_code == 204
    before = pool_requests(steady_server)
    assert httpx.get(url).status_code == 204
    assert pool_requests(steady_server) == before


def test_gzip_round_trip_is_the_same_tile(steady_server, city):
    x, y = tile_of(X0, Y0, 12)
    url = tile_url(steady_server, "2201", 12, x, y)
    plain = httpx.get(url, headers=PLAIN)
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    with httpx.stream("GET", url, headers=GZIP) as response:
        raw = b"".join(response.iter_raw())
        headers = response.headers
    assert headers["content-encoding"] == "gzip" and headers["vary"] == "Accept-Encoding"
    assert headers["content-type"] == "application/vnd.mapbox-vector-tile"
    assert raw != plain.content and gzip.decompress(raw) == plain.content
    assert feature_ids(gzip.decompress(raw), "2201") == sorted(expected(city.frames["2201"], 12, x, y))
    # Compressed once, then kept beside the plain bytes.
    cached = steady_server.app.state.tile_cache.get((city.versions["2201"], 12, x, y))
    assert cached.gzipped == raw
    with httpx.stream("GET", url, headers=GZIP) as response:
        assert b"".join(response.iter_raw()) == raw


@pytest.mark.parametrize("encoding", [PLAIN, GZIP])
def test_matching_etag_is_304_without_the_database(steady_server, encoding):
    x, y = tile_of(X0, Y0, 11)
    url = tile_url(steady_server, "2201", 11, x, y)
    first = httpx.get(url, headers=encoding)
    etag = first.headers["etag"]
    assert etag.endswith('-gzip"') == (encoding is GZIP)
    before = pool_requests(steady_server)
    for tag in (etag, f"W/{etag}", f'"0.0", {etag}'):
        again = httpx.get(url, headers={**encoding, "If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag and again.headers["vary"] == "Accept-Encoding"
    assert pool_requests(steady_server) == before
    # The other encoding's tag does not match this representation.
    other = etag.removesuffix('-gzip"') + '"' if encoding is GZIP else etag[:-1] + '-gzip"'
    assert httpx.get(url, headers={**encoding, "If-None-Match": other}).status_code == 200


def test_a_page_naming_an_older_version_gets_the_current_one_without_a_look_up(steady_server, city):
    version = city.versions["2301"]
    x, y = tile_of(X0 - 500, Y0 + 500, 12)
    url = tile_url(steady_server, "2301", 12, x, y)
    current = httpx.get(url, headers=PLAIN, params={"v": version})
    before = pool_requests(steady_server)
    stale = httpx.get(url, headers=PLAIN, params={"v": version - 1})
    assert pool_requests(steady_server) == before
    assert stale.content == current.content and stale.headers["etag"] == current.headers["etag"]
    assert "immutable" not in stale.headers["cache-control"] and "immutable" in current.headers["cache-control"]


def test_a_new_version_gets_new_tiles_never_the_cached_ones(one_second_server):
    """Named in the URL (as the viewer does) at once; unnamed, after the version TTL at the latest."""
    server = one_second_server
    minor = load_catalogue().minor("2205")
    ttl = server.settings.server.tile_version_ttl
    x, y = tile_of(X0, Y0, 12)
    url = tile_url(server, "2205", 12, x, y)
    frames = [[box(-300, -300, 300, 300)], [box(-300, -300, 300, 300), box(400, 400, 700, 700)],
              [box(-300, -300, 300, 300), box(400, 400, 700, 700), box(-700, -700, -400, -400)]]
    engine = make_engine(server.settings)
    try:
        def load(i: int) -> int:
            n = len(frames[i])
            frame = gpd.GeoDataFrame({"fid": list(range(1, n + 1)), "water_name": ["小清河"] * n},
                                     geometry=frames[i], crs="EPSG:4548")
            return load_frame(engine, server.settings, frame, minor=minor, source_name=f"blue{i}",
                              checksum=f"blue{i}").version_id

        first = load(0)
        old = httpx.get(url, headers=PLAIN)
        assert feature_ids(old.content, "2205") == [1]
        second = load(1)
        named = httpx.get(url, headers=PLAIN, params={"v": second})
        assert feature_ids(named.content, "2205") == [1, 2]
        assert named.headers["etag"] != old.headers["etag"] and "immutable" in named.headers["cache-control"]
        third = load(2)
        time.sleep(ttl)
        unnamed = httpx.get(url, headers=PLAIN)
        assert feature_ids(unnamed.content, "2205") == [1, 2, 3]
        assert unnamed.headers["etag"] == f'"{third}.1"'
    finally:
        engine.dispose()
    # The earlier versions' tiles are still cached under their own keys, just no longer asked for.
    cache = server.app.state.tile_cache
    assert cache.get((first, 12, x, y)).data == old.content
    assert cache.get((third, 12, x, y)).data == unnamed.content


def test_the_byte_bound_evicts_the_least_recently_used(small_cache_server, city):
    cache = small_cache_server.app.state.tile_cache
    version = city.versions["1101"]
    tiles = [(14, *tile_of(X0 + dx, Y0, 14)) for dx in range(-4_000, 4_001, 2_000)]  # five tiles in district 1
    for z, x, y in tiles:
        response = httpx.get(tile_url(small_cache_server, "1101", z, x, y), headers=PLAIN)
        assert response.status_code == 200
        assert cache.nbytes <= cache.max_bytes
    held = [t for t in tiles if cache.get((version, *t)) is not None]
    assert 0 < len(held) < len(tiles)
    assert held == tiles[-len(held):]  # the most recent ones stay


def test_lru_order_and_bound_in_memory():
    cache = TileCache(max_bytes=3 * (ENTRY_OVERHEAD + 100))
    for i in range(3):
        cache.put((1, 0, 0, i), Tile(bytes(100)))
    assert cache.get((1, 0, 0, 0)) is not None  # now the most recently used
    cache.put((1, 0, 0, 3), Tile(bytes(100)))
    assert cache.get((1, 0, 0, 1)) is None and cache.get((1, 0, 0, 0)) is not None
    assert cache.nbytes == 3 * (ENTRY_OVERHEAD + 100) and len(cache) == 3
    cache.put((1, 0, 0, 4), Tile(bytes(10_000)))  # larger than the whole cache: not kept, nothing evicted
    assert cache.get((1, 0, 0, 4)) is None and len(cache) == 3
    # Adding the gzip form counts against the bound as well.
    cache.encoded((1, 0, 0, 0), cache.get((1, 0, 0, 0)), gzipped=True)
    assert cache.get((1, 0, 0, 0)).gzipped is not None and cache.nbytes <= cache.max_bytes and len(cache) == 2
    off = TileCache(max_bytes=0)
    off.put((1, 0, 0, 0), Tile(b""))
    assert off.get((1, 0, 0, 0)) is None and off.nbytes == 0


def test_a_stored_tile_is_unzipped_once_for_a_client_without_gzip():
    cache = TileCache(max_bytes=1 << 20)
    stored = Tile(gzipped=gzip_tile(b"\x1a\x05mvt"))
    cache.put((1, 0, 0, 0), stored)
    assert cache.encoded((1, 0, 0, 0), stored, gzipped=False) == b"\x1a\x05mvt"
    kept = cache.get((1, 0, 0, 0))
    assert kept.data == b"\x1a\x05mvt" and kept.gzipped == stored.gzipped
    assert Tile(gzipped=b"").empty and Tile(b"").empty and not stored.empty
    with pytest.raises(ValueError, match="needs its MVT bytes"):
        Tile()


def test_concurrent_requests_for_a_missing_tile_build_it_once():
    cache = TileCache(max_bytes=1 << 20)
    builds = []

    async def build() -> Tile:
        builds.append(1)
        await asyncio.sleep(0.05)
        return Tile(b"mvt")

    async def many():
        return await asyncio.gather(*(cache.get_or_build((1, 2, 3, 4), build) for _ in range(8)))

    tiles = run_async(many)
    assert len(builds) == 1 and all(t.data == b"mvt" for t in tiles)


def test_a_failed_build_reaches_every_waiter_and_is_not_cached():
    cache = TileCache(max_bytes=1 << 20)

    async def build() -> Tile:
        await asyncio.sleep(0.02)
        raise RuntimeError("database gone")

    async def many():
        return await asyncio.gather(*(cache.get_or_build((1, 2, 3, 4), build) for _ in range(3)),
                                    return_exceptions=True)

    results = run_async(many)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.get((1, 2, 3, 4)) is None


@pytest.mark.browser
def test_the_browser_draws_gzip_tiles(page, server, city):  # noqa: ARG001 - data first
    from tests.viewer.test_browser import open_page, painted_canvases

    with page.page.expect_response(lambda r: "/tiles/3105/" in r.url and r.status == 200) as info:
        open_page(page, server.url + "/")
    assert info.value.headers.get("content-encoding") == "gzip"
    page.page.wait_for_function("[...document.querySelectorAll('.leaflet-bp-polygons-pane canvas')].length > 0")
    page.page.wait_for_timeout(500)
    assert painted_canvases(page, "bp-polygons") > 0
    assert page.errors == []
