"""Regional assessment (区域评估): overlay an assessed zone with hazard and resource layers once,
so projects inside it reuse the results instead of commissioning their own.

``assess_zone`` reads the zone from layer 3201, evaluates every assessment type of the catalogue
with the rules in ``spatial/rules/assessments.yaml`` (pass / conditional / fail, statistics, the
conditions projects must meet) and stores each result as a new version of that type's result layer
(3202–3209) through the normal ingest path: the zone's earlier result is replaced, other zones'
results are carried over, and every version stays readable "as of" a date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from layers import frames, store
from layers.catalogue import Catalogue, Minor, load_rules_file
from layers.errors import InvalidInput, NotFound
from layers.ingest import load_frame
from layers.ingest.sources import file_sha256
from layers.settings import Settings
from layers.store import VersionInfo
from spatial.rasters import cached_reader
from spatial.site.rules import load_site_rules

RULES_PATH = Path(__file__).with_name("rules") / "assessments.yaml"
ZONES_LAYER = "3201"
RANK = {"pass": 0, "conditional": 1, "fail": 2}


@dataclass(frozen=True)
class Input:
    layer: str | None
    raster: str | None
    where: dict[str, tuple[str, ...]] | None
    above: float | None
    fail_share: float | None
    zh: str
    en: str

    @property
    def code(self) -> str:
        return self.layer or self.raster or ""


@dataclass(frozen=True)
class AssessmentType:
    name: str
    minor: Minor
    inputs: tuple[Input, ...]
    always: tuple[dict, ...]
    not_assessable: dict | None


@dataclass(frozen=True)
class AssessmentRules:
    validity_years: int
    min_area_m2: float
    types: tuple[AssessmentType, ...]
    checksum: str = ""
    """SHA-256 of the rules file (set by :func:`load_assessment_rules`), recorded on every stored
    result: kept with the rules, so a server holding cached rules never records a newer file's."""


@lru_cache(maxsize=4)
def load_assessment_rules(path: Path = RULES_PATH) -> AssessmentRules:
    """Read and check the rules against the catalogue; a mistake is a one-line ``CatalogueError``."""
    return replace(load_rules_file(path, "assessment rules", _validate), checksum=file_sha256(path))


def _validate(raw: dict, catalogue: Catalogue) -> AssessmentRules:
    layers = {m.assessment_type: m for m in catalogue.minors.values() if m.assessment_type}
    unknown = set(raw["types"]) - set(layers)
    if unknown:
        raise ValueError(f"types not in the catalogue: {sorted(unknown)}")
    missing = set(layers) - set(raw["types"])
    if missing:
        raise ValueError(f"catalogue assessment types without rules: {sorted(missing)}")
    types = []
    for name, spec in raw["types"].items():
        inputs = tuple(_input(item, catalogue, name) for item in spec.get("inputs") or [])
        if not inputs and not spec.get("reason_not_assessable"):
            raise ValueError(f"{name}: no inputs and no reason_not_assessable")
        types.append(AssessmentType(name, layers[name], inputs, tuple(spec.get("always") or []),
                                    spec.get("reason_not_assessable")))
    return AssessmentRules(int(raw["validity_years"]), float(load_site_rules().sliver_m2),
                           tuple(sorted(types, key=lambda t: t.minor.code)))


def _input(item: dict, catalogue: Catalogue, name: str) -> Input:
    layer, raster = item.get("layer"), item.get("raster")
    if bool(layer) == bool(raster):
        raise ValueError(f"{name}: an input names exactly one of layer or raster")
    minor = catalogue.minor(layer or raster)
    if raster and (minor.geometry_type != "raster" or item.get("above") is None):
        raise ValueError(f"{name}: raster input {raster} must be a raster layer with `above`")
    if layer and minor.geometry_type == "raster":
        raise ValueError(f"{name}: layer input {layer} is a raster; use `raster:`")
    where = None
    if item.get("where"):
        where = {}
        for field, values in item["where"].items():
            allowed = minor.attribute(field).values
            values = tuple(str(v) for v in values)
            if allowed is not None and set(values) - {str(v) for v in allowed}:
                raise ValueError(f"{name}: layer {minor.code}.{field} has no value among {values}")
            where[field] = values
    fail = item.get("fail_share")
    if fail is not None and not 0 < float(fail) <= 1:
        raise ValueError(f"{name}: fail_share must lie in (0, 1]")
    return Input(layer, raster, where, None if item.get("above") is None else float(item["above"]),
                 None if fail is None else float(fail), item["zh"], item["en"])


# -- running ---------------------------------------------------------------------------------------

def find_zone(conn: sa.Connection, versions: dict[str, VersionInfo], zone_id: str) -> tuple[shapely.Geometry, dict]:
    """The geometry (storage CRS) and attributes of one assessed zone of layer 3201."""
    version = versions.get(ZONES_LAYER)
    if version is None:
        raise NotFound(f"no assessed zones are loaded (layer {ZONES_LAYER})")
    rows = conn.exec_driver_sql(
        "SELECT props, ST_AsBinary(geom) FROM feature WHERE version_id = %(v)s AND props->>'zone_id' = %(z)s",
        {"v": version.id, "z": zone_id}).all()
    if not rows:
        raise NotFound(f"no assessed zone {zone_id!r} in layer {ZONES_LAYER} v{version.version}")
    geom = shapely.union_all(shapely.from_wkb([r[1] for r in rows]))
    return geom, dict(rows[0][0])


def assess_zone(engine: Engine, settings: Settings, zone_id: str, *, as_of: dt.date | None = None,
                valid_years: int | None = None, types: list[str] | None = None, save: bool = True,
                progress: Callable[[str], None] | None = None) -> dict:
    """Assess one zone for every (or the named) assessment types and store the results.

    Parameters
    ----------
    zone_id : the ``zone_id`` attribute of the zone in layer 3201.
    as_of : read the layer versions in force on this date (default: the current ones).
    valid_years : how long the results stay valid (default: the rules' ``validity_years``).
    types : assessment types to run, e.g. ``["flood_impact"]`` (default: all).

    Returns
    -------
    dict
        ``zone``, ``results`` (one per type: ``result`` pass/conditional/fail/not_assessed,
        ``statistics``, ``conditions``, ``stored`` version), ``versions`` read and ``timings_ms``.

    Examples
    --------
    >>> run = assess_zone(engine, settings, "DZ01")  # doctest: +SKIP
    >>> [(r["type"], r["result"]) for r in run["results"]][:2]  # doctest: +SKIP
    [('environment', 'conditional'), ('geological_hazard', 'pass')]
    """
    rules = load_assessment_rules()
    chosen = _chosen(rules, types)
    years = rules.validity_years if valid_years is None else valid_years
    if not 1 <= years <= 30:
        raise InvalidInput(f"valid_years must be from 1 to 30, not {years}")
    started = time.perf_counter()
    today = dt.datetime.now(dt.UTC).date()
    valid_from = as_of or today
    valid_to = _add_years(valid_from, years)
    srid = settings.storage.storage_srid
    with engine.connect() as conn:
        versions = store.versions_as_of(conn, as_of)
        zone, zone_props = find_zone(conn, versions, zone_id)
        zone_area = float(zone.area)
        results = []
        for kind in chosen:
            results.append(_assess_type(conn, kind, versions, zone, zone_area, rules, srid))
            if progress:
                progress(f"{kind.name}: {results[-1]['result']}")
    timings = {"assess": (time.perf_counter() - started) * 1000}
    run = {
        "zone": {"zone_id": zone_id, "name": zone_props.get("name"), "zone_type": zone_props.get("zone_type"),
                 "area_m2": round(zone_area, 3)},
        "assessed_on": today.isoformat(), "valid_from": valid_from.isoformat(), "valid_to": valid_to.isoformat(),
        "results": results,
        "versions": _versions_read(chosen, versions),
    }
    if save:
        started = time.perf_counter()
        kinds = {k.name: k for k in chosen}
        for result in results:
            if result["result"] in RANK:
                result["stored"] = _store(engine, settings, result, kind=kinds[result["type"]], zone=zone,
                                          zone_props=zone_props, run=run, rules_checksum=rules.checksum)
        timings["store"] = (time.perf_counter() - started) * 1000
    run["timings_ms"] = {k: round(v, 1) for k, v in timings.items()}
    return run


def _chosen(rules: AssessmentRules, types: list[str] | None) -> list[AssessmentType]:
    if not types:
        return list(rules.types)
    by_name = {t.name: t for t in rules.types}
    unknown = [t for t in types if t not in by_name]
    if unknown:
        raise InvalidInput(f"unknown assessment type {unknown[0]!r}; known: {', '.join(by_name)}")
    return [by_name[t] for t in types]


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def _assess_type(conn: sa.Connection, kind: AssessmentType, versions: dict[str, VersionInfo],
                 zone: shapely.Geometry, zone_area: float, rules: AssessmentRules, srid: int) -> dict:
    head = {"type": kind.name, "layer": kind.minor.code, "name_zh": kind.minor.name_zh, "name_en": kind.minor.name_en}
    if not kind.inputs:
        return {**head, "result": "not_assessed", "reason": kind.not_assessable["en"],
                "reason_zh": kind.not_assessable["zh"], "statistics": [], "conditions": []}
    stats, unknown = [], []
    for item in kind.inputs:
        stat = _overlay(conn, item, versions, zone, zone_area, srid)
        stats.append(stat)
        if stat.get("unknown"):
            unknown.append(f"{item.code}: {stat['unknown']}")
    if unknown:
        return {**head, "result": "not_assessed", "reason": "inputs unknown for the zone: " + "; ".join(unknown),
                "reason_zh": "评估所需图层数据不全", "statistics": stats, "conditions": []}
    result, conditions = "pass", [dict(c) for c in kind.always]
    for item, stat in zip(kind.inputs, stats, strict=True):
        stat["triggered"] = stat["area_m2"] > rules.min_area_m2
        if not stat["triggered"]:
            continue
        fails = item.fail_share is not None and stat["share"] >= item.fail_share
        stat["effect"] = "fail" if fails else "conditional"
        result = max(result, stat["effect"], key=RANK.__getitem__)
        conditions.append({"zh": item.zh, "en": item.en})
    return {**head, "result": result, "statistics": stats, "conditions": conditions}


def _overlay(conn: sa.Connection, item: Input, versions: dict[str, VersionInfo], zone: shapely.Geometry,
             zone_area: float, srid: int) -> dict:
    """Area of the zone under one input (features matching its filter, or raster cells above a value)."""
    version = versions.get(item.code)
    stat = {"layer": item.code, "where": item.where, "above": item.above,
            "version": version.version if version else None}
    if version is None:
        return {**stat, "unknown": "the layer has no version"}
    if item.raster:
        zs = cached_reader(version.raster_path).zonal(zone, thresholds=(item.above,))
        if zs.nodata_m2 > 0.001 * zone_area:
            return {**stat, "unknown": f"{1 - zs.data_share:.1%} of the zone has no raster data"}
        area = zs.above[item.above]
        return {**stat, "features": None, "area_m2": round(area, 3), "share": round(area / zone_area, 6),
                "mean": None if zs.mean is None else round(zs.mean, 3)}
    filters, params = "", {"v": version.id, "zone": shapely.to_wkb(zone)}
    for i, (field, values) in enumerate((item.where or {}).items()):
        filters += f" AND props->>%(f{i})s = ANY(%(vals{i})s)"
        params[f"f{i}"], params[f"vals{i}"] = field, list(values)
    row = conn.exec_driver_sql(
        f"""
        WITH z AS (SELECT ST_GeomFromWKB(%(zone)s, {int(srid)}) AS g),
             cut AS (SELECT ST_Intersection(f.geom, z.g) AS g FROM feature f, z
                     WHERE f.version_id = %(v)s AND ST_Intersects(f.geom, z.g){filters})
        SELECT count(*), coalesce(ST_Area(ST_UnaryUnion(ST_Collect(ST_CollectionExtract(g, 3)))), 0),
               (SELECT ST_Covers(coverage, z.g) FROM layer_version, z WHERE id = %(v)s)
        FROM cut
        """, params).one()
    if row[2] is False:
        return {**stat, "unknown": "the zone extends beyond the layer's coverage"}
    area = float(row[1])
    return {**stat, "features": int(row[0]), "area_m2": round(area, 3), "share": round(area / zone_area, 6)}


def _store(engine: Engine, settings: Settings, result: dict, *, kind: AssessmentType, zone: shapely.Geometry,
           zone_props: dict, run: dict, rules_checksum: str) -> dict:
    """A new version of the type's result layer: this zone's new result plus other zones' current ones."""
    srid = settings.storage.storage_srid
    zone_id = run["zone"]["zone_id"]
    with engine.connect() as conn:
        try:
            previous = frames.read_layer(conn, kind.minor.code, srid=srid)
        except NotFound:
            previous = gpd.GeoDataFrame({"fid": pd.Series([], dtype="int64")}, geometry=gpd.GeoSeries([]), crs=srid)
    if len(previous) and "zone_id" in previous:
        previous = previous[previous["zone_id"] != zone_id]
    fid = int(previous["fid"].max()) + 1 if len(previous) else 1
    record = {
        "fid": fid, "zone_id": zone_id, "result": result["result"], "valid_from": run["valid_from"],
        "valid_to": run["valid_to"], "conditions": "\n".join(c["zh"] for c in result["conditions"]),
        "conditions_en": "\n".join(c["en"] for c in result["conditions"]), "zone_name": zone_props.get("name"),
        "assessed_on": run["assessed_on"],
        "statistics": json.dumps(result["statistics"], ensure_ascii=False, sort_keys=True),
        "inputs": json.dumps(run["versions"], sort_keys=True),
        "rules_checksum": rules_checksum,
    }
    new = gpd.GeoDataFrame([record], geometry=[zone], crs=srid)
    frame = pd.concat([previous, new], ignore_index=True) if len(previous) else new
    checksum = hashlib.sha256(json.dumps(record, sort_keys=True).encode() + shapely.to_wkb(zone)).hexdigest()
    report = load_frame(engine, settings, gpd.GeoDataFrame(frame, geometry="geometry", crs=srid), minor=kind.minor,
                        source_name=f"regional assessment {zone_id} ({kind.name})", checksum=checksum)
    return {"layer": kind.minor.code, "version": report.version, "version_id": report.version_id,
            "features": report.features}


def _versions_read(kinds: list[AssessmentType], versions: dict[str, VersionInfo]) -> dict[str, dict | None]:
    """Layer code → {id, version} (None if not loaded) of every layer assessing ``kinds`` reads, zones included."""
    read = sorted({i.code for k in kinds for i in k.inputs} | {ZONES_LAYER})
    return {c: ({"id": versions[c].id, "version": versions[c].version} if c in versions else None) for c in read}


def _stored_result(conn: sa.Connection, version: VersionInfo | None, zone_id: str) -> dict | None:
    """The attributes of one zone's result in a version of a result layer, or None."""
    if version is None:
        return None
    row = conn.exec_driver_sql(
        "SELECT props FROM feature WHERE version_id = %(v)s AND props->>'zone_id' = %(z)s LIMIT 1",
        {"v": version.id, "z": zone_id}).first()
    return None if row is None else row[0]


@dataclass(frozen=True)
class Staleness:
    """Which assessment types of a zone an assessment now would change."""

    unchanged: list[dict]
    """Types whose stored result stands: ``type``, ``layer``, ``version``, ``result``."""
    stale: list[str]
    """Types to assess: never stored, or stored from other inputs, rules or validity."""


def stale_types(conn: sa.Connection, zone_id: str, *, as_of: dt.date | None = None,
                valid_years: int | None = None, types: list[str] | None = None) -> Staleness:
    """Split the (named, or all) assessment types of a zone into unchanged and stale.

    A stored result (in the current version of the type's result layer) stands when it was made
    with the same rules file from the same versions of the zone layer and the type's inputs that an
    assessment now (or ``as_of``) would read, and, where ``as_of`` or ``valid_years`` is given, for
    the same validity. Types the rules cannot assess store nothing and are in neither list.

    Examples
    --------
    >>> staleness = stale_types(conn, "DZ01")  # doctest: +SKIP
    >>> staleness.stale  # doctest: +SKIP
    []
    """
    rules = load_assessment_rules()
    read_now = store.versions_as_of(conn, as_of)
    results = read_now if as_of is None else store.current_versions(conn)
    unchanged, stale = [], []
    for kind in _chosen(rules, types):
        if not kind.inputs:
            continue
        stored = _stored_result(conn, results.get(kind.minor.code), zone_id)
        if stored is None or stored.get("rules_checksum") != rules.checksum:
            stale.append(kind.name)
            continue
        recorded = json.loads(stored.get("inputs") or "{}")
        same_inputs = all(recorded.get(code) == now for code, now in _versions_read([kind], read_now).items())
        if same_inputs and _same_validity(stored, as_of, valid_years):
            unchanged.append({"type": kind.name, "layer": kind.minor.code,
                              "version": results[kind.minor.code].version, "result": stored["result"]})
        else:
            stale.append(kind.name)
    return Staleness(unchanged, stale)


def _same_validity(stored: dict, as_of: dt.date | None, valid_years: int | None) -> bool:
    """Whether a stored result is valid from ``as_of`` for ``valid_years`` (either unasked: any)."""
    valid_from = dt.date.fromisoformat(stored["valid_from"])
    if as_of is not None and valid_from != as_of:
        return False
    return valid_years is None or stored["valid_to"] == _add_years(valid_from, valid_years).isoformat()


def zone_results(conn: sa.Connection, zone_id: str) -> dict:
    """The current stored result of every assessment type for one zone (``NotFound`` if none)."""
    versions = store.current_versions(conn)
    results = []
    for kind in load_assessment_rules().types:
        version = versions.get(kind.minor.code)
        props = _stored_result(conn, version, zone_id)
        if props is None:
            results.append({"type": kind.name, "layer": kind.minor.code, "result": None, "version": None})
            continue
        results.append({
            "type": kind.name, "layer": kind.minor.code, "version": version.version, "result": props.get("result"),
            "valid_from": props.get("valid_from"), "valid_to": props.get("valid_to"),
            "assessed_on": props.get("assessed_on"),
            "conditions": [c for c in str(props.get("conditions") or "").splitlines() if c],
            "conditions_en": [c for c in str(props.get("conditions_en") or "").splitlines() if c],
            "statistics": json.loads(props["statistics"]) if props.get("statistics") else None,
        })
    if all(r["result"] is None for r in results):
        find_zone(conn, versions, zone_id)  # NotFound when the zone itself is unknown
    return {"zone_id": zone_id, "results": results}
