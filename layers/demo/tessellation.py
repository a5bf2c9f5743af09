"""Base faces: a jittered street-block Voronoi tessellation of the city, noded with every natural
and planted boundary, so that each face lies wholly inside or outside each of them.

All plan layers are unions of these faces. Faces come from one global noding and polygonize, so
neighbours share their boundary coordinates exactly and any two layers built from them overlap
with zero area except where they truly overlap.
"""

from __future__ import annotations

import numpy as np
import shapely

from layers.demo.fields import URBAN_LEVEL, Fields

URBAN_SPACING = 230.0  # metres between urban block seeds at scale 1
RURAL_SPACING = 640.0  # metres between rural parcel seeds at scale 1


def seed_points(fields: Fields, city: shapely.Polygon, scale: int, rng: np.random.Generator) -> np.ndarray:
    """Seeds of the Voronoi blocks: two jittered lattices, fine where the city is planned.

    ``scale`` divides both spacings by sqrt(scale), multiplying the face count by ~``scale``.
    """
    g = fields.grid
    fine = fields.urban > URBAN_LEVEL - 0.08
    out = []
    for spacing, want_fine in ((URBAN_SPACING, True), (RURAL_SPACING, False)):
        s = spacing / np.sqrt(scale)
        xs = np.arange(g.bounds[0] + s / 2, g.bounds[2], s)
        ys = np.arange(g.bounds[1] + s / 2, g.bounds[3], s)
        xx, yy = np.meshgrid(xs, ys)
        pts = np.column_stack([xx.ravel(), yy.ravel()])
        pts += rng.uniform(-0.38 * s, 0.38 * s, pts.shape)
        row, col = g.index(pts[:, 0], pts[:, 1])
        keep = (fine[row, col] == want_fine) & fields.inside[row, col]
        out.append(pts[keep])
    pts = np.vstack(out)
    # Keep seeds within 2 km of the city so boundary cells are bounded.
    near = shapely.contains_xy(shapely.buffer(city, 2_000.0, quad_segs=2), pts[:, 0], pts[:, 1])
    return np.round(pts[near], 2)


def _segments(cells: np.ndarray) -> np.ndarray:
    """Edges of some Voronoi cells as 2-point lines, each shared edge once."""
    coords, idx = shapely.get_coordinates(shapely.get_exterior_ring(cells), return_index=True)
    same = idx[:-1] == idx[1:]
    a, b = coords[:-1][same], coords[1:][same]
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    ends = np.hstack([np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)])
    ends = np.unique(ends, axis=0)
    return shapely.linestrings(ends.reshape(-1, 2, 2))


def _pieces_of(lines) -> np.ndarray:
    """All 2-point segments of some lines (small boxes for the spatial index)."""
    parts = shapely.get_parts(np.asarray(lines, dtype=object))  # rings of a polygon separately
    coords, idx = shapely.get_coordinates(parts, return_index=True)
    same = idx[:-1] == idx[1:]
    return shapely.linestrings(np.stack([coords[:-1][same], coords[1:][same]], axis=1))


def build_faces(points: np.ndarray, boundaries: list, city: shapely.Polygon, pieces: np.ndarray) -> np.ndarray:
    """Voronoi cells of ``points`` cut by ``boundaries`` (lines or polygons), inside ``city``.

    Cells that no boundary crosses are faces as they are. The others are rebuilt in one go:
    their edges and the boundaries are noded together and polygonized, so every new vertex is
    computed once and shared by the faces on both sides.

    Parameters
    ----------
    points
        Seeds (n x 2).
    boundaries
        Geometries whose boundaries must not cross any face: districts, water, red line, ...
    city
        The city polygon; faces cover exactly it.
    pieces
        Planted polygons: each becomes exactly one face (no line is kept inside them).

    Returns
    -------
    numpy.ndarray
        Face polygons (shapely), in a deterministic order.
    """
    envelope = shapely.buffer(shapely.envelope(city), 5_000.0, join_style="mitre")
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(points), extend_to=envelope))
    lines = shapely.get_parts(
        np.array(
            [shapely.boundary(g) if shapely.get_dimensions(g) == 2 else g for g in [city, *pieces, *boundaries]],
            dtype=object,
        )
    )
    cut = np.zeros(len(cells), dtype=bool)
    cut[shapely.STRtree(cells).query(_pieces_of(lines), predicate="intersects")[1]] = True
    # Whole cells: untouched by any boundary, so wholly inside or outside the city and pieces.
    whole = np.nonzero(~cut)[0]
    centre = shapely.centroid(cells[whole])  # Voronoi cells are convex: the centroid is inside
    inside = shapely.contains_xy(city, *shapely.get_coordinates(centre).T)
    in_piece = shapely.STRtree(pieces).query(centre, predicate="within")[0]
    inside[in_piece] = False
    cut[whole[in_piece]] = True  # rebuilt below, as part of their piece
    whole = cells[whole[inside]]
    # Rebuilt cells: node their edges with the boundaries, keep lines inside the city and not
    # inside a planted piece (midpoints are only numerically on a boundary: 1 cm tolerance).
    noded = shapely.get_parts(shapely.union_all(np.concatenate([_segments(cells[cut]), lines])))
    mid = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    keep = shapely.contains_xy(shapely.buffer(city, 0.01, join_style="mitre"), *shapely.get_coordinates(mid).T)
    shrunk = shapely.buffer(pieces, -0.01, join_style="mitre")
    keep[shapely.STRtree(shrunk).query(mid, predicate="within")[0]] = False
    rebuilt = shapely.get_parts(shapely.polygonize(noded[keep]))
    # Polygonize also closes the holes left by whole cells: drop faces outside the cut cells.
    region = shapely.coverage_union_all(cells[cut])
    rep = shapely.point_on_surface(rebuilt)
    rebuilt = rebuilt[shapely.contains_xy(region, *shapely.get_coordinates(rep).T)]
    return np.concatenate([whole, rebuilt])
