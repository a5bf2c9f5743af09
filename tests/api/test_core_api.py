"""Health, catalogue and layer listings over HTTP."""

import geopandas as gpd
import pytest
import shapely.geometry
from fastapi.testclient import TestClient

from api.app import create_app
from layers.catalogue import load_catalogue
from layers.ingest import load_layer
from tests.specimens import redline_frame, write


@pytest.fixture
def client(settings, engine):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_health_reports_postgis(client):
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True
    assert body["database"]["postgis"].startswith("3.")
    assert body["storage_crs"] == "EPSG:4548"


def test_catalogue_matches_the_cli_hierarchy(client):
    body = client.get("/api/v1/catalogue").json()
    assert body == load_catalogue().hierarchy()
    assert len(body) == 4 and sum(len(m["middles"]) for m in body) == 11


def test_layers_lists_current_versions(client, empty_store, settings, tmp_path):
    load_layer(empty_store, settings, path=write(redline_frame(8), tmp_path / "r.gpkg"), layer_code="2301")
    rows = {row["code"]: row for row in client.get("/api/v1/layers").json()}
    assert len(rows) == len(load_catalogue().minors)
    assert rows["2301"]["feature_count"] == 8 and rows["2301"]["current_version"]["version"] == 1
    assert rows["2302"]["current_version"] is None
    detail = client.get("/api/v1/layers/2301").json()
    assert [v["feature_count"] for v in detail["versions"]] == [8]


def test_unknown_layer_is_problem_json(client):
    response = client.get("/api/v1/layers/9999")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "unknown layer code" in response.json()["detail"]


def test_features_of_an_earlier_version_stay_queryable(client, empty_store, settings, tmp_path):
    first, second = redline_frame(8, seed=1), redline_frame(5, seed=2)
    load_layer(empty_store, settings, path=write(first, tmp_path / "v1.gpkg"), layer_code="2301",
               valid_from="2025-01-01")
    load_layer(empty_store, settings, path=write(second, tmp_path / "v2.gpkg"), layer_code="2301",
               valid_from="2026-01-01")

    def features(**params):
        return client.get("/api/v1/layers/2301/features", params={"limit": 100, **params})

    current, by_number, by_date = features().json(), features(version=1).json(), features(as_of="2025-06-30").json()
    assert (current["layer"]["version"], current["number_returned"]) == (2, 5)
    assert current["layer"]["superseded_at"] is None
    for old in (by_number, by_date):
        assert (old["layer"]["version"], old["number_returned"]) == (1, 8)
        assert old["layer"]["superseded_at"] is not None
        assert [f["properties"]["name"] for f in old["features"]] == list(first["name"])
        # Stored in EPSG:4548, served in EPSG:4326 to 7 decimals (~1 cm): the first polygon is where it was.
        served = shapely.geometry.shape(old["features"][0]["geometry"])
        expected = gpd.GeoSeries([first.geometry.iloc[0]], crs=4548).to_crs(4326).iloc[0]
        assert served.symmetric_difference(expected).area < 1e-3 * expected.area
    for params, status, words in [({"version": 3}, 404, "has no version 3"),
                                  ({"as_of": "2024-12-31"}, 404, "had no version in force on 2024-12-31"),
                                  ({"version": 1, "as_of": "2025-06-30"}, 422, "not both"),
                                  ({"as_of": "last year"}, 422, "YYYY-MM-DD"),
                                  ({"version": 0}, 422, "")]:
        response = features(**params)
        assert response.status_code == status, params
        assert response.headers["content-type"] == "application/problem+json"
        assert words in str(response.json()["detail"]), params


def test_an_unknown_query_parameter_is_refused_not_ignored(client, empty_store, settings, tmp_path):
    load_layer(empty_store, settings, path=write(redline_frame(3), tmp_path / "r.gpkg"), layer_code="2301")
    for path, params in [("/api/v1/layers/2301/features", {"as_off": "2025-01-01"}),
                         ("/api/v1/layers", {"format": "json"}),
                         ("/api/v1/conflicts", {"severty": "critical"}),
                         ("/api/v1/health", {"x": "1"})]:
        response = client.get(path, params=params)
        assert response.status_code == 422, path
        assert response.headers["content-type"] == "application/problem+json"
        assert f"unknown query parameter '{next(iter(params))}'" in response.json()["detail"], path
    known = client.get("/api/v1/layers/2301/features", params={"as_of": "2030-01-01", "geometry": "false"})
    assert known.status_code == 200 and known.json()["number_returned"] == 3
    assert "takes as_of, bbox, fid, geometry, lat, limit, lon, tolerance_m, version" in client.get(
        "/api/v1/layers/2301/features", params={"v": "1"}).json()["detail"]
