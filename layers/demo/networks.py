"""Features drawn independently of the base faces: transport and utility lines (and their
corridors), the road network, and heritage protection areas. No conflict rule reads them, so
they may cross the faces freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from layers.demo import places
from layers.demo.shapes import meander, rotated_rect
from layers.demo.sources import Districts, project

HV_WIDTH = {500: 75.0, 220: 40.0}  # protection corridor widths (m) by voltage


@dataclass(frozen=True)
class Line:
    """A named line; ``kind`` is its catalogue class (corridor_type, utility_type, road_class)."""

    name: str
    kind: str
    width: float
    geom: shapely.LineString
    voltage: int | None = None


def transport_lines(rng: np.random.Generator) -> list[Line]:
    """Railways, high-speed rail, expressways and metro lines through their waypoints."""
    return [
        Line(name, kind, width, meander(pts, rng, amplitude=60.0, spacing=100.0, wavelength=5_000))
        for name, kind, width, pts in places.TRANSPORT
    ]


def utility_lines(rng: np.random.Generator) -> list[Line]:
    """500/220 kV lines between substations and the trunk pipelines."""
    subs = {name: (lon, lat, kv) for name, lon, lat, kv in places.SUBSTATIONS}
    out = []
    for a, b in places.HV_LINKS:
        kv = min(subs[a][2], subs[b][2])
        line = meander((subs[a][:2], subs[b][:2]), rng, amplitude=300.0, spacing=200.0, wavelength=8_000)
        # Pylons: HV lines are straight between towers ~400 m apart.
        line = shapely.simplify(line, 40.0)
        out.append(Line(f"{a[:-1]}—{b[:-1]}{kv}kV线路", "hv_line", HV_WIDTH[kv], line, kv))
    for name, kind, pts in places.PIPELINES:
        width = 30.0 if kind == "water_main" else 50.0
        out.append(Line(name, kind, width, meander(pts, rng, amplitude=150.0, spacing=150.0)))
    return out


@dataclass(frozen=True)
class Heritage:
    """A heritage site's protection area."""

    name: str
    level: str
    geom: shapely.Polygon


def heritage_sites(districts: Districts, rng: np.random.Generator, n_local: int = 60) -> list[Heritage]:
    """Named national/provincial sites, the Great Wall of Qi, and municipal/county sites.

    The local sites are synthetic: random small squares named after their district.
    """
    out = []
    for name, level, lon, lat, half in places.HERITAGE:
        x, y = project(lon, lat)
        out.append(Heritage(name, level, rotated_rect(x, y, 2 * half, 1.6 * half, rng.uniform(-20, 20))))
    wall = meander(places.QI_WALL, rng, amplitude=1_500.0, spacing=100.0, wavelength=4_000)
    wall = shapely.intersection(shapely.buffer(wall, 50.0, cap_style="flat"), districts.city)
    out.append(Heritage("齐长城遗址", "national", wall))
    kinds = ("古遗址", "古墓葬", "古建筑", "石窟寺及石刻", "近现代重要史迹")
    x0, y0, x1, y1 = districts.city.bounds
    tree = shapely.STRtree(districts.geoms)
    while len(out) < len(places.HERITAGE) + 1 + n_local:
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        hit = tree.query(shapely.Point(x, y), predicate="within")
        if len(hit) == 0:
            continue
        k = len(out) - len(places.HERITAGE)
        level = "municipal" if k % 3 == 0 else "county"
        name = f"{districts.names[hit[0]]}{kinds[k % len(kinds)]}{k:02d}号"
        size = rng.uniform(60, 200)
        out.append(Heritage(name, level, rotated_rect(x, y, size, size * rng.uniform(0.6, 1), rng.uniform(0, 90))))
    return out


def corridor(line: Line, city: shapely.Polygon):
    """The protection corridor of a line: a flat-ended buffer, clipped to the city."""
    return shapely.intersection(
        shapely.buffer(line.geom, line.width / 2, cap_style="flat", join_style="round", quad_segs=4), city
    )
