"""Vector tiles and feature look-ups, checked against an independent projection with pyproj/shapely."""

from __future__ import annotations

import math

import geopandas as gpd
import httpx
import mapbox_vector_tile
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from layers.catalogue import load_catalogue
from layers.db import make_engine
from layers.ingest import load_frame
from tests.viewer.conftest import X0, Y0, box, run_server, with_server_settings
from viewer.tiles import AFFINE_MAX_ERROR, BUFFER, EXTENT, tile_plan

HALF = 20037508.342789244
TO_MERC = Transformer.from_crs(4548, 3857, always_xy=True)
TO_LONLAT = Transformer.from_crs(4548, 4326, always_xy=True)


def tile_of(x: float, y: float, z: int) -> tuple[int, int]:
    """The tile at zoom z holding the EPSG:4548 point (x, y)."""
    lon, lat = TO_LONLAT.transform(x, y)
    n = 2 ** z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def expected(frame: gpd.GeoDataFrame, z: int, tx: int, ty: int) -> dict[int, shapely.Geometry]:
    """Each feature in Web Mercator tile units, clipped to the buffered tile.

    Edges are densified to 20 m first so the projection follows the true (curved) image of each edge.
    """
    size = 2 * HALF / 2 ** z
    minx, maxy = -HALF + tx * size, HALF - ty * size
    scale = EXTENT / size

    def to_tile(coords: np.ndarray) -> np.ndarray:
        mx, my = TO_MERC.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([(np.asarray(mx) - minx) * scale, (maxy - np.asarray(my)) * scale])

    window = shapely.box(-BUFFER, -BUFFER, EXTENT + BUFFER, EXTENT + BUFFER)
    out = {}
    for fid, geom in zip(frame["fid"], frame.geometry, strict=True):
        clipped = shapely.transform(shapely.segmentize(geom, 20.0), to_tile).intersection(window)
        if not clipped.is_empty:
            out[int(fid)] = clipped
    return out


def decode(data: bytes, layer: str) -> list[dict]:
    tile = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    return tile[layer]["features"] if layer in tile else []


def get_tile(server, layer: str, z: int, x: int, y: int, **kwargs) -> httpx.Response:
    return httpx.get(f"{server.url}/tiles/{layer}/{z}/{x}/{y}.pbf", **kwargs)


@pytest.mark.parametrize("layer", ["2301", "2201", "1101"])
@pytest.mark.parametrize("zoom", [14, 12, 8])
def test_tile_matches_independent_projection(server, city, layer, zoom):
    x, y = tile_of(X0 - 500, Y0 + 500, zoom)
    response = get_tile(server, layer, zoom, x, y)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
    features = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in decode(response.content, layer)}
    want = expected(city.frames[layer], zoom, x, y)
    assert set(features) == set(want)
    for fid, geom in want.items():
        got = features[fid]
        # Snapping to the tile grid and the quarter-pixel simplification move edges by a few units.
        tolerance = 0.01 * geom.area + 3 * geom.length
        assert got.symmetric_difference(geom).area <= tolerance, (layer, zoom, fid)


def test_polygon_with_a_hole_keeps_its_hole(server, city):
    # The deepest zoom whose tile holds the whole ring, so the hole is not cut by the tile edge.
    ring = city.frames["2301"].geometry.iloc[2]
    zoom = next(z for z in range(14, 8, -1) if tile_of(*ring.bounds[:2], z) == tile_of(*ring.bounds[2:], z))
    x, y = tile_of(*ring.bounds[:2], zoom)
    want = expected(city.frames["2301"], zoom, x, y)[3]
    features = {f["id"]: f for f in decode(get_tile(server, "2301", zoom, x, y).content, "2301")}
    got = shapely.geometry.shape(features[3]["geometry"])
    assert len(want.interiors) == 1
    assert got.geom_type == "Polygon" and len(got.interiors) == 1
    assert got.area == pytest.approx(want.area, rel=0.01)


def test_attributes_are_the_catalogue_attributes_and_fid_is_the_id(server, city):
    x, y = tile_of(X0, Y0, 10)
    roads = {f["id"]: f["properties"] for f in decode(get_tile(server, "1104", 10, x, y).content, "1104")}
    frame = city.frames["1104"]
    assert roads == {1: {"road_class": "arterial", "name": "经十路"}, 2: {"road_class": "branch"}}
    assert set(roads) == set(frame["fid"])


def test_lines_and_points_keep_their_type(server, city):
    x, y = tile_of(X0 + 2_000, Y0 - 1_000, 12)
    for layer, kind in (("1104", "LineString"), ("4103", "Point")):
        tile = get_tile(server, layer, 12, x, y).content
        got = {f["id"]: shapely.geometry.shape(f["geometry"]) for f in decode(tile, layer)}
        want = expected(city.frames[layer], 12, x, y)
        assert set(got) == set(want) and len(want) == 2
        for fid, geom in want.items():
            assert got[fid].geom_type == kind
            assert got[fid].hausdorff_distance(geom) <= 1.5  # snapped to the integer grid


@pytest.fixture(scope="module")
def capped_server(city, viewer_settings):  # noqa: ARG001 - data first
    """A server that puts at most two features in a tile."""
    yield from run_server(with_server_settings(viewer_settings, tile_feature_limit=2))


def test_feature_cap(server, capped_server):
    x, y = tile_of(X0 + 5_000, Y0, 9)
    full = decode(get_tile(server, "2301", 9, x, y).content, "2301")
    capped = decode(get_tile(capped_server, "2301", 9, x, y).content, "2301")
    assert len(full) == 3
    assert len(capped) == 2 and {f["id"] for f in capped} < {f["id"] for f in full}


def test_tile_with_nothing_is_204(server):
    response = get_tile(server, "2301", 14, 0, 0)
    assert response.status_code == 204 and response.content == b""


@pytest.mark.parametrize(("path", "status"), [
    ("/tiles/2301/23/0/0.pbf", 400),
    ("/tiles/2301/-1/0/0.pbf", 400),
    ("/tiles/2301/a/0/0.pbf", 400),
    ("/tiles/2301/3/8/0.pbf", 404),
    ("/tiles/2301/3/0/8.pbf", 404),
    ("/tiles/9999/3/0/0.pbf", 404),
    ("/tiles/1102/3/0/0.pbf", 404),
    ("/tiles/2302/3/0/0.pbf", 404),
    ("/tiles/2301/3/0/0.pbf?v=x", 422),
])
def test_bad_tile_addresses_are_problems(server, path, status):
    response = httpx.get(server.url + path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status and response.json()["detail"]


def test_etag_and_caching(server, city):
    x, y = tile_of(X0, Y0, 12)
    version = city.versions["2301"]
    first = get_tile(server, "2301", 12, x, y, headers={"Accept-Encoding": "identity"})
    assert first.headers["etag"] == f'"{version}.1"'
    assert "max-age=0" in first.headers["cache-control"]
    pinned = get_tile(server, "2301", 12, x, y, params={"v": version})
    assert "immutable" in pinned.headers["cache-control"]
    again = get_tile(server, "2301", 12, x, y,
                     headers={"Accept-Encoding": "identity", "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_a_new_version_changes_the_tiles(server):
    minor = load_catalogue().minor("2202")
    engine = make_engine(server.settings)
    x, y = tile_of(X0, Y0, 12)
    try:
        frames = [gpd.GeoDataFrame({"fid": [1], "boundary_type": ["town"]}, geometry=[box(-200, -200, 200, 200)],
                                   crs="EPSG:4548"),
                  gpd.GeoDataFrame({"fid": [1, 2], "boundary_type": ["town", "central_city"],
                                    "remark": ["kept by ingest, not in the catalogue", None]},
                                   geometry=[box(-200, -200, 200, 200), box(300, 300, 600, 600)], crs="EPSG:4548")]
        seen = []
        for i, frame in enumerate(frames):
            report = load_frame(engine, server.settings, frame, minor=minor, source_name=f"udb{i}",
                                checksum=f"udb{i}")
            # Named as the viewer names it, a new version is served at once (not after the version TTL).
            response = get_tile(server, "2202", 12, x, y, params={"v": report.version_id})
            features = decode(response.content, "2202")
            seen.append((response.headers["etag"], sorted(f["id"] for f in features),
                         [f["properties"] for f in features]))
    finally:
        engine.dispose()
    assert seen[0][1] == [1] and seen[1][1] == [1, 2]
    assert seen[0][0] != seen[1][0]
    # Attributes kept from the source but not in the catalogue stay out of tiles.
    assert sorted(p["boundary_type"] for p in seen[1][2]) == ["central_city", "town"]
    assert all(set(p) == {"boundary_type"} for p in seen[1][2])


def test_tile_plan_uses_the_affine_map_only_where_it_is_accurate():
    x, y = tile_of(X0, Y0, 14)
    near = tile_plan(14, x, y, 4548)
    assert near.affine is not None and near.error < AFFINE_MAX_ERROR
    x, y = tile_of(X0, Y0, 6)
    assert tile_plan(6, x, y, 4548).affine is None
    assert tile_plan(0, 0, 0, 4548).box is not None
    assert tile_plan(10, 100, 300, 4548).box is None  # the Americas: outside EPSG:4548's area of use
    # The affine map agrees with pyproj at a point inside the tile.
    x, y = tile_of(X0, Y0, 14)
    a, b, d, e, xoff, yoff = tile_plan(14, x, y, 4548).affine
    size = 2 * HALF / 2 ** 14
    mx, my = TO_MERC.transform(X0, Y0)
    u, v = (mx - (-HALF + x * size)) * EXTENT / size, ((HALF - y * size) - my) * EXTENT / size
    assert a * X0 + b * Y0 + xoff == pytest.approx(u, abs=AFFINE_MAX_ERROR)
    assert d * X0 + e * Y0 + yoff == pytest.approx(v, abs=AFFINE_MAX_ERROR)


# Feature look-ups ------------------------------------------------------------------------------

def lonlat(x: float, y: float) -> tuple[float, float]:
    return TO_LONLAT.transform(x, y)


def test_features_at_a_point(server, city):
    lon, lat = lonlat(X0 - 700, Y0 + 400)
    body = httpx.get(f"{server.url}/api/v1/layers/2301/features", params={"lon": lon, "lat": lat}).json()
    frame = city.frames["2301"]
    inside = frame[frame.contains(shapely.Point(X0 - 700, Y0 + 400))]["fid"].tolist()
    assert [f["id"] for f in body["features"]] == inside == [1]
    feature = body["features"][0]
    assert feature["properties"] == {"fid": 1, "redline_type": "biodiversity", "name": "泉城红线"}
    assert feature["geometry"]["type"] == "Polygon"
    assert body["layer"]["version_id"] == city.versions["2301"]


def test_features_near_a_line_within_tolerance(server):
    lon, lat = lonlat(X0 + 2_010, Y0 + 3_000)  # 10 m east of road 2
    params = {"lon": lon, "lat": lat, "geometry": "false"}
    assert httpx.get(f"{server.url}/api/v1/layers/1104/features", params=params).json()["features"] == []
    near = httpx.get(f"{server.url}/api/v1/layers/1104/features", params={**params, "tolerance_m": 15}).json()
    assert [f["id"] for f in near["features"]] == [2] and near["features"][0]["geometry"] is None


def test_features_by_fid_and_bbox(server, city):
    by_fid = httpx.get(f"{server.url}/api/v1/layers/2201/features", params={"fid": "3,1"}).json()
    assert sorted(f["id"] for f in by_fid["features"]) == [1, 3]
    w, s = lonlat(X0 + 500, Y0 - 3_500)
    e, n = lonlat(X0 + 3_500, Y0 - 500)
    frame = city.frames["2201"]
    want = frame[frame.intersects(shapely.box(X0 + 500, Y0 - 3_500, X0 + 3_500, Y0 - 500))]["fid"].tolist()
    in_box = httpx.get(f"{server.url}/api/v1/layers/2201/features", params={"bbox": f"{w},{s},{e},{n}"}).json()
    assert [f["id"] for f in in_box["features"]] == want == [2]


@pytest.mark.parametrize(("params", "status"), [
    ({"lon": 117.0}, 422),
    ({"lon": 117.0, "lat": 36.6, "fid": "1"}, 422),
    ({"fid": "1,x"}, 422),
    ({"bbox": "1,2,3"}, 422),
    ({"bbox": "1,2,3,4,5"}, 422),
    ({"bbox": "nan,36,117.0,37"}, 422),
    ({"bbox": "117.1,36,117.0,37"}, 422),
    ({"lon": 500, "lat": 36}, 422),
    ({"limit": 0}, 422),
])
def test_bad_feature_queries_are_problems(server, params, status):
    response = httpx.get(f"{server.url}/api/v1/layers/2301/features", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("code", ["9999", "1102", "2303"])
def test_features_of_missing_layers_are_404(server, code):
    response = httpx.get(f"{server.url}/api/v1/layers/{code}/features")
    assert response.status_code == 404 and response.json()["detail"]
