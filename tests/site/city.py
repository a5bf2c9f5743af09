"""A small synthetic city with known geometry, and planted sites with answers computable by hand.

Everything is in EPSG:4548 metres around (X0, Y0). Every constraining layer is loaded (layers
without a planted feature get a small filler in the north-east corner), so a site can be
"clear" on all of them; the city square is every vector layer's coverage.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin
from shapely import box

from layers.catalogue import Minor, load_catalogue
from layers.ingest import load_frame
from layers.ingest.pipeline import load_raster
from tests.databases import database_name
from tests.specimens import X0, Y0

SITE_DATABASE = database_name("site")
"""The site-check tests' own database (tests/site/conftest.py)."""


def b(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    """A box in city coordinates (metres from the south-west corner)."""
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


CITY = b(0, 0, 2000, 2000)
FILLER = b(1950, 1950, 1990, 1990)
# Densified to 1,600 vertices: big enough to be read from its subdivided pieces (site_piece).
ZONE = shapely.segmentize(b(1500, 100, 1900, 500), 1.0)
RESERVE = shapely.Point(X0 + 500, Y0 + 1500).buffer(150, quad_segs=500)  # 2,000 vertices
PURPLE = shapely.Point(X0 + 1300, Y0 + 600).buffer(60, quad_segs=300)  # 1,200 vertices, 20 m setback
CELL = 10.0
STEEP = b(1700, 1700, 1900, 1900)
NODATA = b(0, 0, 50, 2000)

FEATURES: dict[str, list[tuple[shapely.Polygon, dict]]] = {
    "2301": [(b(100, 100, 400, 400), {"redline_type": "biodiversity", "name": "红线A"})],
    "2302": [(b(1000, 1000, 1600, 1600), {"grade": "2", "source_name": "水源地"}),
             (b(1200, 1200, 1400, 1400), {"grade": "1", "source_name": "水源地"})],
    "2205": [(b(600, 100, 650, 400), {"water_name": "小清河"})],
    "2206": [(PURPLE, {"district_name": "芙蓉街"})],
    "2303": [(RESERVE, {"name": "保护区", "zone": "core"})],
    "2202": [(b(0, 0, 1000, 2000), {"boundary_type": "central_city"})],
    "2203": [(b(700, 700, 900, 900), {"parcel_id": "P1", "land_use": "R2", "far_max": 2.5, "far_min": 1.0,
                                      "density_max": 0.3, "height_max_m": 54, "green_ratio_min": 0.35,
                                      "parking_per_100m2": 1.0, "setback_road_m": 10}),
             (b(900, 700, 1100, 900), {"parcel_id": "P2", "land_use": "B1", "far_max": 4.0, "far_min": None,
                                       "density_max": 0.4, "height_max_m": 100, "green_ratio_min": 0.25,
                                       "parking_per_100m2": 0.8, "setback_road_m": 15})],
    "2502": [(b(700, 950, 1100, 980), {"utility_type": "hv_line", "voltage_kv": 220, "width_m": 30})],
    "1304": [(b(1500, 100, 1600, 200), {"hazard_type": "landslide", "risk_level": "medium"})],
    "2504": [(b(1500, 400, 1900, 500), {"flood_type": "floodway", "return_period": 50})],
    "3201": [(ZONE, {"zone_id": "DZ01", "name": "高新开发区", "zone_type": "development_zone"})],
    "3105": [(b(0, 0, 1000, 2000), {"unified_class": "construction", "control_level": "allowed",
                                    "source_layer": "2202", "source_version": 1}),
             (b(1000, 0, 2000, 2000), {"unified_class": "ecological", "control_level": "restricted",
                                       "source_layer": "2301", "source_version": 1})],
}
WETLAND_V1 = b(200, 1500, 300, 1600)
WETLAND_V2 = b(400, 1500, 500, 1600)

SITES = {
    "clear": b(300, 700, 400, 800),
    "redline": b(350, 350, 450, 450),
    "straddle": b(850, 750, 950, 850),
    "assessed": b(1650, 250, 1750, 350),
    "zone_edge": b(1850, 250, 1950, 350),
    "outside": b(5000, 5000, 5100, 5100),
    "water": b(1150, 1150, 1250, 1250),
    "blue_setback": b(660, 200, 760, 300),
    "steep": b(1750, 1750, 1850, 1850),
    "nodata": b(0, 600, 100, 700),
    "wetland_v1": b(200, 1500, 300, 1600),
    "reserve_edge": b(560, 1400, 660, 1500),
    "purple_setback": b(1370, 550, 1470, 650),
}


def filler_attributes(minor: Minor) -> dict:
    """Attribute values the catalogue accepts for ``minor`` (first allowed value, minimum, …)."""
    out = {}
    for attr in minor.attributes:
        if attr.values is not None:
            out[attr.name] = str(attr.values[0])
        elif attr.type in ("number", "integer"):
            out[attr.name] = attr.min if attr.min is not None and attr.min > 0 else 1
        elif attr.type == "date":
            out[attr.name] = "2025-01-01"
        elif attr.pattern:
            out[attr.name] = "370102"
        else:
            out[attr.name] = f"{minor.code}-filler"
    return out


class City:
    """What was loaded: features by layer (for independent computations), and the engine."""

    def __init__(self, engine, settings) -> None:
        self.engine = engine
        self.settings = settings
        self.features: dict[str, list[tuple[shapely.Polygon, dict]]] = {}
        self.versions: dict[str, int] = {}
        self.assessment: dict | None = None

    def __repr__(self) -> str:
        return f"City({len(self.features)} layers)"


def load_city(engine, settings, folder: Path) -> City:
    catalogue = load_catalogue()
    city = City(engine, settings)
    for minor in catalogue.minors.values():
        if minor.geometry_type != "polygon" or minor.assessment_type or minor.code == "1302":
            continue
        if minor.code not in FEATURES and not minor.constrains:
            continue
        features = FEATURES.get(minor.code) or [(FILLER, filler_attributes(minor))]
        _load(city, minor, features)
    wetlands = catalogue.minor("1302")
    _load(city, wetlands, [(WETLAND_V1, {"wetland_type": "marsh"})], valid_from="2020-01-01")
    _load(city, wetlands, [(WETLAND_V2, {"wetland_type": "lake"})], valid_from="2024-01-01")
    write_rasters(folder)
    for code in ("1102", "1103"):
        load_raster(engine, settings, path=folder / f"{code}.tif", minor=catalogue.minor(code), valid_from="2020-01-01")
    return city


def _load(city: City, minor: Minor, features: list, valid_from: str = "2020-01-01") -> None:
    geoms = [g for g, _ in features]
    frame = gpd.GeoDataFrame([a for _, a in features], geometry=geoms, crs=4548)
    frame.insert(0, "fid", np.arange(1, len(frame) + 1))
    report = load_frame(city.engine, city.settings, frame, minor=minor, source_name=f"test-{minor.code}",
                        checksum="test", coverage=CITY, valid_from=valid_from)
    city.features[minor.code] = [(g, {**a, "fid": i + 1}) for i, (g, a) in enumerate(features)]
    city.versions[minor.code] = report.version


def raster_grid() -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre x (columns) and y (rows, north first) of the 10 m test rasters."""
    xs = X0 + (np.arange(200) + 0.5) * CELL
    ys = Y0 + 2000 - (np.arange(200) + 0.5) * CELL
    return xs, ys


def dem_values() -> np.ndarray:
    xs, ys = raster_grid()
    return 100.0 + 0.01 * (xs[None, :] - X0) + 0.002 * (ys[:, None] - Y0)


def slope_values() -> np.ndarray:
    xs, ys = raster_grid()
    gx, gy = np.meshgrid(xs, ys)
    steep = shapely.contains_xy(STEEP, gx, gy)
    values = np.where(steep, 30.0, 5.0 + 0.001 * (gx - X0))
    return np.where(shapely.contains_xy(NODATA, gx, gy), -9999.0, values)


def write_rasters(folder: Path) -> None:
    for code, values in (("1102", dem_values()), ("1103", slope_values())):
        with rasterio.open(folder / f"{code}.tif", "w", driver="GTiff", width=200, height=200, count=1,
                           dtype="float32", crs="EPSG:4548", transform=from_origin(X0, Y0 + 2000, CELL, CELL),
                           nodata=-9999.0) as dst:
            dst.write(values.astype("float32"), 1)
