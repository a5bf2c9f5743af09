"""Vectorized two-layer polygon overlay: the kernel under the conflict rules.

Pure shapely 2 / numpy, no database. Both inputs are arrays of shapely (Multi)Polygons in one
projected CRS (the caller checks the CRS; areas are in its units squared). Attribute filters are
applied by the caller *before* calling in, so no geometry work is spent on features a rule ignores.

How the work is kept small:

- Polygons above ``max_vertices`` vertices are split by recursive bisection into pieces; the pieces
  of one pair are intersected separately and unioned again. GEOS overlay cost grows with the vertex
  count of both operands, and one real ecological red line has over 20,000 vertices.
- Candidate pairs come from one bulk ``STRtree.query(..., predicate="intersects")``. With a pair
  filter (e.g. "the two features' uses differ") the query is on bounding boxes, the filter runs
  next, before any geometry work, and ``intersects`` after it.
- Two coverages often share edges (parcels cut from plan blocks): most intersecting pairs then only
  touch, and GEOS spends as long proving such an overlay empty as computing a real one. When a
  sample of the pairs shows this, ``intersects`` is replaced by a relate test ("do the interiors
  meet?") that costs a third of an overlay and lets only pairs sharing area through.
- A pair whose bounding boxes nest is tested with a prepared ``covers``: the answer is then the
  inner polygon itself and no overlay is run.
- The remaining overlays run over chunks on a thread pool: shapely 2 releases the GIL in GEOS.

Results are polygonal only (polygon parts are extracted from GeometryCollections) and keep only
pieces of positive area, as ``geopandas.overlay(..., keep_geom_type=True)`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray

MAX_VERTICES = 256
"""Default vertex count above which a polygon is subdivided before pairing."""

MIN_CHUNK = 512
"""Fewer items than this are processed on the calling thread: a pool costs more than it saves."""

TOUCH_SAMPLE = 256
"""Left geometries whose candidate pairs are sampled to estimate how many pairs only touch."""

TOUCH_SCREEN = 0.4
"""Test every pair with relate instead of intersects when more than this share of the sampled
intersecting pairs only touch. Relate costs about a third of an overlay that comes out empty and
two to three ``intersects`` (GEOS 3.14, parcels cut from plan blocks): it pays above ~40 %."""

PairFilter = Callable[[NDArray[np.intp], NDArray[np.intp]], NDArray[np.bool_]]

_POLYGON, _MULTIPOLYGON, _COLLECTION = 3, 6, 7
_EMPTY = shapely.from_wkt("POLYGON EMPTY")


class Pairs(NamedTuple):
    """Positive-area intersections of left and right geometries, sorted by (left, right)."""

    left_index: NDArray[np.intp]
    right_index: NDArray[np.intp]
    geometry: NDArray[np.object_]
    area: NDArray[np.float64]


class Remainders(NamedTuple):
    """Positive-area remainders of left geometries after a difference, sorted by left index."""

    left_index: NDArray[np.intp]
    geometry: NDArray[np.object_]
    area: NDArray[np.float64]


def intersect_pairs(
    left: ArrayLike,
    right: ArrayLike,
    *,
    threads: int = 2,
    max_vertices: int = MAX_VERTICES,
    pair_filter: PairFilter | None = None,
) -> Pairs:
    """Intersect every left polygon with every right polygon it overlaps.

    Parameters
    ----------
    left, right : array_like of shapely.Geometry
        Valid Polygons or MultiPolygons in one projected CRS. ``None`` and empty geometries are
        allowed and never pair.
    threads : int, default 2
        Worker threads for the GEOS work.
    max_vertices : int, default 256
        Polygons with more vertices are subdivided before pairing (results are re-unioned).
    pair_filter : callable, optional
        ``pair_filter(left_index, right_index) -> bool array`` over input indices: which pairs
        of overlapping bounding boxes to consider at all (an attribute test: it runs before any
        geometry work). Pairs it rejects never appear in the result.

    Returns
    -------
    Pairs
        ``(left_index, right_index, geometry, area)``, one row per pair whose intersection has
        positive area; ``geometry`` is a Polygon or MultiPolygon. Pairs that only touch are absent.

    Examples
    --------
    >>> import shapely
    >>> left = [shapely.box(0, 0, 2, 2), shapely.box(5, 5, 6, 6)]
    >>> right = [shapely.box(1, 1, 3, 3), shapely.box(2, 0, 3, 1)]
    >>> pairs = intersect_pairs(left, right, threads=1)
    >>> pairs.left_index.tolist(), pairs.right_index.tolist(), pairs.area.tolist()
    ([0], [0], [1.0])
    >>> keep_none = lambda li, ri: li < 0
    >>> len(intersect_pairs(left, right, threads=1, pair_filter=keep_none).area)
    0
    """
    left, right = _polygonal_input(left, "left"), _polygonal_input(right, "right")
    lp, lo = _subdivide(left, max_vertices)
    rp, ro = _subdivide(right, max_vertices)
    keep = None if pair_filter is None else (lambda li, ri: pair_filter(lo[li], ro[ri]))
    pli, pri = _query_pairs(lp, rp, threads, keep=keep)

    geom = np.empty(len(pli), dtype=object)
    l_in_r, r_in_l = _nested_pairs(lp, rp, pli, pri)
    geom[l_in_r] = lp[pli[l_in_r]]  # right covers left: the answer is the left piece itself
    geom[r_in_l & ~l_in_r] = rp[pri[r_in_l & ~l_in_r]]
    todo = np.flatnonzero(~(l_in_r | r_in_l))
    geom[todo] = parallel(_intersection, lp[pli[todo]], rp[pri[todo]], threads=threads)
    area = shapely.area(geom)

    keep = area > 0
    li, ri, geom, area = lo[pli[keep]], ro[pri[keep]], geom[keep], area[keep]
    order = np.lexsort((ri, li))
    li, ri, geom, area = li[order], ri[order], geom[order], area[order]
    if len(lp) > len(left) or len(rp) > len(right):
        # pieces of one subdivided polygon give several parts for one pair: union them again
        key = li.astype(np.int64) * max(len(right), 1) + ri
        first, geom = _union_groups(geom, key, threads)
        li, ri, area = li[first], ri[first], shapely.area(geom)
    return Pairs(li.astype(np.intp), ri.astype(np.intp), geom, area)


def difference_from(
    left: ArrayLike, right: ArrayLike, *, threads: int = 2, max_vertices: int = MAX_VERTICES
) -> Remainders:
    """Remove from each left polygon every right polygon it overlaps ("outside of" rules).

    Parameters
    ----------
    left, right : array_like of shapely.Geometry
        Valid Polygons or MultiPolygons in one projected CRS; ``None`` and empties are allowed.
    threads : int, default 2
        Worker threads for the GEOS work.
    max_vertices : int, default 256
        Polygons with more vertices are subdivided first (left remainders are re-unioned).

    Returns
    -------
    Remainders
        ``(left_index, geometry, area)``, one row per left geometry with a remainder of positive
        area; a left polygon that no right polygon overlaps is returned whole.

    Examples
    --------
    >>> import shapely
    >>> left = [shapely.box(0, 0, 2, 2), shapely.box(5, 5, 6, 6), shapely.box(1, 1, 2, 2)]
    >>> rest = difference_from(left, [shapely.box(1, 0, 3, 3)], threads=1)
    >>> rest.left_index.tolist(), rest.area.tolist()
    ([0, 1], [2.0, 1.0])
    """
    left, right = _polygonal_input(left, "left"), _polygonal_input(right, "right")
    lp, lo = _subdivide(left, max_vertices)
    rp, ro = _subdivide(right, max_vertices)
    pli, pri = _query_pairs(lp, rp, threads)

    l_in_r, _ = _nested_pairs(lp, rp, pli, pri, right_covers_left_only=True)
    gone = np.zeros(len(lp), dtype=bool)
    gone[pli[l_in_r]] = True  # a piece covered by any right piece leaves nothing
    if len(rp) > len(right):
        # a left piece across the cut lines of a subdivided right polygon is covered by no single
        # piece of it, but may be by the whole polygon: one prepared test instead of union + difference
        left_of, right_of = np.unique(np.stack([pli, ro[pri]])[:, ~gone[pli]], axis=1)
        whole, _ = _nested_pairs(lp, right, left_of, right_of, right_covers_left_only=True)
        gone[left_of[whole]] = True
    live = ~gone[pli]
    pli, pri = pli[live], pri[live]

    geom = lp.copy()
    geom[gone] = _EMPTY
    if len(pli):
        # one difference per left piece against the union of its partners
        pieces, cutters = _union_groups(rp[pri], pli, threads)
        targets = pli[pieces]
        geom[targets] = parallel(_difference, lp[targets], cutters, threads=threads)
    area = shapely.area(geom)

    keep = np.flatnonzero(area > 0)
    order = np.argsort(lo[keep], kind="stable")  # pieces of one polygon must be adjacent to regroup
    li, geom, area = lo[keep][order], geom[keep][order], area[keep][order]
    if len(lp) > len(left):
        first, geom = _union_groups(geom, li, threads)
        li, area = li[first], shapely.area(geom)
    return Remainders(li.astype(np.intp), geom, area)


def polygonal(geoms: ArrayLike) -> NDArray[np.object_]:
    """Keep only the polygonal part of each geometry.

    Polygons and MultiPolygons pass unchanged; the polygon parts of a GeometryCollection become a
    Polygon (one part) or MultiPolygon; anything else becomes an empty Polygon.

    Examples
    --------
    >>> import shapely
    >>> gc = shapely.from_wkt("GEOMETRYCOLLECTION (POLYGON ((0 0, 1 0, 1 1, 0 0)), LINESTRING (5 5, 6 6))")
    >>> polygonal([gc, shapely.Point(0, 0)]).tolist()
    [<POLYGON ((0 0, 1 0, 1 1, 0 0))>, <POLYGON EMPTY>]
    """
    geoms = np.asarray(geoms, dtype=object)
    out = geoms.copy()
    types = shapely.get_type_id(geoms)
    out[(types != _POLYGON) & (types != _MULTIPOLYGON)] = _EMPTY
    coll = np.flatnonzero(types == _COLLECTION)
    if len(coll) == 0:
        return out
    parts, idx = shapely.get_parts(geoms[coll], return_index=True)
    is_poly = np.isin(shapely.get_type_id(parts), (_POLYGON, _MULTIPOLYGON))
    parts, sub = shapely.get_parts(parts[is_poly], return_index=True)  # flatten MultiPolygon members
    idx = idx[is_poly][sub]
    parts_per = np.bincount(idx, minlength=len(coll))
    single = parts_per[idx] == 1
    out[coll[idx[single]]] = parts[single]
    if (~single).any():
        multi = coll[np.unique(idx[~single])]
        _, rank = np.unique(idx[~single], return_inverse=True)
        out[multi] = shapely.multipolygons(parts[~single], indices=rank)
    return out


def _intersection(a: NDArray[np.object_], b: NDArray[np.object_]) -> NDArray[np.object_]:
    return polygonal(shapely.intersection(a, b))


def _difference(a: NDArray[np.object_], b: NDArray[np.object_]) -> NDArray[np.object_]:
    return polygonal(shapely.difference(a, b))


def _polygonal_input(geoms: ArrayLike, name: str) -> NDArray[np.object_]:
    """Coerce to a 1-D object array; refuse non-empty geometries that are not polygonal."""
    arr = np.asarray(geoms, dtype=object)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    types = shapely.get_type_id(arr)
    bad = ~np.isin(types, (-1, _POLYGON, _MULTIPOLYGON)) & ~shapely.is_empty(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{first}] is a {arr[first].geom_type}, not a Polygon or MultiPolygon")
    return arr


def _subdivide(geoms: NDArray[np.object_], max_vertices: int) -> tuple[NDArray[np.object_], NDArray[np.intp]]:
    """Split polygons above ``max_vertices`` vertices by recursive bisection of their bounding box.

    Returns the pieces (small inputs unchanged, first, in input order) and each piece's input index.
    The pieces of one polygon tile it exactly (they come from intersections with half-boxes).
    """
    origin = np.arange(len(geoms))
    big = shapely.get_num_coordinates(geoms) > max_vertices
    if not big.any():
        return geoms, origin
    out_geoms, out_origin = [geoms[~big]], [origin[~big]]
    cur, cur_origin = geoms[big], origin[big]
    for depth in range(64):
        if depth:
            small = shapely.get_num_coordinates(cur) <= max_vertices
            out_geoms.append(cur[small])
            out_origin.append(cur_origin[small])
            cur, cur_origin = cur[~small], cur_origin[~small]
        if len(cur) == 0:
            break
        x0, y0, x1, y1 = shapely.bounds(cur).T
        along_x = (x1 - x0) >= (y1 - y0)
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        low = shapely.box(x0, y0, np.where(along_x, mx, x1), np.where(along_x, y1, my))
        high = shapely.box(np.where(along_x, mx, x0), np.where(along_x, y0, my), x1, y1)
        halves = polygonal(shapely.intersection(np.concatenate([cur, cur]), np.concatenate([low, high])))
        parts, idx = shapely.get_parts(halves, return_index=True)
        pos = shapely.area(parts) > 0
        cur, cur_origin = parts[pos], np.concatenate([cur_origin, cur_origin])[idx[pos]]
    out_geoms.append(cur)  # pathological vertex clusters: stop splitting, keep what is left
    out_origin.append(cur_origin)
    return np.concatenate(out_geoms), np.concatenate(out_origin)


def _query_pairs(
    lp: NDArray[np.object_], rp: NDArray[np.object_], threads: int, *, keep: PairFilter | None = None
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Index pairs (left, right) whose geometries intersect, sorted by left then right.

    One STRtree over ``rp`` gives the pairs of overlapping boxes and ``keep(left, right)`` filters
    them before any geometry test. Without a filter the tree tests ``intersects`` itself (with each
    left geometry prepared); with one, the pairs it keeps are tested after it. When a sample shows
    that most intersecting pairs only touch, the test is "do the interiors meet?" instead, so that
    touching pairs never reach the overlay (their intersection has no area, so they would be
    dropped after it anyway).
    """
    tree = shapely.STRtree(rp)
    screen = _mostly_touching(lp, rp, tree, keep)
    predicate = "intersects" if keep is None and not screen else None

    def query(start: int, stop: int) -> NDArray[np.intp]:
        found = tree.query(lp[start:stop], predicate=predicate)
        found[0] += start
        return found if keep is None else found[:, keep(found[0], found[1])]

    found = map_ranges(query, len(lp), threads)
    if not found:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    li, ri = np.concatenate(found, axis=1)
    if predicate is None:
        hit = parallel(_interiors_meet if screen else shapely.intersects, lp[li], rp[ri], threads=threads)
        li, ri = li[hit], ri[hit]
    order = np.lexsort((ri, li))  # by left, then right: grouping below relies on it
    return li[order], ri[order]


def _mostly_touching(
    lp: NDArray[np.object_], rp: NDArray[np.object_], tree: shapely.STRtree, keep: PairFilter | None
) -> bool:
    """Whether, among the candidate pairs of an even sample of left geometries, over
    ``TOUCH_SCREEN`` of those that intersect only touch."""
    if len(lp) < 2 * TOUCH_SAMPLE:
        return False
    sample = np.linspace(0, len(lp) - 1, TOUCH_SAMPLE).astype(np.intp)
    at, ri = tree.query(lp[sample])
    li = sample[at]
    if keep is not None:
        kept = keep(li, ri)
        li, ri = li[kept], ri[kept]
    meet = shapely.intersects(lp[li], rp[ri])
    touch_only = meet & ~_interiors_meet(lp[li], rp[ri])
    return bool(touch_only.sum() > TOUCH_SCREEN * meet.sum())


def _interiors_meet(a: NDArray[np.object_], b: NDArray[np.object_]) -> NDArray[np.bool_]:
    """For polygons: whether the intersection has area (DE-9IM interior/interior not empty)."""
    return shapely.relate_pattern(a, b, "T********")


def _nested_pairs(
    lp: NDArray[np.object_],
    rp: NDArray[np.object_],
    li: NDArray[np.intp],
    ri: NDArray[np.intp],
    *,
    right_covers_left_only: bool = False,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which pairs have the right geometry covering the left one, and the reverse.

    Only pairs whose bounding boxes nest are tested (a cheap necessary condition), each with the
    container prepared. Runs on the calling thread: prepared geometries are not thread-safe.
    """
    lb, rb = shapely.bounds(lp)[li], shapely.bounds(rp)[ri]
    l_in_r = np.zeros(len(li), dtype=bool)
    r_in_l = np.zeros(len(li), dtype=bool)
    cand = np.flatnonzero((lb[:, :2] >= rb[:, :2]).all(axis=1) & (lb[:, 2:] <= rb[:, 2:]).all(axis=1))
    l_in_r[cand] = _covers(rp[ri[cand]], lp[li[cand]])
    if not right_covers_left_only:
        cand = np.flatnonzero((rb[:, :2] >= lb[:, :2]).all(axis=1) & (rb[:, 2:] <= lb[:, 2:]).all(axis=1))
        r_in_l[cand] = _covers(lp[li[cand]], rp[ri[cand]])
    return l_in_r, r_in_l


def _covers(outer: NDArray[np.object_], inner: NDArray[np.object_]) -> NDArray[np.bool_]:
    """``shapely.covers`` with the outer geometries prepared for the call only."""
    if len(outer) == 0:
        return np.zeros(0, dtype=bool)
    fresh = outer[~shapely.is_prepared(outer)]
    shapely.prepare(fresh)
    try:
        return shapely.covers(outer, inner)
    finally:
        shapely.destroy_prepared(fresh)  # leave the caller's geometries as they came


def _union_groups(
    geoms: NDArray[np.object_], keys: NDArray[np.integer], threads: int
) -> tuple[NDArray[np.intp], NDArray[np.object_]]:
    """Union geometries that share a key; ``keys`` must be sorted.

    Returns the position of each group's first member and the group geometry (a single member is
    passed through untouched).
    """
    _, first, count = np.unique(keys, return_index=True, return_counts=True)
    out = geoms[first].copy()
    for size in np.unique(count[count > 1]):
        groups = np.flatnonzero(count == size)
        members = geoms[first[groups, None] + np.arange(size)]
        out[groups] = parallel(_union_rows, members, threads=threads)
    return first, out


def _union_rows(rows: NDArray[np.object_]) -> NDArray[np.object_]:
    return polygonal(shapely.union_all(rows, axis=1))


def parallel(func: Callable[..., NDArray[Any]], *arrays: NDArray[Any], threads: int) -> NDArray[Any]:
    """Apply a vectorized function over equal-length arrays in chunks on a thread pool."""
    n = len(arrays[0])
    parts = map_ranges(lambda start, stop: func(*(a[start:stop] for a in arrays)), n, threads)
    if not parts:
        return func(*arrays)
    return np.concatenate(parts)


def map_ranges(func: Callable[[int, int], Any], n: int, threads: int) -> Sequence[Any]:
    """Call ``func(start, stop)`` over consecutive ranges covering ``range(n)``, in order."""
    if n == 0:
        return []
    chunks = 1 if threads <= 1 or n < 2 * MIN_CHUNK else min(threads * 4, n // MIN_CHUNK)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    if chunks == 1:
        return [func(0, n)]
    # several chunks per thread even out uneven overlay costs
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(func, bounds[:-1], bounds[1:]))
