"""Planted conflicts and check sites: small parcels whose profiles are set by hand.

Each conflict case is one rectangle cut in two pieces. Both pieces form one feature in the
case's a-layer (or b-layer), and exactly one piece carries the contradiction, so the conflict
polygon is that piece. Positions depend only on the seed (never on ``scale``): the same cases
appear at every scale. Pieces are at least ``SEPARATION`` apart, so no two cases touch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import shapely

from layers.demo import codes, places
from layers.demo.fields import REDLINE_LEVEL, URBAN_LEVEL, Fields, redline_kinds
from layers.demo.networks import Heritage, Line
from layers.demo.shapes import rotated_rect
from layers.demo.sources import Districts, project
from layers.demo.water import WaterBody

SEPARATION = 1_500.0  # metres between any two planted rectangles
CASES_PER_RULE = 2


@dataclass(frozen=True)
class Piece:
    """A planted polygon: it becomes exactly one base face with this profile."""

    geom: shapely.Polygon
    profile: dict
    group: int  # pieces with one group form one parcel where their attributes agree


@dataclass
class Case:
    """A planted conflict under ``rule`` between the a- and b-layer features on ``conflict``."""

    rule: str
    a_layer: str
    b_layer: str | None
    pieces: list[int]
    conflict: int  # the piece whose area is the conflict


@dataclass
class Site:
    """A ~1 ha check site."""

    name: str  # also the expected answer of the site check
    geom: shapely.Polygon
    pieces: list[int] = field(default_factory=list)  # the planted parcels it sits on


@dataclass
class Plan:
    """All planted pieces, the conflict cases made of them, and the check sites."""

    pieces: list[Piece]
    cases: list[Case]
    sites: list[Site]


def _with(p: dict, **kw) -> dict:
    return codes.profile(**{**p, **kw})


# rule, a, b, where, in-piece profile, out-piece profile, conflict piece ("in" / "out").
# The in/out profiles take a context dict (red-line type, town type, source name).
# fmt: off
SPECS: tuple[tuple[str, str, str | None, str, Callable, Callable, str], ...] = (
    ("CT01", "2201", "2104", "urban", lambda c: _with(codes.urban("R2"), ghdl="111"),
     lambda c: codes.urban("R2"), "in"),
    ("CT02", "2104", "2201", "farm", lambda c: _with(codes.farm(), ghdl="214"),
     lambda c: codes.farm(), "in"),
    ("CT03", "2201", "2301", "redline_edge", lambda c: codes.infra("H3", redline=c["redline"]),
     lambda c: codes.infra("H3"), "in"),
    ("CT04", "2201", "2103", "farm", lambda c: codes.infra("H2", pbf=6),
     lambda c: codes.infra("H2"), "in"),
    ("CT05", "2201", "2401", "forest", lambda c: codes.infra("H3", fgrade="II"),
     lambda c: codes.infra("H3", fgrade="III"), "in"),
    ("CT06", "2201", "2402", "forest", lambda c: codes.infra("H2", fgrade="III", welfare="provincial"),
     lambda c: codes.infra("H2", fgrade="III"), "in"),
    ("CT07", "2201", "2302", "source", lambda c: codes.infra("H3", wsp="1", wsp_name=c["source"]),
     lambda c: codes.infra("H3", wsp="2", wsp_name=c["source"]), "in"),
    ("CT08", "2201", None, "fringe", lambda c: codes.urban("M1", devb=c["devb"], reg=""),
     lambda c: codes.urban("M1", devb="", reg=""), "out"),
    ("CT09", "2203", "2201", "urban", lambda c: codes.urban("R2", reg="B1"),
     lambda c: codes.urban("B1"), "in"),
    ("CT10", "2103", "2401", "farm", lambda c: codes.farm(pbf=6, fgrade="III"),
     lambda c: codes.farm(pbf=6), "in"),
    ("CT11", "2301", "2103", "redline_edge", lambda c: codes.farm(pbf=7, redline=c["redline"]),
     lambda c: codes.farm(pbf=7), "in"),
    ("CT12", "2203", "2205", "urban_water", lambda c: codes.urban("B1", blue=True),
     lambda c: codes.urban("B1"), "in"),
    ("CT13", "2203", "2204", "urban", lambda c: codes.urban("R2", green="park"),
     lambda c: codes.urban("R2"), "in"),
)
# fmt: on


class _Placer:
    """Finds rectangles meeting a location predicate and clear of every obstacle."""

    def __init__(
        self,
        fields: Fields,
        flood: np.ndarray,
        districts: Districts,
        water: list[WaterBody],
        lines: list[Line],
        heritage: list[Heritage],
        rng: np.random.Generator,
    ):
        self.f, self.flood, self.d, self.water, self.rng = fields, flood, districts, water, rng
        self.inner = shapely.buffer(districts.city, -300.0)
        self.borders = shapely.STRtree(shapely.get_parts(shapely.boundary(districts.geoms)))
        self.waters = shapely.STRtree(np.array([b.polygon for b in water], dtype=object))
        self.heritage = shapely.STRtree(np.array([h.geom for h in heritage], dtype=object))
        self.lines = lines
        self.line_tree = shapely.STRtree(np.array([ln.geom for ln in lines], dtype=object))
        self.placed: list[shapely.Polygon] = []
        region = fields.redline_region
        self.region = region
        shapely.prepare(region)
        coords, idx = shapely.get_coordinates(shapely.get_parts(shapely.boundary(region)), return_index=True)
        same = idx[:-1] == idx[1:]
        self.edge = shapely.STRtree(shapely.linestrings(np.stack([coords[:-1][same], coords[1:][same]], axis=1)))
        self.kinds = redline_kinds(region, fields.grid, fields.dem)
        sources = [b for b in water if b.is_source]
        self.sources = shapely.STRtree(np.array([b.polygon for b in sources], dtype=object))
        self.source_names = [b.name + "饮用水水源保护区" for b in sources]
        self.zones = [(*project(lon, lat), r * 1000) for *_, lon, lat, r in places.ASSESSED_ZONES]

    def masks(self) -> dict[str, np.ndarray]:
        """Grid masks of where each kind of planted parcel may go."""
        f = self.f
        flat = f.slope < 4
        urban = (f.urban > URBAN_LEVEL + 0.15) & f.built & flat
        return {
            "urban": urban,
            "urban_water": urban,
            "industrial": urban & (f.industry > 0.5) & (f.heavy < 0.1),
            "fringe": (np.abs(f.urban - URBAN_LEVEL - 0.02) < 0.03) & flat,
            "farm": (f.urban < URBAN_LEVEL - 0.3) & (f.eco < 0.1) & flat,
            "forest": (f.eco > 0.45) & (f.eco < REDLINE_LEVEL - 0.2) & (f.slope < 12),
            "source": (f.urban < URBAN_LEVEL - 0.1) & (f.eco < REDLINE_LEVEL - 0.2) & (f.slope < 10),
            "redline_edge": (np.abs(f.eco - REDLINE_LEVEL) < 0.04) & (f.slope < 12),
            "redline_deep": (f.eco > REDLINE_LEVEL + 0.45) & (f.slope < 15),
            "zone": (f.urban > URBAN_LEVEL + 0.1) & flat,
        }

    def place(
        self,
        mask: np.ndarray,
        where: str,
        length: float,
        width: float,
        ok: Callable[[float, float, shapely.Polygon], bool] | None = None,
    ) -> tuple:
        """The first (in seeded random order) rectangle satisfying ``mask`` and ``ok``."""
        g = self.f.grid
        rows, cols = np.nonzero(mask[::4, ::4] & self.f.inside[::4, ::4])
        for k in self.rng.permutation(len(rows)):
            x, y = g.to_xy(rows[k] * 4, cols[k] * 4)
            angle = float(self.rng.uniform(-25, 25))
            rect = rotated_rect(x, y, length, width, angle)
            if self._clear(rect, where) and (ok is None or ok(x, y, rect)):
                self.placed.append(rect)
                return float(x), float(y), angle
        raise RuntimeError(f"no place for a planted {where} parcel")

    def _clear(self, rect: shapely.Polygon, where: str) -> bool:
        if not self.inner.contains(rect):
            return False
        if self.placed and shapely.distance(rect, np.array(self.placed, dtype=object)).min() < SEPARATION:
            return False
        near = len(self.borders.query(rect, predicate="dwithin", distance=80.0)) or len(
            self.heritage.query(rect, predicate="dwithin", distance=150.0)
        )
        if near:
            return False
        wet = self.waters.query(rect, predicate="dwithin", distance=80.0 if where != "urban_water" else 0.0)
        if len(wet):
            return False
        if where == "redline_edge" and not self.near_edge(rect, 30.0):
            return False
        # Keep out of the Yellow River floodway (no parcels are drawn there).
        c = rect.centroid
        return bool(self.f.grid.sample(self.flood, c.x, c.y) > 1_600)

    def near_edge(self, rect: shapely.Polygon, distance: float) -> bool:
        """Whether the red-line boundary passes within ``distance`` of ``rect``."""
        return len(self.edge.query(rect, predicate="dwithin", distance=distance)) > 0

    def far_from_lines(self, rect: shapely.Polygon, margin: float) -> bool:
        """Whether ``rect`` is at least ``margin`` outside every transport/utility corridor."""
        hits = self.line_tree.query(rect, predicate="dwithin", distance=300.0 + margin)
        return all(shapely.distance(rect, self.lines[i].geom) > self.lines[i].width / 2 + margin for i in hits)


def plant(
    fields: Fields,
    flood: np.ndarray,
    districts: Districts,
    water: list[WaterBody],
    lines: list[Line],
    heritage: list[Heritage],
    rng: np.random.Generator,
) -> Plan:
    """Place the conflict cases (``CASES_PER_RULE`` per rule) and the check sites.

    ``flood`` is the distance grid to the Yellow River (:func:`layers.demo.water.floodplain_grid`).

    Returns
    -------
    Plan
        Pieces (each becomes one base face with the given profile), cases and sites.
    """
    placer = _Placer(fields, flood, districts, water, lines, heritage, rng)
    masks = placer.masks()
    pieces: list[Piece] = []
    cases: list[Case] = []
    sites: list[Site] = []

    def context(x: float, y: float) -> dict:
        part = int(np.argmin(shapely.distance(shapely.get_parts(placer.region), shapely.Point(x, y))))
        src = placer.sources.query_nearest(shapely.Point(x, y), all_matches=False)[0]
        cx, cy = project(*places.CORE)
        return {
            "redline": placer.kinds[part],
            "source": placer.source_names[src],
            "devb": "central_city" if np.hypot(x - cx, y - cy) < 25_000 else "town",
        }

    def near_water(x, y, rect) -> bool:
        return len(placer.waters.query(rect, predicate="dwithin", distance=150.0)) > 0

    def near_source(x, y, rect) -> bool:
        d = shapely.distance(rect, placer.sources.geometries[placer.sources.query_nearest(rect)[0]])
        return 200.0 < d < 600.0

    sites.extend(_sites(placer, masks, pieces, context))  # first: they are the pickiest
    for rule, a, b, where, inside, outside, conflict in SPECS:
        for _ in range(CASES_PER_RULE):
            length, width = rng.uniform(140, 200), rng.uniform(90, 130)
            split = float(rng.uniform(-0.12, 0.12))
            ok = {"urban_water": near_water, "source": near_source}.get(where)
            x, y, angle = placer.place(masks[where], where, length, width, ok)
            ctx = context(x, y)
            group = len(pieces)  # both pieces: one parcel wherever their attributes agree
            profiles = [_in_town(inside(ctx), ctx), _in_town(outside(ctx), ctx)]
            pieces.append(Piece(rotated_rect(x, y, length, width, angle, -0.5, split), profiles[0], group))
            pieces.append(Piece(rotated_rect(x, y, length, width, angle, split, 0.5), profiles[1], group))
            k = len(pieces) - 2
            cases.append(Case(rule, a, b, [k, k + 1], k if conflict == "in" else k + 1))
    return Plan(pieces, cases, sites)


def _in_town(profile: dict, ctx: dict) -> dict:
    """An urban piece belongs to the development boundary of the town it sits in."""
    return _with(profile, devb=ctx["devb"]) if profile["devb"] else profile


def _sites(placer: _Placer, masks, pieces: list[Piece], context) -> list[Site]:
    """The five check sites, each ~1 ha (100 m x 100 m)."""
    out = []

    def quiet_clear(x, y, rect) -> bool:
        zones_far = all(np.hypot(x - zx, y - zy) > r + 1_500 for zx, zy, r in placer.zones)
        return zones_far and placer.far_from_lines(rect, 200.0)

    x, y, a = placer.place(masks["industrial"], "industrial", 240, 180, quiet_clear)
    ctx = context(x, y)
    pieces.append(Piece(rotated_rect(x, y, 240, 180, a), codes.urban("M1", devb=ctx["devb"], quiet=True), len(pieces)))
    out.append(Site("clear", rotated_rect(x, y, 100, 100, a), [len(pieces) - 1]))

    zx, zy, zr = placer.zones[0]  # DZ-01
    x, y, a = placer.place(masks["zone"], "zone", 200, 200, lambda x, y, r: np.hypot(x - zx, y - zy) < zr * 0.5)
    ctx = context(x, y)
    pieces.append(
        Piece(rotated_rect(x, y, 200, 200, a), codes.urban("M1", devb=ctx["devb"], dz=0, quiet=True), len(pieces))
    )
    out.append(Site("assessed", rotated_rect(x, y, 100, 100, a), [len(pieces) - 1]))

    x, y, a = placer.place(masks["urban"], "urban", 260, 160, lambda x, y, r: placer.far_from_lines(r, 100))
    ctx = context(x, y)
    for code, u0, u1 in (("R2", -0.5, 0.0), ("B1", 0.0, 0.5)):
        pieces.append(
            Piece(rotated_rect(x, y, 260, 160, a, u0, u1), codes.urban(code, devb=ctx["devb"], quiet=True), len(pieces))
        )
    # Shift the site 10 m along the parcel axis: 60 % in the first parcel, 40 % in the second.
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    out.append(Site("straddle", rotated_rect(x - 10 * c, y - 10 * s, 100, 100, a), [len(pieces) - 2, len(pieces) - 1]))

    def deep(x, y, rect) -> bool:
        return placer.region.contains(rect) and not placer.near_edge(rect, 400.0)

    x, y, a = placer.place(masks["redline_deep"], "redline_deep", 300, 300, deep)
    ctx = context(x, y)
    pieces.append(Piece(rotated_rect(x, y, 300, 300, a), codes.forest(redline=ctx["redline"], quiet=True), len(pieces)))
    out.append(Site("redline", rotated_rect(x, y, 100, 100, a), [len(pieces) - 1]))

    # Outside: 泰安 (Tai'an), south of the city boundary.
    x, y = project(117.12, 36.19)
    out.append(Site("outside", rotated_rect(float(x), float(y), 100, 100, 0.0)))
    return out
