"""The consolidated blueprint (一张蓝图): one designation for every location of the city.

The ``blueprint.priority`` list in spatial/rules/conflicts.yaml is walked in order; at every
location the first entry whose layer has a feature there wins (within one entry the feature with
the lower fid wins). The city is the union of the administrative divisions (1101), or the coverage
of the urban master plan (2201) when the divisions are not loaded. Whatever no entry covers is
``other`` with control level ``none``, so the result is a gap-free, overlap-free coverage of the
city. It is stored as a new version of layer 3105 through the ordinary ingest path.

read the entries' layers → resolve overlaps inside each entry → cut away what earlier entries
hold → clip to the city → fill the rest → store.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from layers import store
from layers.catalogue import Catalogue, load_catalogue
from layers.errors import InvalidInput
from layers.ingest import load_frame
from layers.settings import Settings
from layers.store import VersionInfo
from spatial.conflicts.rules import RULES_PATH, PriorityEntry, RuleSet, load_rules
from spatial.conflicts.run import LayerPlan, default_threads, read_layers
from spatial.conflicts.selection import harmonise
from spatial.overlay import difference_from, map_ranges, parallel, polygonal

BLUEPRINT_LAYER = "3105"
CITY_LAYERS = ("1101", "2201")
_EMPTY = shapely.from_wkt("POLYGON EMPTY")
SLIVER_M2 = 1e-6
"""Overlaps and pieces smaller than this (m²) are rounding noise, not designations."""
COLUMNS = ["unified_class", "control_level", "source_layer", "source_version", "source_fid", "designation"]
Progress = Callable[[str, int, int], None]


@dataclass
class BlueprintReport:
    """What a synthesis produced, in numbers."""

    features: int
    area_m2: float
    city_area_m2: float
    city_source: str
    by_class: dict[str, float]
    by_source: dict[str, float]
    versions: dict[str, int]
    skipped: list[dict] = field(default_factory=list)
    version_id: int | None = None
    version: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def synthesize(engine: Engine, settings: Settings, *, rules_path: Path | str | None = None,
               threads: int | None = None, save: bool = True, progress: Progress | None = None,
               catalogue: Catalogue | None = None) -> tuple[gpd.GeoDataFrame, BlueprintReport]:
    """Build the consolidated blueprint from the current layer versions and store it as layer 3105.

    Parameters
    ----------
    rules_path : the rules file whose ``blueprint.priority`` is used (validated first).
    save : store the result as a new version of layer 3105 (default) or only return it.

    Returns
    -------
    (frame, report)
        ``frame`` has :data:`COLUMNS` and polygon geometries in the storage CRS.

    Raises
    ------
    RulesError
        The rules file is invalid.
    InvalidInput
        Neither the administrative divisions (1101) nor the urban master plan (2201) is loaded,
        so the city's extent is unknown.

    Examples
    --------
    >>> frame, report = synthesize(engine, settings)  # doctest: +SKIP
    >>> report.area_m2 == report.city_area_m2  # doctest: +SKIP
    True
    """
    catalogue = catalogue or load_catalogue()
    rules = load_rules(rules_path, catalogue=catalogue) if rules_path else load_rules()
    threads = threads or default_threads()
    srid = settings.storage.storage_srid
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with engine.connect() as sa_conn:
        current = store.current_versions(sa_conn)
        city, city_source = _city(sa_conn, current, srid)
    plans: dict[str, LayerPlan] = {}
    skipped = []
    for entry in rules.priority:
        if entry.layer not in current:
            if all(s["layer"] != entry.layer for s in skipped):
                skipped.append({"layer": entry.layer, "reason": f"layer {entry.layer} has no current version"})
            continue
        plan = plans.setdefault(entry.layer, LayerPlan())
        plan.fields |= {n for n in (*entry.where, entry.field) if n}
        minor = catalogue.minor(entry.layer)
        pushed = {k: tuple(map(str, v)) for k, v in entry.where.items() if minor.attribute(k).type == "string"}
        if plan.predicates is not None:
            plan.predicates = plan.predicates + [pushed] if pushed else None
    frames = read_layers(engine, current, plans, srid=srid, catalogue=catalogue, timings={},
                         threads=min(threads, 2))
    timings["read"] = round(time.perf_counter() - t0, 4)
    versions = {code: current[code].version for code in frames}
    t0 = time.perf_counter()
    frame = compose(rules.priority, frames, versions, city, city_source=city_source,
                    city_version=current[city_source].version, threads=threads, progress=progress,
                    catalogue=catalogue)
    timings["compose"] = round(time.perf_counter() - t0, 4)
    area = shapely.area(np.asarray(frame.geometry.values))
    report = BlueprintReport(
        features=len(frame), area_m2=float(area.sum()), city_area_m2=float(city.area), city_source=city_source,
        by_class={k: float(v) for k, v in frame.assign(a=area).groupby("unified_class")["a"].sum().items()},
        by_source={k: float(v) for k, v in frame.assign(a=area).groupby("source_layer")["a"].sum().items()},
        versions=versions, skipped=skipped, timings=timings)
    if save:
        t0 = time.perf_counter()
        read = " ".join(f"{code}v{v}" for code, v in versions.items())
        loaded = load_frame(engine, settings, frame.assign(fid=np.arange(1, len(frame) + 1)),
                            minor=catalogue.minor(BLUEPRINT_LAYER), source_name=f"blueprint synthesize ({read})",
                            checksum=_inputs_checksum(rules_path, rules, current), coverage=city)
        report.version_id, report.version = loaded.version_id, loaded.version
        timings["store"] = round(time.perf_counter() - t0, 4)
    return frame, report


def unchanged_blueprint(engine: Engine, *, rules_path: Path | str | None = None) -> VersionInfo | None:
    """The current blueprint (layer 3105) when a synthesis now would read what it was built from.

    That is the same rules file and the same current version of every layer the synthesis reads
    (the priority's layers and the city's); the check reads no features. None when the blueprint
    is missing or out of date.

    Examples
    --------
    >>> stored = unchanged_blueprint(engine)  # doctest: +SKIP
    >>> stored.version if stored else "rebuild"  # doctest: +SKIP
    3
    """
    rules = load_rules(rules_path)
    with engine.connect() as conn:
        current = store.current_versions(conn)
    stored = current.get(BLUEPRINT_LAYER)
    if stored is not None and stored.source_checksum == _inputs_checksum(rules_path, rules, current):
        return stored
    return None


def _inputs_checksum(rules_path: Path | str | None, rules: RuleSet, current: dict[str, VersionInfo]) -> str:
    """What a blueprint is built from, as one checksum (recorded as its version's source checksum):
    the rules file's bytes and the version id of every layer a synthesis reads."""
    codes = sorted({entry.layer for entry in rules.priority} | set(CITY_LAYERS))
    read = {code: current[code].id for code in codes if code in current}
    rules_text = Path(rules_path or RULES_PATH).read_bytes()
    return hashlib.sha256(rules_text + json.dumps(read, sort_keys=True).encode()).hexdigest()


def compose(priority: tuple[PriorityEntry, ...], frames: dict[str, gpd.GeoDataFrame], versions: dict[str, int],
            city: shapely.Geometry, *, city_source: str, city_version: int, threads: int = 2,
            progress: Progress | None = None, catalogue: Catalogue | None = None) -> gpd.GeoDataFrame:
    """The blueprint as a frame, from in-memory layers (no database).

    Parameters
    ----------
    priority : the entries, first wins.
    frames : layer code → features (``fid``, the attributes the entries use, geometry); entries
        whose layer is missing are skipped.
    versions : layer code → version number, written as ``source_version``.
    city : the area to cover, in the frames' CRS.

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> from spatial.conflicts.rules import load_rules
    >>> red = gpd.GeoDataFrame({"fid": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4548)
    >>> out = compose(load_rules().priority, {"2301": red}, {"2301": 1}, shapely.box(0, 0, 2, 1),
    ...               city_source="1101", city_version=1)
    >>> out[["unified_class", "source_layer"]].assign(area=out.area).values.tolist()
    [['ecological', '2301', 1.0], ['other', '1101', 1.0]]
    """
    catalogue = catalogue or load_catalogue()
    crs = next((f.crs for f in frames.values()), None)
    shapely.prepare(city)
    fill = _Fill(city, sum(len(f) for f in frames.values()) // 200 + 1, threads)
    held: list[np.ndarray] = []  # the selected features of every earlier entry
    parts: list[gpd.GeoDataFrame] = []
    for i, entry in enumerate(priority):
        features = frames.get(entry.layer)
        if features is None:
            continue
        mask = np.ones(len(features), dtype=bool)
        for name, allowed in entry.where.items():
            mask &= features[name].isin(allowed).to_numpy()
        if held:  # a feature in no tile with room left is covered already: no overlay for it
            mask &= fill.near_gaps(np.asarray(features.geometry.values, dtype=object))
        chosen = features[mask].sort_values("fid")
        geoms = np.asarray(chosen.geometry.values, dtype=object)
        pieces = cut(geoms, geoms, threads=threads, earlier_only=True)  # within an entry the lower fid wins
        if held:  # what earlier entries hold
            pieces = _minus(pieces, np.concatenate(held), threads)
        pieces = _clip(pieces, city, threads)
        keep = np.flatnonzero(shapely.area(pieces) > SLIVER_M2)
        rows = chosen.iloc[keep]
        if entry.scheme is not None and entry.field is not None:
            classes = harmonise(rows[entry.field], entry.scheme)
            classes = np.where(classes == None, "other", classes)  # noqa: E711 - elementwise
            detail = [f" {entry.field}={v}" for v in rows[entry.field]]
        else:
            classes = np.full(len(rows), entry.unified_class, dtype=object)
            detail = [" " + " ".join(f"{k}={v}" for k, v in entry.where.items()) if entry.where else ""] * len(rows)
        name = catalogue.minor(entry.layer).name_zh
        parts.append(gpd.GeoDataFrame({
            "unified_class": classes, "control_level": entry.control_level, "source_layer": entry.layer,
            "source_version": versions[entry.layer], "source_fid": rows["fid"].to_numpy(dtype=np.int64),
            "designation": [name + d for d in detail]}, geometry=list(pieces[keep]), crs=crs))
        held.append(geoms)
        fill.add(pieces[keep])
        if progress:
            progress(f"{entry.layer} {len(rows):,} pieces", i + 1, len(priority))
    taken = np.concatenate([np.asarray(p.geometry.values, dtype=object) for p in parts]) if parts else []
    rest = fill.uncovered(np.asarray(taken, dtype=object))
    parts.append(gpd.GeoDataFrame({
        "unified_class": "other", "control_level": "none", "source_layer": city_source,
        "source_version": city_version, "source_fid": None, "designation": "未纳入规划 not covered by any plan"},
        index=range(len(rest)), geometry=list(rest), crs=crs))
    out = gpd.GeoDataFrame(np.concatenate([p[COLUMNS].to_numpy(dtype=object) for p in parts]), columns=COLUMNS,
                           geometry=np.concatenate([np.asarray(p.geometry.values, dtype=object) for p in parts]),
                           crs=crs)
    out["source_version"] = out["source_version"].astype("int64")
    out["source_fid"] = out["source_fid"].astype("Int64")
    return out


def cut(geoms: np.ndarray, cutters: np.ndarray, *, threads: int = 2, earlier_only: bool = False) -> np.ndarray:
    """Remove from each polygon every cutter whose interior overlaps it.

    Cutters that only touch a polygon are ignored before any overlay (in plans drawn on shared
    boundaries that is most candidate pairs); a polygon covered by one cutter becomes empty without
    an overlay. With ``earlier_only`` the cutters are ``geoms`` itself and polygon *i* is cut only
    by polygons before it.

    Returns
    -------
    numpy.ndarray
        One (possibly empty) polygonal geometry per input, in order.

    Examples
    --------
    >>> import shapely
    >>> out = cut(np.array([shapely.box(0, 0, 2, 2), shapely.box(5, 5, 6, 6)]),
    ...           np.array([shapely.box(1, 0, 3, 3), shapely.box(6, 5, 7, 6)]), threads=1)
    >>> shapely.area(out).tolist()
    [2.0, 1.0]
    """
    out = np.asarray(geoms, dtype=object).copy()
    if len(out) == 0 or len(cutters) == 0:
        return out
    tree = shapely.STRtree(cutters)

    def query(start: int, stop: int) -> np.ndarray:
        found = tree.query(out[start:stop], predicate="intersects")
        found[0] += start
        return found

    li, ri = np.concatenate(map_ranges(query, len(out), threads) or [np.empty((2, 0), np.intp)], axis=1)
    if earlier_only:
        li, ri = li[ri < li], ri[ri < li]
    overlapping = ~parallel(shapely.touches, out[li], cutters[ri], threads=threads)
    li, ri = li[overlapping], ri[overlapping]
    # shared edges that differ by rounding overlap by nothing worth a new geometry (cutting them
    # would only put near-coincident vertices in, which later overlays handle badly)
    shared = shapely.area(parallel(shapely.intersection, out[li], cutters[ri], threads=threads))
    li, ri = li[shared > SLIVER_M2], ri[shared > SLIVER_M2]
    covered = shapely.covers(cutters[ri], out[li])
    gone = np.zeros(len(out), dtype=bool)
    gone[li[covered]] = True
    live = ~gone[li]
    li, ri = li[live], ri[live]
    order = np.lexsort((ri, li))
    li, ri = li[order], ri[order]
    starts = np.flatnonzero(np.r_[True, li[1:] != li[:-1]]) if len(li) else np.empty(0, int)
    targets = li[starts]
    sizes = np.diff(np.r_[starts, len(li)])
    knives = cutters[ri[starts]].copy()
    several = np.flatnonzero(sizes > 1)
    if len(several):
        groups = np.empty(len(several), dtype=object)
        groups[:] = [cutters[ri[starts[k]:starts[k] + sizes[k]]] for k in several]
        knives[several] = parallel(_union_each, groups, threads=threads)
    out[gone] = _EMPTY
    if len(targets):
        out[targets] = polygonal(parallel(shapely.difference, out[targets], knives, threads=threads))
    return out


def _minus(pieces: np.ndarray, held: np.ndarray, threads: int) -> np.ndarray:
    """Each piece minus every held polygon, through the overlay kernel (empty where nothing is left)."""
    rest = difference_from(pieces, held, threads=threads)
    out = np.full(len(pieces), _EMPTY, dtype=object)
    out[rest.left_index] = rest.geometry
    return out


def _union_each(groups: np.ndarray) -> np.ndarray:
    out = np.empty(len(groups), dtype=object)
    out[:] = [shapely.union_all(g) for g in groups]
    return out


def _clip(pieces: np.ndarray, city: shapely.Geometry, threads: int) -> np.ndarray:
    """Pieces inside the (prepared) city unchanged, the others cut to it."""
    out = pieces.copy()
    outside = ~shapely.covers(city, pieces) & ~shapely.is_empty(pieces)
    if outside.any():
        out[outside] = polygonal(parallel(lambda g: shapely.intersection(g, city), pieces[outside],
                                          threads=threads))
    return out


class _Fill:
    """How much of each tile of the city the pieces placed so far cover.

    The pieces are disjoint, so a tile is full when their areas inside it add up to its own; later
    entries then skip every feature in full tiles only, and the gaps left at the end are found
    tile by tile, each against the pieces near it alone.
    """

    def __init__(self, city: shapely.Geometry, count: int, threads: int) -> None:
        self.tiles = _tiles(city, count)
        self.tree = shapely.STRtree(self.tiles)
        self.area = shapely.area(self.tiles)
        self.filled = np.zeros(len(self.tiles))
        self.threads = threads

    def add(self, pieces: np.ndarray) -> None:
        pi, ti = self.tree.query(pieces, predicate="intersects")
        share = shapely.area(pieces[pi])
        crossing = np.flatnonzero(~shapely.covers(self.tiles[ti], pieces[pi]))
        share[crossing] = shapely.area(parallel(
            shapely.intersection, pieces[pi[crossing]], self.tiles[ti[crossing]], threads=self.threads))
        self.filled += np.bincount(ti, weights=share, minlength=len(self.tiles))

    def gaps(self) -> np.ndarray:
        return np.flatnonzero(self.filled < self.area * (1 - 1e-9))

    def near_gaps(self, geoms: np.ndarray) -> np.ndarray:
        """Which geometries reach into a tile that is not full yet."""
        near = np.zeros(len(geoms), dtype=bool)
        gaps = self.gaps()
        if len(gaps) and len(geoms):
            near[shapely.STRtree(geoms).query(self.tiles[gaps], predicate="intersects")[1]] = True
        return near

    def uncovered(self, taken: np.ndarray) -> np.ndarray:
        """The parts of the city no piece covers, as polygons."""
        gaps = self.gaps()
        if len(gaps) == 0:
            return np.empty(0, dtype=object)
        ti, pi = shapely.STRtree(taken).query(self.tiles[gaps], predicate="intersects")
        rest = [shapely.difference(self.tiles[k], shapely.union_all(taken[pi[ti == j]])) for j, k in enumerate(gaps)]
        parts = shapely.get_parts(polygonal([shapely.union_all(rest)]))
        return parts[shapely.area(parts) > SLIVER_M2]


def _tiles(city: shapely.Geometry, count: int) -> np.ndarray:
    x0, y0, x1, y1 = city.bounds
    side = max(np.sqrt((x1 - x0) * (y1 - y0) / count), 1.0)
    gx, gy = np.meshgrid(np.arange(x0, x1, side), np.arange(y0, y1, side))
    boxes = shapely.box(gx.ravel(), gy.ravel(), np.minimum(gx.ravel() + side, x1), np.minimum(gy.ravel() + side, y1))
    tiles = polygonal(shapely.intersection(boxes, city))
    return tiles[shapely.area(tiles) > 0]


def _city(conn: sa.Connection, current: dict, srid: int) -> tuple[shapely.Geometry, str]:
    """The city's area: the union of the districts (1101), else the urban plan's (2201) coverage."""
    if "1101" in current:
        wkb = conn.execute(sa.text(
            "SELECT ST_AsBinary(ST_UnaryUnion(ST_Collect(geom))) FROM feature WHERE version_id = :v"),
            {"v": current["1101"].id}).scalar_one()
        return shapely.from_wkb(bytes(wkb)), "1101"
    if "2201" in current:
        wkb = conn.execute(sa.text("SELECT ST_AsBinary(coverage) FROM layer_version WHERE id = :v"),
                           {"v": current["2201"].id}).scalar_one()
        if wkb is not None:
            return shapely.from_wkb(bytes(wkb)), "2201"
    raise InvalidInput("the city's extent is unknown: load the administrative divisions (1101) "
                       "or the urban master plan (2201) first")


def export_blueprint(frame: gpd.GeoDataFrame, path: str | Path, *, fmt: str | None = None) -> Path:
    """Write a blueprint frame as GeoPackage, GeoJSON (EPSG:4326) or Excel."""
    from spatial.conflicts.export import checked_output, write_frame

    frame = frame.assign(area_m2=frame.geometry.area)
    summaries = None
    if checked_output(path, fmt) == "xlsx":
        summaries = {"by class 按用地": frame.groupby(["unified_class", "control_level"])["area_m2"]
                     .agg(count="size", area_m2="sum").reset_index()}
    return write_frame(frame, path, fmt=fmt, layer="blueprint", summaries=summaries)
