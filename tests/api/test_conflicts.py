"""The conflict register over HTTP: listing with filters and pages, details, lifecycle, runs."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.app import create_app
from spatial.conflicts.run import run_conflicts
from tests.conftest import reset_layers
from tests.spatial.conflicts.conftest import city_layers, clear_register, load

CONTRACT_KEYS = {"id", "rule", "name_zh", "name_en", "severity", "status", "area_m2", "district", "a_layer",
                 "a_fid", "b_layer", "b_fid", "geometry"}


@pytest.fixture(scope="module")
def client(settings, engine):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def ran(engine, settings):
    """The synthetic city loaded and run once for this module (tests only add to it).

    Tests here read the store through ``engine`` and must not ask for ``empty_store``: it would
    empty the layers under the module's run.
    """
    reset_layers(engine)
    clear_register(engine)
    for code, gdf in city_layers().items():
        load(engine, settings, code, gdf)
    yield run_conflicts(engine, settings)
    clear_register(engine)
    reset_layers(engine)


def register_frame(engine) -> gpd.GeoDataFrame:
    with engine.connect() as conn:
        return gpd.read_postgis(sa.text("SELECT id, rule, severity, district_code, geom FROM conflict"), conn,
                                geom_col="geom")


def test_list_pages_through_every_live_conflict(client, ran, engine):
    first = client.get("/api/v1/conflicts", params={"page_size": 200}).json()
    assert first["total"] == ran.summary["total"]["count"] and first["page"] == 1 and first["page_size"] == 200
    assert set(first["items"][0]) == CONTRACT_KEYS | {"district_name"}
    seen = [item["id"] for item in first["items"]]
    page = 2
    while len(seen) < first["total"]:
        body = client.get("/api/v1/conflicts", params={"page_size": 200, "page": page}).json()
        seen += [item["id"] for item in body["items"]]
        page += 1
    assert sorted(seen) == sorted(register_frame(engine).id) and len(set(seen)) == len(seen)
    severities = [item["severity"] for item in first["items"]]
    assert severities == sorted(severities, key=["critical", "major", "minor"].index)
    geometry = first["items"][0]["geometry"]
    assert geometry["type"] == "MultiPolygon"
    lon, lat = geometry["coordinates"][0][0][0]
    assert 116 < lon < 118 and 35 < lat < 37


@pytest.mark.parametrize("params", [{"type": "CT03"}, {"severity": "critical"}, {"district": "370103"},
                                    {"type": "CT04", "district": "370102", "severity": "critical"}])
def test_filters(client, ran, engine, params):
    frame = register_frame(engine)
    want = frame
    if "type" in params:
        want = want[want.rule == params["type"]]
    if "severity" in params:
        want = want[want.severity == params["severity"]]
    if "district" in params:
        want = want[want.district_code == params["district"]]
    body = client.get("/api/v1/conflicts", params={**params, "page_size": 1000}).json()
    assert 0 < body["total"] == len(want) < len(frame)
    assert sorted(item["id"] for item in body["items"]) == sorted(want.id)


def test_bbox_filter_in_wgs84(client, ran, engine):
    frame = register_frame(engine).to_crs(4326)
    x0, y0, x1, y1 = frame.total_bounds
    box = (x0, y0, x0 + (x1 - x0) / 3, y0 + (y1 - y0) / 2)
    want = frame[shapely.intersects(frame.geometry.values, shapely.box(*box))]
    body = client.get("/api/v1/conflicts", params={"bbox": ",".join(map(str, box)), "page_size": 1000}).json()
    assert 0 < body["total"] < len(frame)
    assert sorted(item["id"] for item in body["items"]) == sorted(want.id)


def test_other_crs_on_request(client, ran):
    body = client.get("/api/v1/conflicts", params={"crs": "EPSG:4548", "page_size": 1}).json()
    x, y = body["items"][0]["geometry"]["coordinates"][0][0][0]
    assert 500_000 < x < 502_100 and 4_000_000 < y < 4_001_100


@pytest.mark.parametrize("params, detail", [
    ({"type": "CT99"}, "unknown conflict type"),
    ({"severity": "huge"}, "severity must be one of"),
    ({"status": "done"}, "status must be one of"),
    ({"district": "999999"}, "unknown district"),
    ({"bbox": "1,2,3"}, "bbox must be four numbers"),
    ({"bbox": "117.1,36,117,37"}, "min < max"),
    ({"bbox": "a,b,c,d"}, "bbox must be four numbers"),
    ({"crs": "EPSG:99999"}, "unknown crs"),
    ({"page": "0"}, "page"),
    ({"page_size": "5000"}, "page_size"),
    ({"run": "77"}, "unknown conflict run"),
])
def test_unknown_filter_values_are_422_problems(client, ran, params, detail):
    response = client.get("/api/v1/conflicts", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


def test_detail_has_attributes_advice_and_history(client, ran):
    item = client.get("/api/v1/conflicts", params={"type": "CT05", "page_size": 1}).json()["items"][0]
    body = client.get(f"/api/v1/conflicts/{item['id']}").json()
    assert body["a_attrs"]["ydlb"] and body["b_attrs"]["grade"] in ("I", "II")
    assert body["prevails"] == "b" and body["prevailing_layer"] == "2401" and body["advice_zh"]
    assert body["run_id"] == body["last_run_id"] == ran.run_id
    assert [e["status"] for e in body["events"]] == ["open"]
    assert body["geometry"] == item["geometry"] and body["area_m2"] == item["area_m2"]
    missing = client.get("/api/v1/conflicts/999999")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_status_changes_over_http(client, ran):
    cid = client.get("/api/v1/conflicts", params={"page_size": 1}).json()["items"][0]["id"]
    url = f"/api/v1/conflicts/{cid}/status"
    assert client.post(url, json={"status": "assigned", "by": "规划科"}).json()["status"] == "assigned"
    refused = client.post(url, json={"status": "resolved", "by": "张工"})
    assert refused.status_code == 422 and "adjusted plan" in refused.json()["detail"]
    done = client.post(url, json={"status": "resolved", "adjusted_plan": "a", "note": "已调整", "by": "张工"}).json()
    assert done["status"] == "resolved" and done["event"]["adjusted_plan"] == "a"
    assert [e["status"] for e in done["events"]] == ["open", "assigned", "resolved"]
    resolved = client.get("/api/v1/conflicts", params={"status": "resolved", "page_size": 1000}).json()["items"]
    assert cid in [item["id"] for item in resolved]
    for body, status in (({"status": "assigned"}, 422), ({"note": "x"}, 422), ({"status": "assigned", "x": 1}, 422),
                         ({"status": "resolved", "adjusted_plan": "c", "by": "x"}, 422)):
        response = client.post(url, json=body)
        assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert client.post("/api/v1/conflicts/999999/status", json={"status": "assigned"}).status_code == 404


def test_runs(client, ran):
    listed = client.get("/api/v1/conflicts/runs").json()
    first = next(item for item in listed["items"] if item["id"] == ran.run_id)
    assert first["changes"] == {"kept": 0, "closed": 0, "new": ran.summary["total"]["count"]}
    detail = client.get(f"/api/v1/conflicts/runs/{ran.run_id}").json()
    assert detail["summary"]["by_type"]["CT03"]["count"] == ran.summary["by_type"]["CT03"]["count"]
    assert set(detail["summary"]["by_district"]) == {"370102", "370103"}
    assert detail["versions"] == ran.versions and "rules" in detail["timings"]
    again = client.post("/api/v1/conflicts/runs")
    assert again.status_code == 201
    assert again.json()["summary"]["changes"] == {"kept": ran.summary["total"]["count"], "closed": 0, "new": 0}
    assert client.get("/api/v1/conflicts/runs").json()["total"] == listed["total"] + 1
    assert client.get("/api/v1/conflicts/runs/999").status_code == 404
