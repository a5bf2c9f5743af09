"""Raster statistics with exact cell coverage, checked against intersecting every cell with shapely."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from spatial import rasters
from spatial.rasters import RasterReader, cell_coverage

ORIGIN = (1000.0, 2000.0)  # west, north
CELL = 10.0


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    rng = np.random.default_rng(3)
    values = rng.uniform(0, 40, (20, 30)).astype("float32")
    values[5:8, 10:14] = -1.0  # nodata block
    path = tmp_path_factory.mktemp("r") / "r.tif"
    with rasterio.open(path, "w", driver="GTiff", width=30, height=20, count=1, dtype="float32", crs="EPSG:4548",
                       transform=from_origin(*ORIGIN, CELL, CELL), nodata=-1.0) as dst:
        dst.write(values, 1)
    return path, values


def independent(values: np.ndarray, polygon: shapely.Geometry):
    cols, rows = np.meshgrid(np.arange(values.shape[1]), np.arange(values.shape[0]))
    x0, y1 = ORIGIN[0] + cols * CELL, ORIGIN[1] - rows * CELL
    area = shapely.area(shapely.intersection(shapely.box(x0, y1 - CELL, x0 + CELL, y1), polygon))
    valid = (area > 0) & (values != -1.0)
    return area[valid], values[valid].astype(float)


POLYGONS = [
    shapely.box(1012.5, 1850.0, 1047.5, 1893.3),
    shapely.affinity.rotate(shapely.box(1050, 1900, 1150, 1960), 33),
    shapely.Point(1120, 1935).buffer(22),  # over the nodata block
    shapely.box(1250, 1900, 1400, 1950),  # half outside the raster
]


@pytest.fixture(params=["exactextract", "small-window"])
def window_path(request, monkeypatch):
    """Both ways of computing exact fractions: exactextract, and GEOS per cell for small windows."""
    monkeypatch.setattr(rasters, "SMALL_WINDOW", 0 if request.param == "exactextract" else 10_000)
    return request.param


@pytest.mark.parametrize("polygon", POLYGONS)
def test_zonal_matches_cell_by_cell_intersection(raster, polygon, window_path):
    path, values = raster
    with RasterReader(path) as reader:
        stats = reader.zonal(polygon, classes=[10, 20, 30], thresholds=(25,))
    w, v = independent(values, polygon)
    # exactextract reports fractions in float32: areas agree to ~1e-7 relative.
    assert stats.area_m2 == pytest.approx(w.sum(), rel=1e-6)
    assert stats.nodata_m2 == pytest.approx(polygon.area - w.sum(), rel=1e-6, abs=1e-3)
    assert stats.mean == pytest.approx((w * v).sum() / w.sum(), rel=1e-6)
    assert (stats.min, stats.max) == pytest.approx((v.min(), v.max()))
    assert stats.above[25] == pytest.approx(w[v > 25].sum(), rel=1e-6)
    hist = [h["area_m2"] for h in stats.histogram]
    edges = [-np.inf, 10, 20, 30, np.inf]
    expected = [w[(v > lo) & (v <= hi)].sum() for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    assert hist == pytest.approx(expected, abs=1e-3)


def test_outside_the_raster_is_all_nodata(raster):
    path, _ = raster
    far = shapely.box(0, 0, 10, 10)
    with RasterReader(path) as reader:
        stats = reader.zonal(far, thresholds=(25,))
        assert reader.coverage(far) is None
    assert stats.area_m2 == 0 and stats.nodata_m2 == pytest.approx(100) and stats.mean is None
    assert stats.as_dict()["above"][0]["share"] == 0


def test_coverage_fractions_sum_to_the_area(raster, window_path):
    path, values = raster
    polygon = POLYGONS[1]
    with RasterReader(path) as reader:
        cov = cell_coverage(reader.transform, 30, 20, polygon)
    assert (cov.fraction * cov.cell_area).sum() == pytest.approx(polygon.area, rel=1e-6)
