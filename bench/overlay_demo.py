"""The demo-city part of ``bench/overlay.py``: rule-driven conflict detection against overlaying
everything with geopandas and then filtering.

The demo city at scale 10 (generated once, cached in the data folder) is loaded into its own
database ``blueprint_bench_overlay`` through the normal ingest path and kept between runs (a layer
whose file has not changed is not loaded again). On the same current layer versions it times:

- ``blueprint``: what ``blueprint conflicts run`` does before it attributes districts and writes the
  register — read each layer once from PostGIS (only the features and columns some rule selects,
  :func:`spatial.conflicts.run.read_layers`), then evaluate every rule
  (:func:`spatial.conflicts.run.detect`, 2 threads);
- ``geopandas``: read every feature of the same layers with the same reader and columns (no
  filter pushed into SQL), ``geopandas.overlay(how="intersection")`` each distinct layer pair of the
  intersection rules once, whole layers, then keep the rows each rule selects (its attribute
  filters on both sides, its compare, ``min_area_m2``). A ``difference`` rule ("outside of")
  overlays the whole a layer with ``how="difference"`` against the b features the rule selects, then
  filters a; an "outside of" cannot be filtered after the overlay;
- ``blueprint-conflicts-run``: the whole :func:`spatial.conflicts.run.run_conflicts` (the above plus
  districts, attributes and the register write), for reference only: no peer does that part.

Both clocks of the comparison include reading from PostGIS; the rows also give ``read_seconds``
and ``detect_seconds`` apart. Every timed run is a fresh process (``python -m bench.overlay_demo
ENGINE``), so no engine inherits another's heap. Per rule, the count of conflict pieces and their total area must
agree with geopandas (area relative difference ≤ 1e-9), or the benchmark fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from bench.common import Measurement, bench_settings
from layers import db, store
from layers.catalogue import load_catalogue
from spatial.conflicts.rules import Rule, RuleSet, load_rules
from spatial.conflicts.run import LayerPlan, detect, read_layers, read_plans, run_conflicts
from spatial.conflicts.selection import harmonise, select

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "blueprint_bench_overlay"
AREA_TOLERANCE = 1e-9


@dataclass
class DemoCity:
    """The loaded demo city: what the engines read and what the report says about it."""

    settings: object
    engine: object
    rules: RuleSet
    current: dict
    info: dict


def prepare(scale: int, *, progress: Callable[[str], None] = print) -> DemoCity:
    """Generate (or reuse) the demo city and load it into the bench database (or reuse it)."""
    from layers.demo import cached_city
    from layers.demo.load import load_demo

    settings = bench_settings(DATABASE)
    url = db.database_url(settings)
    db.ensure_database(url)
    db.migrate(settings, url)
    engine = db.make_engine(settings)
    out_dir = settings.storage.data_dir / "demo" / f"scale{scale}-seed0"
    manifest = cached_city(out_dir, scale=scale, seed=0, progress=lambda m: progress(f"  {m}"))
    loaded = load_demo(engine, settings, out_dir)
    fresh = [r.layer_code for r in loaded.reports if not r.unchanged]
    progress(f"  demo city in {DATABASE}: {loaded.features:,} features, {len(fresh)} layers (re)loaded")
    catalogue = load_catalogue()
    rules = load_rules(catalogue=catalogue)
    with engine.connect() as conn:
        current = store.current_versions(conn)
    used = sorted({side.layer for rule in rules.rules for side in (rule.a, rule.b)})
    info = {
        "name": f"demo-scale{scale}",
        "scale": scale,
        "generator": manifest.sources.get("generator"),
        "rules": len(rules.rules),
        "layers": {code: current[code].feature_count for code in used if code in current},
        "description": f"the Jinan demo city at scale {scale}: every default conflict rule on the current "
        "versions of its layers, read from PostGIS",
    }
    return DemoCity(settings, engine, rules, current, info)


# --- engines ------------------------------------------------------------------------------------


def blueprint_detect(city: DemoCity, threads: int) -> tuple[pd.DataFrame, dict]:
    """The read and detect steps of ``blueprint conflicts run``; returns conflicts and timings."""
    catalogue = load_catalogue()
    srid = city.settings.storage.storage_srid
    t0 = time.perf_counter()
    plans = read_plans(city.rules.rules, city.current, catalogue)
    frames = read_layers(
        city.engine, city.current, plans, srid=srid, catalogue=catalogue, timings={}, threads=min(threads, 2)
    )
    t1 = time.perf_counter()
    found, _, not_evaluated = detect(city.rules, frames, threads=threads)
    if not_evaluated:
        raise RuntimeError(f"rules not evaluated: {not_evaluated}")
    return found, {"read_seconds": t1 - t0, "detect_seconds": time.perf_counter() - t1}


def geopandas_detect(city: DemoCity) -> tuple[pd.DataFrame, dict]:
    """Overlay whole layers with geopandas, then filter by each rule; returns conflicts and timings."""
    catalogue = load_catalogue()
    srid = city.settings.storage.storage_srid
    t0 = time.perf_counter()
    # the same columns the rules use, but every feature: no predicate or box pushed into SQL
    plans = {
        code: LayerPlan(fields=plan.fields, predicates=None)
        for code, plan in read_plans(city.rules.rules, city.current, catalogue).items()
    }
    frames = read_layers(city.engine, city.current, plans, srid=srid, catalogue=catalogue, timings={})
    t1 = time.perf_counter()
    overlays: dict[tuple[str, str], gpd.GeoDataFrame] = {}
    parts = []
    for rule in city.rules.rules:
        if rule.operation == "difference":
            parts.append(_difference_rule(rule, frames))
            continue
        pair = (rule.a.layer, rule.b.layer)
        key = pair if pair in overlays or pair[::-1] not in overlays else pair[::-1]
        if key not in overlays:
            overlays[key] = _overlay(frames, *key, how="intersection")
        parts.append(_intersection_rule(rule, overlays[key]))
    found = pd.concat(parts, ignore_index=True)
    return found, {"read_seconds": t1 - t0, "detect_seconds": time.perf_counter() - t1}


def _overlay(frames: dict[str, gpd.GeoDataFrame], a: str, b: str, how: str) -> gpd.GeoDataFrame:
    """``geopandas.overlay`` of two layers, their columns suffixed ``@<layer>`` to stay apart."""
    left = frames[a].rename(columns=lambda c: c if c == "geometry" else f"{c}@{a}")
    right = frames[b].rename(columns=lambda c: c if c == "geometry" else f"{c}@{b}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # keep_geom_type's note on dropped lines
        return gpd.overlay(left, right, how=how, keep_geom_type=True)


def _side(overlay: pd.DataFrame, layer: str) -> pd.DataFrame:
    """One layer's columns of an overlay result, under their own names."""
    cols = [c for c in overlay.columns if c.endswith(f"@{layer}")]
    return overlay[cols].rename(columns=lambda c: c.removesuffix(f"@{layer}"))


def _intersection_rule(rule: Rule, overlay: gpd.GeoDataFrame) -> pd.DataFrame:
    a, b = _side(overlay, rule.a.layer), _side(overlay, rule.b.layer)
    keep = select(a, rule.a) & select(b, rule.b)
    if rule.compare is not None:
        a_val = harmonise(a[rule.compare.a_field], rule.compare.via)
        b_val = harmonise(b[rule.compare.b_field], rule.compare.via)
        keep &= pd.notna(a_val) & pd.notna(b_val) & (a_val != b_val)
    area = overlay.geometry.area.to_numpy()
    keep &= area >= rule.min_area_m2
    return pd.DataFrame({"rule": rule.code, "a_fid": a["fid"].to_numpy()[keep], "area_m2": area[keep]})


def _difference_rule(rule: Rule, frames: dict[str, gpd.GeoDataFrame]) -> pd.DataFrame:
    b = frames[rule.b.layer]
    only = {rule.a.layer: frames[rule.a.layer], rule.b.layer: b[select(b, rule.b)]}
    out = _overlay(only, rule.a.layer, rule.b.layer, how="difference")
    a = _side(out, rule.a.layer)
    area = out.geometry.area.to_numpy()
    keep = select(a, rule.a) & (area >= rule.min_area_m2)
    return pd.DataFrame({"rule": rule.code, "a_fid": a["fid"].to_numpy()[keep], "area_m2": area[keep]})


ENGINES = ("blueprint", "geopandas", "blueprint-conflicts-run")


def run_engine(city: DemoCity, name: str, threads: int) -> dict:
    """One timed run of one engine: wall and CPU seconds, read and detect seconds, per-rule results."""
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    if name == "blueprint":
        found, extra = blueprint_detect(city, threads)
    elif name == "geopandas":
        found, extra = geopandas_detect(city)
    elif name == "blueprint-conflicts-run":
        result = run_conflicts(city.engine, city.settings, threads=threads)
        found = result.conflicts
        extra = {"read_seconds": result.timings["read_wall"], "detect_seconds": sum(result.timings["rules"].values())}
    else:
        raise ValueError(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    rules = per_rule(found, city.rules)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        **extra,
        "per_rule": {code: [int(r["count"]), float(r["area_m2"])] for code, r in rules.iterrows()},
    }


# --- comparison ---------------------------------------------------------------------------------


def per_rule(found: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """Count and total area of the conflict pieces of every rule (zero rows included)."""
    codes = [r.code for r in rules.rules]
    grouped = found.groupby("rule")["area_m2"].agg(["count", "sum"])
    return grouped.reindex(codes, fill_value=0).rename(columns={"sum": "area_m2"})


def agreement(ours: pd.DataFrame, theirs: pd.DataFrame) -> tuple[list[str], float]:
    """Rules whose counts differ or whose areas differ beyond the tolerance; the largest area difference."""
    rel = (ours["area_m2"] - theirs["area_m2"]).abs() / ours["area_m2"].where(ours["area_m2"] > 0, 1.0)
    bad = ours.index[(ours["count"] != theirs["count"]) | (rel > AREA_TOLERANCE)]
    return list(bad), float(rel.max()) if len(rel) else 0.0


def measure_demo(
    scale: int, threads: int, repeat: int, log: Callable[[str], None] = print
) -> tuple[dict[str, Measurement], dict[str, list[dict]]]:
    """Rounds over the engines, the order rotated each round (load drifts on a shared machine).

    Every run is a fresh process: after geopandas' overlays the heap of a process stays larger and
    a later run in it measurably slower, which would tax whoever comes next. ``Measurement.last``
    is the per-rule table (count, area) of the last run; each run's timings are kept too.
    """
    measured = {name: Measurement() for name in ENGINES}
    extras: dict[str, list[dict]] = {name: [] for name in ENGINES}
    for round_no in range(repeat):
        shift = round_no % len(ENGINES)
        for name in ENGINES[shift:] + ENGINES[:shift]:
            command = [sys.executable, "-m", "bench.overlay_demo", name, f"--scale={scale}", f"--threads={threads}"]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
            run = json.loads(done.stdout.strip().splitlines()[-1])
            table = pd.DataFrame.from_dict(run.pop("per_rule"), orient="index", columns=["count", "area_m2"])
            measured[name].runs.append(run["seconds"])
            measured[name].last = table
            extras[name].append(run)
            log(
                f"  round {round_no + 1}: {name:<24} {run['seconds']:8.2f} s  (read {run['read_seconds']:.2f} s, "
                f"detect {run['detect_seconds']:.2f} s, {run['cpu_seconds']:.2f} s CPU)  "
                f"load {os.getloadavg()[0]:.2f}"
            )
    return measured, extras


def median_of(extras: list[dict], key: str) -> float:
    return round(float(np.median([e[key] for e in extras])), 4)


def main() -> None:
    """One engine, one run, in this process: the JSON result on the last line of stdout."""
    parser = argparse.ArgumentParser(description="one timed run of one demo-city engine (see bench/overlay.py)")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    city = prepare(args.scale, progress=lambda m: print(m, file=sys.stderr))
    try:
        print(json.dumps(run_engine(city, args.engine, args.threads)))
    finally:
        city.engine.dispose()


if __name__ == "__main__":
    main()
