"""Plans 23-25 (environment, forestry, special plans), management (31, 32) and
socio-economic (41) layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from layers.demo import places
from layers.demo.derive import Context, Layer, district_of, from_faces
from layers.demo.layers_plans import reserve_zones, unit_layer
from layers.demo.networks import corridor
from layers.demo.sources import project
from layers.demo.zoning import FLOODWAY_M

REDLINE_ZH = {"water_conservation": "水源涵养", "biodiversity": "生物多样性维护",
              "soil_conservation": "水土保持", "karst": "岩溶"}  # fmt: skip


def _quiet(ctx: Context) -> np.ndarray:
    return ctx.t["quiet"].to_numpy().astype(bool)


def _disc(ctx: Context, specs, ok: np.ndarray) -> np.ndarray:
    """Index of the (name, lon, lat, radius_km) disc holding each face, -1 if none."""
    t = ctx.t
    which = np.full(len(t), -1)
    for k, (_, lon, lat, r) in enumerate(specs):
        cx, cy = project(lon, lat)
        which[ok & (np.hypot(t["x"] - cx, t["y"] - cy).to_numpy() < r * 1000) & (which < 0)] = k
    return which


def red_line(ctx: Context) -> Layer:
    """2301: the ecological protection red line; the main southern part is one large, finely
    drawn polygon (its boundary traced from the terrain)."""
    t = ctx.t
    kind = t["redline"].to_numpy()
    geoms, rows = from_faces(ctx, "2301", kind != "", {"redline_type": kind})
    district = np.array(ctx.districts.names)[district_of(ctx, geoms)]
    names = [f"{d}{REDLINE_ZH[k]}生态保护红线" for d, k in zip(district, rows["redline_type"], strict=True)]
    return Layer("2301", geoms, {"redline_type": rows["redline_type"].tolist(), "name": names})


def water_sources(ctx: Context) -> Layer:
    """2302: drinking-water source protection zones, grades 1 and 2."""
    t = ctx.t
    grade = t["wsp"].to_numpy()
    geoms, rows = from_faces(ctx, "2302", grade != "", {"grade": grade, "source_name": t["wsp_name"]})
    return Layer("2302", geoms, {"grade": rows["grade"].tolist(), "source_name": rows["source_name"].tolist()})


def nature_reserve(ctx: Context) -> Layer:
    """2303: the nature reserve's core, buffer and experimental zones."""
    zone = reserve_zones(ctx)
    geoms, rows = from_faces(ctx, "2303", zone != "", {"zone": zone})
    return Layer("2303", geoms, {"name": [places.NATURE_RESERVE[0]] * len(rows), "zone": rows["zone"].tolist()})


def env_zones(ctx: Context) -> Layer:
    """2304: environmental function zones, gap-free (see ``layers_plans.unit_keys``)."""
    return unit_layer(ctx, "2304")


def forest_grades(ctx: Context) -> Layer:
    """2401: forest-land protection grades I-IV."""
    return unit_layer(ctx, "2401")


def welfare_forest(ctx: Context) -> Layer:
    """2402: public-welfare forest by level."""
    return unit_layer(ctx, "2402")


def forest_parks(ctx: Context) -> Layer:
    """2403: forest parks: natural faces within each park's radius."""
    ok = ctx.t["kind"].isin(["forest", "water", "bare"]).to_numpy() & ~_quiet(ctx)
    which = _disc(ctx, places.FOREST_PARKS, ok)
    geoms, rows = from_faces(ctx, "2403", which >= 0, {"k": which}, explode=False)
    return Layer("2403", geoms, {"name": [places.FOREST_PARKS[k][0] for k in rows["k"]]})


def wetland_parks(ctx: Context) -> Layer:
    """2404: wetland parks: water and the open land around it within each park's radius."""
    ok = ctx.t["kind"].isin(["water", "farm", "forest"]).to_numpy() & ~_quiet(ctx)
    which = _disc(ctx, places.WETLAND_PARKS, ok)
    geoms, rows = from_faces(ctx, "2404", which >= 0, {"k": which}, explode=False)
    return Layer("2404", geoms, {"name": [places.WETLAND_PARKS[k][0] for k in rows["k"]]})


def transport_corridors(ctx: Context) -> Layer:
    """2501: protection corridors along railways, high-speed rail, expressways and metro."""
    kinds = {"railway", "high_speed_rail", "expressway", "metro"}
    lines = [ln for ln in ctx.lines if ln.kind in kinds]
    geoms = np.array([corridor(ln, ctx.districts.city) for ln in lines], dtype=object)
    keep = ~shapely.is_empty(geoms)
    lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
    return Layer(
        "2501",
        geoms[keep],
        {"corridor_type": [ln.kind for ln in lines], "width_m": np.array([ln.width for ln in lines])},
    )


def utility_corridors(ctx: Context) -> Layer:
    """2502: high-voltage line corridors and trunk pipeline corridors."""
    kinds = {"hv_line", "gas_pipeline", "oil_pipeline", "water_main"}
    lines = [ln for ln in ctx.lines if ln.kind in kinds]
    geoms = np.array([corridor(ln, ctx.districts.city) for ln in lines], dtype=object)
    keep = ~shapely.is_empty(geoms)
    lines = [ln for ln, k in zip(lines, keep, strict=True) if k]
    return Layer(
        "2502",
        geoms[keep],
        {
            "utility_type": [ln.kind for ln in lines],
            "voltage_kv": [ln.voltage for ln in lines],
            "width_m": np.array([ln.width for ln in lines]),
        },
    )


def flood_zones(ctx: Context) -> Layer:
    """2504: the Yellow River floodway, the flood-storage area on its north bank, and the
    flood-risk belt beyond."""
    t = ctx.t
    flood = t["flood_m"].to_numpy()
    kind = t["kind"].to_numpy()
    open_land = ~np.isin(kind, ["urban", "infra"])
    sx, sy = project(117.16, 36.87)  # the north-bank widening (北展宽区) below 济阳
    storage = open_land & (flood < 4_000) & (np.hypot(t["x"] - sx, t["y"] - sy).to_numpy() < 6_000)
    ftype = np.select([open_land & (flood < FLOODWAY_M), storage, flood < 5_000], ["floodway", "storage", "risk"], "")
    ftype[_quiet(ctx)] = ""
    geoms, rows = from_faces(ctx, "2504", ftype != "", {"flood_type": ftype})
    period = rows["flood_type"].map({"floodway": 20, "storage": 50, "risk": 100}).to_numpy(np.int64)
    return Layer("2504", geoms, {"flood_type": rows["flood_type"].tolist(), "return_period": period})


def project_sites(ctx: Context, parcels: Layer) -> Layer:
    """3101: project sites: a sample of regulatory parcels, set back 5 m from the parcel edge.
    Codes follow 一项一码: year-district-industry-type-serial."""
    rng = ctx.rng("3101")
    n = len(parcels)
    pick = np.sort(rng.choice(n, size=max(n // 25, 1), replace=False))
    geoms = shapely.buffer(parcels.geoms[pick], -5.0, join_style="mitre")
    ok = ~shapely.is_empty(geoms) & (shapely.area(geoms) > 500)
    pick, geoms = pick[ok], geoms[ok]
    district = np.array(ctx.districts.codes)[district_of(ctx, geoms)]
    use = np.array(parcels.columns["land_use"])[pick]
    industry = {"R": 70, "A": 84, "B": 72, "M": 30, "W": 59, "S": 54, "U": 44, "G": 78}
    year = rng.integers(2019, 2026, len(pick))
    codes_ = [
        f"{y}-{d}-{industry[u[0]]:02d}-{1 + k % 3:02d}-{k + 1:06d}"
        for k, (y, d, u) in enumerate(zip(year, district, use, strict=True))
    ]
    kinds = {
        "R": "住宅小区",
        "A": "公共服务设施",
        "B": "商业综合体",
        "M": "标准厂房",
        "W": "物流仓储",
        "S": "交通设施",
        "U": "市政设施",
        "G": "公园绿地",
    }
    names = [f"{parcels.columns['parcel_id'][p]}地块{kinds[u[0]]}项目" for p, u in zip(pick, use, strict=True)]
    return Layer("3101", geoms, {"project_code": codes_, "project_name": names})


def assessed_zones(ctx: Context) -> Layer:
    """3201: development zones assessed once for the whole area (区域评估)."""
    dz = ctx.t["dz"].to_numpy()
    geoms, rows = from_faces(ctx, "3201", dz >= 0, {"dz": dz}, explode=False)
    spec = [places.ASSESSED_ZONES[k] for k in rows["dz"]]
    return Layer(
        "3201",
        geoms,
        {"zone_id": [s[0] for s in spec], "name": [s[1] for s in spec], "zone_type": [s[2] for s in spec]},
    )


DENSITY = {
    "R1": 8_000,
    "R2": 24_000,
    "R3": 18_000,
    "B1": 4_000,
    "B2": 3_000,
    "A1": 2_000,
    "A2": 2_000,
    "A3": 6_000,
    "A5": 3_000,
    "village": 3_500,
}  # people per km², before scaling
POPULATION = 9_202_432  # Jinan, 7th census (2020)


def population(ctx: Context) -> Layer:
    """4101: census units (district + street + community code) with their population,
    scaled so the city totals the 2020 census."""
    t = ctx.t
    key = np.where(t["kind"] == "village", "village", t["ydlb"])
    density = np.array([DENSITY.get(k, 40) for k in key], dtype=float)
    people = density * t["area"].to_numpy() / 1e6
    keys = pd.DataFrame({"d": t["district"].to_numpy(), "u": ctx.units(1.2, 5.0, isolate_pieces=False)})
    geoms, rows = from_faces(ctx, "4101", np.ones(len(t), dtype=bool), keys, explode=False)
    unit_of_face = keys.groupby(["d", "u"], sort=False).ngroup().to_numpy()  # same order as rows
    total = np.bincount(unit_of_face, weights=people, minlength=len(rows))
    pop = np.floor(total * POPULATION / total.sum()).astype(np.int64)
    codes_ = []
    seen: dict[int, int] = {}
    for d in rows["d"]:
        k = seen.get(d, 0)
        seen[d] = k + 1
        codes_.append(f"{ctx.districts.codes[d]}{k // 40 + 1:03d}{k % 40 + 1:03d}")
    return Layer("4101", geoms, {"unit_code": codes_, "population": pop})


FACILITY_OF = {"A3": ("school", "学校"), "A5": ("hospital", "医院"), "A2": ("culture", "文化中心"),
               "G1": ("park", "公园")}  # fmt: skip


def facilities(ctx: Context) -> Layer:
    """4103: public facilities at points inside their parcels; clinics, elderly care and sports
    grounds in a share of residential and park blocks."""
    t = ctx.t
    rng = ctx.rng("4103")
    ydlb = t["ydlb"].to_numpy()
    ok = (t["kind"] == "urban").to_numpy() & ~_quiet(ctx)
    white = rng.random(len(t))
    ftype = np.select(
        [
            ok & np.isin(ydlb, list(FACILITY_OF)) & (ydlb != "G1"),
            ok & (ydlb == "G1") & (white < 0.5),
            ok & (ydlb == "G1"),
            ok & (ydlb == "R2") & (white < 0.12),
            ok & (ydlb == "R2") & (white < 0.22),
        ],
        [np.array([FACILITY_OF.get(k, ("", ""))[0] for k in ydlb]), "park", "sports", "clinic", "elderly_care"],
        "",
    )
    idx = np.nonzero(ftype != "")[0]
    names_zh = {
        "school": "学校",
        "hospital": "医院",
        "culture": "文化中心",
        "park": "公园",
        "sports": "体育场",
        "clinic": "社区卫生服务站",
        "elderly_care": "养老服务中心",
    }
    district = t["district"].to_numpy()[idx]
    frame = pd.DataFrame({"d": district, "f": ftype[idx]})
    number = frame.groupby(["d", "f"], sort=False).cumcount().to_numpy() + 1
    dnames = np.array(ctx.districts.names)[district]
    names = [f"{d}第{k}{names_zh[f]}" for d, k, f in zip(dnames, number, ftype[idx], strict=True)]
    pts = shapely.points(t["x"].to_numpy()[idx], t["y"].to_numpy()[idx])
    return Layer("4103", pts, {"facility_type": ftype[idx].tolist(), "name": names})
