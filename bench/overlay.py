"""Benchmark: polygon overlay, One Blueprint against its peers, on synthetic coverages and the demo city.

Run ``.venv/bin/python bench/overlay.py [--part all|synthetic|demo] [--quick] [--scale 10] [--repeat N]``.
One run measures two parts on the same code (``--part`` runs one of them and keeps the other's
earlier results in the results file).

Synthetic part, the raw two-layer overlay. Two synthetic coverages of 100,000 polygons (10,000
with ``--quick``) of 45 vertices each are generated deterministically: jittered grids with wiggly
shared edges in EPSG:4548 coordinates, the second rotated by 10° and shifted. It times:

- ``blueprint``: :func:`spatial.overlay.intersect_pairs` with 2 threads;
- ``geopandas``: ``geopandas.overlay(how="intersection")``;
- ``duckdb``: DuckDB spatial (the extension loaded from the pip package's file, no network);
- ``sedonadb``: SedonaDB's spatial join;
- ``postgis-serial`` / ``postgis-2-workers``: in a scratch database on the embedded cluster (or
  ``DATABASE_URL``'s server);
- ``geos-floor``: plain ``shapely.intersection`` over exactly the truly overlapping pairs on one
  thread, divided by 2 cores: what GEOS alone would need with perfect pairing and scaling.

Every engine's pair count (pieces of positive area) and total area are checked against ours.

Demo part, rule-driven conflict detection on the demo city at scale 10 (``--scale``) loaded into
its own database: ``blueprint`` (the read and detect steps of ``blueprint conflicts run``) against
``geopandas`` (read the same layers whole, ``geopandas.overlay`` every rule's layer pair, then
filter by the rules); see ``bench/overlay_demo.py`` for exactly what each clock includes. Per rule,
conflict counts and areas must agree (areas within 1e-9 relative) or the benchmark fails.

Results go to ``bench/results/overlay.json`` (rows of both datasets; ratios keyed by dataset;
per-part details under ``parts``). A peer that cannot be installed or loaded is reported as
skipped with the reason; nothing is faked.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import gc
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("DO_NOT_TRACK", "1")  # SedonaDB and friends: no telemetry from a benchmark
os.environ.setdefault("SCARF_NO_ANALYTICS", "true")

import geopandas as gpd  # noqa: E402
import numpy as np  # noqa: E402
import shapely  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    RESULTS_DIR,
    Measurement,
    machine,
    print_table,
    ratio,
    result_row,
    write_results,
)
from spatial.overlay import intersect_pairs  # noqa: E402

CRS_EPSG = 4548
ORIGIN = (480_000.0, 4_050_000.0)  # CGCS2000 / 3-degree GK CM 117E, around Jinan
CELL = 100.0
THREADS = 2


# --- data -------------------------------------------------------------------------------------


def jittered_grid(
    nx: int, ny: int, *, seed: int, angle: float = 0.0, shift: tuple[float, float] = (0.0, 0.0), seg: int = 11
) -> np.ndarray:
    """A gap-free coverage of nx*ny wiggly quadrilaterals with 4*seg+1 vertices each."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(nx + 1.0), np.arange(ny + 1.0))
    nodes = np.stack([gx, gy], -1)
    jitter = rng.uniform(-0.15, 0.15, nodes.shape)
    jitter[[0, -1], :, 1] = 0  # straight outer boundary
    jitter[:, [0, -1], 0] = 0
    nodes = nodes + jitter
    t = np.linspace(0, 1, seg + 1)[1:-1, None]

    def edges(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Intermediate points of each edge, pushed off the straight line; neighbours share them."""
        d = b - a
        normal = np.stack([-d[..., 1], d[..., 0]], -1) / np.linalg.norm(d, axis=-1, keepdims=True)
        pts = a[..., None, :] + d[..., None, :] * t
        return pts + normal[..., None, :] * rng.uniform(-0.03, 0.03, pts.shape[:-1])[..., None]

    h, v = edges(nodes[:, :-1], nodes[:, 1:]), edges(nodes[:-1, :], nodes[1:, :])
    h[0, :, :, 1], h[-1, :, :, 1] = 0, ny
    v[:, 0, :, 0], v[:, -1, :, 0] = 0, nx
    parts = [
        nodes[:-1, :-1, None],
        h[:-1],
        nodes[:-1, 1:, None],
        v[:, 1:],
        nodes[1:, 1:, None],
        h[1:, :, ::-1],
        nodes[1:, :-1, None],
        v[:, :-1, ::-1],
        nodes[:-1, :-1, None],
    ]
    ring = np.concatenate(parts, axis=2).reshape(nx * ny, -1, 2) * CELL
    theta = np.radians(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = np.array([nx, ny]) * CELL / 2
    ring = (ring - centre) @ rot.T + centre + np.array([ORIGIN[0] + shift[0], ORIGIN[1] + shift[1]])
    return shapely.polygons(ring)


def make_dataset(quick: bool) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    nx, ny = (100, 100) if quick else (400, 250)
    left = jittered_grid(nx, ny, seed=1)
    right = jittered_grid(nx, ny, seed=2, angle=10.0, shift=(37.0, 61.0))
    if not (shapely.is_valid(left).all() and shapely.is_valid(right).all()):
        raise SystemExit("generated an invalid polygon: fix the generator before timing anything")
    vertices = int(shapely.get_num_coordinates(left[:1])[0])
    name = f"jittered-grids-{nx * ny // 1000}k"
    info = {
        "name": name,
        "polygons_per_layer": nx * ny,
        "vertices_per_polygon": vertices,
        "crs": f"EPSG:{CRS_EPSG}",
        "description": f"two {nx}x{ny} coverages of {CELL:.0f} m jittered cells with wiggly edges; "
        "the second rotated 10 degrees and shifted (37, 61) m",
    }
    return info, left, right


# --- engines ----------------------------------------------------------------------------------


@dataclass
class Engine:
    """One contender: ``run`` is timed; ``reset`` (before each run) and ``collect`` are not."""

    name: str
    run: Callable[[], Any]
    collect: Callable[[Any], np.ndarray]
    reset: Callable[[], None] = lambda: None
    scale: float = 1.0  # the GEOS floor runs on one thread and is divided by the cores
    in_process: bool = True  # False: the work happens in a server, this process's CPU time says nothing


def blueprint_engine(left: np.ndarray, right: np.ndarray) -> Engine:
    return Engine("blueprint", lambda: intersect_pairs(left, right, threads=THREADS), lambda pairs: pairs.geometry)


def floor_engine(left: np.ndarray, right: np.ndarray) -> Engine:
    pairs = intersect_pairs(left, right, threads=THREADS)  # exactly the pairs with a positive-area overlap
    a, b = left[pairs.left_index], right[pairs.right_index]
    return Engine("geos-floor", lambda: shapely.intersection(a, b), lambda geoms: geoms, scale=1 / THREADS)


def geopandas_engine(left: np.ndarray, right: np.ndarray) -> Engine:
    a = gpd.GeoDataFrame({"a_id": np.arange(len(left))}, geometry=left, crs=CRS_EPSG)
    b = gpd.GeoDataFrame({"b_id": np.arange(len(right))}, geometry=right, crs=CRS_EPSG)

    def run() -> gpd.GeoDataFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # keep_geom_type's note on dropped lines
            return gpd.overlay(a, b, how="intersection")

    return Engine("geopandas", run, lambda out: np.asarray(out.geometry.values, dtype=object))


def duckdb_engine(left: np.ndarray, right: np.ndarray) -> Engine:
    import duckdb
    import duckdb_extension_spatial
    import pandas as pd

    # the pip package ships the extension binary for one DuckDB version: load it from that file
    ext = Path(duckdb_extension_spatial.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    ext = ext / "spatial.duckdb_extension"
    if not ext.exists():
        raise RuntimeError(f"duckdb-extension-spatial has no build for duckdb {duckdb.__version__} ({ext})")
    con = duckdb.connect(config={"threads": THREADS, "autoinstall_known_extensions": False})
    con.execute(f"LOAD '{ext}'")
    df_a = pd.DataFrame({"id": np.arange(len(left)), "wkb": shapely.to_wkb(left)})  # noqa: F841 - read by SQL
    df_b = pd.DataFrame({"id": np.arange(len(right)), "wkb": shapely.to_wkb(right)})  # noqa: F841
    con.execute("CREATE TABLE a AS SELECT id, ST_GeomFromWKB(wkb) AS geom FROM df_a")
    con.execute("CREATE TABLE b AS SELECT id, ST_GeomFromWKB(wkb) AS geom FROM df_b")
    sql = (
        "CREATE TABLE r AS SELECT a.id AS a_id, b.id AS b_id, ST_Intersection(a.geom, b.geom) AS geom "
        "FROM a JOIN b ON ST_Intersects(a.geom, b.geom)"
    )

    def collect(_: Any) -> np.ndarray:
        table = con.sql("SELECT ST_AsWKB(geom) AS wkb FROM r").arrow()
        table = table.read_all() if hasattr(table, "read_all") else table  # a reader in newer DuckDB
        return shapely.from_wkb(table.column("wkb").to_numpy(zero_copy_only=False))

    return Engine("duckdb", lambda: con.execute(sql), collect, reset=lambda: con.execute("DROP TABLE IF EXISTS r"))


def sedonadb_engine(left: np.ndarray, right: np.ndarray) -> Engine:
    import sedonadb

    ctx = sedonadb.connect()
    ctx.create_data_frame(gpd.GeoDataFrame({"id": np.arange(len(left))}, geometry=left, crs=CRS_EPSG)).to_view("a")
    ctx.create_data_frame(gpd.GeoDataFrame({"id": np.arange(len(right))}, geometry=right, crs=CRS_EPSG)).to_view("b")
    sql = (
        "SELECT a.id AS a_id, b.id AS b_id, ST_Intersection(a.geometry, b.geometry) AS geom "
        "FROM a JOIN b ON ST_Intersects(a.geometry, b.geometry)"
    )

    def collect(table: Any) -> np.ndarray:
        return shapely.from_wkb(table.column("geom").combine_chunks().storage.to_numpy(zero_copy_only=False))

    return Engine("sedonadb", lambda: ctx.sql(sql).to_arrow_table(), collect)


def postgis_engines(left: np.ndarray, right: np.ndarray) -> list[Engine]:
    import psycopg

    from bench.common import bench_settings
    from layers import db

    # a scratch database on the same server as the platform (embedded or DATABASE_URL), never the user's own
    url = db.database_url(bench_settings("blueprint_bench_overlay_grids"))
    db.drop_database(url)
    db.ensure_database(url)
    conn = psycopg.connect(db.libpq_url(url), autocommit=True)

    def drop() -> None:
        conn.close()
        db.drop_database(url)

    atexit.register(drop)
    conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    for name, geoms in (("a", left), ("b", right)):
        conn.execute(f"CREATE TABLE {name} (id integer PRIMARY KEY, geom geometry(Polygon, {CRS_EPSG}))")
        buf = io.StringIO()
        for i, hexwkb in enumerate(shapely.to_wkb(geoms, hex=True)):
            buf.write(f"{i}\tSRID={CRS_EPSG};{hexwkb}\n")
        with conn.cursor().copy(f"COPY {name} (id, geom) FROM STDIN") as copy:
            copy.write(buf.getvalue())
        conn.execute(f"CREATE INDEX ON {name} USING gist (geom)")
        conn.execute(f"ANALYZE {name}")
    # make the planner willing to go parallel on a join of this size
    for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
        conn.execute(f"SET {setting} = 0")
    sql = (
        "CREATE TABLE {table} AS SELECT a.id AS a_id, b.id AS b_id, ST_Intersection(a.geom, b.geom) AS geom "
        "FROM a JOIN b ON ST_Intersects(a.geom, b.geom)"
    )
    engines = []
    for name, workers in (("postgis-serial", 0), ("postgis-2-workers", 2)):
        table = f"r{workers}"

        def reset(workers: int = workers, name: str = name, table: str = table) -> None:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"SET max_parallel_workers_per_gather = {workers}")
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql.format(table=table)}").fetchall())
            if workers and "Gather" not in plan:
                print(f"  note: PostgreSQL chose no parallel plan for {name}", flush=True)

        def collect(_: Any, table: str = table) -> np.ndarray:
            rows = conn.execute(f"SELECT ST_AsBinary(geom) FROM {table}").fetchall()
            return shapely.from_wkb(np.array([bytes(r[0]) for r in rows], dtype=object))

        run = lambda table=table: conn.execute(sql.format(table=table))  # noqa: E731
        engines.append(Engine(name, run, collect, reset=reset, in_process=False))
    return engines


# --- synthetic part ---------------------------------------------------------------------------


def summarise(geoms: np.ndarray) -> tuple[int, float]:
    """Pieces of positive area and their total area (polygon parts only, as GEOS areas count)."""
    area = shapely.area(geoms)
    return int((area > 0).sum()), float(area[area > 0].sum())


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def synthetic_part(quick: bool, repeat: int) -> dict:
    """Raw two-layer overlay of the synthetic coverages, every engine; returns the part's record."""
    info, left, right = make_dataset(quick)
    name = info["name"]
    print(f"dataset {name}: {info['description']}, {info['vertices_per_polygon']} vertices each", flush=True)

    skipped: dict[str, str] = {}
    setups: list[tuple[str, Callable[[], Engine | list[Engine]]]] = [
        ("blueprint", lambda: blueprint_engine(left, right)),
        ("geos-floor", lambda: floor_engine(left, right)),
        ("sedonadb", lambda: sedonadb_engine(left, right)),
        ("duckdb", lambda: duckdb_engine(left, right)),
        ("geopandas", lambda: geopandas_engine(left, right)),
        ("postgis", lambda: postgis_engines(left, right)),  # the embedded cluster, or DATABASE_URL's server
    ]
    engines: list[Engine] = []
    for engine_name, setup in setups:
        try:
            made = setup()
        except Exception as exc:  # noqa: BLE001 - report why a peer could not run, then go on
            if engine_name == "blueprint":
                raise
            skipped[engine_name] = describe(exc)
            continue
        engines.extend(made if isinstance(made, list) else [made])

    # rounds over all engines rather than N runs in a row: on a shared machine the load drifts
    runs: dict[str, Measurement] = {e.name: Measurement() for e in engines}
    # CPU seconds of this process (all threads) as well: wall time on a shared machine includes waiting
    cpu: dict[str, list[float]] = {e.name: [] for e in engines}
    for round_no in range(repeat):
        for engine in list(engines):
            try:
                engine.reset()
                runs[engine.name].last = None
                gc.collect()  # the previous engine's garbage is not this one's to collect
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[engine.name].last = engine.run()
                seconds = (time.perf_counter() - start) * engine.scale
                cpu[engine.name].append(time.process_time() - start_cpu)
            except Exception as exc:  # noqa: BLE001
                if engine.name == "blueprint":
                    raise
                skipped[engine.name] = describe(exc)
                engines.remove(engine)
                continue
            runs[engine.name].runs.append(seconds)
            print(
                f"  round {round_no + 1}: {engine.name:<18} {seconds:9.2f} s"
                + (f"  ({cpu[engine.name][-1]:.2f} s CPU)" if engine.in_process else ""),
                f" load {os.getloadavg()[0]:.2f}",
                flush=True,
            )

    rows = []
    for engine in engines:
        pairs, area = summarise(engine.collect(runs[engine.name].last))
        cpu_seconds = round(statistics.median(cpu[engine.name]), 4) if engine.in_process else None
        rows.append(
            result_row(engine.name, name, runs[engine.name], pairs=pairs, area_m2=area, cpu_seconds=cpu_seconds)
        )
    ours = rows[0]
    for row in rows:
        row["area_rel_diff"] = float(f"{abs(row['area_m2'] - ours['area_m2']) / ours['area_m2']:.3g}")
        row["pair_diff"] = row["pairs"] - ours["pairs"]
    ratios = {f"{name}: blueprint/{row['engine']}": ratio(ours, row, "seconds") for row in rows[1:]}

    print()
    shown = [{**row, "area_rel_diff": f"{row['area_rel_diff']:.1e}"} for row in rows]
    print_table(shown, ["engine", "seconds", "cpu_seconds", "pairs", "pair_diff", "area_m2", "area_rel_diff"])
    print()
    print_ratios(ratios)
    targets = {}
    by_engine = {row["engine"]: row for row in rows}
    if "sedonadb" in by_engine:
        targets["within 1.1x of sedonadb"] = ours["seconds"] <= 1.1 * by_engine["sedonadb"]["seconds"]
    if "geopandas" in by_engine:
        targets["2x faster than geopandas.overlay"] = by_engine["geopandas"]["seconds"] >= 2 * ours["seconds"]
    print_targets(targets, skipped)
    return {
        "dataset": name,
        "results": rows,
        "ratios": ratios,
        "dataset_info": info,
        "targets": targets,
        "skipped": skipped,
        "median_of": repeat,
    }


# --- demo part --------------------------------------------------------------------------------


def demo_part(scale: int, repeat: int) -> dict:
    """Rule-driven detection against geopandas-overlay-then-filter on the demo city."""
    from bench import overlay_demo as demo

    print(f"dataset demo-scale{scale}: preparing the demo city", flush=True)
    city = demo.prepare(scale, progress=lambda m: print(m, flush=True))
    city.engine.dispose()
    name = city.info["name"]
    measured, extras = demo.measure_demo(scale, THREADS, repeat, log=lambda m: print(m, flush=True))

    per_rule = {engine: m.last for engine, m in measured.items()}
    ours = per_rule["blueprint"]
    rows, failed = [], {}
    for engine, m in measured.items():
        bad, worst = demo.agreement(ours, per_rule[engine])
        if bad:
            failed[engine] = bad
        rows.append(
            result_row(
                engine,
                name,
                m,
                conflicts=int(per_rule[engine]["count"].sum()),
                area_m2=float(per_rule[engine]["area_m2"].sum()),
                area_rel_diff_max=float(f"{worst:.3g}"),
                read_seconds=demo.median_of(extras[engine], "read_seconds"),
                detect_seconds=demo.median_of(extras[engine], "detect_seconds"),
                cpu_seconds=demo.median_of(extras[engine], "cpu_seconds"),
            )
        )
    by_engine = {row["engine"]: row for row in rows}
    bp, gp = by_engine["blueprint"], by_engine["geopandas"]
    ratios = {
        f"{name}: blueprint/geopandas": ratio(bp, gp, "seconds"),
        f"{name}: blueprint/geopandas detect only": round(gp["detect_seconds"] / bp["detect_seconds"], 2),
    }

    print()
    table = per_rule["blueprint"].join(per_rule["geopandas"].add_suffix("_geopandas"))
    table["area_rel_diff"] = (table["area_m2"] - table["area_m2_geopandas"]).abs() / table["area_m2"].where(
        table["area_m2"] > 0, 1.0
    )
    print(table.to_string(float_format=lambda v: f"{v:,.3f}" if v >= 1e-3 or v == 0 else f"{v:.1e}"))
    print()
    print_table(
        [{**row, "area_rel_diff_max": f"{row['area_rel_diff_max']:.1e}"} for row in rows],
        [
            "engine",
            "seconds",
            "read_seconds",
            "detect_seconds",
            "cpu_seconds",
            "conflicts",
            "area_m2",
            "area_rel_diff_max",
        ],
    )
    print()
    print_ratios(ratios)
    targets = {
        "5x faster than geopandas overlay-then-filter": gp["seconds"] >= 5 * bp["seconds"],
        "identical areas per rule (rel diff <= 1e-9) and counts": not failed,
    }
    print_targets(targets, {})
    if failed:
        raise SystemExit(f"demo-scale{scale}: per-rule counts or areas differ from blueprint's: {failed}")
    return {
        "dataset": name,
        "results": rows,
        "ratios": ratios,
        "dataset_info": city.info,
        "targets": targets,
        "per_rule": {
            engine: {code: {"count": int(r["count"]), "area_m2": float(r["area_m2"])} for code, r in frame.iterrows()}
            for engine, frame in per_rule.items()
        },
        "median_of": repeat,
    }


# --- report -----------------------------------------------------------------------------------


def print_ratios(ratios: dict[str, float]) -> None:
    for key, value in ratios.items():
        print(f"{key:<50} {value:6.2f}x  ({'blueprint faster' if value >= 1 else 'blueprint slower'})")


def print_targets(targets: dict[str, bool], skipped: dict[str, str]) -> None:
    for target, met in targets.items():
        print(f"target {target}: {'met' if met else 'MISSED'}")
    for engine_name, reason in skipped.items():
        print(f"skipped {engine_name}: {reason}")


def write_parts(parts: dict[str, dict]) -> Path:
    """Write the parts just measured (``synthetic``, ``demo``) into ``overlay.json``, keeping the
    other part of an earlier run."""
    path = RESULTS_DIR / "overlay.json"
    kept: dict[str, dict] = {}
    if path.exists():
        previous = json.loads(path.read_text(encoding="utf-8"))
        for name, part in previous.get("parts", {}).items():
            dataset = part.get("dataset")
            if name not in ("synthetic", "demo") or dataset is None:
                continue  # an older layout of the file: measured again on the next full run
            kept[name] = {
                **part,
                "results": [r for r in previous["results"] if r["dataset"] == dataset],
                "ratios": {k: v for k, v in previous["ratios"].items() if k.startswith(f"{dataset}: ")},
            }
    stamp = {"machine": machine(), "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    for name, part in parts.items():
        kept[name] = {**part, **stamp}
    return write_results(
        "overlay",
        dataset=", ".join(part["dataset"] for part in kept.values()),
        results=[row for part in kept.values() for row in part["results"]],
        ratios={key: value for part in kept.values() for key, value in part["ratios"].items()},
        parts={name: {k: v for k, v in part.items() if k not in ("results", "ratios")} for name, part in kept.items()},
        threads=THREADS,
        geos=shapely.geos_version_string,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=("all", "synthetic", "demo"),
        default="all",
        help="run only the synthetic coverages or only the demo city (the other part's "
        "earlier results are kept in the results file)",
    )
    parser.add_argument("--quick", action="store_true", help="synthetic: 10,000 polygons per layer instead of 100,000")
    parser.add_argument("--scale", type=int, default=10, help="demo: the demo city's scale")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over all engines; each reports its median")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, shapely {shapely.__version__} (GEOS {shapely.geos_version_string}), "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    parts = {}
    if args.part in ("all", "synthetic"):
        parts["synthetic"] = synthetic_part(args.quick, args.repeat)
        print()
    if args.part in ("all", "demo"):
        parts["demo"] = demo_part(args.scale, args.repeat)
    path = write_parts(parts)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
