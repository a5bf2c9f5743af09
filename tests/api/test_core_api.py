"""Health, catalogue and layer listings over HTTP."""

import pytest
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
