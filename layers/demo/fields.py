"""Zoning fields on the 100 m grid: where the city is (MODIS urban class, smoothed, plus the
planned centres), where the protected hills are (terrain), and the red-line region traced from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.features import geometry_mask
from scipy import ndimage
from skimage.measure import find_contours

from layers.demo import places
from layers.demo.grid import Grid, fractal, smooth
from layers.demo.sources import IGBP_FOREST, IGBP_URBAN, LandCover, project, unproject

URBAN_LEVEL = 0.55  # urban score above which land is planned urban
REDLINE_LEVEL = 0.82  # ecological score above which land is inside the red line


@dataclass(frozen=True)
class Town:
    """A town centre and its radius (m); ``existing`` towns are built up today."""

    name: str
    x: float
    y: float
    radius: float
    existing: bool


@dataclass
class Fields:
    """Everything the face zoning samples, on one grid."""

    grid: Grid
    inside: np.ndarray  # bool: cell centre inside the city
    dem: np.ndarray
    slope: np.ndarray
    urban: np.ndarray  # planned-urban score; > URBAN_LEVEL is urban
    built: np.ndarray  # bool: built up today
    eco: np.ndarray  # ecological score; > REDLINE_LEVEL is red line
    industry: np.ndarray  # 0..1 closeness to an industrial centre
    heavy: np.ndarray  # 0..1 closeness to heavy industry
    towns: list[Town]
    redline_region: shapely.MultiPolygon
    redline_rings: np.ndarray  # LineStrings of the red-line boundary


def _bumps(grid: Grid, centres, power: float = 4.0) -> np.ndarray:
    """Max over centres of weight * exp(-(d/r)^power): flat-topped discs with soft edges.

    Each disc is evaluated only in its window (out to 3 r, where it is < 1e-4)."""
    out = np.zeros(grid.shape)
    for x, y, r, w in centres:
        c0, c1 = np.searchsorted(grid.xs, [x - 3 * r, x + 3 * r])
        r0, r1 = np.searchsorted(-grid.ys, [-(y + 3 * r), -(y - 3 * r)])
        if c0 >= c1 or r0 >= r1:
            continue
        d2 = ((grid.xs[None, c0:c1] - x) ** 2 + (grid.ys[r0:r1, None] - y) ** 2) / r**2
        win = out[r0:r1, c0:c1]
        np.maximum(win, w * np.exp(-(d2 ** (power / 2))), out=win)
    return out


def _modis_share(grid: Grid, cover: LandCover, classes: tuple[int, ...], sigma_m: float) -> np.ndarray:
    """Smoothed share of MODIS cells in ``classes`` (sampled on a 500 m grid, refined to 100 m)."""
    coarse = grid.coarsen(5)
    xx, yy = np.meshgrid(coarse.xs, coarse.ys)
    lon, lat = unproject(xx.ravel(), yy.ravel())
    hit = np.isin(cover.sample(lon, lat), classes).reshape(coarse.shape).astype(float)
    hit = ndimage.gaussian_filter(hit, sigma_m / coarse.cell, mode="nearest")
    return grid.refine(hit, 5)


def _small_towns(
    grid: Grid, inside: np.ndarray, slope: np.ndarray, near_city: np.ndarray, rng: np.random.Generator, n: int
) -> list[Town]:
    """Market towns on flat land away from the big centres (their positions are synthetic)."""
    ok = inside & (slope < 4) & (near_city < 0.02)
    rows, cols = np.nonzero(ok[::10, ::10])
    towns: list[Town] = []
    for k in rng.permutation(len(rows)):
        x, y = grid.to_xy(rows[k] * 10, cols[k] * 10)
        if all((x - t.x) ** 2 + (y - t.y) ** 2 > 7_000**2 for t in towns):
            towns.append(Town(f"镇{len(towns) + 1:02d}", float(x), float(y), float(rng.uniform(650, 1_100)), True))
        if len(towns) == n:
            break
    return towns


def build_fields(
    grid: Grid, city: shapely.Polygon, cover: LandCover, dem: np.ndarray, slope: np.ndarray, rng: np.random.Generator
) -> Fields:
    """Compute the zoning fields and trace the red-line region.

    Parameters
    ----------
    grid, city
        The analysis grid and the city boundary (EPSG:4548).
    cover
        MODIS land cover around the city.
    dem, slope
        Terrain on ``grid`` (metres, degrees).
    rng
        The generator for this stage (fields must not depend on ``scale``).
    """
    inside = ~geometry_mask([city], grid.shape, grid.transform)
    modis_urban = _modis_share(grid, cover, IGBP_URBAN, 1_200.0)
    modis_forest = _modis_share(grid, cover, IGBP_FOREST, 1_500.0)
    big = [(*project(lon, lat), r * 1000, w) for _, lon, lat, r, w in places.URBAN_CENTRES]
    planned = _bumps(grid, big)
    towns = [
        Town(n, float(x), float(y), r, w >= 0.85)
        for (n, *_), (x, y, r, w) in zip(places.URBAN_CENTRES, big, strict=True)
    ]
    small = _small_towns(grid, inside, slope, np.maximum(planned, modis_urban), rng, 28)
    towns += small
    planned = np.maximum(planned, _bumps(grid, [(t.x, t.y, t.radius, 0.95) for t in small]))
    wobble = fractal(grid, rng, (2_500, 900))
    urban = np.maximum(planned, 0.9 * modis_urban) + 0.12 * wobble
    existing = _bumps(grid, [(t.x, t.y, t.radius * 0.8, 1.0) for t in towns if t.existing])
    built = (urban > URBAN_LEVEL) & ((modis_urban + 0.15 * wobble > 0.45) | (existing > 0.5))

    # Hills, steep ground and (where MODIS has any) forest score high; the city pushes it down.
    city_push = smooth((urban > URBAN_LEVEL - 0.1).astype(float), 10)
    eco = (
        np.clip((dem - 150.0) / 300.0, 0, 1.3)
        + 0.45 * np.clip(slope / 20.0, 0, 1.2)
        + 0.3 * modis_forest
        + 0.25 * fractal(grid, rng, (1_800, 700, 300), gain=0.8)
        - 2.0 * city_push
    )
    region, rings = trace_region(grid, eco, REDLINE_LEVEL, min_area=2e6, min_hole=5e5)

    def closeness(specs) -> np.ndarray:
        return _bumps(grid, [(*project(lon, lat), r * 1000, 1.0) for _, lon, lat, r, *_ in specs], 2)

    heavy = closeness([s for s in places.INDUSTRY if s[4]])
    return Fields(grid, inside, dem, slope, urban, built, eco, closeness(places.INDUSTRY), heavy, towns, region, rings)


def trace_region(
    grid: Grid, field: np.ndarray, level: float, min_area: float, min_hole: float
) -> tuple[shapely.MultiPolygon, np.ndarray]:
    """The region where ``field > level`` as smooth polygons (marching squares), dropping parts
    smaller than ``min_area`` m² and filling holes smaller than ``min_hole`` m²."""
    padded = np.pad(field, 1, constant_values=level - 10.0)
    rings = []
    for c in find_contours(padded, level):
        if len(c) >= 4 and np.array_equal(c[0], c[-1]):
            x, y = grid.to_xy(c[:, 0] - 1, c[:, 1] - 1)
            rings.append(shapely.LinearRing(np.column_stack([x, y])))
    polys = shapely.polygons(np.array(rings, dtype=object))
    # Contours of one level never cross, so the region is the set of points inside an odd number
    # of rings: assemble shells (even depth) with their direct children as holes.
    # A vertex of ring i lies strictly inside ring j exactly when i is nested in j.
    tree = shapely.STRtree(polys)
    pairs = tree.query(shapely.get_point(np.array(rings, dtype=object), 0), predicate="within")
    depth = np.bincount(pairs[0], minlength=len(polys))
    parent = {}
    for child, outer in zip(*pairs, strict=True):
        if depth[outer] == depth[child] - 1:
            parent[child] = outer
    region = _assemble(rings, polys, depth, parent, min_area, min_hole, smooth=True)
    if not region.is_valid:  # a corner cut crossed a neighbouring ring: keep the raw trace
        region = _assemble(rings, polys, depth, parent, min_area, min_hole, smooth=False)
    boundary = shapely.get_parts(shapely.boundary(region))
    return region, boundary


def _assemble(rings, polys, depth, parent, min_area, min_hole, smooth: bool) -> shapely.MultiPolygon:
    def coords(i: int) -> np.ndarray:
        xy = np.asarray(rings[i].coords)
        # Two rounds: vertices ~20 m apart, the detail of a red line drawn on 1:10,000 maps.
        return _chaikin(_chaikin(xy)) if smooth else xy

    shells = []
    for i in np.nonzero(depth % 2 == 0)[0]:
        if shapely.area(polys[i]) < min_area:
            continue
        holes = [coords(j) for j, p in parent.items() if p == i and shapely.area(polys[j]) >= min_hole]
        shells.append(shapely.Polygon(coords(i), holes))
    return shapely.MultiPolygon(shells)


def _chaikin(ring: np.ndarray) -> np.ndarray:
    """One round of Chaikin corner cutting on a closed ring: smoother, twice the vertices, every
    new vertex on the old outline (so the traced shape barely moves)."""
    p, q = ring[:-1], np.roll(ring[:-1], -1, axis=0)
    out = np.empty((2 * len(p) + 1, 2))
    out[0:-1:2] = 0.75 * p + 0.25 * q
    out[1:-1:2] = 0.25 * p + 0.75 * q
    out[-1] = out[0]
    return out


def redline_kinds(region: shapely.MultiPolygon, grid: Grid, dem: np.ndarray) -> np.ndarray:
    """The red-line type of each part of the region: the big southern part conserves the
    springs' water; the east is karst; high parts are biodiversity; the rest soil conservation."""
    parts = shapely.get_parts(region)
    rep = shapely.point_on_surface(parts)
    x, y = shapely.get_x(rep), shapely.get_y(rep)
    kinds = np.where(x > 545_000, "karst", "soil_conservation").astype(object)
    kinds[grid.sample(dem, x, y) > 450] = "biodiversity"
    kinds[np.argmax(shapely.area(parts))] = "water_conservation"
    return kinds
