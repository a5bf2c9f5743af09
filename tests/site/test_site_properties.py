"""Metamorphic properties of site checks (Hypothesis): ring order and orientation do not matter, a
site inside another has a subset of its hits, and areas agree with shapely computed independently."""

from __future__ import annotations

import os

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from spatial.site import check_site, parse_request
from tests.specimens import X0, Y0

CHECKS = settings(max_examples=int(os.environ.get("SITE_EXAMPLES", 40)), deadline=None)


@st.composite
def star_sites(draw) -> tuple[tuple[float, float], np.ndarray]:
    """A ring (centre, coordinates) of 3–12 vertices, 16–200 m across, in the city, star-shaped about
    its centre: vertex k sits at angle 2π(k + u)/n with u in [0.3, 0.7], so every gap is under half a
    turn and scaling about the centre nests."""
    cx = draw(st.floats(X0 + 50, X0 + 1950))
    cy = draw(st.floats(Y0 + 50, Y0 + 1950))
    n = draw(st.integers(3, 12))
    radii = np.array(draw(st.lists(st.floats(8, 100), min_size=n, max_size=n)))
    jitter = np.array(draw(st.lists(st.floats(0.3, 0.7), min_size=n, max_size=n)))
    angles = draw(st.floats(0, 2 * np.pi)) + 2 * np.pi * (np.arange(n) + jitter) / n
    ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
    return (cx, cy), ring


def request(ring: np.ndarray, **options):
    coords = [[float(x), float(y)] for x, y in ring] + [[float(ring[0][0]), float(ring[0][1])]]
    body = {"geometry": {"type": "Polygon", "coordinates": [coords]}, "crs": "EPSG:4548", **options}
    return parse_request(body, storage_srid=4548, max_vertices=10_000)


def run(engine, ring: np.ndarray, **options) -> dict:
    with engine.connect() as conn:
        return check_site(conn, request(ring, **options), save=False).result


def signature(result: dict) -> dict:
    return {e["layer"]: (e["status"], e["control_level"],
                         sorted((p["level"], p["relation"]) for p in e["parts"]),
                         sorted(f["fid"] for f in e["features"]))
            for e in result["constraints"]}


def areas(result: dict) -> dict:
    return {e["layer"]: e["overlap_m2"] for e in result["constraints"]}


def hits(result: dict) -> set[tuple[str, int | None]]:
    out = set()
    for e in result["constraints"]:
        if e["status"] == "hit":
            out.add((e["layer"], None))
            out.update((e["layer"], f["fid"]) for f in e["features"])
    return out


@CHECKS
@given(site=star_sites(), shift=st.integers(0, 11), reverse=st.booleans())
def test_same_answer_whatever_the_start_vertex_or_orientation(city, engine, site, shift, reverse):
    _, ring = site
    moved = np.roll(ring, shift % len(ring), axis=0)
    if reverse:
        moved = moved[::-1]
    a, b = run(engine, ring), run(engine, moved)
    assert signature(a) == signature(b)
    assert areas(a) == pytest.approx(areas(b), abs=2e-3)
    assert a["verdict"]["level"] == b["verdict"]["level"]
    assert a["planning_conditions"]["binding"] == b["planning_conditions"]["binding"]


@CHECKS
@given(site=star_sites(), factor=st.floats(0.2, 0.95))
def test_a_site_inside_another_has_a_subset_of_its_hits(city, engine, site, factor):
    (cx, cy), ring = site
    inner = np.column_stack([cx + factor * (ring[:, 0] - cx), cy + factor * (ring[:, 1] - cy)])
    assert shapely.Polygon(ring).covers(shapely.Polygon(inner))
    outer_hits, inner_hits = hits(run(engine, ring)), hits(run(engine, inner))
    assert inner_hits <= outer_hits


@CHECKS
@given(site=star_sites(), buffer_m=st.sampled_from([0, 0, 15.5]))
def test_areas_agree_with_shapely(city, engine, site, buffer_m):
    _, ring = site
    result = run(engine, ring, buffer_m=buffer_m)
    checked = shapely.Polygon(ring)
    if buffer_m:
        checked = shapely.buffer(checked, buffer_m, quad_segs=8)
    assert result["site"]["checked_area_m2"] == pytest.approx(checked.area, abs=1e-3)
    for entry in result["constraints"]:
        features = city.features.get(entry["layer"])
        if features is None or entry["status"] == "unknown":
            continue
        expected = shapely.intersection(shapely.union_all([g for g, _ in features]), checked).area
        assert entry["overlap_m2"] == pytest.approx(expected, abs=2e-3), entry["layer"]
        assert entry["share"] == pytest.approx(expected / checked.area, abs=2e-6)


@CHECKS
@given(site=star_sites(), buffer_m=st.sampled_from([0, 12.5]))
def test_densifying_the_ring_changes_nothing(city, engine, site, buffer_m):
    """Over 256 vertices a site is cut into pieces inside the statement: the answer must not move."""
    _, ring = site
    polygon = shapely.Polygon(ring)
    dense = shapely.get_coordinates(shapely.segmentize(polygon, polygon.length / 400))[:-1]
    assert len(dense) > 256
    a, b = run(engine, ring, buffer_m=buffer_m), run(engine, dense, buffer_m=buffer_m)
    assert signature(a) == signature(b)
    assert areas(a) == pytest.approx(areas(b), abs=2e-3)
    dist = {(e["layer"], f["fid"]): f.get("distance_m", 0.0) for e in a["constraints"] for f in e["features"]}
    dist_dense = {(e["layer"], f["fid"]): f.get("distance_m", 0.0) for e in b["constraints"] for f in e["features"]}
    assert dist == pytest.approx(dist_dense, abs=1e-6)
    assert a["assessments"]["covered"] == b["assessments"]["covered"]
    assert a["planning_conditions"]["binding"] == b["planning_conditions"]["binding"]
