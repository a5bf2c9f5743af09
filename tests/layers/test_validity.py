"""Validity at ingest: the star-shaped proof must never call an invalid polygon valid, and the
whole check must answer exactly what GEOS answers (golden: ``shapely.is_valid``)."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from layers.ingest import validity
from layers.ingest.wkb import ring_coordinates, wkb_array
from tests.specimens import BOWTIE, X0, Y0, star_polygons


def is_valid(geoms: np.ndarray, **options) -> np.ndarray:
    return validity.is_valid(wkb_array(np.asarray(geoms, dtype=object)), **options)


def star_shaped_rings(polygons: np.ndarray) -> np.ndarray:
    """The proof on one-ring polygons, from their WKB as ingest gives it."""
    return validity.star_shaped_rings(*ring_coordinates(wkb_array(np.asarray(polygons, dtype=object))))


def pentagram(cx: float = 0.0, cy: float = 0.0) -> shapely.Polygon:
    """Every edge turns the same way by 144°, but the ring goes round its centre twice."""
    angles = np.arange(5) * 4 * np.pi / 5
    return shapely.Polygon(np.c_[cx + 10 * np.cos(angles), cy + 10 * np.sin(angles)])


NAN_WARNING = "ignore:invalid value encountered in:RuntimeWarning"


def awkward() -> list[shapely.Geometry]:
    far = shapely.box(X0, Y0, X0 + 1e-7, Y0 + 1e-7)  # a speck far from the origin: rounding-sized
    return [
        pentagram(), pentagram(X0, Y0), BOWTIE,
        shapely.Polygon([(0, 0), (4, 0), (4, 4), (2, 4), (2, 9), (2, 4), (0, 4)]),  # spike
        shapely.Polygon([(0, 0), (4, 0), (4, 0), (4, 4), (0, 4)]),  # repeated corner (valid)
        shapely.Polygon([(0, 0), (1, 0), (2, 0), (0, 0)]),  # no area
        shapely.Polygon([(0, 0), (10, 0), (10, 10), (9, 1), (0, 10)]),  # concave, mean outside the kernel
        shapely.Polygon([(0, 0), (2, 0), (1, 1), (2, 2), (0, 2), (1, 1)]),  # touches itself at (1, 1)
        shapely.box(0, 0, 5, 5).reverse(), far, far.reverse(),
        shapely.Polygon([(0, 0), (np.nan, 0), (1, 1), (0, 1)]),
        shapely.Polygon(shapely.box(0, 0, 10, 10).exterior.coords, [shapely.box(2, 2, 4, 4).exterior.coords]),
        shapely.Polygon(shapely.box(0, 0, 10, 10).exterior.coords, [shapely.box(8, 8, 12, 12).exterior.coords]),
        shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(0.5, 0.5, 2, 2)]),
        shapely.LineString([(0, 0), (1, 1), (0, 1), (1, 0)]), shapely.Point(3, 4),
    ]


def test_star_shaped_plan_polygons_are_proven_without_geos():
    stars = star_polygons(2000, seed=9)
    assert star_shaped_rings(stars).all()
    assert star_shaped_rings(shapely.box(X0, Y0, X0 + np.arange(1, 50), Y0 + 30)).all()


@pytest.mark.filterwarnings(NAN_WARNING)
def test_awkward_geometries_get_geos_answer_and_no_false_proof():
    geoms = np.array(awkward(), dtype=object)
    np.testing.assert_array_equal(is_valid(geoms), shapely.is_valid(geoms))
    polygons = geoms[(shapely.get_type_id(geoms) == 3) & (shapely.get_num_interior_rings(geoms) == 0)
                     & (shapely.get_num_coordinates(geoms) >= 4)]
    proven = star_shaped_rings(polygons)
    assert not proven[~shapely.is_valid(polygons)].any()
    assert not star_shaped_rings(np.array([pentagram(X0, Y0)]))[0]


@pytest.mark.filterwarnings(NAN_WARNING)
def test_mixed_batch_keeps_positions():
    geoms = np.array(list(star_polygons(30, seed=1)) + awkward() * 3, dtype=object)
    np.random.default_rng(2).shuffle(geoms)
    np.testing.assert_array_equal(is_valid(geoms, threads=2), shapely.is_valid(geoms))
    valid, bounds = validity.valid_and_bounds(wkb_array(geoms))  # the extent from the same pass
    np.testing.assert_array_equal(valid, shapely.is_valid(geoms))
    assert bounds == tuple(np.nanmin(shapely.bounds(geoms)[:, :2], axis=0).tolist()
                           + np.nanmax(shapely.bounds(geoms)[:, 2:], axis=0).tolist())


# Small integer grids make collinear edges, repeated points and touching rings common.
rings = st.lists(st.tuples(st.integers(-4, 4), st.integers(-4, 4)), min_size=3, max_size=9)


@settings(max_examples=400, deadline=None)
@given(st.lists(rings, min_size=1, max_size=8), st.sampled_from([(0.0, 0.0), (X0, Y0)]), st.floats(0.1, 1e3))
def test_random_rings_agree_with_geos(vertex_lists, origin, scale):
    geoms = np.array([shapely.Polygon([(origin[0] + scale * x, origin[1] + scale * y) for x, y in vertices])
                      for vertices in vertex_lists], dtype=object)
    expected = shapely.is_valid(geoms)
    np.testing.assert_array_equal(is_valid(geoms), expected)
    assert not star_shaped_rings(geoms)[~expected].any()
