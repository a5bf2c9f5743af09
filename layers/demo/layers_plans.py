"""Major class 2, plans 21 (land-use master plan) and 22 (urban-rural plan).

Every layer here is a union of base faces read off the faces' profiles, so the plans agree
with each other everywhere except on the planted pieces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from layers.demo import places
from layers.demo.derive import Context, Layer, dissolve, district_of, from_faces
from layers.demo.fields import URBAN_LEVEL
from layers.demo.sources import project
from layers.demo.zoning import FLOODWAY_M

UNIT_URBAN_KM, UNIT_RURAL_KM = 1.5, 4.0  # plan dissolve units at scale 1


def unit_keys(ctx: Context) -> dict[str, tuple[str, np.ndarray]]:
    """Per-face values of the gap-free and zonal layers dissolved by plan unit:
    code → (attribute, values); "" or 0 means the face is not in the layer."""
    t = ctx.t
    kind = t["kind"].to_numpy()
    reserve = reserve_zones(ctx)
    farm = np.isin(kind, ["farm", "village"])
    pbf = t["pbf"].to_numpy()
    zone_2101 = np.select(  # 土地用途区
        [
            pbf > 0,
            kind == "urban",
            kind == "infra",
            (reserve != "") & (reserve != "experimental"),
            farm & (t["flood_m"].to_numpy() < FLOODWAY_M),
            farm,
            kind == "forest",
            (kind == "bare") & (t["dlbm"] == "0602").to_numpy(),
        ],
        ["010", "030", "040", "070", "060", "020", "080", "040"],
        "990",
    )
    # 建设用地管制区: allowed = planned construction; prohibited = red line, grade-1 water
    # sources and reserve cores; conditional = the ring just outside the towns.
    urb = ctx.fields.grid.sample(ctx.fields.urban, t["x"].to_numpy(), t["y"].to_numpy())
    zone_2102 = np.select(
        [
            np.isin(kind, ["urban", "infra"]),
            (t["redline"] != "").to_numpy() | (t["wsp"] == "1").to_numpy() | np.isin(reserve, ["core", "buffer"]),
            (urb > URBAN_LEVEL - 0.2) & (pbf == 0),
        ],
        ["allowed", "prohibited", "conditional"],
        "restricted",
    )
    # 环境功能区: I protected land, IV industry and infrastructure, III towns, II countryside.
    ydlb = t["ydlb"].to_numpy()
    industrial = np.isin(ydlb, ["M1", "M2", "M3", "W1", "U1", "S4", "H2", "H3"])
    protected = (t["redline"] != "").to_numpy() | np.isin(reserve, ["core", "buffer"])
    zone_2304 = np.select([protected, industrial, kind == "urban"], ["I", "IV", "III"], "II")
    return {
        "2101": ("zone_code", zone_2101), "2102": ("zone_type", zone_2102),
        "2103": ("farmland_grade", pbf), "2104": ("ghdl", t["ghdl"].to_numpy()),
        "2201": ("ydlb", ydlb), "2304": ("zone_class", zone_2304),
        "2401": ("grade", t["fgrade"].to_numpy()), "2402": ("level", t["welfare"].to_numpy()),
    }  # fmt: skip


def unit_layer(ctx: Context, code: str) -> Layer:
    """A layer dissolved by plan unit (see :meth:`Context.units`).

    All such layers are built from shared *atoms*: faces dissolved once by every unit layer's
    value at the same time, so each layer unions a few atoms instead of many faces.
    """
    if "atoms" not in ctx.cache:
        keys = unit_keys(ctx)
        frame = pd.DataFrame({c: v for c, (_, v) in keys.items()})
        frame["_u"] = ctx.units(UNIT_URBAN_KM, UNIT_RURAL_KM)
        ctx.cache["atoms"] = (keys, *dissolve(ctx.faces.geoms, frame, explode=False))
    keys, atoms, rows = ctx.cache["atoms"]
    name = keys[code][0]
    present = ~rows[code].isin(["", 0]).to_numpy()
    frame = pd.DataFrame({name: rows[code].to_numpy()[present], "_u": rows["_u"].to_numpy()[present]})
    geoms, out = dissolve(atoms[present], frame)
    values = out[name].to_numpy()
    return Layer(code, geoms, {name: values.astype(np.int64) if code == "2103" else values.tolist()})


def land_use_zones(ctx: Context) -> Layer:
    """2101: 土地用途区, gap-free."""
    return unit_layer(ctx, "2101")


def control_zones(ctx: Context) -> Layer:
    """2102: 建设用地管制区, gap-free."""
    return unit_layer(ctx, "2102")


def basic_farmland(ctx: Context) -> Layer:
    """2103: permanent basic farmland by grade."""
    return unit_layer(ctx, "2103")


def planned_class(ctx: Context) -> Layer:
    """2104: 规划地类, gap-free."""
    return unit_layer(ctx, "2104")


def master_plan(ctx: Context) -> Layer:
    """2201: urban master-plan land use (GB 50137), gap-free over the whole city."""
    return unit_layer(ctx, "2201")


def development_boundary(ctx: Context) -> Layer:
    """2202: the urban development boundary: the central city and the towns."""
    t = ctx.t
    devb = t["devb"].to_numpy()
    geoms, rows = from_faces(ctx, "2202", devb != "", {"boundary_type": devb})
    return Layer("2202", geoms, {"boundary_type": rows["boundary_type"].tolist()})


# land use: (far_max range, density, height m, green ratio, parking per 100 m², setback m)
INDICATORS = {
    "R1": ((0.8, 1.2), (0.25, 0.35), (12, 18), (0.35, 0.40), (1.0, 1.5), (5, 10)),
    "R2": ((1.5, 3.0), (0.20, 0.30), (36, 80), (0.30, 0.40), (0.8, 1.2), (8, 15)),
    "R3": ((1.2, 1.8), (0.25, 0.35), (18, 36), (0.30, 0.35), (0.6, 1.0), (5, 10)),
    "A1": ((1.0, 2.5), (0.25, 0.40), (24, 60), (0.30, 0.40), (0.8, 1.2), (10, 15)),
    "A2": ((1.0, 2.0), (0.25, 0.40), (18, 40), (0.30, 0.40), (0.8, 1.2), (8, 15)),
    "A3": ((0.8, 1.5), (0.20, 0.30), (18, 36), (0.35, 0.40), (0.5, 1.0), (8, 15)),
    "A5": ((1.2, 2.5), (0.25, 0.35), (24, 60), (0.35, 0.40), (1.0, 1.5), (10, 15)),
    "B1": ((2.5, 6.0), (0.35, 0.50), (60, 150), (0.20, 0.30), (0.8, 1.2), (10, 20)),
    "B2": ((2.0, 4.0), (0.30, 0.45), (40, 100), (0.20, 0.30), (0.8, 1.2), (10, 15)),
    "M1": ((1.0, 2.0), (0.35, 0.55), (24, 40), (0.10, 0.15), (0.2, 0.5), (8, 12)),
    "M2": ((0.8, 1.5), (0.35, 0.55), (24, 30), (0.10, 0.15), (0.2, 0.4), (10, 15)),
    "M3": ((0.8, 1.2), (0.35, 0.50), (24, 40), (0.15, 0.20), (0.2, 0.4), (15, 20)),
    "W1": ((0.8, 1.5), (0.40, 0.60), (15, 24), (0.10, 0.15), (0.2, 0.4), (8, 12)),
    "S1": ((0.0, 0.1), (0.00, 0.05), (6, 10), (0.10, 0.20), (0.0, 0.0), (0, 5)),
    "S3": ((0.5, 1.5), (0.20, 0.40), (15, 40), (0.20, 0.30), (1.0, 2.0), (10, 20)),
    "S4": ((0.1, 0.8), (0.10, 0.30), (8, 15), (0.15, 0.25), (0.0, 0.2), (5, 10)),
    "U1": ((0.5, 1.0), (0.25, 0.40), (12, 24), (0.30, 0.35), (0.2, 0.4), (8, 12)),
    "G1": ((0.0, 0.05), (0.00, 0.02), (6, 12), (0.65, 0.80), (0.0, 0.2), (5, 10)),
    "G2": ((0.0, 0.02), (0.00, 0.01), (6, 8), (0.80, 0.90), (0.0, 0.0), (0, 5)),
    "G3": ((0.0, 0.10), (0.00, 0.05), (6, 12), (0.35, 0.45), (0.2, 0.5), (5, 10)),
}  # fmt: skip


def regulatory_parcels(ctx: Context) -> Layer:
    """2203: regulatory-plan parcels (控规地块) with use and control indicators; parcel ids
    are ``<district initials><unit>-<n>`` like 控规 numbering."""
    t = ctx.t
    mask = (t["reg"] != "").to_numpy() & ((t["area"] >= 2_500) | (t["piece"] >= 0)).to_numpy()
    geoms, rows = from_faces(ctx, "2203", mask, {"land_use": t["reg"]}, by=ctx.parcels())
    rng = ctx.rng("2203")
    n = len(rows)
    spec = [INDICATORS[u] for u in rows["land_use"]]

    def pick(i: int, decimals: int) -> np.ndarray:
        lo = np.array([s[i][0] for s in spec], dtype=float)
        hi = np.array([s[i][1] for s in spec], dtype=float)
        return np.round(lo + rng.random(n) * (hi - lo), decimals)

    far = pick(0, 1)
    density, green, parking = pick(1, 2), pick(3, 2), pick(4, 1)
    height = np.round(pick(2, 0) / 3) * 3
    setback = pick(5, 0)
    far_min = np.where(far >= 1.0, np.round(far * rng.uniform(0.5, 0.7, n), 1), np.nan)
    district = np.array(ctx.districts.codes)[district_of(ctx, geoms)]
    rep = shapely.point_on_surface(geoms)
    unit = np.floor(shapely.get_x(rep) / 1_500).astype(int) * 1000 + np.floor(shapely.get_y(rep) / 1_500).astype(int)
    frame = pd.DataFrame({"d": district, "u": unit})
    unit_no = frame.groupby("d", sort=False)["u"].transform(lambda s: pd.factorize(s)[0] + 1).to_numpy()
    seq = frame.groupby(["d", "u"], sort=False).cumcount().to_numpy() + 1
    ids = [f"{places.DISTRICT_ABBR[d]}{u:04d}-{k:03d}" for d, u, k in zip(district, unit_no, seq, strict=True)]
    return Layer(
        "2203",
        geoms,
        {
            "parcel_id": ids,
            "land_use": rows["land_use"].tolist(),
            "far_max": far,
            "far_min": far_min,
            "density_max": density,
            "height_max_m": height,
            "green_ratio_min": green,
            "parking_per_100m2": parking,
            "setback_road_m": setback,
        },
    )


def green_line(ctx: Context) -> Layer:
    """2204: the green line around parks, protective green and squares."""
    t = ctx.t
    green = t["green"].to_numpy()
    geoms, rows = from_faces(ctx, "2204", green != "", {"green_type": green})
    return Layer("2204", geoms, {"green_type": rows["green_type"].tolist()})


def blue_line(ctx: Context) -> Layer:
    """2205: the blue line around urban water; named after the water body it mostly covers."""
    t = ctx.t
    geoms, _ = from_faces(ctx, "2205", t["blue"].to_numpy().astype(bool), {"b": t["blue"]})
    polys = np.array([b.polygon for b in ctx.water], dtype=object)
    tree = shapely.STRtree(polys)
    names = []
    for g in geoms:
        hits = tree.query(g, predicate="intersects")
        share = [shapely.area(shapely.intersection(g, polys[i])) for i in hits]
        names.append(ctx.water[hits[int(np.argmax(share))]].name if len(hits) else None)
    return Layer("2205", geoms, {"water_name": names})


def purple_line(ctx: Context) -> Layer:
    """2206: historic districts in the old city (faces within each district's radius)."""
    t = ctx.t
    which = np.full(len(t), -1)
    ok = (t["kind"] == "urban").to_numpy() & ~t["quiet"].to_numpy().astype(bool)
    for k, (_, lon, lat, r) in enumerate(places.HISTORIC_DISTRICTS):
        cx, cy = project(lon, lat)
        which[ok & (np.hypot(t["x"] - cx, t["y"] - cy).to_numpy() < r * 1000) & (which < 0)] = k
    geoms, rows = from_faces(ctx, "2206", which >= 0, {"k": which}, explode=False)
    return Layer("2206", geoms, {"district_name": [places.HISTORIC_DISTRICTS[k][0] for k in rows["k"]]})


def yellow_line(ctx: Context) -> Layer:
    """2207: infrastructure land: utilities (U1) and transit depots (S4)."""
    t = ctx.t
    ydlb = t["ydlb"].to_numpy()
    cycle = np.array(["substation", "water_plant", "sewage_plant", "gas_station"])
    facility = np.where(ydlb == "S4", "transit_depot", cycle[np.arange(len(t)) % 4])
    mask = np.isin(ydlb, ["U1", "S4"]) & ~t["quiet"].to_numpy().astype(bool)
    geoms, rows = from_faces(ctx, "2207", mask, {"facility": facility}, by=ctx.parcels())
    return Layer("2207", geoms, {"facility": rows["facility"].tolist()})


def reserve_zones(ctx: Context) -> np.ndarray:
    """Nature-reserve zone of each face: core / buffer / experimental rings around the centre,
    on natural land only."""
    t = ctx.t
    cx, cy = project(*places.NATURE_RESERVE[1:])
    d = np.hypot(t["x"] - cx, t["y"] - cy).to_numpy()
    natural = t["kind"].isin(["forest", "water", "bare"]).to_numpy() & ~t["quiet"].to_numpy().astype(bool)
    core = natural & (d < 3_000) & (t["redline"] != "").to_numpy()
    return np.select([core, natural & (d < 5_000), natural & (d < 8_000)], ["core", "buffer", "experimental"], "")
