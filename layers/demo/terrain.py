"""Synthetic terrain shaped like Jinan's: the Yellow River plain to the north-west, the foothills
of Mount Tai to the south and south-east, the 莱芜 basin between the southern ranges.

No registry package ships a usable DEM, so elevation is the sum of hand-placed massifs
(``places.MASSIFS``) modulated by ridged fractal noise, over a plain that rises gently to the south.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS

from layers.demo import places
from layers.demo.grid import Grid, fractal, noise
from layers.demo.sources import SRID, project

NODATA = -9999.0


def _axes(grid: Grid, lon: float, lat: float, azimuth: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances (km) along and across an axis through (lon, lat) at ``azimuth`` from north."""
    cx, cy = project(lon, lat)
    dx = (grid.xs[None, :] - cx) / 1000.0
    dy = (grid.ys[:, None] - cy) / 1000.0
    a = np.radians(azimuth)
    return dx * np.sin(a) + dy * np.cos(a), dx * np.cos(a) - dy * np.sin(a)


def _bump(grid: Grid, spec: tuple) -> np.ndarray:
    lon, lat, peak, s_along, s_across, azimuth = spec
    along, across = _axes(grid, lon, lat, azimuth)
    return peak * np.exp(-0.5 * ((along / s_along) ** 2 + (across / s_across) ** 2))


def elevation(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Elevation in metres (float64) on ``grid``: ~20 m on the plain to ~1,050 m on the peaks."""
    # The broad shapes are smooth: build them on a 5x coarser grid and interpolate.
    coarse = grid.coarsen(5)
    cx, cy = project(*places.CORE)
    north_km = (coarse.ys[:, None] - cy) / 1000.0 + 0.0 * coarse.xs[None, :]
    basin = _bump(coarse, places.BASIN)
    plain = grid.refine(30.0 - 0.14 * north_km + 0.5 * basin, 5) + 4.0 * noise(grid, rng, 12_000)
    # Soft maximum of the massifs: overlapping ranges do not pile up.
    envelope = sum(_bump(coarse, m) ** 3 for m in places.MASSIFS) ** (1.0 / 3.0)
    envelope = grid.refine(np.maximum(envelope - basin, 0.0), 5)
    broad = fractal(grid, rng, (9_000, 4_500))
    ridges = 1.0 - np.abs(fractal(grid, rng, (3_200, 1_600), gain=0.6)).clip(0, 1.6) / 1.6
    fine = 1.0 - np.abs(noise(grid, rng, 800)).clip(0, 2) / 2
    relief = envelope * (0.35 + 0.22 * broad.clip(-1.5, 1.5) + 0.55 * ridges**1.5 + 0.2 * fine)
    return plain + np.maximum(relief, 0.0)


def slope_degrees(dem: np.ndarray, cell: float) -> np.ndarray:
    """Slope in degrees by central differences (edges one-sided)."""
    dzdy, dzdx = np.gradient(dem, cell)
    return np.degrees(np.arctan(np.hypot(dzdx, dzdy)))


def write_raster(path: Path, grid: Grid, values: np.ndarray, inside: np.ndarray, description: str) -> None:
    """Write one float32 band with ``NODATA`` outside ``inside``; byte-identical for equal input."""
    band = np.where(inside, values, NODATA).astype(np.float32)
    profile = {
        "driver": "GTiff", "width": grid.nx, "height": grid.ny, "count": 1, "dtype": "float32",
        "crs": CRS.from_epsg(SRID), "transform": grid.transform, "nodata": NODATA,
        "compress": "deflate", "zlevel": 1, "predictor": 3, "tiled": True, "blockxsize": 256, "blockysize": 256,
    }  # fmt: skip
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(band, 1)
        dst.set_band_description(1, description)
