"""Raster statistics over polygons with exact cell-coverage fractions (exactextract).

Each cell counts by the fraction of it the polygon covers, so a 1 ha site on a 100 m DEM (one to
four cells) gets a mean weighted by the land it really occupies, and a share "steeper than 25°"
that is an area, not a count of cell centres. Cells that are nodata or lie outside the raster are
reported as ``nodata_m2``: the caller decides what not knowing means.

Open datasets are cached per thread (GDAL handles are not shareable between threads); a reader
is a context manager for one-off use.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from rasterio.errors import RasterioIOError

from layers.errors import InvalidInput

MAX_CELLS = 25_000_000
"""Most cells one statistic reads (a window of 5,000 x 5,000); beyond that the answer is unknown."""

SMALL_WINDOW = 64
"""Windows of at most this many cells are clipped cell by cell with GEOS (the same exact
fractions, without exactextract's fixed set-up cost, which dominates for a 1 ha site)."""


@dataclass
class ZonalStats:
    """Statistics of one band over one polygon. Areas in the raster CRS's units squared (m²)."""

    area_m2: float
    """Area of the polygon on cells with data."""
    nodata_m2: float
    """Area of the polygon on nodata cells or outside the raster."""
    cells: int
    min: float | None = None
    mean: float | None = None
    max: float | None = None
    histogram: list[dict] = field(default_factory=list)
    above: dict[float, float] = field(default_factory=dict)
    """Area (m²) of cells whose value exceeds each threshold."""

    @property
    def data_share(self) -> float:
        total = self.area_m2 + self.nodata_m2
        return self.area_m2 / total if total > 0 else 0.0

    def as_dict(self) -> dict:
        total = self.area_m2 + self.nodata_m2
        return {
            "min": _round(self.min), "mean": _round(self.mean), "max": _round(self.max),
            "cells": self.cells, "area_m2": round(self.area_m2, 3), "nodata_m2": round(self.nodata_m2, 3),
            "histogram": self.histogram,
            "above": [{"threshold": t, "area_m2": round(a, 3), "share": round(a / total, 6) if total else 0.0}
                      for t, a in self.above.items()],
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


@dataclass(frozen=True)
class CellCoverage:
    """The cells of a raster grid a polygon touches and the exact fraction of each it covers."""

    window: tuple[tuple[int, int], tuple[int, int]]
    index: np.ndarray
    """Flat (row-major) indices of the touched cells within ``window``."""
    fraction: np.ndarray
    cell_area: float
    polygon_area: float


def cell_coverage(transform, width: int, height: int, polygon: shapely.Geometry) -> CellCoverage | None:
    """Exact coverage fractions of ``polygon`` over a north-up grid (None when they do not meet).

    Computed once per grid and shared by every raster on that grid (the DEM and the slope).
    """
    t = transform
    c0 = max(math.floor((polygon.bounds[0] - t.c) / t.a), 0)
    c1 = min(math.ceil((polygon.bounds[2] - t.c) / t.a), width)
    r0 = max(math.floor((polygon.bounds[3] - t.f) / t.e), 0)
    r1 = min(math.ceil((polygon.bounds[1] - t.f) / t.e), height)
    if c0 >= c1 or r0 >= r1:
        return None
    if (r1 - r0) * (c1 - c0) > MAX_CELLS:
        raise InvalidInput(f"the area is too large for raster statistics ({(r1 - r0) * (c1 - c0):,} cells)")
    if (r1 - r0) * (c1 - c0) <= SMALL_WINDOW:
        xs = t.c + np.arange(c0, c1 + 1) * t.a
        ys = t.f + np.arange(r0, r1 + 1) * t.e
        cells = shapely.box(xs[None, :-1], ys[1:, None], xs[None, 1:], ys[:-1, None]).ravel()
        area = shapely.area(shapely.intersection(cells, polygon))
        index = np.flatnonzero(area > 0)
        cell_area = abs(t.a * t.e)
        return CellCoverage(((r0, r1), (c0, c1)), index, area[index] / cell_area, cell_area, float(polygon.area))
    grid = NumPyRasterSource(np.zeros((r1 - r0, c1 - c0), dtype=np.uint8),
                             t.c + c0 * t.a, t.f + r1 * t.e, t.c + c1 * t.a, t.f + r0 * t.e)
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(polygon)}
    out = exact_extract(grid, [feature], ["coverage", "cell_id"], output="geojson")[0]["properties"]
    return CellCoverage(((r0, r1), (c0, c1)), np.asarray(out["cell_id"], dtype=np.int64),
                        np.asarray(out["coverage"], dtype=np.float64), abs(t.a * t.e), float(polygon.area))


class RasterReader:
    """An open raster band; use as a context manager, or through :func:`cached_reader`.

    Examples
    --------
    >>> with RasterReader("dem.tif") as dem:  # doctest: +SKIP
    ...     dem.zonal(site).mean
    """

    def __init__(self, path: str | Path, band: int = 1) -> None:
        try:
            self.dataset = rasterio.open(path)
        except RasterioIOError as exc:
            raise InvalidInput(f"raster {Path(path).name} cannot be read ({str(exc).splitlines()[0]})") from None
        self.band = band
        self.transform = self.dataset.transform
        self.nodata = self.dataset.nodata
        if self.transform.b != 0 or self.transform.d != 0:
            raise InvalidInput(f"raster {Path(path).name} is rotated; only north-up rasters are supported")
        self.grid = (tuple(self.transform), self.dataset.width, self.dataset.height, str(self.dataset.crs))

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.dataset.close()

    def coverage(self, polygon: shapely.Geometry) -> CellCoverage | None:
        return cell_coverage(self.transform, self.dataset.width, self.dataset.height, polygon)

    def zonal(self, polygon: shapely.Geometry, *, classes: list[float] | None = None,
              thresholds: tuple[float, ...] = (), coverage: CellCoverage | None = None) -> ZonalStats:
        """Coverage-weighted statistics of the band over ``polygon`` (in the raster's CRS).

        Parameters
        ----------
        classes : class breaks for a histogram of areas, e.g. ``[2, 6, 15, 25]`` gives
            ≤2, 2–6, 6–15, 15–25, >25.
        thresholds : values whose exceedance area is reported in ``above``.
        coverage : the polygon's :func:`cell_coverage` on this raster's grid, when already known.
        """
        total = float(polygon.area)
        if coverage is None:
            coverage = self.coverage(polygon)
        if coverage is None or not len(coverage.index):
            return ZonalStats(area_m2=0.0, nodata_m2=total, cells=0, above={t: 0.0 for t in thresholds},
                              histogram=_histogram(classes, None, None, total))
        values = self.dataset.read(self.band, window=coverage.window, masked=False).ravel()[coverage.index]
        cell_values = values.astype(np.float64)
        valid = np.isfinite(cell_values) & (coverage.fraction > 0)
        if self.nodata is not None and not math.isnan(self.nodata):
            valid &= values != self.nodata
        weights = coverage.fraction[valid] * coverage.cell_area
        data = cell_values[valid]
        area = float(weights.sum())
        stats = ZonalStats(area_m2=area, nodata_m2=max(total - area, 0.0), cells=int(valid.sum()),
                           above={th: float(weights[data > th].sum()) for th in thresholds},
                           histogram=_histogram(classes, data, weights, total))
        if len(data):
            stats.min, stats.max = float(data.min()), float(data.max())
            stats.mean = float((data * weights).sum() / area)
        return stats


def _histogram(classes: list[float] | None, data: np.ndarray | None, weights: np.ndarray | None,
               total: float) -> list[dict]:
    """Area per class: ≤ c0, (c0, c1], …, > cn."""
    if not classes:
        return []
    if data is None or not len(data):
        areas = np.zeros(len(classes) + 1)
    else:
        areas = np.bincount(np.searchsorted(classes, data, side="left"), weights, minlength=len(classes) + 1)
    edges = [None, *classes, None]
    return [{"from": edges[k], "to": edges[k + 1], "area_m2": round(float(a), 3),
             "share": round(float(a) / total, 6) if total else 0.0} for k, a in enumerate(areas)]


_local = threading.local()


def cached_reader(path: str | Path, band: int = 1) -> RasterReader:
    """A reader for ``path`` kept open for this thread (files of a version never change)."""
    cache: dict = _local.__dict__.setdefault("readers", {})
    key = (str(path), band)
    reader = cache.get(key)
    if reader is None:
        reader = cache[key] = RasterReader(path, band)
    return reader
