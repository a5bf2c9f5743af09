"""Vector tiles: One Blueprint's /tiles endpoint against tipg on the same table, the same tiles.

    .venv/bin/python bench/tiles.py [--features 1000000] [--per-zoom 40] [--rounds 3] [--gzip]

One run: a synthetic cadastral layer (1203, default one million parcels of ~10 vertices over a
100 km square near Jinan) is loaded once into its own database through ``load_frame`` (reused when
already there); tipg serves a view of that layer's current partition. Each server runs as a
uvicorn process on the loopback (one worker each, all on TCP to PostgreSQL, same per-tile feature
cap, no compression asked unless ``--gzip``) and gets the same fixed list of z/x/y at z10–z14 (a
seeded sample of the tiles over the data). Phases are bounded in time.

One Blueprint keeps built tiles in memory and in a tile store in PostGIS (``blueprint tiles seed``
fills it ahead; the endpoint reads it before building). tipg has neither. So One Blueprint is
measured four ways, each row labelled in ``tile_cache``:

* ``off`` — a server with the memory cache and the store off (``BLUEPRINT_TILE_CACHE_BYTES=0``,
  ``BLUEPRINT_TILE_STORE=false``): every request builds its tile in PostGIS, as tipg does. This is
  the cost of building a tile and the like-for-like comparison with tipg (``throughput_*`` ratios,
  ``p50_z14_ms.blueprint``).
* ``stored`` — a fresh server with the memory cache off and the store on, after the store was seeded
  (timed; ``seed`` in the output): every request reads its tile from the store, as a user's first view
  of a tile does after a load and ``blueprint tiles seed``, and after a server restart
  (``throughput_stored_*`` ratios, ``p50_z14_ms.blueprint_stored``).
* ``first request`` — a server with the memory cache on and the store off, asked for each tile once,
  one client: what the first request of a tile not in the store costs (built and kept in memory).
* ``warm`` — the same server asked again: tiles come from its memory (``throughput_warm_*`` ratios,
  against tipg building every tile; not like-for-like, and labelled so).

PostgreSQL's buffers are warm for every engine (all get a warm-up pass first; the memory-cached
server's warm-up uses other tiles so its memory stays empty for the measured ones). Then for each zoom
``--rounds`` passes by one client and by four concurrent clients. Every One Blueprint server remembers
a layer's current version for ``BLUEPRINT_TILE_VERSION_TTL`` seconds (default 1; set it to 0 in the
environment to measure a version look-up on every tile). Without ``--gzip`` no compression is asked
for, so the ``stored`` server unzips each stored tile (0.1–0.2 ms at z14); with it, it sends them as stored.
Writes bench/results/tiles.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import geopandas as gpd
import mapbox_vector_tile
import numpy as np
import psycopg
import shapely
import sqlalchemy as sa
from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bench_settings, latency_ms, write_results  # noqa: E402
from layers import db  # noqa: E402
from layers.catalogue import load_catalogue  # noqa: E402
from layers.embedded import free_port  # noqa: E402
from layers.ingest import load_frame  # noqa: E402
from layers.settings import DatabaseSettings, Settings  # noqa: E402
from viewer.tile_seed import DEFAULT_JOBS, seed_tiles, store_bytes  # noqa: E402
from viewer.tiles import tile_at  # noqa: E402

DATABASE = "blueprint_bench_tiles"
LAYER = "1203"
ZOOMS = (10, 11, 12, 13, 14)
CLIENTS = 4
PHASE_SECONDS = 30.0
X0, Y0 = 470_000.0, 3_990_000.0  # south-west corner of the data, EPSG:4548 (Jinan)


def loopback_settings() -> Settings:
    """Settings on a database of its own on the platform's server, reached over TCP loopback."""
    settings = bench_settings(DATABASE)
    url = sa.engine.make_url(db.database_url(settings))
    if url.host is None:  # the embedded cluster: its socket URL → the same server on 127.0.0.1
        url = url.set(host="127.0.0.1", port=int(url.query["port"]), query={})
    return Settings(database=DatabaseSettings(DATABASE_URL=url.render_as_string(hide_password=False)),
                    storage=settings.storage, server=settings.server)


def parcels(n: int, seed: int) -> gpd.GeoDataFrame:
    """n jittered 10-vertex parcels on a square grid of 100 m cells."""
    rng = np.random.default_rng(seed)
    side = math.ceil(math.sqrt(n))
    i = np.arange(n)
    cx = X0 + (i % side) * 100.0 + 50
    cy = Y0 + (i // side) * 100.0 + 50
    angles = np.linspace(0, 2 * np.pi, 10, endpoint=False) + np.pi / 10
    radius = rng.uniform(30, 45, (n, 10))
    ring = np.stack([cx[:, None] + radius * np.cos(angles), cy[:, None] + radius * np.sin(angles)], -1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    return gpd.GeoDataFrame(
        {"fid": i + 1, "parcel_no": [f"P{k:07d}" for k in range(n)],
         "owner_type": np.where(rng.random(n) < 0.6, "state", "collective")},
        geometry=shapely.polygons(ring), crs="EPSG:4548")


def prepare(settings: Settings, n: int, seed: int) -> tuple[int, tuple[float, float, float, float]]:
    """Load the dataset unless already current; make the view tipg serves. Returns (version id, extent)."""
    url = db.database_url(settings)
    db.migrate(settings, url)
    engine = db.make_engine(settings)
    checksum = f"bench-parcels-{n}-{seed}"
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT v.id, v.source_checksum FROM layer l JOIN layer_version v ON v.id = l.current_version_id "
                "WHERE l.code = :c"), {"c": LAYER}).first()
        if row is None or row[1] != checksum:
            started = time.perf_counter()
            frame = parcels(n, seed)
            print(f"loading {n:,} parcels into layer {LAYER} …", flush=True)
            report = load_frame(engine, settings, frame, minor=load_catalogue().minor(LAYER),
                                source_name=f"{checksum}.parquet", checksum=checksum)
            print(f"  loaded in {time.perf_counter() - started:.1f} s", flush=True)
            version_id = report.version_id
        else:
            version_id = row[0]
            print(f"reusing layer {LAYER} version id {version_id} ({n:,} parcels)", flush=True)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS bench"))
            conn.execute(sa.text(
                f"CREATE OR REPLACE VIEW bench.parcels AS SELECT fid AS id, props->>'parcel_no' AS parcel_no, "
                f"props->>'owner_type' AS owner_type, geom FROM feature WHERE version_id = {int(version_id)}"))
            conn.execute(sa.text("ANALYZE feature"))
            extent = conn.execute(sa.text(
                "SELECT ST_XMin(extent), ST_YMin(extent), ST_XMax(extent), ST_YMax(extent) "
                "FROM layer_version WHERE id = :v"),
                {"v": version_id}).one()
    finally:
        engine.dispose()
    return version_id, tuple(extent)


def tile_list(extent, per_zoom: int, seed: int) -> dict[int, list[tuple[int, int, int]]]:
    """A seeded sample of the tiles over the data at each zoom."""
    w, s, e, n = Transformer.from_crs(4548, 4326, always_xy=True).transform_bounds(*extent)
    rng = random.Random(seed)
    out = {}
    for z in ZOOMS:
        (x0, y0), (x1, y1) = tile_at(w, n, z), tile_at(e, s, z)
        tiles = [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]
        out[z] = sorted(rng.sample(tiles, min(per_zoom, len(tiles))))
    return out


class Engine:
    """One tile server as a uvicorn process; ``cache`` labels its tile cache in the result rows."""

    def __init__(self, name: str, app: str, env: dict, path: str, *, cache: str) -> None:
        self.name, self.app, self.path, self.cache = name, app, path, cache
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None

    def url(self, z: int, x: int, y: int) -> str:
        return self.path.format(z=z, x=x, y=y)

    def __enter__(self) -> Engine:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} did not start: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start within 60 s")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


HEADERS: dict[str, str] = {}
"""Request headers of every tile request (``--gzip`` adds ``Accept-Encoding: gzip``)."""


def fetch(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers=HEADERS)
    response = conn.getresponse()
    return response.status, response.read()


def run_phase(engine: Engine, tiles: list, *, clients: int, rounds: int, seconds: float) -> dict:
    """Every tile ``rounds`` times, split over ``clients`` keep-alive connections; bounded by ``seconds``."""
    jobs = [t for _ in range(rounds) for t in tiles]
    random.Random(7).shuffle(jobs)
    latencies: list[float] = []
    sizes: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker(part: list) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=120)
        mine, my_sizes = [], []
        for z, x, y in part:
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            status, body = fetch(conn, engine.url(z, x, y))
            mine.append(time.perf_counter() - started)
            my_sizes.append(len(body))
            if status not in (200, 204):
                errors.append(f"{status} {engine.url(z, x, y)}: {body[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)
            sizes.extend(my_sizes)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(jobs[i::clients],)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{engine.name}: {len(errors)} failed requests, first: {errors[0]}")
    return {"seconds": round(wall, 3), "requests": len(latencies), **latency_ms(latencies, (50, 95, 99)),
            "requests_per_s": round(len(latencies) / wall, 1), "mean_bytes": round(statistics.fmean(sizes)),
            "complete": len(latencies) == len(jobs)}


def features_per_tile(engine: Engine, tiles: list) -> float:
    """Mean feature count of a few tiles (to show both engines serve comparable tiles)."""
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=120)
    counts = []
    for z, x, y in tiles[:5]:
        status, body = fetch(conn, engine.url(z, x, y))
        if status == 200 and body and body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        decoded = mapbox_vector_tile.decode(body) if status == 200 and body else {}
        counts.append(sum(len(v["features"]) for v in decoded.values()))
    conn.close()
    return round(statistics.fmean(counts), 1) if counts else 0.0


def seed_store(settings: Settings, version_id: int, dataset: str) -> dict:
    """Empty the version's stored tiles, then seed the measured zooms as ``blueprint tiles seed`` does (timed)."""
    with psycopg.connect(db.libpq_url(db.database_url(settings)), autocommit=True) as conn:
        conn.execute("DELETE FROM vector_tile WHERE version_id = %s", (version_id,))
        conn.execute("VACUUM FULL vector_tile")  # so the store's size below is what this seed wrote
    jobs = DEFAULT_JOBS
    print(f"seeding the tile store: layer {LAYER} z{min(ZOOMS)}–{max(ZOOMS)}, {jobs} jobs …", flush=True)
    started = time.perf_counter()
    (seed,) = seed_tiles(settings, codes=[LAYER], min_zoom=min(ZOOMS), max_zoom=max(ZOOMS), jobs=jobs)
    seconds = time.perf_counter() - started
    row = {"engine": "blueprint", "tile_cache": "seed", "dataset": dataset, "zoom": f"{min(ZOOMS)}-{max(ZOOMS)}",
           "mode": f"seed, {jobs} jobs", "clients": jobs, "seconds": round(seconds, 2), "tiles_built": seed.built,
           "tiles_empty": seed.empty, "tiles_per_s": round((seed.built + seed.empty) / seconds, 1),
           "gzip_bytes": seed.bytes, "store_bytes": store_bytes(settings)}
    print(f"  {seed.built:,} tiles built, {seed.empty:,} empty, {seed.bytes / 1e6:,.1f} MB gzip in {seconds:.1f} s; "
          f"the store holds {row['store_bytes'] / 1e6:,.1f} MB", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--per-zoom", type=int, default=40, help="tiles sampled per zoom")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the tiles per phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gzip", action="store_true", help="ask every engine for gzip (Accept-Encoding: gzip)")
    parser.add_argument("--out", type=Path, help="write here instead of bench/results/tiles.json")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    settings = loopback_settings()
    version_id, extent = prepare(settings, args.features, args.seed)
    tiles = tile_list(extent, args.per_zoom, args.seed)
    # The cached server warms up on other tiles, so the measured ones are still cold in its cache.
    others = {z: [t for t in sample if t not in tiles[z]]
              for z, sample in tile_list(extent, args.per_zoom, args.seed + 1000).items()}
    if args.gzip:
        HEADERS["Accept-Encoding"] = "gzip"
    limit = settings.server.tile_feature_limit
    url = settings.database.database_url
    pg_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"parcels-{args.features}"
    dataset = {"name": name, "layer": LAYER, "features": args.features,
               "version_id": version_id, "extent_epsg4548": list(extent),
               "tiles_per_zoom": {str(z): len(t) for z, t in tiles.items()}, "tile_feature_limit": limit,
               "accept_encoding": HEADERS.get("Accept-Encoding", "none"),
               "blueprint_tile_version_ttl_s": settings.server.tile_version_ttl,
               "blueprint_tile_cache_bytes": settings.server.tile_cache_bytes}
    results = [seed_store(settings, version_id, name)]
    path = "/tiles/" + LAYER + "/{z}/{x}/{y}.pbf"
    no_store = {"DATABASE_URL": url, "BLUEPRINT_TILE_STORE": "false"}
    cold = Engine("blueprint", "api.asgi:app", {**no_store, "BLUEPRINT_TILE_CACHE_BYTES": "0"}, path, cache="off")
    cached = Engine("blueprint", "api.asgi:app", no_store, path, cache="warm")
    stored = Engine("blueprint", "api.asgi:app",
                    {"DATABASE_URL": url, "BLUEPRINT_TILE_STORE": "true", "BLUEPRINT_TILE_CACHE_BYTES": "0"}, path,
                    cache="stored")
    tipg = Engine("tipg", "tipg.main:app",
                  {"DATABASE_URL": pg_url, "TIPG_DB_SCHEMAS": '["bench"]', "TIPG_DB_TABLES": '["bench.parcels"]',
                   "TIPG_MAX_FEATURES_PER_TILE": str(limit), "TIPG_DB_SPATIAL_EXTENT": "false",
                   "TIPG_DB_DATETIME_EXTENT": "false", "TIPG_CATALOG_TTL": "3600"},
                  "/collections/bench.parcels/tiles/WebMercatorQuad/{z}/{x}/{y}", cache="none (tipg has no tile cache)")
    engines = [cold, cached, stored, tipg]
    print(f"{'engine':10} {'tile cache':>13} {'zoom':>4} {'mode':>12} {'req':>5} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'tiles/s':>8} {'KB/tile':>8} {'feat/tile':>9}", flush=True)

    def record(engine: Engine, cache: str, z: int, mode: str, clients: int, stats: dict, feats: float) -> None:
        results.append({"engine": engine.name, "tile_cache": cache, "dataset": name, "zoom": z,
                        "mode": mode, "clients": clients, **stats, "mean_features": feats})
        print(f"{engine.name:10} {cache.split(' (')[0]:>13} {z:>4} {mode:>12} {stats['requests']:>5} "
              f"{stats['p50_ms']:>8.2f} {stats['p95_ms']:>8.2f} {stats['p99_ms']:>8.2f} "
              f"{stats['requests_per_s']:>8.1f} {stats['mean_bytes'] / 1024:>8.1f} {feats:>9.1f}", flush=True)

    # All servers stay up; phases alternate between them so a change in machine load hits them alike.
    with contextlib.ExitStack() as stack:
        for engine in engines:
            stack.enter_context(engine)
        # Warm-up (PostgreSQL's buffers, prepared statements, pools, tipg's catalogue): every measured tile
        # once through the servers that keep nothing in memory, other tiles through the memory-cached one.
        for engine, warm_tiles in ((cold, tiles), (stored, tiles), (tipg, tiles), (cached, others)):
            for z in ZOOMS:
                if warm_tiles[z]:  # low zooms may have no tile left over for the cached server
                    run_phase(engine, warm_tiles[z], clients=1, rounds=1, seconds=PHASE_SECONDS)
        for z in ZOOMS:
            feats = {engine.cache: features_per_tile(engine, tiles[z]) for engine in (cold, tipg)}
            # Same server code; asking the others here would fill the memory cache.
            feats[cached.cache] = feats[stored.cache] = feats[cold.cache]
            stats = run_phase(cached, tiles[z], clients=1, rounds=1, seconds=PHASE_SECONDS)
            record(cached, "first request", z, "sequential", 1, stats, feats[cached.cache])
            for mode, clients in (("sequential", 1), (f"concurrent{CLIENTS}", CLIENTS)):
                for engine in (engines if z % 2 == 0 else engines[::-1]):
                    stats = run_phase(engine, tiles[z], clients=clients, rounds=args.rounds, seconds=PHASE_SECONDS)
                    record(engine, engine.cache, z, mode, clients, stats, feats[engine.cache])

    def pick(engine: Engine, z: int, mode: str, cache: str | None = None) -> dict:
        cache = cache or engine.cache
        return next(r for r in results if r["engine"] == engine.name and r["tile_cache"] == cache
                    and r["zoom"] == z and r["mode"] == mode)

    ratios: dict = {}
    for label, ours_engine in (("", cold), ("stored_", stored), ("warm_", cached)):
        for mode in ("sequential", f"concurrent{CLIENTS}"):
            ours = [pick(ours_engine, z, mode)["requests_per_s"] for z in ZOOMS]
            theirs = [pick(tipg, z, mode)["requests_per_s"] for z in ZOOMS]
            ratios[f"throughput_{label}{mode}_by_zoom"] = {str(z): round(a / b, 2)
                                                           for z, a, b in zip(ZOOMS, ours, theirs, strict=True)}
            ratios[f"throughput_{label}{mode}_geomean"] = round(
                math.prod(a / b for a, b in zip(ours, theirs, strict=True)) ** (1 / len(ZOOMS)), 2)
    ratios["p50_z14_ms"] = {"blueprint": pick(cold, 14, "sequential")["p50_ms"],
                            "blueprint_stored": pick(stored, 14, "sequential")["p50_ms"],
                            "blueprint_first_request": pick(cached, 14, "sequential", "first request")["p50_ms"],
                            "blueprint_warm": pick(cached, 14, "sequential")["p50_ms"],
                            "tipg": pick(tipg, 14, "sequential")["p50_ms"]}
    notes = ("loopback HTTP/1.1 keep-alive; every engine one uvicorn worker on TCP to the same PostgreSQL; "
             "blueprint simplifies to 1/4 px and clips in the storage CRS, tipg orders by id. tile_cache: "
             "'seed' = the tile store filled for the measured zooms, as `blueprint tiles seed` does (timed); "
             "'off' = blueprint with memory cache and tile store off, every request builds the tile "
             "(like-for-like with tipg: throughput_sequential/concurrent4 ratios, p50_z14_ms.blueprint); "
             "'stored' = a fresh blueprint server, memory cache off, every request read from the seeded store "
             "(a user's first view of a tile after a seed or a restart: throughput_stored_* ratios, "
             "p50_z14_ms.blueprint_stored); 'first request' = each tile's first request to a server with the "
             "memory cache on and the store off (built); 'warm' = served from that server's memory "
             "(throughput_warm_* ratios; tipg has no tile cache and builds every tile). PostgreSQL buffers "
             "are warm for all.")
    out = write_results("tiles", dataset=dataset, results=results, ratios=ratios, path=args.out,
                        load_average_before=[round(v, 2) for v in load_before], notes=notes)
    print("ratios (blueprint / tipg):", json.dumps(ratios))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
