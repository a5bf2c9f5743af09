"""Reading site-check requests: every kind of bad input gets a precise reason, a pointer, a location."""

from __future__ import annotations

import datetime as dt

import pytest
import shapely
from pyproj import Transformer

from layers.errors import InvalidInput
from spatial.site.request import parse_json, parse_request
from tests.specimens import X0, Y0

TO_LONLAT = Transformer.from_crs(4548, 4326, always_xy=True)


def lonlat_ring(x: float, y: float, size: float = 100.0) -> list[list[float]]:
    corners = [(x, y), (x + size, y), (x + size, y + size), (x, y + size), (x, y)]
    return [list(TO_LONLAT.transform(*c)) for c in corners]


def parse(body, max_vertices: int = 10_000):
    return parse_request(body, storage_srid=4548, max_vertices=max_vertices)


def polygon(*rings) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def rejected(body, max_vertices: int = 10_000) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse(body, max_vertices)
    return info.value


def test_default_crs_is_lonlat_and_area_matches_pyproj():
    req = parse({"geometry": polygon(lonlat_ring(X0, Y0))})
    assert req.crs == "EPSG:4326" and req.as_of is None and req.buffer_m == 0.0 and req.vertices == 5
    assert req.area_m2 == pytest.approx(10_000, rel=1e-6)
    assert shapely.get_coordinates(req.geometry)[0] == pytest.approx([X0, Y0], abs=1e-6)


@pytest.mark.parametrize("crs", ["EPSG:4490", "epsg:4490", "urn:ogc:def:crs:EPSG::4490"])
def test_cgcs2000_geographic_is_accepted(crs):
    to_4490 = Transformer.from_crs(4548, 4490, always_xy=True)
    ring = [list(to_4490.transform(X0 + dx, Y0 + dy)) for dx, dy in [(0, 0), (50, 0), (50, 50), (0, 50), (0, 0)]]
    req = parse({"geometry": polygon(ring), "crs": crs})
    assert req.crs == "EPSG:4490" and req.area_m2 == pytest.approx(2_500, rel=1e-6)


def test_storage_crs_and_feature_wrapper_and_options():
    ring = [[X0, Y0], [X0 + 10, Y0], [X0 + 10, Y0 + 10], [X0, Y0 + 10], [X0, Y0]]
    req = parse({"geometry": {"type": "Feature", "properties": {}, "geometry": polygon(ring)}, "crs": "EPSG:4548",
                 "as_of": "2024-05-01", "buffer_m": 25})
    assert req.geometry.equals(shapely.box(X0, Y0, X0 + 10, Y0 + 10))
    assert req.as_of == dt.date(2024, 5, 1) and req.buffer_m == 25.0


def test_multipolygon_counts_all_vertices():
    a, b = lonlat_ring(X0, Y0), lonlat_ring(X0 + 500, Y0)
    req = parse({"geometry": {"type": "MultiPolygon", "coordinates": [[a], [b]]}})
    assert req.vertices == 10 and req.area_m2 == pytest.approx(20_000, rel=1e-6)


@pytest.mark.parametrize("body, words, pointer", [
    ([1, 2], "JSON object", ""),
    ({}, "no 'geometry'", "/geometry"),
    ({"geometry": polygon(), "bufer_m": 3}, "unknown request member 'bufer_m'", "/bufer_m"),
    ({"geometry": {"type": "Point", "coordinates": [117, 36]}}, "not a Point", "/geometry/type"),
    ({"geometry": {"type": "LineString", "coordinates": [[117, 36], [117.1, 36]]}}, "not a LineString",
     "/geometry/type"),
    ({"geometry": "POLYGON((0 0,1 0,1 1,0 0))"}, "GeoJSON Polygon", "/geometry"),
    ({"geometry": polygon()}, "empty", "/geometry/coordinates"),
    ({"geometry": {"type": "MultiPolygon", "coordinates": []}}, "empty", "/geometry/coordinates"),
    ({"geometry": {"type": "Polygon"}}, "no coordinates", "/geometry/coordinates"),
    ({"geometry": polygon([[117, 36], [117.001, 36], [117, 36]])}, "at least 4 positions", "/geometry/coordinates/0"),
    ({"geometry": polygon([[117, 36], [117.001, 36], [117.001, "36"], [117, 36]])}, "[x, y]",
     "/geometry/coordinates/0/2"),
    ({"geometry": polygon([[117, 36], [117.001, 36], [117.001, 36.001], [117, 36.001]])}, "not closed",
     "/geometry/coordinates/0/3"),
    ({"geometry": polygon([[117, 36], [117.001, 36], [117.001, 1e400], [117, 36]])}, "finite",
     "/geometry/coordinates/0/2"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "crs": "EPSG:99999"}, "not accepted", "/crs"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "crs": "Gauss-Kruger please"}, "unknown CRS", "/crs"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "crs": "EPSG:3857"}, "not accepted", "/crs"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "as_of": "22/11/2026"}, "YYYY-MM-DD", "/as_of"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "as_of": "2026-02-30"}, "YYYY-MM-DD", "/as_of"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "buffer_m": -1}, "between 0", "/buffer_m"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "buffer_m": True}, "number of metres", "/buffer_m"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "buffer_m": 1e6}, "between 0", "/buffer_m"),
    ({"geometry": polygon(lonlat_ring(X0, Y0)), "buffer_m": 10**400}, "between 0", "/buffer_m"),
    ({"geometry": polygon([[117, 36], [117.001, 36], [10**400, 36.001], [117, 36]])}, "finite",
     "/geometry/coordinates/0/2"),
])
def test_bad_requests_say_why_and_where(body, words, pointer):
    err = rejected(body)
    assert words in err.message
    assert err.detail["pointer"] == pointer


def test_self_intersection_is_rejected_with_its_location_in_the_request_crs():
    bowtie = [[117.0, 36.0], [117.002, 36.002], [117.002, 36.0], [117.0, 36.002], [117.0, 36.0]]
    err = rejected({"geometry": polygon(bowtie)})
    assert "self-intersection" in err.message and "not repaired" in err.message
    assert err.detail["location"] == pytest.approx([117.001, 36.001], abs=1e-7)


def test_hole_outside_shell_is_rejected():
    shell = [[X0, Y0], [X0 + 10, Y0], [X0 + 10, Y0 + 10], [X0, Y0 + 10], [X0, Y0]]
    hole = [[X0 + 20, Y0 + 20], [X0 + 30, Y0 + 20], [X0 + 30, Y0 + 30], [X0 + 20, Y0 + 20]]
    err = rejected({"geometry": polygon(shell, hole), "crs": "EPSG:4548"})
    assert "hole lies outside shell" in err.message
    assert err.detail["location"] == pytest.approx([X0 + 20, Y0 + 20])


def test_zero_area_is_rejected():
    flat = [[X0, Y0], [X0 + 10, Y0], [X0 + 20, Y0], [X0, Y0]]
    err = rejected({"geometry": polygon(flat), "crs": "EPSG:4548"})
    assert "invalid polygon" in err.message or "no area" in err.message


def test_latitude_longitude_order_is_named():
    swapped = [[lat, lon] for lon, lat in lonlat_ring(X0, Y0)]
    assert "latitude, longitude order" in rejected({"geometry": polygon(swapped)}).message


@pytest.mark.parametrize("ring, words", [
    ([[200, 36], [200.001, 36], [200.001, 36.001], [200, 36]], "longitude must lie in"),
    ([[10, 50], [10.001, 50], [10.001, 50.001], [10, 50]], "covers longitudes"),
])
def test_out_of_range_coordinates(ring, words):
    err = rejected({"geometry": polygon(ring)})
    assert "out of range" in err.message and words in err.message and "location" in err.detail


def test_projected_input_that_looks_like_degrees_or_swapped():
    degrees = [[117, 36], [117.001, 36], [117.001, 36.001], [117, 36]]
    assert "look like degrees" in rejected({"geometry": polygon(degrees), "crs": "EPSG:4548"}).message
    swapped = [[Y0, X0], [Y0, X0 + 10], [Y0 + 10, X0 + 10], [Y0, X0]]
    assert "northing, easting" in rejected({"geometry": polygon(swapped), "crs": "EPSG:4548"}).message


def test_vertex_limit():
    ring = lonlat_ring(X0, Y0)
    dense = [ring[0]] + [[ring[0][0] + 1e-6 * i, ring[0][1]] for i in range(1, 30)] + ring[1:]
    err = rejected({"geometry": polygon(dense)}, max_vertices=20)
    assert "at most 20" in err.message and err.detail["vertices"] == len(dense)


@pytest.mark.parametrize("text", [b'{"geometry": NaN}', b'{"buffer_m": Infinity}', b'{"a": -Infinity}'])
def test_nan_and_infinity_are_not_json(text):
    with pytest.raises(InvalidInput, match="not a number JSON allows"):
        parse_json(text)


@pytest.mark.parametrize("text", [b"", b"{", b"\xff\xfe", b"[" * 100_000])
def test_broken_json(text):
    with pytest.raises(InvalidInput):
        parse_json(text)
