"""The site-check API: same answer as the library, stored and re-read, problem+json for bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from tests.site.city import SITES

TO_LONLAT = Transformer.from_crs(4548, 4326, always_xy=True)
PROBLEM = "application/problem+json"


def lonlat(geom: shapely.Geometry) -> dict:
    to_lonlat = shapely.transform(geom, lambda xy: np.column_stack(TO_LONLAT.transform(xy[:, 0], xy[:, 1])))
    return shapely.geometry.mapping(to_lonlat)


def post(client, body) -> object:
    return client.post("/api/v1/sites/check", content=json.dumps(body), headers={"content-type": "application/json"})


def test_check_over_http_in_lonlat(client):
    response = post(client, {"geometry": lonlat(SITES["redline"])})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["check_id"].startswith("SC-") and body["input"]["crs"] == "EPSG:4326"
    assert body["verdict"]["level"] == "prohibited"
    red = next(e for e in body["constraints"] if e["layer"] == "2301")
    assert red["overlap_m2"] == pytest.approx(2_500, abs=0.01)  # lon/lat round trip costs < 0.01 m²
    assert set(body["timings_ms"]) >= {"parse", "query", "evaluate", "rasters", "store", "total"}
    assert body["input"]["repaired"] is False


def test_stored_check_reads_back_and_renders_as_a_document(client):
    first = post(client, {"geometry": lonlat(SITES["straddle"]), "as_of": "2030-01-01"}).json()
    again = client.get(f"/api/v1/sites/{first['check_id']}")
    assert again.status_code == 200
    stored = again.json()
    assert stored["check_id"] == first["check_id"]
    assert stored["verdict"] == first["verdict"] and stored["planning_conditions"] == first["planning_conditions"]
    assert stored["versions"] == first["versions"] and stored["input"]["as_of"] == "2030-01-01"
    page = client.get(f"/api/v1/sites/{first['check_id']}/conditions.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for needle in ("建设用地规划条件", first["check_id"], "P1", "P2", "容积率上限", "≤ 2.5", "@page", "<svg"):
        assert needle in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_stored_check_is_the_answer_as_given(client):
    answer = post(client, {"geometry": lonlat(SITES["redline"]), "buffer_m": 20})
    stored = client.get(f"/api/v1/sites/{answer.json()['check_id']}")
    assert list(stored.json()) == list(answer.json())  # same members, in the same order
    first, again = answer.json(), stored.json()
    assert set(first["timings_ms"]) - set(again["timings_ms"]) == {"store"}  # stored before the store
    assert {k: v for k, v in again.items() if k != "timings_ms"} == {k: v for k, v in first.items()
                                                                      if k != "timings_ms"}


def test_openapi_documents_the_site_endpoints(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/v1/sites/check"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"geometry", "crs", "as_of", "buffer_m"}
    assert {"/api/v1/sites/{check_id}", "/api/v1/sites/{check_id}/conditions.html",
            "/api/v1/assessments/{zone_id}"} <= set(spec["paths"])


def test_unknown_check_is_404_problem(client):
    response = client.get("/api/v1/sites/SC-20000101-0000000000")
    assert response.status_code == 404 and response.headers["content-type"] == PROBLEM
    assert client.get("/api/v1/sites/nope/conditions.html").status_code == 404


@pytest.mark.parametrize("raw, words", [
    (b'{"geometry": {"type": "Polygon", "coordinates": [[[117, NaN], [117.1, 36], [117, 36.1], [117, NaN]]]}}',
     "not a number"),
    (b"not json", "not valid JSON"),
    (b'{"geometry": {"type": "Point", "coordinates": [117, 36]}}', "not a Point"),
    (b'{"geometry": {"type": "Polygon", "coordinates": []}}', "empty"),
    (b'{"geometry": {"type": "Polygon", "coordinates": [[[117, 36], [117.01, 36], [117.01, 36.01], [117, 36.01]]]}}',
     "not closed"),
    (b'{"geometry": {"type": "Polygon", "coordinates": [[[117, 36], [117.01, 36.01], [117.01, 36], [117, 36.01],'
     b' [117, 36]]]}}', "self-intersection"),
    (b'{"geometry": {"type": "Polygon", "coordinates": [[[36, 117], [36, 117.01], [36.01, 117.01], [36, 117]]]}}',
     "latitude, longitude"),
    (b'{"geometry": {"type": "Polygon", "coordinates": [[[117, 36], [117.01, 36], [117, 36.01], [117, 36]]]},'
     b' "crs": "EPSG:0"}', "not accepted"),
])
def test_bad_input_is_422_problem_json(client, raw, words):
    response = client.post("/api/v1/sites/check", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 422 and words in problem["detail"] and "instance" in problem


def test_self_intersection_location_over_http(client):
    bowtie = [[117.0, 36.0], [117.002, 36.002], [117.002, 36.0], [117.0, 36.002], [117.0, 36.0]]
    problem = post(client, {"geometry": {"type": "Polygon", "coordinates": [bowtie]}}).json()
    assert problem["location"] == pytest.approx([117.001, 36.001], abs=1e-7)
    assert problem["pointer"] == "/geometry/coordinates"


def test_too_many_vertices_is_422(client):
    ring = [[117.0 + 1e-6 * i, 36.1] for i in range(10_001)] + [[117.01, 36.11], [117.0, 36.1]]
    response = post(client, {"geometry": {"type": "Polygon", "coordinates": [ring]}})
    assert response.status_code == 422 and "at most 10,000" in response.json()["detail"]


def test_body_over_2_mb_is_413(client):
    big = b'{"geometry": {"type": "Polygon", "coordinates": [[' + b"[117.0, 36.0]," * 200_000 + b"]]}}"
    assert len(big) > 2 * 1024 * 1024
    response = client.post("/api/v1/sites/check", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 65_536
    response = client.post("/api/v1/sites/check", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(
        ["type", "coordinates", "geometry", "crs", "as_of", "buffer_m", "x"]), inner, max_size=4),
    max_leaves=30)
geometry_like = st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "Feature"]),
                                       "coordinates": json_values})


@settings(max_examples=int(os.environ.get("SITE_FUZZ", 150)), deadline=None)
@given(body=st.one_of(json_values, st.fixed_dictionaries({"geometry": geometry_like | json_values},
                                                         optional={"crs": json_values, "as_of": json_values,
                                                                   "buffer_m": json_values})))
def test_never_a_500(client, body):
    response = post(client, body)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.headers["content-type"] == PROBLEM and response.json()["detail"]


def test_assessment_endpoints(client, city):
    run = client.post("/api/v1/assessments/DZ01", json={"types": ["flood_impact", "archaeology"]})
    assert run.status_code == 200
    results = {r["type"]: r for r in run.json()["results"]}
    assert set(results) == {"flood_impact", "archaeology"}
    assert results["flood_impact"]["result"] == "fail" and results["archaeology"]["result"] == "pass"
    stored = client.get("/api/v1/assessments/DZ01").json()
    flood = next(r for r in stored["results"] if r["type"] == "flood_impact")
    assert flood["result"] == "fail" and flood["version"] == results["flood_impact"]["stored"]["version"]
    assert client.get("/api/v1/assessments/NOPE").status_code == 404
    assert client.post("/api/v1/assessments/DZ01", json={"types": ["astrology"]}).status_code == 422
