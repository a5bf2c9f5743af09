"""Ingest benchmark: 100,000 polygons of ~40 vertices into PostGIS, side by side with the peers.

    python bench/ingest.py [--rows 100000] [--vertices 40] [--repeat 3] [--no-profile]

What each row's clock includes (wall time, median of ``--repeat`` runs, runs interleaved):

- ``blueprint`` from a file (GeoParquet, and the GeoPackage copy): ``load_layer`` end to end —
  file checks and SHA-256, read, CRS, geometry validity (GEOS ``is_valid``) and attribute schema
  checks, binary COPY into a new version partition, GiST index, attach, switch, commit.
- ``blueprint`` from an in-memory GeoDataFrame: ``load_frame``, the same minus reading the file.
- ``to_postgis`` from the same GeoDataFrame: ``GeoDataFrame.to_postgis`` (CSV COPY of hex EWKB
  into a new table). No validation, no spatial index.
- ``ogr2ogr`` from the GeoPackage copy (Debian's GDAL 3.6 cannot read GeoParquet): PostgreSQL
  driver with ``PG_USE_COPY=YES``, one transaction, GiST index. No validation.
- ``pgdump`` from the same GeoDataFrame: pyogrio's GDAL writes a PGDump (``PG_USE_COPY=YES``,
  GiST index) into a pipe that ``psql`` runs as it arrives. No validation.
- ``binary_copy`` (a floor, like the issue's "binary COPY" figure): blueprint's own writer on the
  same GeoDataFrame with validity skipped — binary COPY, GiST index, attach, switch, commit. What
  the ``blueprint`` rows cost beyond it is the price of validation.

Every engine loads into the same server; each run's rows are checked afterwards (count and total
area against shapely's). Before each run, off the clock: earlier loads are dropped, a CHECKPOINT
and Python's garbage collector run, and the machine gets a second to settle. Rounds interleave
the engines, in an order rotated each round. Results go to
``bench/results/ingest.json``; ``profile`` there splits one blueprint load into its stages, and
``machine_speed`` compares the peers' rates here with the issue's figures for them (to_postgis
~22k, GDAL COPY ~80k rows/s), to read the 150k target on a slower or faster machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import pyogrio  # noqa: E402
import shapely  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.common import (  # noqa: E402
    DATA_DIR,
    Measurement,
    bench_database,
    cached,
    libpq_conninfo,
    print_table,
    ratio,
    result_row,
    star_polygons,
    write_results,
)
from layers.catalogue import load_catalogue  # noqa: E402
from layers.ingest import load_frame, load_layer, validity  # noqa: E402
from layers.ingest import wkb as wkb_  # noqa: E402
from layers.ingest.copy_rows import copy_rows  # noqa: E402
from layers.ingest.prepare import (  # noqa: E402
    GeometryRepair,
    PrepareReport,
    check_attributes,
    check_geometries,
    feature_ids,
    prepare_features,
    reproject,
    storage_crs_transform,
)
from layers.ingest.sources import PlanFeatures, file_sha256, open_source, read_features  # noqa: E402
from layers.ingest.write import NewVersion, write_version  # noqa: E402

ENGINES = ("blueprint", "to_postgis", "ogr2ogr", "pgdump", "binary_copy")
LAYER = "2301"  # ecological red line: polygons, one enumerated and one free-text attribute
SRID = 4548
TARGET_ROWS_PER_S = 150_000
SETTLE_S = 1.0
PEER_TABLES = {"to_postgis": "bench_to_postgis", "ogr2ogr": "bench_ogr2ogr", "pgdump": "bench_pgdump"}


def make_frame(rows: int, vertices: int) -> gpd.GeoDataFrame:
    kinds = np.array(load_catalogue().minor(LAYER).attribute("redline_type").values)
    rng = np.random.default_rng(1)
    return gpd.GeoDataFrame(
        {"fid": np.arange(1, rows + 1, dtype=np.int64),
         "redline_type": kinds[rng.integers(0, len(kinds), rows)],
         "name": [f"生态红线斑块{i}" for i in range(rows)]},
        geometry=star_polygons(rows, vertices=vertices, seed=0), crs=SRID)


def datasets(rows: int, vertices: int) -> tuple[gpd.GeoDataFrame, Path, Path]:
    """The frame and its GeoParquet and GeoPackage copies (cached in bench/data)."""
    stem = DATA_DIR / f"ingest-{rows}x{vertices}"
    frame: list[gpd.GeoDataFrame] = []

    def build() -> gpd.GeoDataFrame:
        if not frame:
            frame.append(make_frame(rows, vertices))
        return frame[0]

    parquet = cached(stem.with_suffix(".parquet"), lambda p: build().to_parquet(p, index=False))
    gpkg = cached(stem.with_suffix(".gpkg"),
                  lambda p: pyogrio.write_dataframe(build(), p, layer="polygons", driver="GPKG"))
    return gpd.read_parquet(parquet), parquet, gpkg


# --- engines ------------------------------------------------------------------------------------

def reset(engine: sa.Engine) -> None:
    """Drop what earlier runs loaded, then checkpoint, so that every run starts alike."""
    with engine.begin() as conn:
        for name in conn.execute(sa.text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'feature'")).scalars():
            conn.execute(sa.text(f"DROP TABLE {name}"))
        conn.execute(sa.text("UPDATE layer SET current_version_id = NULL"))
        conn.execute(sa.text("DELETE FROM layer_version"))
        for table in PEER_TABLES.values():
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CHECKPOINT"))
    except sa.exc.DBAPIError:
        pass  # not a superuser on an external server: skip
    gc.collect()
    time.sleep(SETTLE_S)  # let the server's and the kernel's background work after the drops finish


def run_ogr2ogr(conninfo: str, gpkg: Path) -> None:
    cmd = ["ogr2ogr", "-f", "PostgreSQL", f"PG:{conninfo}", str(gpkg), "polygons",
           "-nln", PEER_TABLES["ogr2ogr"], "-overwrite", "-gt", "unlimited",
           "-lco", "GEOMETRY_NAME=geom", "-lco", "SPATIAL_INDEX=GIST", "-lco", "FID=ogc_fid",
           "--config", "PG_USE_COPY", "YES"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ogr2ogr failed: {done.stderr.strip()[-300:]}")


def run_pgdump(conninfo: str, frame: gpd.GeoDataFrame) -> None:
    """pyogrio (GDAL) writes a PGDump into a FIFO while psql executes it."""
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "dump.sql"
        os.mkfifo(fifo)
        psql = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-f", str(fifo)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            pyogrio.set_gdal_config_options({"PG_USE_COPY": "YES"})
            # /vsistdout_redirect/ opens the FIFO for writing only (a plain path would be probed first).
            pyogrio.write_dataframe(frame, f"/vsistdout_redirect/{fifo}", layer=PEER_TABLES["pgdump"],
                                    driver="PGDump", layer_options={"GEOMETRY_NAME": "geom", "SPATIAL_INDEX": "GIST",
                                                                    "SRID": str(SRID), "FID": "ogc_fid"})
        except BaseException:
            with open(fifo, "wb"):  # let psql see the end of its input
                pass
            psql.wait()
            raise
        _, stderr = psql.communicate()
        if psql.returncode != 0:
            raise RuntimeError(f"psql failed on the PGDump: {stderr.strip()[-300:]}")


def write_unvalidated(engine: sa.Engine, frame: gpd.GeoDataFrame, minor) -> None:
    """blueprint's writer without the validity check: the binary COPY floor of this machine."""
    fids, wkb, attributes = prepare_features(PlanFeatures.from_frame(frame), minor=minor, srid=SRID,
                                             crs_override=None, report=PrepareReport())
    new = NewVersion(layer_code=LAYER, source_name="bench", source_checksum="bench", source_crs="EPSG:4548",
                     srid=SRID, valid_from=None, report={}, coverage_wkb=None)
    write_version(engine, new, fids=fids, attributes=attributes, wkb=wkb)


def check_loaded(engine: sa.Engine, engine_name: str, expected_rows: int, expected_area: float) -> None:
    """The last run really stored every polygon, unchanged (count and total area)."""
    if engine_name in ("blueprint", "binary_copy"):
        query = "SELECT count(*), sum(ST_Area(geom)) FROM feature WHERE version_id = " \
                "(SELECT current_version_id FROM layer WHERE code = :code)"
    else:
        column = "geometry" if engine_name == "to_postgis" else "geom"  # geopandas keeps the frame's name
        query = f"SELECT count(*), sum(ST_Area({column})) FROM {PEER_TABLES[engine_name]}"
    with engine.connect() as conn:
        count, area = conn.execute(sa.text(query), {"code": LAYER}).one()
    if count != expected_rows or not np.isclose(area, expected_area, rtol=1e-9):
        raise RuntimeError(f"{engine_name} stored {count} rows of area {area}, expected {expected_rows} "
                           f"of {expected_area}")


# The figures for the peers "on a machine like ours" (rows/s).
REFERENCE_ROWS_PER_S = {("to_postgis", "geodataframe"): 22_000, ("pgdump", "geodataframe"): 80_000,
                        ("ogr2ogr", "geopackage"): 80_000}


def machine_speed(by_key: dict) -> dict | None:
    """How fast this machine is next to the issue's reference: the geometric mean, over the peers
    measured here, of their rows/s over the issue's figure for them."""
    peers = {f"{engine}[{source}]": by_key[(engine, source)]["rows_per_s"] / reference
             for (engine, source), reference in REFERENCE_ROWS_PER_S.items() if (engine, source) in by_key}
    if not peers:
        return None
    return {"factor": round(float(np.exp(np.mean(np.log(list(peers.values()))))), 3),
            "peers": {name: round(value, 3) for name, value in peers.items()}}


# --- profile ------------------------------------------------------------------------------------

def profile(engine: sa.Engine, settings, parquet: Path, repeat: int) -> dict:
    """Where one blueprint load's time goes: the pipeline's stages run one by one (median seconds),
    plus single-threaded costs of its client-side pieces (and of the GEOS calls they replace)."""
    minor = load_catalogue().minor(LAYER)
    stages: dict[str, list[float]] = {}

    def lap(name: str, started: float) -> float:
        now = time.perf_counter()
        stages.setdefault(name, []).append(now - started)
        return now

    for _ in range(repeat):
        # Free the last round's arrays first, as a load in the pipeline would have: reading into
        # fresh memory costs ~3 ms per MB in page faults on the 2-core VM (0.5 s instead of 0.16 s).
        features = wkb = attributes = fids = None
        reset(engine)
        t = start = time.perf_counter()
        checksum = file_sha256(parquet)  # the pipeline computes it while reading
        t = lap("sha256", t)
        features = read_features(open_source(parquet))
        t = lap("read_geoparquet", t)
        report = PrepareReport()
        transformer = storage_crs_transform(features.crs, srid=SRID, crs_override=None, report=report)
        fids = feature_ids(features.attributes, features.fids)
        t = lap("crs_and_fids", t)
        wkb = reproject(check_geometries(features.geometry, minor=minor, fids=fids), transformer,
                        report=report, srid=SRID)
        t = lap("cheap_geometry_checks", t)
        attributes = check_attributes(features.attributes, minor=minor, fids=fids, report=report)
        lap("check_attributes", t)
        new = NewVersion(layer_code=LAYER, source_name=parquet.name, source_checksum=checksum,
                         source_crs=report.source_crs, srid=SRID, valid_from=None, report={}, coverage_wkb=None)
        timings: dict[str, float] = {}
        write_version(engine, new, fids=fids, attributes=attributes, wkb=wkb,
                      repair=GeometryRepair(minor=minor, report=report), timings=timings)
        for name in ("copy", "index", "parts", "repair", "commit"):
            stages.setdefault(f"write_{name}", []).append(timings[name])
        lap("total", start)
    medians = {name: round(float(np.median(v)), 4) for name, v in stages.items()}

    floor: dict[str, float] = {}
    wkb_all = shapely.to_wkb(wkb_.objects(wkb), byte_order=1)
    geoms_all = shapely.from_wkb(wkb_all)
    for name, fn in {"shapely_is_valid_1_thread": lambda: shapely.is_valid(geoms_all),
                     "validity_is_valid": lambda: validity.is_valid(wkb, threads=1),
                     "wkb_total_bounds": lambda: wkb_.total_bounds(wkb),
                     "copy_rows": lambda: copy_rows(1, fids, attributes, wkb),
                     "wkb_array_from_shapely": lambda: wkb_.wkb_array(geoms_all),
                     "shapely_from_wkb": lambda: shapely.from_wkb(wkb_all)}.items():
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        floor[name] = round(float(np.median(runs)), 4)
    return {"stages_s": medians, "single_thread_s": floor,
            "note": "stages run one after another (the pipeline computes sha256 while reading); write_copy "
                    "includes the row encoding (copy_rows), overlapped with the server parsing the COPY; "
                    "validity (validity_is_valid: the star-shaped proof on coordinates read off the WKB, then "
                    "GEOS for what it cannot prove) and the extent run in the background through write_copy "
                    "and write_index; write_parts includes the wait for them"}


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--vertices", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset to run")
    args = parser.parse_args(argv)
    chosen = args.engines.split(",")
    unknown = sorted(set(chosen) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine {', '.join(unknown)}; known: {', '.join(ENGINES)}")

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (numbers are only "
          "comparable when the machine is otherwise idle)")
    settings, engine = bench_database()
    frame, parquet, gpkg = datasets(args.rows, args.vertices)
    n = len(frame)
    area = float(shapely.area(frame.geometry.values).sum())
    dataset = f"{n} polygons x {args.vertices + 1} vertices, EPSG:{SRID}"
    conninfo = libpq_conninfo(engine)
    minor = load_catalogue().minor(LAYER)
    catalogue = load_catalogue()

    runs = {
        ("blueprint", "geoparquet"): lambda: load_layer(engine, settings, path=parquet, layer_code=LAYER,
                                                        catalogue=catalogue),
        ("blueprint", "geopackage"): lambda: load_layer(engine, settings, path=gpkg, layer_code=LAYER,
                                                        catalogue=catalogue),
        ("blueprint", "geodataframe"): lambda: load_frame(engine, settings, frame, minor=minor,
                                                          source_name="bench", checksum="bench"),
        ("to_postgis", "geodataframe"): lambda: frame.to_postgis(PEER_TABLES["to_postgis"], engine,
                                                                 if_exists="replace", index=False),
        ("ogr2ogr", "geopackage"): lambda: run_ogr2ogr(conninfo, gpkg),
        ("pgdump", "geodataframe"): lambda: run_pgdump(conninfo, frame),
        ("binary_copy", "geodataframe"): lambda: write_unvalidated(engine, frame, minor),
    }
    runs = {key: run for key, run in runs.items() if key[0] in chosen}
    if not shutil.which("ogr2ogr"):
        print("ogr2ogr not found (apt-get install gdal-bin): skipping that peer")
        runs.pop(("ogr2ogr", "geopackage"), None)
    if not shutil.which("psql"):
        runs.pop(("pgdump", "geodataframe"), None)

    measured = {key: Measurement() for key in runs}
    loads: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    order = list(runs)
    for round_ in range(args.repeat):
        # Interleaved, and rotated each round, so that a noisy moment hits every engine alike.
        for key in order[round_ % len(order):] + order[:round_ % len(order)]:
            run = runs[key]
            reset(engine)
            loads[key].append(round(os.getloadavg()[0], 2))
            started = time.perf_counter()
            run()
            measured[key].runs.append(time.perf_counter() - started)
            check_loaded(engine, key[0], n, area)
            print(f"  round {round_ + 1}: {key[0]:10s} from {key[1]:12s} {measured[key].runs[-1]:7.3f} s")

    facts = {"blueprint": (True, True), "to_postgis": (False, False), "ogr2ogr": (False, True),
             "pgdump": (False, True), "binary_copy": (False, True)}
    results = [result_row(engine_name, dataset, measured[(engine_name, source)], rows=n, input=source,
                          validates=facts[engine_name][0], spatial_index=facts[engine_name][1],
                          load_average_1min=loads[(engine_name, source)])
               for engine_name, source in runs]
    by_key = {(r["engine"], r["input"]): r for r in results}
    ratios = {}
    for ours, theirs in ((("blueprint", "geodataframe"), ("to_postgis", "geodataframe")),
                         (("blueprint", "geodataframe"), ("pgdump", "geodataframe")),
                         (("blueprint", "geodataframe"), ("binary_copy", "geodataframe")),
                         (("blueprint", "geopackage"), ("ogr2ogr", "geopackage")),
                         (("blueprint", "geoparquet"), ("ogr2ogr", "geopackage"))):
        if ours in by_key and theirs in by_key:
            ratios[f"blueprint[{ours[1]}]/{theirs[0]}[{theirs[1]}]"] = ratio(by_key[ours], by_key[theirs])

    print()
    print_table(results, ["engine", "input", "seconds", "rows_per_s", "validates", "spatial_index"])
    print()
    for name, value in ratios.items():
        print(f"{name:45s} {value:5.2f}x")
    best = max(r["rows_per_s"] for r in results if r["engine"] == "blueprint")
    print(f"target {TARGET_ROWS_PER_S:,} rows/s: best blueprint {best:,.0f} rows/s "
          f"({'met' if best >= TARGET_ROWS_PER_S else 'not met'} on this machine)")
    speed = machine_speed(by_key)
    extra = {"target_rows_per_s": TARGET_ROWS_PER_S, "repeat": args.repeat, "machine_speed": speed}
    if speed:
        print(f"this machine runs the peers at {speed['factor']:.2f}x the issue's reference machine "
              f"({', '.join(f'{k} {v:.2f}x' for k, v in speed['peers'].items())}); the target scaled "
              f"to it: {TARGET_ROWS_PER_S * speed['factor']:,.0f} rows/s")
    if not args.no_profile:
        extra["profile"] = profile(engine, settings, parquet, args.repeat)
        print("\nprofile of one blueprint load from GeoParquet (median s):")
        for name, value in extra["profile"]["stages_s"].items():
            print(f"  {name:22s} {value:.3f}")
        for name, value in extra["profile"]["single_thread_s"].items():
            print(f"  {name:26s} {value:.3f} (single thread, for reference)")
    reset(engine)
    path = write_results("ingest", dataset=dataset, results=results, ratios=ratios, **extra)
    print(f"\nwrote {path}")
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
