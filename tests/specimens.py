"""Shared geometry specimens and small plan files for tests (valid, invalid, empty shapes)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

BOWTIE = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])  # self-intersecting
EMPTY_POLYGON = shapely.Polygon()
X0, Y0 = 500_000.0, 4_000_000.0  # inside EPSG:4548's zone, near Jinan


def star_polygons(n: int, *, seed: int = 0, vertices: int = 40, x0: float = X0, y0: float = Y0) -> np.ndarray:
    """n non-overlapping-ish jagged polygons with the given vertex count, in EPSG:4548."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    cx = x0 + (np.arange(n) % side) * 200.0
    cy = y0 + (np.arange(n) // side) * 200.0
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radius = 60 + rng.uniform(0, 30, (n, vertices))
    ring = np.stack([cx[:, None] + radius * np.cos(angles), cy[:, None] + radius * np.sin(angles)], -1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    return shapely.polygons(ring)


def redline_frame(n: int, *, seed: int = 0, crs: str | int | None = 4548) -> gpd.GeoDataFrame:
    """A valid frame for layer 2301 (ecological red line)."""
    return gpd.GeoDataFrame(
        {"fid": np.arange(1, n + 1),
         "redline_type": ["biodiversity", "water_conservation"] * (n // 2) + ["karst"] * (n % 2),
         "name": [f"红线{i}" for i in range(n)]},
        geometry=star_polygons(n, seed=seed),
        crs=crs,
    )


def write(frame: gpd.GeoDataFrame, path: Path, **kwargs) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_file(path, **kwargs)
    return path
