"""The truth zoning: one profile (see :mod:`layers.demo.codes`) per base face.

Faces are classified in priority order — water, red line, urban, regional infrastructure,
forest, farmland — by sampling the fields at a point inside each face; planted pieces then get
their explicit profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from scipy.special import ndtr

from layers.demo import codes, places
from layers.demo.fields import URBAN_LEVEL, Fields, redline_kinds
from layers.demo.grid import fractal
from layers.demo.sources import Districts, project
from layers.demo.water import WaterBody

FLOODWAY_M = 1_300.0  # half-width of the Yellow River floodway (no urban land inside)
MIN_URBAN_AREA = 0.8e6  # urban clusters smaller than this stay rural
CENTRAL = ("中心城区", "西客站片区", "东部城区", "高新东区", "起步区")

# Base weights of master-plan codes on urban faces before local modifiers.
CODE_WEIGHTS = {
    "R1": 0.01, "R2": 0.40, "R3": 0.01, "A1": 0.015, "A2": 0.02, "A3": 0.04, "A5": 0.015,
    "B1": 0.09, "B2": 0.03, "M1": 0.06, "M2": 0.015, "M3": 0.0, "W1": 0.025, "S1": 0.02,
    "S3": 0.004, "S4": 0.01, "U1": 0.015, "G1": 0.06, "G2": 0.03, "G3": 0.006,
}  # fmt: skip


@dataclass
class FaceTable:
    """Base faces with their profiles (``table``; ``x``, ``y`` is a point inside each face)."""

    geoms: np.ndarray
    table: pd.DataFrame


class _Cols(dict):
    """Face columns as numpy arrays, with masked multi-column assignment."""

    def set(self, mask, **values) -> None:
        """Assign each column in ``values`` where ``mask`` (scalars, or arrays read at ``mask``)."""
        for name, value in values.items():
            self[name][mask] = value if np.ndim(value) == 0 else np.asarray(value)[mask]


def first_hit(x: np.ndarray, y: np.ndarray, polygons) -> np.ndarray:
    """Index of the first polygon (lowest index) containing each point, -1 if none."""
    out = np.full(len(x), -1, dtype=np.int64)
    for i in range(len(polygons) - 1, -1, -1):  # prepared point-in-polygon, one polygon at a time
        out[shapely.contains_xy(polygons[i], x, y)] = i
    return out


def zone_faces(
    faces: np.ndarray,
    fields: Fields,
    flood: np.ndarray,
    districts: Districts,
    water: list[WaterBody],
    pieces: list,
    rng: np.random.Generator,
) -> FaceTable:
    """Classify every face.

    Parameters
    ----------
    faces
        Base faces from :func:`layers.demo.tessellation.build_faces`.
    fields, flood, districts, water
        The zoning inputs (``flood``: distance grid to the Yellow River).
    pieces
        Planted pieces (``.geom``, ``.profile``, ``.group``); each is exactly one face.
    rng
        Generator for per-face choices.
    """
    n = len(faces)
    rep = shapely.point_on_surface(faces)
    x, y = shapely.get_x(rep), shapely.get_y(rep)
    g = fields.grid
    c = _Cols({k: np.full(n, v, dtype=object if isinstance(v, str) else type(v)) for k, v in codes.PRIMARY.items()})
    district = first_hit(x, y, districts.geoms)
    lost = district < 0  # a point numerically on a boundary: take the nearest district
    if lost.any():
        district[lost] = shapely.STRtree(districts.geoms).query_nearest(rep[lost], all_matches=False)[1]
    urb, eco = g.sample(fields.urban, x, y), g.sample(fields.eco, x, y)
    slope, dem = g.sample(fields.slope, x, y), g.sample(fields.dem, x, y)
    flood = g.sample(flood, x, y)
    white = rng.random(n)

    water_id = first_hit(x, y, [b.polygon for b in water])
    part = first_hit(x, y, shapely.get_parts(fields.redline_region))
    wet = water_id >= 0
    c["water_id"] = water_id
    c.set(wet, kind="water", ydlb="E1", ghdl="311")
    c.set(
        wet, dlbm=np.array([codes.WATER_CURRENT[water[i].water_type] if i >= 0 else "" for i in water_id], dtype=object)
    )
    kinds = redline_kinds(fields.redline_region, g, fields.dem)
    c.set(part >= 0, redline=kinds[np.maximum(part, 0)])

    free = ~wet & (part < 0)
    urban = free & (urb > URBAN_LEVEL) & (slope < 15) & (dem < 260) & (flood > FLOODWAY_M)
    urban = _urban_clusters(c, faces, x, y, urban)
    _urban_codes(c, urban, x, y, slope, fields, rng)
    built = g.sample(fields.built, x, y)
    c.set(urban, built=built)
    c.set(urban, dlbm=np.where(built, [codes.CURRENT_OF_URBAN.get(k, "") for k in c["ydlb"]], "0103"))

    forest = (free & ~urban & ((eco > 0.35) | (slope > 12) | (dem > 300))) | ((part >= 0) & ~wet)
    c.set(forest, kind="forest", ydlb="E2", ghdl="113")
    c.set(forest, dlbm=np.select([dem > 450, slope > 20, white < 0.08], ["0305", "0404", "0401"], "0301"))
    c.set(forest, fgrade=np.select([(part >= 0) & (eco > 1.2), part >= 0, dem > 300], ["I", "II", "III"], "IV"))
    welfare = forest & ((part >= 0) | (slope > 15))
    c.set(welfare, welfare=np.where(eco > 1.1, "national", "provincial"))
    c.set(forest & ~welfare & (white < 0.2), welfare="municipal")
    bare = forest & (part < 0) & ((slope > 26) | ((dem > 200) & (white > 0.985)))
    c.set(bare, kind="bare", ydlb="E9", ghdl="312", fgrade="", welfare="")
    c.set(bare, dlbm=np.where(white > 0.985, "0602", "1206"))

    _farmland(c, free & ~urban & ~forest, urb, dem, slope, flood, white)
    _infrastructure(c, x, y)
    _water_sources(c, faces, water)
    c.set((c["kind"] == "water") & (urb > URBAN_LEVEL - 0.15), blue=True)
    _assessed_zones(c, x, y)
    group, piece = _apply_pieces(c, x, y, pieces)
    t = pd.DataFrame(dict(c))
    t["x"], t["y"], t["area"], t["district"] = x, y, shapely.area(faces), district
    t["flood_m"], t["dem"], t["slope"], t["group"], t["piece"] = flood, dem, slope, group, piece
    return FaceTable(faces, t)


def _urban_clusters(c: _Cols, faces, x, y, urban: np.ndarray) -> np.ndarray:
    """Keep urban faces in clusters of at least MIN_URBAN_AREA; mark each cluster central or town."""
    idx = np.nonzero(urban)[0]
    clusters = shapely.get_parts(shapely.coverage_union_all(faces[idx]))
    order = np.argsort(-shapely.area(clusters), kind="stable")
    clusters = clusters[order]
    big = clusters[shapely.area(clusters) >= MIN_URBAN_AREA]
    hit = first_hit(x[idx], y[idx], big)
    central = np.zeros(len(big), dtype=bool)
    for name, lon, lat, *_ in places.URBAN_CENTRES:
        if name in CENTRAL:
            central |= shapely.contains_xy(big, *project(lon, lat))
    keep = hit >= 0
    out = np.zeros(len(urban), dtype=bool)
    out[idx[keep]] = True
    c["devb"][idx[keep]] = np.where(central[hit[keep]], "central_city", "town")
    return out


def _urban_codes(c: _Cols, urban: np.ndarray, x, y, slope, fields: Fields, rng: np.random.Generator) -> None:
    """Pick each urban face's code from weights shaped by the core, industry and slope; a smooth
    noise field drives the pick so neighbouring blocks tend to share a use."""
    idx = np.nonzero(urban)[0]
    g = fields.grid
    smooth = g.sample(fractal(g, rng, (1_400, 500)), x[idx], y[idx])
    u = ndtr(0.8 * smooth + 0.6 * rng.standard_normal(len(idx)))
    cx, cy = project(*places.CORE)
    core = np.exp(-np.hypot(x[idx] - cx, y[idx] - cy) / 4_000.0)
    ind, heavy = g.sample(fields.industry, x[idx], y[idx]), g.sample(fields.heavy, x[idx], y[idx])
    town = c["devb"][idx] == "town"
    steep = np.clip((slope[idx] - 4.0) / 4.0, 0, 1)
    mods = {
        "B1": 1 + 4 * core, "A1": 1 + 3 * core, "A2": 1 + 2 * core, "R1": 0.3 + 1.5 * town,
        "M1": 0.3 + 9 * ind, "M2": 0.2 + 6 * ind + 8 * heavy, "W1": 0.3 + 5 * ind,
        "M3": 25 * heavy, "G1": 1 + 12 * steep, "R2": 1 - 0.5 * ind,
    }  # fmt: skip
    names = np.array(codes.URBAN_CODES)
    w = np.column_stack([CODE_WEIGHTS[k] * mods.get(k, 1.0) * np.ones(len(idx)) for k in names])
    cum = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)
    chosen = names[np.minimum((cum < u[:, None]).sum(axis=1), len(names) - 1)]
    c["kind"][idx], c["ghdl"][idx], c["ydlb"][idx] = "urban", "211", chosen
    c["green"][idx] = [codes.GREEN_OF.get(k, "") for k in chosen]
    c["reg"][idx] = np.where(chosen == "S1", "", chosen)


def _farmland(c: _Cols, rural, urb, dem, slope, flood, white) -> None:
    """Cultivated land, orchards, greenhouses and villages; the best flat land far enough from
    the city is permanent basic farmland, graded 1 (best) to 15."""
    c.set(rural, kind="farm", ydlb="E2", ghdl="111", dlbm="0103")
    c.set(rural & (flood < 6_000), dlbm="0102")
    c.set(rural & (flood < 2_500) & (white < 0.3), dlbm="0101")
    orchard = rural & (dem > 90) & (white > 0.8)
    c.set(orchard, ghdl="112", dlbm="0201")
    greenhouse = rural & ~orchard & (white > 0.96)
    c.set(greenhouse, ghdl="115", dlbm="1202")
    # Villages: the catalogue's GB 50137 list has no village class (H14), so both plans keep
    # them as rural land (E2 / 115 other agricultural) and only the survey shows them built.
    village = rural & ~orchard & ~greenhouse & (white < 0.08)
    c.set(village, kind="village", ghdl="115", dlbm="0702", built=True)
    field = rural & ~orchard & ~greenhouse & ~village
    pbf = field & (urb < URBAN_LEVEL - 0.2) & (slope < 8) & (flood > FLOODWAY_M) & (white > 0.22)
    grade = np.clip(np.round(4 + dem / 40 + 4 * (white - 0.5) + slope / 3), 1, 15).astype(int)
    c.set(pbf, pbf=grade)


def _infrastructure(c: _Cols, x, y) -> None:
    """Regional infrastructure outside the towns: expressway service areas (H2) and water works
    below the source reservoirs (H3), each on the rural face nearest its anchor point."""
    anchors = []
    for _, kind, _, pts in places.TRANSPORT:
        if kind == "expressway":
            xy = np.column_stack(project(*np.asarray(pts).T))
            for a, b in zip(xy[:-1], xy[1:], strict=True):
                mid = (a + b) / 2 + np.array([-(b - a)[1], (b - a)[0]]) / np.hypot(*(b - a)) * 200
                anchors.append((*mid, "H2"))
    for _, lon, lat, a_km, *_, source in places.LAKES:
        if source:
            cx, cy = project(lon, lat)
            anchors.append((cx, cy - a_km * 1000 - 500.0, "H3"))
    tree = shapely.STRtree(shapely.points(x, y))
    _, faces = tree.query_nearest(shapely.points([(ax, ay) for ax, ay, _ in anchors]), all_matches=False)
    for (_, _, code), f in zip(anchors, faces, strict=True):
        if c["kind"][f] == "farm" and c["redline"][f] == "":
            for k, v in codes.infra(code).items():
                c[k][f] = v


def _water_sources(c: _Cols, faces, water: list[WaterBody]) -> None:
    """Grade-1 zones: the source reservoirs and non-construction land within 300 m of them;
    grade 2 out to 2 km (construction land there is grade 2 at most)."""
    sources = [(i, b) for i, b in enumerate(water) if b.is_source]
    tree = shapely.STRtree(np.array([b.polygon for _, b in sources], dtype=object))
    construction = np.isin(c["kind"], ["urban", "infra"])
    for radius, grade in ((2_000.0, "2"), (300.0, "1")):
        f, s = tree.query(faces, predicate="dwithin", distance=radius)
        ok = ~construction[f] if grade == "1" else np.ones(len(f), dtype=bool)
        c["wsp"][f[ok]] = grade
        c["wsp_name"][f[ok]] = [sources[k][1].name + "饮用水水源保护区" for k in s[ok]]
    for i, body in sources:
        own = c["water_id"] == i
        c.set(own, wsp="1", wsp_name=body.name + "饮用水水源保护区")


def _assessed_zones(c: _Cols, x, y) -> None:
    """Assessed development zones: the urban faces within each zone's radius."""
    for k, (*_, lon, lat, r) in enumerate(places.ASSESSED_ZONES):
        cx, cy = project(lon, lat)
        c.set((np.hypot(x - cx, y - cy) < r * 1000) & (c["devb"] != ""), dz=k)


def _apply_pieces(c: _Cols, x, y, pieces: list) -> tuple[np.ndarray, np.ndarray]:
    """Give each planted piece's face its explicit profile and the piece's dissolve group."""
    group = np.arange(len(x), dtype=np.int64)
    piece = np.full(len(x), -1, dtype=np.int64)
    for i, p in enumerate(pieces):
        hit = np.nonzero(shapely.contains_xy(p.geom, x, y))[0]
        if len(hit) != 1:
            raise RuntimeError(f"planted piece {i} is {len(hit)} faces, not one")
        f = hit[0]
        for k, v in p.profile.items():
            c[k][f] = v
        group[f], piece[f] = -1 - p.group, i
    return group, piece
