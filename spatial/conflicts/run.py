"""A conflict run: every rule on the current layer versions, written to the register.

read each layer once (only the features some rule selects, only the columns the rules use, only
inside the extent of the layers it is overlaid with) → evaluate each rule → district of each
conflict → attributes of the features in conflict → one transaction into the register.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy.engine import Engine

from layers import store
from layers.catalogue import Catalogue, Minor, load_catalogue
from layers.settings import Settings
from spatial.conflicts.evaluate import evaluate_rule
from spatial.conflicts.register import Changes, RunRecord, write_run
from spatial.conflicts.rules import RULES_PATH, Rule, RuleSet, Side, load_rules
from spatial.conflicts.selection import harmonise

ADMIN_LAYER = "1101"
Progress = Callable[[str, int, int], None]


@dataclass
class RunResult:
    """What a run did: the register changes, the summary and where the time went."""

    changes: Changes
    summary: dict
    timings: dict
    versions: dict[str, int]
    not_evaluated: list[dict]
    conflicts: gpd.GeoDataFrame = field(repr=False)

    @property
    def run_id(self) -> int:
        return self.changes.run_id


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 2, 8))


def run_conflicts(engine: Engine, settings: Settings, *, rules_path: Path | str | None = None,
                  threads: int | None = None, progress: Progress | None = None,
                  catalogue: Catalogue | None = None) -> RunResult:
    """Evaluate every rule on the current layer versions and write a run to the register.

    Parameters
    ----------
    rules_path : the rules file (default ``spatial/rules/conflicts.yaml``); validated before any work.
    threads : worker threads for the overlays (default: the machine's cores).
    progress : called as ``progress(stage, done, total)``.

    Returns
    -------
    RunResult
        With the run id, kept / closed / new counts, the summary by type and district, and timings.

    Raises
    ------
    RulesError
        The rules file is invalid (nothing was read or written).

    Examples
    --------
    >>> result = run_conflicts(engine, settings)  # doctest: +SKIP
    >>> result.changes.as_dict()  # doctest: +SKIP
    {'kept': 0, 'closed': 0, 'new': 412}
    """
    catalogue = catalogue or load_catalogue()
    path = Path(rules_path) if rules_path else RULES_PATH
    rules = load_rules(path, catalogue=catalogue)
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    threads = threads or default_threads()
    srid = settings.storage.storage_srid
    started_at = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    timings: dict = {"read": {}, "rules": {}}

    with engine.connect() as sa_conn:
        current = store.current_versions(sa_conn)
    plans = read_plans(rules.rules, current, catalogue)
    if ADMIN_LAYER in current:  # the districts conflicts are attributed to
        plans.setdefault(ADMIN_LAYER, LayerPlan(predicates=None)).fields |= {"district_code", "district_name"}
    t0 = time.perf_counter()
    frames = read_layers(engine, current, plans, srid=srid, catalogue=catalogue, timings=timings["read"],
                         threads=min(threads, 2), progress=progress)
    timings["read_wall"] = round(time.perf_counter() - t0, 4)  # layers are read two at a time
    versions = {code: current[code].id for code in frames}

    found, rule_times, not_evaluated = detect(rules, frames, threads=threads, progress=progress)
    timings["rules"] = rule_times
    t0 = time.perf_counter()
    found["district_code"], found["district_name"] = assign_districts(found, frames.get(ADMIN_LAYER))
    timings["districts"] = round(time.perf_counter() - t0, 4)

    evaluated = [r.code for r in rules.rules if r.code in rule_times]
    summary = summarise(found, rules, evaluated)
    record = RunRecord(started_at=started_at, rules_checksum=checksum, versions=versions,
                       evaluated=evaluated, not_evaluated=not_evaluated, timings=timings, summary=summary)
    with engine.connect() as sa_conn:
        conn = sa_conn.connection.driver_connection
        t0 = time.perf_counter()
        _attach_attributes(conn, found, versions)
        timings["attributes"] = round(time.perf_counter() - t0, 4)
        timings["total"] = round(time.perf_counter() - started, 4)  # write_run adds its own time
        conn.commit()  # leave the read transaction; the register write opens its own
        conn.autocommit = True
        try:
            changes = write_run(conn, record, found, srid=srid)
        finally:
            conn.autocommit = False
    return RunResult(changes, summary, timings, versions, not_evaluated, found)


def detect(rules: RuleSet, frames: dict[str, gpd.GeoDataFrame], *, threads: int = 2,
           progress: Progress | None = None) -> tuple[gpd.GeoDataFrame, dict[str, float], list[dict]]:
    """Evaluate every rule on in-memory layers (the part a benchmark times without the database).

    Parameters
    ----------
    frames : layer code → features (``fid``, attribute columns, geometry), one CRS. A layer
        missing here makes its rules "not evaluated".

    Returns
    -------
    (conflicts, seconds per rule, not evaluated)
        ``conflicts`` has ``rule, severity, a_layer, a_fid, b_layer, b_fid, area_m2, geometry``;
        each not-evaluated entry is ``{"rule", "reason"}``.
    """
    parts, times, not_evaluated = [], {}, []
    crs = next((f.crs for f in frames.values()), None)
    for i, rule in enumerate(rules.rules):
        missing = [code for code in (rule.a.layer, rule.b.layer) if code not in frames]
        if missing:
            not_evaluated.append({"rule": rule.code, "reason": f"layer {missing[0]} has no current version"})
            continue
        t0 = time.perf_counter()
        try:
            found = evaluate_rule(rule, frames[rule.a.layer], frames[rule.b.layer], threads=threads)
        except ValueError as exc:  # e.g. an attribute the stored version does not have
            not_evaluated.append({"rule": rule.code, "reason": str(exc)})
            continue
        times[rule.code] = round(time.perf_counter() - t0, 4)
        found["severity"] = rule.severity
        found["a_layer"], found["b_layer"] = rule.a.layer, rule.b.layer  # difference: "outside of b"
        parts.append(found)
        if progress:
            progress(f"{rule.code} {len(found):,} conflicts", i + 1, len(rules.rules))
    columns = ["rule", "severity", "a_layer", "a_fid", "b_layer", "b_fid", "area_m2", "geometry"]
    if not parts:
        return gpd.GeoDataFrame({c: [] for c in columns[:-1]}, geometry=[], crs=crs), times, not_evaluated
    out = pd.concat(parts, ignore_index=True)
    out["a_fid"] = out["a_fid"].astype("int64")
    out["b_fid"] = out["b_fid"].astype("Int64")
    return gpd.GeoDataFrame(out[columns], geometry="geometry", crs=crs), times, not_evaluated


# Reading only what the rules need --------------------------------------------------------------

@dataclass
class LayerPlan:
    """What to read of one layer: columns, a row filter (OR of AND-ed value lists) and a box."""

    fields: set[str] = field(default_factory=set)
    predicates: list[dict[str, tuple[str, ...]]] | None = field(default_factory=list)  # None: every row
    bbox: tuple[float, float, float, float] | None = None


def side_predicate(side: Side, minor: Minor) -> dict[str, tuple[str, ...]]:
    """The side's filter as ``{attribute: allowed text values}`` where it can run in SQL.

    String attributes with a ``where`` list, and harmonised fields whose allowed values the
    catalogue lists, become value lists; anything else is left to :func:`selection.select` in memory.
    """
    predicate: dict[str, tuple[str, ...]] = {}
    for name, values in side.where.items():
        if minor.attribute(name).type == "string":
            predicate[name] = tuple(str(v) for v in values)
    if side.scheme is not None and side.field is not None:
        attr = minor.attribute(side.field)
        if attr.type == "string" and attr.values is not None:
            values = [str(v) for v in attr.values]
            classes = harmonise(values, side.scheme)
            keep = [v for v, c in zip(values, classes, strict=True) if c in side.classes and v not in side.exclude]
            previous = set(predicate.get(side.field, keep))
            predicate[side.field] = tuple(v for v in keep if v in previous)
    return predicate


def read_plans(rules: tuple[Rule, ...], current: dict, catalogue: Catalogue) -> dict[str, LayerPlan]:
    """One plan per layer the evaluable rules use: the union of what each rule needs of it."""
    plans: dict[str, LayerPlan] = {}
    boxes: dict[str, list | None] = {}
    for rule in rules:
        if rule.a.layer not in current or rule.b.layer not in current:
            continue
        for side, other, key in ((rule.a, rule.b, "a"), (rule.b, rule.a, "b")):
            minor = catalogue.minor(side.layer)
            plan = plans.setdefault(side.layer, LayerPlan())
            plan.fields |= set(side.where) | ({side.field} if side.field else set())
            if rule.compare is not None:
                plan.fields.add(rule.compare.a_field if key == "a" else rule.compare.b_field)
            pred = side_predicate(side, minor)
            if plan.predicates is not None:
                if pred:
                    plan.predicates.append(pred)
                else:
                    plan.predicates = None
            # features outside every partner layer's extent cannot intersect it; a difference
            # rule's a side is needed everywhere
            extent = current[other.layer].extent
            if (rule.operation == "difference" and key == "a") or extent is None:
                boxes[side.layer] = None
            elif boxes.get(side.layer, []) is not None:
                boxes.setdefault(side.layer, []).append(extent)
    for code, plan in plans.items():
        own, partner = current[code].extent, boxes.get(code)
        if partner and own:
            x0, y0 = min(b[0] for b in partner), min(b[1] for b in partner)
            x1, y1 = max(b[2] for b in partner), max(b[3] for b in partner)
            if not (x0 <= own[0] and y0 <= own[1] and x1 >= own[2] and y1 >= own[3]):
                plan.bbox = (x0, y0, x1, y1)
    return plans


def read_layers(engine: Engine, current: dict, plans: dict[str, LayerPlan], *, srid: int, catalogue: Catalogue,
                timings: dict[str, float], threads: int = 2, progress: Progress | None = None
                ) -> dict[str, gpd.GeoDataFrame]:
    """Read every planned layer, ``threads`` at a time on their own connections.

    The server's scan of one layer overlaps with decoding the previous one here.
    """
    def read(code: str) -> tuple[str, gpd.GeoDataFrame, float]:
        t0 = time.perf_counter()
        plan = plans[code]
        with engine.connect() as sa_conn:
            frame = read_layer_columns(sa_conn.connection.driver_connection, current[code].id, srid=srid,
                                       minor=catalogue.minor(code), fields=plan.fields,
                                       predicates=plan.predicates, bbox=plan.bbox)
        return code, frame, time.perf_counter() - t0

    frames = {}
    # largest first, so the pool does not end waiting on one big layer
    order = sorted(plans, key=lambda code: -current[code].feature_count)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, (code, frame, seconds) in enumerate(pool.map(read, order), start=1):
            frames[code] = frame
            timings[code] = round(seconds, 4)
            if progress:
                progress(f"read {code} ({len(frame):,} features)", i, len(order))
    return frames


def read_layer_columns(conn, version_id: int, *, srid: int, minor: Minor, fields: set[str],
                       predicates: list[dict[str, tuple[str, ...]]] | None = None,
                       bbox: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
    """Features of one version with only some attributes, filtered in SQL (binary transfer).

    Attribute columns are typed after the catalogue (integer, number, boolean; text otherwise).
    """
    names = sorted(fields)
    params: list = [version_id]
    where = "version_id = %s"
    if predicates:
        ors = []
        for pred in predicates:
            ands = []
            for name, values in sorted(pred.items()):
                ands.append("props->>%s = ANY(%s)")
                params += [name, list(values)]
            ors.append("(" + " AND ".join(ands) + ")")
        where += " AND (" + " OR ".join(ors) + ")"
    if bbox is not None:
        where += " AND geom && ST_MakeEnvelope(%s, %s, %s, %s, %s)"
        params += [*bbox, srid]
    columns = "".join(", props->>%s" for _ in names)
    with conn.cursor(binary=True) as cur:
        cur.execute(f"SELECT fid, ST_AsBinary(geom){columns} FROM feature WHERE {where}", [*names, *params])
        rows = cur.fetchall()
    data: dict = {"fid": np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))}
    for k, name in enumerate(names, start=2):
        values = pd.Series([r[k] for r in rows], dtype=object)
        if values.isna().all() and not _has_attribute(conn, version_id, minor, name):
            continue  # no column: a rule that needs it is "not evaluated", not silently clear
        data[name] = _typed(values, minor, name)
    wkb = np.fromiter((r[1] for r in rows), dtype=object, count=len(rows))
    geometry = shapely.from_wkb(wkb) if rows else np.empty(0, dtype=object)
    return gpd.GeoDataFrame(data, geometry=geometry, crs=f"EPSG:{srid}")


def _has_attribute(conn, version_id: int, minor: Minor, name: str) -> bool:
    """Whether any feature of the version carries the attribute (required ones always do)."""
    if any(a.name == name and a.required for a in minor.attributes):
        return True
    with conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM feature WHERE version_id = %s AND props ? %s)", (version_id, name))
        return bool(cur.fetchone()[0])


def _typed(values: pd.Series, minor: Minor, name: str) -> pd.Series:
    kind = next((a.type for a in minor.attributes if a.name == name), "string")
    if kind == "integer":
        return pd.to_numeric(values, errors="coerce").astype("Int64")
    if kind == "number":
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if kind == "boolean":
        return values.map({"true": True, "false": False})
    return values


# Districts, attributes, summary ----------------------------------------------------------------

def assign_districts(conflicts: gpd.GeoDataFrame, districts: gpd.GeoDataFrame | None) -> tuple[list, list]:
    """The code and name of the district holding the largest part of each conflict (None outside)."""
    n = len(conflicts)
    codes, names = np.full(n, None, dtype=object), np.full(n, None, dtype=object)
    if districts is None or len(districts) == 0 or n == 0:
        return list(codes), list(names)
    geoms, dgeoms = np.asarray(conflicts.geometry.values), np.asarray(districts.geometry.values)
    ci, di = shapely.STRtree(dgeoms).query(geoms, predicate="intersects")
    share = np.ones(len(ci))
    several = np.bincount(ci, minlength=n)[ci] > 1  # only conflicts on a district border need areas
    share[several] = shapely.area(shapely.intersection(geoms[ci[several]], dgeoms[di[several]]))
    order = np.lexsort((-share, ci))
    ci, di = ci[order], di[order]
    first = np.unique(ci, return_index=True)[1]
    codes[ci[first]] = districts["district_code"].to_numpy()[di[first]]
    names[ci[first]] = districts["district_name"].to_numpy()[di[first]]
    return list(codes), list(names)


def _attach_attributes(conn, found: gpd.GeoDataFrame, versions: dict[str, int]) -> None:
    """Add ``a_attrs`` / ``b_attrs``: the full stored attributes of each feature in conflict."""
    wanted: dict[str, set[int]] = {}
    for side in ("a", "b"):
        fids = found[f"{side}_fid"]
        for layer, group in found[fids.notna()].groupby(f"{side}_layer"):
            wanted.setdefault(layer, set()).update(int(v) for v in group[f"{side}_fid"])
    props: dict[str, dict[int, dict]] = {}
    with conn.cursor() as cur:
        for layer, fids in wanted.items():
            # a hash join on the wanted ids: ``fid = ANY(array)`` would scan the array for every row
            cur.execute("SELECT f.fid, f.props FROM feature f JOIN unnest(%s::bigint[]) AS w (fid) "
                        "ON w.fid = f.fid WHERE f.version_id = %s", (sorted(fids), versions[layer]))
            props[layer] = dict(cur.fetchall())
    found["a_version_id"] = [versions.get(v) for v in found["a_layer"]]
    found["b_version_id"] = [versions.get(v) for v in found["b_layer"]]
    found["a_attrs"] = [props[la].get(int(f), {}) for la, f in zip(found["a_layer"], found["a_fid"], strict=True)]
    found["b_attrs"] = [None if pd.isna(f) else props[lb].get(int(f), {})
                        for lb, f in zip(found["b_layer"], found["b_fid"], strict=True)]


def summarise(found: gpd.GeoDataFrame, rules: RuleSet, evaluated: list[str]) -> dict:
    """Counts and areas by type (every evaluated rule, zero included) and by district."""
    by_type = {}
    for code in evaluated:
        rule = rules.rule(code)
        rows = found[found["rule"] == code]
        by_type[code] = {"name_zh": rule.name_zh, "name_en": rule.name_en, "severity": rule.severity,
                         "count": int(len(rows)), "area_m2": float(rows["area_m2"].sum())}
    by_district: dict[str, dict] = {}
    keys = found["district_code"].fillna("none")
    for code, rows in found.groupby(keys, sort=True):
        names = rows["district_name"].dropna()
        by_district[str(code)] = {
            "name": names.iloc[0] if len(names) else "outside the districts",
            "count": int(len(rows)), "area_m2": float(rows["area_m2"].sum()),
            "by_type": {str(k): int(v) for k, v in rows["rule"].value_counts().sort_index().items()},
        }
    return {"total": {"count": int(len(found)), "area_m2": float(found["area_m2"].sum())},
            "by_type": by_type, "by_district": by_district}
