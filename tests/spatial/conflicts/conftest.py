"""A small synthetic city for the conflict run, register and blueprint tests.

Two districts side by side, full-coverage urban and land-use plans on offset grids, and jagged
protection zones placed at random: small enough to load in a second, varied enough that every rule
finds conflicts (pair pieces, remainders, compare mismatches) and some features touch or nest.
"""

from __future__ import annotations

from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa

from layers.catalogue import load_catalogue
from layers.ingest import load_frame
from tests.specimens import X0, Y0

CITY = shapely.box(X0, Y0, X0 + 2000, Y0 + 1000)
YDLB = ["R1", "R2", "R3", "A1", "A2", "A3", "A5", "B1", "B2", "M1", "M2", "M3", "W1", "S1", "S3", "S4", "U1",
        "G1", "G2", "G3", "H2", "H3", "E1", "E2", "E9"]
LAND_USE = YDLB[:20]
SLIVER_PARCEL, SLIVER_GREEN = 61, 7
SLIVER_BOX = (shapely.box(X0 + 1500, Y0 + 20, X0 + 1540, Y0 + 60),
              shapely.box(X0 + 1539.5, Y0 + 20, X0 + 1580, Y0 + 21))
GHDL = ["111", "112", "113", "114", "115", "211", "212", "213", "214", "221", "222", "311", "312"]


def jagged(rng: np.random.Generator, n: int, *, radius: tuple[float, float], vertices: int = 24,
           box: shapely.Polygon = CITY) -> np.ndarray:
    """n star-shaped polygons with centres inside ``box`` (they may overlap each other)."""
    x0, y0, x1, y1 = box.bounds
    cx, cy = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = rng.uniform(*radius, (n, 1)) * rng.uniform(0.7, 1.0, (n, vertices))
    ring = np.stack([cx[:, None] + r * np.cos(angles), cy[:, None] + r * np.sin(angles)], -1)
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))


def grid(cell: float, *, offset: float = 0.0, box: shapely.Polygon = CITY) -> np.ndarray:
    """Square cells of ``cell`` metres covering ``box`` exactly (offset cells are clipped)."""
    x0, y0, x1, y1 = box.bounds
    xs = np.arange(x0 - offset, x1, cell)
    ys = np.arange(y0 - offset, y1, cell)
    cells = [shapely.box(x, y, x + cell, y + cell) for x in xs for y in ys]
    return np.array([c for c in shapely.intersection(cells, box) if c.area > 0], dtype=object)


def frame(geoms, **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"fid": np.arange(1, len(geoms) + 1), **columns}, geometry=list(geoms), crs=4548)


def city_layers(seed: int = 7) -> dict[str, gpd.GeoDataFrame]:
    """Every layer the default rules and the blueprint priority read, by code."""
    rng = np.random.default_rng(seed)
    pick = lambda values, n: rng.choice(values, n).tolist()  # noqa: E731
    plan = grid(125.0)
    landuse = grid(150.0, offset=40.0)
    parcels = jagged(rng, 60, radius=(30, 70), vertices=8)
    layers = {
        "1101": frame([shapely.box(X0, Y0, X0 + 1000, Y0 + 1000), shapely.box(X0 + 1000, Y0, X0 + 2000, Y0 + 1000)],
                      district_code=["370102", "370103"], district_name=["历下区", "市中区"]),
        "2201": frame(plan, ydlb=pick(YDLB, len(plan))),
        "2104": frame(landuse, ghdl=pick(GHDL, len(landuse))),
        "2301": frame(jagged(rng, 6, radius=(80, 160)), redline_type=pick(["biodiversity", "karst"], 6)),
        "2103": frame(jagged(rng, 10, radius=(60, 120)), farmland_grade=pick(list(range(1, 16)), 10)),
        "2401": frame(jagged(rng, 8, radius=(60, 120)), grade=pick(["I", "II", "III", "IV"], 8)),
        "2402": frame(jagged(rng, 5, radius=(50, 100)), level=pick(["national", "provincial"], 5)),
        "2302": frame(jagged(rng, 5, radius=(60, 110)), grade=pick(["1", "2", "quasi"], 5)),
        "2202": frame([shapely.box(X0 + 100, Y0 + 100, X0 + 900, Y0 + 800),
                       *jagged(rng, 2, radius=(200, 300), box=shapely.box(X0 + 1200, Y0, X0 + 2000, Y0 + 1000))],
                      boundary_type=["central_city", "town", "town"]),
        "2203": frame(parcels, parcel_id=[f"P{i:03d}" for i in range(60)], land_use=pick(LAND_USE, 60),
                      far_max=[2.5] * 60, density_max=[0.4] * 60, height_max_m=[60.0] * 60,
                      green_ratio_min=[0.3] * 60),
        "2204": frame(jagged(rng, 6, radius=(40, 90)), green_type=pick(["park", "protective"], 6)),
        "2205": frame(jagged(rng, 4, radius=(40, 90)), water_name=[f"河{i}" for i in range(4)]),
    }
    # farmland zone 11 overlaps zone 1 (one entry of the blueprint priority overlapping itself)
    farm = layers["2103"]
    extra = frame([shapely.transform(farm.geometry.iloc[0], lambda xy: xy + [40.0, 0.0])], farmland_grade=[3])
    layers["2103"] = pd.concat([farm, extra.assign(fid=len(farm) + 1)], ignore_index=True)
    # a residential parcel and a green line overlapping by exactly 0.5 m²: below the 1 m² tolerance
    parcel = frame([SLIVER_BOX[0]], parcel_id=["P-SLIVER"], land_use=["R2"], far_max=[2.5], density_max=[0.4],
                   height_max_m=[60.0], green_ratio_min=[0.3]).assign(fid=SLIVER_PARCEL)
    green = frame([SLIVER_BOX[1]], green_type=["square"]).assign(fid=SLIVER_GREEN)
    layers["2203"] = pd.concat([layers["2203"], parcel], ignore_index=True)
    layers["2204"] = pd.concat([layers["2204"], green], ignore_index=True)
    return layers


def load(engine, settings, code: str, gdf: gpd.GeoDataFrame, *, source: str | None = None) -> int:
    """Load a frame as a new version of a layer; return its version id."""
    minor = load_catalogue().minor(code)
    name = source or f"{code}.synthetic"
    report = load_frame(engine, settings, gdf, minor=minor, source_name=name, checksum=name)
    return report.version_id


def clear_register(engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE conflict_event, conflict, conflict_run RESTART IDENTITY CASCADE"))


@pytest.fixture
def city(empty_store, settings) -> Iterator[dict[str, gpd.GeoDataFrame]]:
    """The synthetic city loaded (every layer v1), with an empty conflict register."""
    clear_register(empty_store)
    layers = city_layers()
    for code, gdf in layers.items():
        load(empty_store, settings, code, gdf)
    yield layers
    clear_register(empty_store)


@pytest.fixture
def register(empty_store) -> Iterator[sa.Engine]:
    """An empty store and an empty conflict register."""
    clear_register(empty_store)
    yield empty_store
    clear_register(empty_store)
