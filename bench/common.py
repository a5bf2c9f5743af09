"""Shared helpers for the benchmarks in ``bench/``: a scratch database, timing, datasets, result files.

Every benchmark writes ``bench/results/<name>.json`` in one shape::

    {"benchmark": "ingest", "dataset": "...",
     "results": [{"engine": "blueprint", "dataset": "...", "seconds": 1.2, "rows_per_s": ..., ...}, ...],
     "ratios": {"blueprint/to_postgis": 4.1, ...},
     "machine": {...}}

with this project's rows under the engine name ``"blueprint"`` and rates named ``rows_per_s``,
``requests_per_s``, ``p50_ms``, ``p99_ms``. Benchmarks run as scripts (``python bench/x.py``)::

    import sys; from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import bench_database, measure, write_results
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
import sqlalchemy as sa

from layers import db
from layers.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / "data"  # generated inputs, git-ignored
BENCH_DATABASE = "blueprint_bench"


# --- database -----------------------------------------------------------------------------------

def bench_settings(database: str = BENCH_DATABASE) -> Settings:
    """Settings for a scratch database on the user's server (embedded or ``DATABASE_URL``).

    Benchmarks never touch the user's own database: they get their own, dropped and recreated.
    """
    return Settings().on_database(database)


def bench_database(database: str = BENCH_DATABASE) -> tuple[Settings, sa.Engine]:
    """Drop, recreate and migrate a scratch database; return its settings and an engine on it."""
    settings = bench_settings(database)
    return settings, db.fresh_database(settings)


def libpq_conninfo(engine: sa.Engine) -> str:
    """The engine's database as a libpq ``key=value`` string (for psql, ogr2ogr ``PG:``)."""
    url = engine.url
    parts = {"dbname": url.database, "user": url.username, "password": url.password,
             "host": url.query.get("host", url.host), "port": url.query.get("port", url.port)}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


# --- timing -------------------------------------------------------------------------------------

@dataclass
class Measurement:
    """Wall-clock seconds of repeated runs of one thing; ``seconds`` is their median."""

    runs: list[float] = field(default_factory=list)
    last: object = None  # what the last run returned

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)


def measure(run: Callable[[], object], *, repeat: int = 3, setup: Callable[[], None] | None = None,
            warmup: int = 0) -> Measurement:
    """Time ``run()`` ``repeat`` times (``setup()`` before each, off the clock) and keep every run.

    Examples
    --------
    >>> m = measure(lambda: sum(range(1000)), repeat=3)
    >>> len(m.runs), m.last
    (3, 499500)
    """
    out = Measurement()
    for i in range(warmup + repeat):
        if setup is not None:
            setup()
        started = time.perf_counter()
        value = run()
        elapsed = time.perf_counter() - started
        if i >= warmup:
            out.runs.append(elapsed)
            out.last = value
    return out


def latency_ms(seconds: Iterable[float], percentiles: Iterable[int] = (50, 99)) -> dict[str, float]:
    """``p<N>_ms`` for each of ``percentiles``, ``mean_ms`` and ``max_ms`` of per-request latencies in seconds.

    Examples
    --------
    >>> latency_ms([0.001, 0.002, 0.003], percentiles=(50, 95))
    {'p50_ms': 2.0, 'p95_ms': 2.9, 'mean_ms': 2.0, 'max_ms': 3.0}
    """
    ms = np.asarray(list(seconds), dtype=float) * 1000.0
    return {**{f"p{p}_ms": round(float(np.percentile(ms, p)), 3) for p in percentiles},
            "mean_ms": round(float(ms.mean()), 3), "max_ms": round(float(ms.max()), 3)}


def result_row(engine: str, dataset: str, measurement: Measurement | float, *, rows: int | None = None,
               requests: int | None = None, **extra) -> dict:
    """One entry of ``results``: engine, dataset, median seconds, every run, and rates.

    ``rows`` adds ``rows_per_s``; ``requests`` adds ``requests_per_s``.

    Examples
    --------
    >>> result_row("blueprint", "poly", 2.0, rows=100)
    {'engine': 'blueprint', 'dataset': 'poly', 'seconds': 2.0, 'runs': [2.0], 'rows_per_s': 50.0}
    """
    runs = measurement.runs if isinstance(measurement, Measurement) else [float(measurement)]
    seconds = statistics.median(runs)
    row = {"engine": engine, "dataset": dataset, "seconds": round(seconds, 4), "runs": [round(r, 4) for r in runs]}
    if rows is not None:
        row["rows_per_s"] = round(rows / seconds, 1)
    if requests is not None:
        row["requests_per_s"] = round(requests / seconds, 1)
    row.update(extra)
    return row


def ratio(ours: dict, theirs: dict, metric: str = "rows_per_s") -> float:
    """How many times better ``ours`` is on ``metric`` (higher is better for rates, lower for ``*_ms``)."""
    a, b = float(ours[metric]), float(theirs[metric])
    return round(b / a if metric.endswith("_ms") or metric == "seconds" else a / b, 2)


# --- output -------------------------------------------------------------------------------------

def machine() -> dict:
    """What the numbers were measured on (CPU, cores, load average at the time)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A plain aligned table of the given columns (missing values left blank)."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
        return "" if value is None else str(value)

    table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for n, r in enumerate(table):
        print("  ".join(v.rjust(w) if n and i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))))


def write_results(benchmark: str, *, dataset: str | dict, results: list[dict], ratios: dict[str, float],
                  path: Path | None = None, **extra) -> Path:
    """Write ``bench/results/<benchmark>.json`` (or ``path``) in the shared shape; return its path."""
    path = path or RESULTS_DIR / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": benchmark, "dataset": dataset, "results": results, "ratios": ratios,
                "machine": machine(), **extra}
    path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


# --- datasets -----------------------------------------------------------------------------------

def star_polygons(n: int, *, vertices: int = 40, seed: int = 0, x0: float = 500_000.0,
                  y0: float = 4_000_000.0, spacing: float = 200.0) -> np.ndarray:
    """``n`` valid, disjoint, jagged polygons of ``vertices`` corners (plus the closing one) on a grid.

    Coordinates are metres in a projected CRS (the defaults sit in EPSG:4548 near Jinan).

    Examples
    --------
    >>> polys = star_polygons(4, vertices=40)
    >>> bool(shapely.is_valid(polys).all()), int(shapely.get_num_coordinates(polys[0]))
    (True, 41)
    """
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    cx = x0 + (np.arange(n) % side) * spacing
    cy = y0 + (np.arange(n) // side) * spacing
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radius = spacing * (0.3 + rng.uniform(0, 0.15, (n, vertices)))
    ring = np.stack([cx[:, None] + radius * np.cos(angles), cy[:, None] + radius * np.sin(angles)], -1)
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))


def cached(path: Path, build: Callable[[Path], None]) -> Path:
    """``path`` in ``bench/data``, built once by ``build(path)`` (written aside, then renamed)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".partial-{path.name}")
        partial.unlink(missing_ok=True)
        build(partial)
        partial.rename(path)
    return path
