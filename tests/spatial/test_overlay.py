"""The overlay kernel against geopandas.overlay, computed independently on the same shapes."""

from __future__ import annotations

import warnings

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from spatial.overlay import TOUCH_SAMPLE, _mostly_touching, difference_from, intersect_pairs, polygonal

X0, Y0 = 500_000.0, 4_000_000.0  # EPSG:4548 coordinates near Jinan: large values stress precision
CRS = 4548


def jittered_grid(
    nx: int,
    ny: int,
    *,
    cell: float = 100.0,
    seed: int = 0,
    angle: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    seg: int = 6,
) -> np.ndarray:
    """A gap-free coverage of wiggly quadrilaterals (4 * seg + 1 vertices each)."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(nx + 1.0), np.arange(ny + 1.0))
    nodes = np.stack([gx, gy], -1) + rng.uniform(-0.15, 0.15, (ny + 1, nx + 1, 2))
    t = np.linspace(0, 1, seg + 1)[1:-1, None]

    def edges(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pts = a[..., None, :] + (b - a)[..., None, :] * t
        normal = np.stack([a[..., 1] - b[..., 1], b[..., 0] - a[..., 0]], -1)
        wiggle = rng.uniform(-0.03, 0.03, pts.shape[:-1])[..., None]
        return pts + normal[..., None, :] * wiggle  # shared by both neighbours: still a coverage

    h = edges(nodes[:, :-1], nodes[:, 1:])
    v = edges(nodes[:-1, :], nodes[1:, :])
    ring = (
        np.concatenate(
            [
                nodes[:-1, :-1, None],
                h[:-1],
                nodes[:-1, 1:, None],
                v[:, 1:],
                nodes[1:, 1:, None],
                h[1:, :, ::-1],
                nodes[1:, :-1, None],
                v[:, :-1, ::-1],
                nodes[:-1, :-1, None],
            ],
            axis=2,
        ).reshape(nx * ny, -1, 2)
        * cell
    )
    theta = np.radians(angle)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = np.array([nx, ny]) * cell / 2
    ring = (ring - centre) @ rot.T + centre + np.array([X0 + shift[0], Y0 + shift[1]])
    return shapely.polygons(ring)


def wiggly_disc(
    n: int, *, radius: float, centre: tuple[float, float], seed: int = 0, hole: float = 0.0
) -> shapely.Polygon:
    """A star-shaped polygon with n vertices (an ecological red line stand-in), optionally holed."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = radius * (1 + 0.08 * np.sin(7 * theta)) + rng.uniform(-0.0005, 0.0005, n) * radius
    ring = np.c_[centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)]
    poly = shapely.Polygon(np.r_[ring, ring[:1]])
    if hole:
        poly = poly.difference(shapely.Point(centre).buffer(hole, quad_segs=32))
    return poly


def reference_pairs(left: np.ndarray, right: np.ndarray) -> pd.DataFrame:
    """geopandas.overlay(how="intersection") as (l, r, area) rows sorted by (l, r)."""
    a = gpd.GeoDataFrame({"l": np.arange(len(left))}, geometry=list(left), crs=CRS)
    b = gpd.GeoDataFrame({"r": np.arange(len(right))}, geometry=list(right), crs=CRS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # keep_geom_type notes dropped lines/points
        out = gpd.overlay(a, b, how="intersection", keep_geom_type=True)
    out = out[out.area > 0]
    return pd.DataFrame({"l": out["l"], "r": out["r"], "area": out.area}).sort_values(["l", "r"])


def reference_difference(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """geopandas.overlay(how="difference") area per left geometry (0 where nothing is left)."""
    a = gpd.GeoDataFrame({"l": np.arange(len(left))}, geometry=list(left), crs=CRS)
    b = gpd.GeoDataFrame({"r": np.arange(len(right))}, geometry=list(right), crs=CRS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = gpd.overlay(a, b, how="difference", keep_geom_type=True)
    area = np.zeros(len(left))
    area[out["l"].to_numpy()] = out.area.to_numpy()
    return area


def assert_matches_reference(got, left: np.ndarray, right: np.ndarray) -> None:
    ref = reference_pairs(left, right)
    assert got.left_index.tolist() == ref["l"].tolist()
    assert got.right_index.tolist() == ref["r"].tolist()
    np.testing.assert_allclose(got.area, ref["area"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(got.area, shapely.area(got.geometry), rtol=1e-12)
    assert shapely.is_valid(got.geometry).all()
    assert np.isin(shapely.get_type_id(got.geometry), (3, 6)).all()


@pytest.fixture(scope="module")
def coverages() -> tuple[np.ndarray, np.ndarray]:
    return (
        jittered_grid(24, 20, seed=1),
        jittered_grid(22, 22, seed=2, angle=17.0, shift=(41.0, -63.0), cell=97.0),
    )


def test_two_coverages_match_geopandas(coverages):
    left, right = coverages
    got = intersect_pairs(left, right, threads=2)
    assert len(got.area) > 1000
    assert_matches_reference(got, left, right)
    # the pieces of a coverage overlay tile the common area
    common = shapely.area(shapely.intersection(shapely.union_all(left), shapely.union_all(right)))
    assert got.area.sum() == pytest.approx(common, rel=1e-9)


def test_threads_do_not_change_the_result(coverages):
    left, right = coverages
    one = intersect_pairs(left, right, threads=1)
    two = intersect_pairs(left, right, threads=2)
    assert one.left_index.tolist() == two.left_index.tolist()
    assert one.right_index.tolist() == two.right_index.tolist()
    assert shapely.equals_exact(one.geometry, two.geometry, tolerance=0).all()


def test_polygon_over_5000_vertices_is_subdivided_and_exact(coverages):
    left, _ = coverages
    centre = shapely.centroid(shapely.union_all(left))
    redline = wiggly_disc(6000, radius=900.0, centre=(centre.x, centre.y), hole=250.0)
    assert shapely.get_num_coordinates(redline) > 5000
    right = np.array([redline, shapely.box(X0, Y0, X0 + 350, Y0 + 350)])
    got = intersect_pairs(left, right)
    assert_matches_reference(got, left, right)
    # the same answer without subdivision (the plain GEOS path) and with the sides swapped
    plain = intersect_pairs(left, right, max_vertices=10**6)
    np.testing.assert_allclose(got.area, plain.area, rtol=1e-9)
    swapped = intersect_pairs(right, left)
    assert sorted(zip(swapped.right_index, swapped.left_index, strict=True)) == list(
        zip(got.left_index, got.right_index, strict=True)
    )
    # pieces of one pair are re-unioned: no seams where the big polygon was cut
    assert (shapely.get_num_geometries(got.geometry) == shapely.get_num_geometries(plain.geometry)).all()
    assert (shapely.get_num_interior_rings(got.geometry) == shapely.get_num_interior_rings(plain.geometry)).all()


def test_touching_only_pairs_are_absent_but_touching_overlaps_stay():
    left = np.array([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 2, 2)])
    right = np.array(
        [
            shapely.box(1, 0, 2, 1),  # shares an edge with left 0, overlaps left 1
            shapely.box(2, 2, 3, 3),  # touches left 1 at one corner
            shapely.box(-1, -1, 0, 0),  # touches left 0 and 1 at a corner
        ]
    )
    got = intersect_pairs(left, right, threads=1)
    assert list(zip(got.left_index, got.right_index, strict=True)) == [(1, 0)]
    assert got.area.tolist() == [1.0]
    assert_matches_reference(got, left, right)


def test_covered_pairs_return_the_inner_polygon_itself():
    outer = shapely.box(0, 0, 10, 10)
    inner = shapely.Polygon([(0, 0), (4, 0), (4, 3), (1, 5), (0, 0)])  # touches outer's boundary
    twin = shapely.box(0, 0, 10, 10)
    got = intersect_pairs([outer, inner], [inner, twin], threads=1)
    pairs = dict(zip(zip(got.left_index, got.right_index, strict=True), got.geometry, strict=True))
    assert pairs[(0, 0)] is inner  # right inside left
    assert pairs[(1, 1)] is inner  # left inside right
    assert shapely.equals(pairs[(0, 1)], outer)
    assert pairs[(1, 0)] is inner
    assert_matches_reference(got, np.array([outer, inner]), np.array([inner, twin]))


def test_multipolygons_and_collection_results_stay_polygonal():
    left = np.array(
        [
            shapely.MultiPolygon([shapely.box(0, 0, 2, 2), shapely.box(10, 0, 12, 2)]),
            shapely.box(0, 0, 2, 2),
        ]
    )
    right = np.array(
        [
            shapely.box(1, 1, 11, 3),  # crosses both parts of the multipolygon
            # overlaps left 1 in a square and touches its edge along a line: GEOS gives a collection
            shapely.MultiPolygon([shapely.box(1, 1, 3, 3), shapely.box(2, 0, 3, 0.5)]),
        ]
    )
    assert shapely.get_type_id(shapely.intersection(left[1], right[1])) == 7
    got = intersect_pairs(left, right, threads=1)
    assert_matches_reference(got, left, right)
    by_pair = dict(zip(zip(got.left_index, got.right_index, strict=True), got.geometry, strict=True))
    assert by_pair[(0, 0)].geom_type == "MultiPolygon"
    assert by_pair[(1, 1)].geom_type == "Polygon"
    assert by_pair[(1, 1)].area == 1.0


def test_missing_and_empty_geometries_never_pair_and_lines_are_refused():
    got = intersect_pairs([None, shapely.Polygon(), shapely.box(0, 0, 1, 1)], [shapely.box(0, 0, 1, 1), None])
    assert list(zip(got.left_index, got.right_index, strict=True)) == [(2, 0)]
    empty = intersect_pairs([], [shapely.box(0, 0, 1, 1)])
    assert len(empty.left_index) == len(empty.geometry) == 0
    with pytest.raises(ValueError, match=r"right\[0\] is a LineString"):
        intersect_pairs([shapely.box(0, 0, 1, 1)], [shapely.LineString([(0, 0), (1, 1)])])


def blocks_and_parcels(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Plan blocks on a 100 m grid and parcels cut from them (four per block, sharing their edges),
    plus a few parcels moved 10 m so that they straddle a block border: a real overlap."""
    x, y = np.meshgrid(np.arange(n) * 100.0 + X0, np.arange(n) * 100.0 + Y0)
    blocks = shapely.box(x.ravel(), y.ravel(), x.ravel() + 100, y.ravel() + 100)
    px, py = np.meshgrid(np.arange(2 * n) * 50.0 + X0, np.arange(2 * n) * 50.0 + Y0)
    px, py = px.ravel(), py.ravel()
    moved = np.arange(len(px)) % 97 == 5
    px[moved] += 10.0
    return shapely.box(px, py, px + 50, py + 50), blocks


def test_parcels_cut_from_blocks_are_screened_and_exact():
    parcels, blocks = blocks_and_parcels()
    assert _mostly_touching(parcels, blocks, shapely.STRtree(blocks), None)  # most neighbours share an edge
    got = intersect_pairs(parcels, blocks, threads=2)
    assert_matches_reference(got, parcels, blocks)
    assert len(got.area) > len(parcels)  # the moved parcels overlap two blocks or more
    # rotated coverages cross each other: no screen there
    left, right = jittered_grid(30, 20, seed=1), jittered_grid(22, 22, seed=2, angle=17.0, cell=97.0)
    assert len(left) >= 2 * TOUCH_SAMPLE
    assert not _mostly_touching(left, right, shapely.STRtree(right), None)


def test_pair_filter_runs_on_input_indices_before_any_geometry_work():
    parcels, blocks = blocks_and_parcels()
    rng = np.random.default_rng(3)
    use_parcel, use_block = rng.integers(0, 3, len(parcels)), rng.integers(0, 3, len(blocks))
    got = intersect_pairs(parcels, blocks, pair_filter=lambda li, ri: use_parcel[li] != use_block[ri])
    ref = reference_pairs(parcels, blocks)
    ref = ref[use_parcel[ref["l"]] != use_block[ref["r"]]]
    assert got.left_index.tolist() == ref["l"].tolist()
    assert got.right_index.tolist() == ref["r"].tolist()
    np.testing.assert_allclose(got.area, ref["area"].to_numpy(), rtol=1e-9)
    # with a subdivided polygon the filter still sees input indices, not pieces
    disc = wiggly_disc(3000, radius=600.0, centre=(X0 + 1000, Y0 + 1000))
    seen = []

    def not_the_disc(li: np.ndarray, ri: np.ndarray) -> np.ndarray:
        seen.append(int(ri.max()))
        return ri != 0

    right = np.array([disc, blocks[0]])
    got = intersect_pairs(parcels, right, pair_filter=not_the_disc)
    assert max(seen) == 1
    ref = reference_pairs(parcels, right)
    assert got.left_index.tolist() == ref.loc[ref["r"] == 1, "l"].tolist()
    assert set(got.right_index.tolist()) == {1}


def test_difference_matches_geopandas(coverages):
    left, right = coverages
    right = right[::2]  # a patchy cover, so remainders have holes and several parts
    got = difference_from(left, right)
    ref = reference_difference(left, right)
    area = np.zeros(len(left))
    area[got.left_index] = got.area
    # geopandas subtracts neighbours one by one and may keep slivers of ~1e-9 m²; we union first
    np.testing.assert_allclose(area, ref, rtol=1e-9, atol=1e-6)
    assert got.area.sum() == pytest.approx(ref.sum(), rel=1e-12)
    assert shapely.is_valid(got.geometry).all()
    assert np.isin(shapely.get_type_id(got.geometry), (3, 6)).all()
    untouched = np.setdiff1d(np.arange(len(left)), shapely.STRtree(right).query(left, predicate="intersects")[0])
    assert len(untouched) > 0
    rows = np.searchsorted(got.left_index, untouched)
    assert all(got.geometry[i] is left[j] for i, j in zip(rows, untouched, strict=True))


def test_difference_with_big_polygons_on_either_side(coverages):
    left, _ = coverages
    centre = shapely.centroid(shapely.union_all(left))
    boundary = wiggly_disc(5500, radius=700.0, centre=(centre.x, centre.y), seed=4)
    inside = shapely.STRtree(left).query(boundary, predicate="covers")
    got = difference_from(left, [boundary])
    ref = reference_difference(left, np.array([boundary]))
    area = np.zeros(len(left))
    area[got.left_index] = got.area
    np.testing.assert_allclose(area, ref, rtol=1e-9, atol=1e-6)
    assert not np.isin(inside, got.left_index).any()  # covered parcels leave nothing
    # the big polygon as the left side: its pieces are differenced, then re-unioned
    got = difference_from([boundary], left[::3])
    ref = reference_difference(np.array([boundary]), left[::3])
    np.testing.assert_allclose(got.area, ref, rtol=1e-9)
    assert shapely.is_valid(got.geometry).all()


def test_polygonal_extracts_polygon_parts():
    gc = shapely.GeometryCollection(
        [
            shapely.box(0, 0, 1, 1),
            shapely.LineString([(5, 5), (6, 6)]),
            shapely.box(2, 0, 3, 1),
            shapely.Point(9, 9),
        ]
    )
    out = polygonal([gc, shapely.Point(0, 0), shapely.box(0, 0, 1, 1), None, shapely.GeometryCollection()])
    assert out[0].geom_type == "MultiPolygon" and out[0].area == 2.0
    assert out[1].is_empty and out[1].geom_type == "Polygon"
    assert out[2].area == 1.0
    assert out[3].is_empty and out[4].is_empty
