"""Geometry validity for ingest: a cheap proof for the common polygon, GEOS for the rest.

GEOS's ``is_valid`` builds a topology graph for every polygon: ~8 µs for 40 vertices, the largest
single cost of a load. Most plan polygons (parcels, blocks, zones) are star-shaped around the
mean of their vertices, and for those validity has a proof that numpy checks on whole arrays of
coordinates at once:

    Seen from a point c, if every edge of a ring turns the same way by less than half a turn
    (the cross product of its two ends, taken from c, has one strict sign), the edges lie in
    disjoint wedges around c. If moreover the ring goes round c exactly once, the wedges tile
    the full turn without overlap, so no two edges meet except consecutive ones at their shared
    vertex: the ring is simple, has at least three corners and encloses c. A polygon whose only
    ring is simple is valid.

The test is made robust to rounding: an edge's turn must exceed 1e-9 radians, and every vertex
must lie farther from c than a millionth of the coordinates' magnitude, which bounds the
angular error of ``p - c`` in floating point far below that margin. Turns counted round c are
robust by construction (a vertex on the counting ray moves the crossing to its neighbouring edge
but never removes it). Polygons that fail the test (holes, multi-part, not star-shaped, tiny
ones far from the origin, NaN) are not called invalid: they go to GEOS.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import shapely

from layers.ingest import wkb as wkb_

MIN_TURN = 1e-9  # radians: smaller turns could have their sign flipped by rounding
MIN_REACH = 1e-6  # of the coordinates' magnitude: a vertex nearer c than that is left to GEOS
PARALLEL_MIN = 5_000  # below this, starting threads costs more than it saves


def is_valid(wkb: pa.LargeBinaryArray, *, threads: int | None = None) -> np.ndarray:
    """``shapely.is_valid`` of each WKB geometry, proving the star-shaped one-ring polygons from
    their coordinates (``layers.ingest.wkb``), without GEOS.

    Examples
    --------
    >>> bowtie = shapely.from_wkt("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))")
    >>> is_valid(wkb_.wkb_array(np.array([shapely.box(0, 0, 1, 1), bowtie, shapely.Point(0, 0)]))).tolist()
    [True, False, True]
    """
    return valid_and_bounds(wkb, threads=threads)[0]


def valid_and_bounds(wkb: pa.LargeBinaryArray, *, threads: int | None = None
                     ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``is_valid`` and ``wkb.total_bounds`` in one pass over the coordinates.

    Examples
    --------
    >>> valid, bounds = valid_and_bounds(wkb_.wkb_array(np.array([shapely.box(0, 0, 2, 1), shapely.Point(5, -1)])))
    >>> valid.tolist(), bounds
    ([True, True], (0.0, -1.0, 5.0, 1.0))
    """
    valid = np.zeros(len(wkb), dtype=bool)
    boxes = []
    for where, xy, counts in wkb_.ring_chunks(wkb, np.flatnonzero(wkb_.plain_rings(wkb))):
        valid[where] = star_shaped_rings(xy, counts)
        boxes.append(wkb_.points_bounds(xy))
    rest = np.flatnonzero(~valid)  # what the proof left open goes to GEOS
    if len(rest):
        geoms = wkb_.objects(wkb_.take(wkb, rest))
        valid[rest] = geos_is_valid(geoms, threads=threads)
        boxes.append(tuple(shapely.total_bounds(geoms)))
    return valid, wkb_.union_bounds(boxes)


def star_shaped_rings(xy: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For rings given by their coordinates ``xy`` (ring after ring, each closed, of 4 or more
    points; ``counts`` points each, see ``wkb.ring_coordinates``): True where the proof above shows
    the ring simple (False: unknown).

    Examples
    --------
    >>> pentagram = shapely.Polygon([(np.cos(a), np.sin(a)) for a in np.arange(5) * 4 * np.pi / 5])
    >>> rings = wkb_.wkb_array(np.array([shapely.box(0, 0, 2, 1), pentagram]))
    >>> star_shaped_rings(*wkb_.ring_coordinates(rings)).tolist()
    [True, False]
    """
    n = len(counts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    x, y = xy.T.copy()  # contiguous columns: every pass below is linear
    starts = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    # c: the mean of the vertices, the closing one left out so that no corner counts twice.
    corners = counts - 1
    cx = (np.add.reduceat(x, starts) - x[starts]) / corners
    cy = (np.add.reduceat(y, starts) - y[starts]) / corners
    x -= np.repeat(cx, counts)
    y -= np.repeat(cy, counts)
    reach2 = x * x
    reach2 += y * y
    magnitude = np.maximum(np.abs(cx), np.abs(cy)) + np.sqrt(np.maximum.reduceat(reach2, starts))
    far_enough = np.minimum.reduceat(reach2, starts) > (MIN_REACH * magnitude) ** 2
    # Pair j is the edge from vertex j to j+1; the pair joining one ring's last vertex to the next
    # ring's first is no edge, and counts as neutral in the reductions below.
    joins = starts[1:] - 1
    cross = x[:-1] * y[1:]
    cross -= y[:-1] * x[1:]
    certain = cross * cross > (MIN_TURN * MIN_TURN) * reach2[:-1] * reach2[1:]
    left = certain & (cross > 0)
    right = certain & (cross < 0)
    left[joins] = right[joins] = True
    # Times the ring crosses the ray from c along +x, upwards and downwards.
    below = y < 0
    up = below[:-1] & ~below[1:]
    down = ~below[:-1] & below[1:]
    up[joins] = down[joins] = False
    ccw = np.logical_and.reduceat(left, starts) & (np.add.reduceat(up, starts, dtype=np.int64) == 1)
    cw = np.logical_and.reduceat(right, starts) & (np.add.reduceat(down, starts, dtype=np.int64) == 1)
    return (ccw | cw) & far_enough


def geos_is_valid(geoms: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """``shapely.is_valid`` on every core: GEOS releases the GIL.

    Examples
    --------
    >>> geos_is_valid(np.array([shapely.box(0, 0, 1, 1), shapely.from_wkt("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))")]))
    array([ True, False])
    """
    threads = threads or os.cpu_count() or 1
    if threads == 1 or len(geoms) < PARALLEL_MIN:
        return shapely.is_valid(geoms)
    # A few pieces per thread even out polygons of uneven size.
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="is-valid") as pool:
        return np.concatenate(list(pool.map(shapely.is_valid, np.array_split(geoms, threads * 4))))
