"""A synthetic city for the site-check benchmark when the Jinan demo generator is not available.

Same shape of data as the demo at scale 10: every polygon layer of the catalogue, over 1,000,000
features in all, the city boundary as each layer's coverage, a DEM and a slope raster. Tessellated
layers (land use, parcels, cadastre, the blueprint) are gap-free and overlap-free; constraint
layers are scattered blobs. Attributes are drawn from the catalogue's allowed values and ranges,
so everything goes through the normal ingest path (``load_frame``) unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin

from layers.catalogue import Minor, load_catalogue
from layers.ingest import load_frame
from layers.ingest.pipeline import load_raster
from layers.settings import Settings

SOURCE = "bench-site-city-v1"
CENTRE = (500_000.0, 4_060_000.0)  # EPSG:4548, near Jinan
RADIUS = 30_000.0
TESSELLATED = {"1201": 200_000, "1203": 150_000, "2203": 150_000, "2201": 60_000, "2104": 60_000,
               "3105": 60_000, "1301": 50_000, "4101": 20_000, "4102": 20_000, "2101": 20_000}
BLOBS_DEFAULT = 11_000
BLOB_COUNTS = {"1101": 0, "2202": 0, "3201": 0, "1104": 0, "4103": 0}


def city_boundary(seed: int = 0) -> shapely.Polygon:
    """An irregular, roughly round city of radius ~30 km (720 vertices)."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    wobble = sum(rng.uniform(0.02, 0.06) * np.sin(k * angles + rng.uniform(0, 6.3)) for k in range(2, 9))
    r = RADIUS * (1 + wobble)
    return shapely.Polygon(np.column_stack([CENTRE[0] + r * np.cos(angles), CENTRE[1] + r * np.sin(angles)]))


def tessellation(n: int, boundary: shapely.Polygon, rng: np.random.Generator, sub: int = 3) -> np.ndarray:
    """About ``n`` gap-free jittered quads (4*sub vertices each) whose centres lie in ``boundary``."""
    x0, y0, x1, y1 = boundary.bounds
    share = boundary.area / ((x1 - x0) * (y1 - y0))
    side = int(np.ceil(np.sqrt(n / share)))
    cell = (x1 - x0) / side
    m = side * sub + 1
    step = cell / sub
    gx, gy = np.meshgrid(x0 + np.arange(m) * step, y0 + np.arange(m) * step)
    gx = gx + rng.uniform(-0.3, 0.3, gx.shape) * step
    gy = gy + rng.uniform(-0.3, 0.3, gy.shape) * step
    ii, jj = np.meshgrid(np.arange(side), np.arange(side))
    ii, jj = ii.ravel() * sub, jj.ravel() * sub
    # Ring of node indices around one cell: bottom edge, right edge, top edge (back), left edge (back).
    k = np.arange(sub)
    ring_i = np.concatenate([k, np.full(sub, sub), sub - k, np.zeros(sub, int)])
    ring_j = np.concatenate([np.zeros(sub, int), k, np.full(sub, sub), sub - k])
    rows = jj[:, None] + ring_j[None, :]
    cols = ii[:, None] + ring_i[None, :]
    coords = np.stack([gx[rows, cols], gy[rows, cols]], axis=-1)
    coords = np.concatenate([coords, coords[:, :1]], axis=1)
    polys = shapely.polygons(coords)
    inside = shapely.contains_xy(boundary, *shapely.get_coordinates(shapely.centroid(polys)).T)
    return polys[inside]


def blobs(n: int, boundary: shapely.Polygon, rng: np.random.Generator, *, radius: float = 150.0,
          vertices: int = 24) -> np.ndarray:
    """``n`` star-shaped blobs with centres inside ``boundary``."""
    x0, y0, x1, y1 = boundary.bounds
    pts = np.empty((0, 2))
    while len(pts) < n:
        cand = rng.uniform((x0, y0), (x1, y1), (2 * n, 2))
        pts = np.vstack([pts, cand[shapely.contains_xy(boundary, cand[:, 0], cand[:, 1])]])
    pts = pts[:n]
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = radius * rng.uniform(0.4, 1.6, (n, 1)) * (1 + 0.25 * rng.uniform(-1, 1, (n, vertices)))
    ring = np.stack([pts[:, :1] + r * np.cos(angles), pts[:, 1:] + r * np.sin(angles)], -1)
    return shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))


def attributes(minor: Minor, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random attribute values that satisfy the catalogue's schema for ``minor``."""
    out: dict[str, np.ndarray] = {}
    for attr in minor.attributes:
        if attr.values is not None:
            out[attr.name] = rng.choice(np.asarray([str(v) for v in attr.values], dtype=object), n)
        elif attr.type in ("number", "integer"):
            lo = attr.min if attr.min is not None else 0
            hi = attr.max if attr.max is not None else 100
            hi = min(hi, lo + 100)
            values = rng.uniform(lo, hi, n)
            out[attr.name] = np.round(values) if attr.type == "integer" else np.round(values, 2)
        elif attr.type == "date":
            out[attr.name] = np.full(n, "2025-01-01", dtype=object)
        elif attr.pattern == "^[0-9]{6}$":
            out[attr.name] = np.full(n, "370102", dtype=object)
        else:
            out[attr.name] = np.asarray([f"{minor.code}-{i}" for i in range(n)], dtype=object)
    if minor.code == "2203":  # consistent indicators
        out["far_max"] = np.round(rng.uniform(0.8, 5.0, n), 1)
        out["far_min"] = np.round(out["far_max"] * rng.uniform(0.3, 0.7, n), 1)
        out["density_max"] = np.round(rng.uniform(0.2, 0.5, n), 2)
        out["green_ratio_min"] = np.round(rng.uniform(0.2, 0.4, n), 2)
        out["height_max_m"] = np.round(rng.uniform(18, 100, n))
        out["setback_road_m"] = rng.choice([5.0, 8.0, 10.0, 15.0], n)
    return out


def build_layers(seed: int = 0) -> tuple[shapely.Polygon, dict[str, gpd.GeoDataFrame]]:
    """Every polygon layer of the catalogue except the assessment results, as frames in EPSG:4548."""
    rng = np.random.default_rng(seed)
    boundary = city_boundary(seed)
    frames: dict[str, gpd.GeoDataFrame] = {}
    for minor in load_catalogue().minors.values():
        if minor.geometry_type != "polygon" or minor.assessment_type:
            continue
        code = minor.code
        if code in TESSELLATED:
            geoms = tessellation(TESSELLATED[code], boundary, rng)
        elif code == "1101":
            geoms = np.asarray(list(_sectors(boundary, 12)), dtype=object)
        elif code == "2202":
            geoms = np.asarray([shapely.buffer(shapely.Point(CENTRE), RADIUS * 0.55, quad_segs=64)], dtype=object)
        elif code == "3201":
            cx, cy = CENTRE
            geoms = np.asarray([shapely.box(cx + 3_000, cy - 9_000, cx + 9_000, cy - 3_000),
                                shapely.box(cx - 15_000, cy + 5_000, cx - 9_000, cy + 9_000)], dtype=object)
        else:
            geoms = blobs(BLOB_COUNTS.get(code, BLOBS_DEFAULT), boundary, rng)
        values = attributes(minor, len(geoms), rng)
        if code == "3201":
            values.update(zone_id=np.asarray(["DZ01", "DZ02"], dtype=object),
                          name=np.asarray(["高新开发区", "西部产业园"], dtype=object))
        frames[code] = gpd.GeoDataFrame(values, geometry=geoms, crs=4548)
    return boundary, frames


def _sectors(boundary: shapely.Polygon, n: int):
    for k in range(n):
        a0, a1 = 2 * np.pi * k / n, 2 * np.pi * (k + 1) / n
        fan = np.linspace(a0, a1, 16)
        wedge = shapely.Polygon([CENTRE, *zip(CENTRE[0] + 2 * RADIUS * np.cos(fan),
                                               CENTRE[1] + 2 * RADIUS * np.sin(fan), strict=True)])
        yield shapely.intersection(wedge, boundary)


def write_rasters(folder, boundary: shapely.Polygon, seed: int = 0, cell: float = 100.0) -> dict[str, str]:
    """A smooth synthetic DEM and its slope in degrees, float32 GeoTIFFs with nodata outside the city."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = boundary.bounds
    nx, ny = int(np.ceil((x1 - x0) / cell)), int(np.ceil((y1 - y0) / cell))
    xs = x0 + (np.arange(nx) + 0.5) * cell
    ys = y1 - (np.arange(ny) + 0.5) * cell
    gx, gy = np.meshgrid(xs, ys)
    dem = 40 + 0.004 * (CENTRE[1] - gy).clip(0)
    for _ in range(25):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        dem += rng.uniform(50, 500) * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * rng.uniform(1e3, 4e3) ** 2))
    dzdy, dzdx = np.gradient(dem, cell)
    slope = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    inside = shapely.contains_xy(boundary, gx, gy)
    paths = {}
    for code, values in (("1102", dem), ("1103", slope)):
        path = folder / f"{code}.tif"
        profile = {"driver": "GTiff", "width": nx, "height": ny, "count": 1, "dtype": "float32", "crs": "EPSG:4548",
                   "transform": from_origin(x0, y1, cell, cell), "nodata": -9999.0, "tiled": True,
                   "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.where(inside, values, -9999.0).astype("float32"), 1)
        paths[code] = str(path)
    return paths


def load_city(engine, settings: Settings, folder, *, seed: int = 0,
              progress: Callable[[str], None] = print) -> dict:
    """Generate and load the synthetic city; return counts."""
    boundary, frames = build_layers(seed)
    catalogue = load_catalogue()
    total = 0
    valid_from = (dt.date.today() - dt.timedelta(days=365)).isoformat()
    for code, frame in frames.items():
        report = load_frame(engine, settings, frame, minor=catalogue.minor(code), source_name=f"{SOURCE}-{code}",
                            checksum=SOURCE, coverage=boundary, valid_from=valid_from)
        total += report.features
        progress(f"layer {code}: {report.features:,} features")
    for code, path in write_rasters(folder, boundary, seed).items():
        load_raster(engine, settings, path=path, minor=catalogue.minor(code), valid_from=valid_from)
        progress(f"raster {code}")
    return {"features": total, "layers": len(frames) + 2, "boundary": boundary}
