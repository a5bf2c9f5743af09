"""Rivers, lakes and reservoirs: the Yellow River corridor, 小清河, 大明湖 and the reservoirs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.features import rasterize
from scipy import ndimage

from layers.demo import places
from layers.demo.grid import Grid
from layers.demo.shapes import meander, wobbly_ellipse

YELLOW_RIVER = "黄河"


@dataclass(frozen=True)
class WaterBody:
    """One water body: its polygon (may run outside the city; faces clip it) and centreline."""

    name: str
    water_type: str  # river | lake | reservoir | canal (catalogue 1105 values)
    polygon: shapely.Polygon
    centreline: shapely.LineString | None
    is_source: bool  # a drinking-water source (2302 zones around it)


def build_water(rng: np.random.Generator) -> list[WaterBody]:
    """Water bodies in priority order: where two overlap, the earlier one owns the overlap.

    Lakes come first (rivers flow into them), then the Yellow River, then the smaller rivers.
    """
    bodies = []
    for name, lon, lat, a, b, rot, kind, source in places.LAKES:
        poly = wobbly_ellipse(lon, lat, a, b, rot, rng)
        bodies.append(WaterBody(name, kind, poly, None, source))
    for name, kind, width, points in places.RIVERS:
        big = name == YELLOW_RIVER
        line = meander(
            points,
            rng,
            amplitude=500.0 if big else 120.0,
            spacing=60.0 if big else 40.0,
            wavelength=6_000.0 if big else 2_500.0,
        )
        # Rivers are drawn with a slightly varying width; flat ends so tributaries meet cleanly.
        poly = shapely.buffer(line, width / 2, cap_style="flat", quad_segs=4)
        poly = shapely.simplify(poly, 2.0)
        bodies.append(WaterBody(name, kind, poly, line, False))
    return bodies


def floodplain_grid(bodies: list[WaterBody], grid: Grid) -> np.ndarray:
    """Distance (m, to the nearest 100 m cell) from each grid cell to the Yellow River centreline."""
    river = next(b for b in bodies if b.name == YELLOW_RIVER).centreline
    on = rasterize([river], out_shape=grid.shape, transform=grid.transform, all_touched=True)
    return ndimage.distance_transform_edt(on == 0) * grid.cell
