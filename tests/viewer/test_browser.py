"""The web map in a real browser (Debian's Chromium, headless, through Playwright).

Screenshots go to tests/artifacts/. Expected values come from the loaded frames (shapely), not
from the pages.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from layers.catalogue import load_catalogue
from tests.viewer.conftest import run_server

pytestmark = pytest.mark.browser
TO_LONLAT = Transformer.from_crs(4548, 4326, always_xy=True)


def lonlat(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: np.column_stack(TO_LONLAT.transform(xy[:, 0], xy[:, 1])))


def settle(page) -> None:
    """Let a zoom animation end and the tiles of the new view draw (for screenshots)."""
    page.page.wait_for_function("!OneBlueprint.state.map._animatingZoom")
    page.page.wait_for_timeout(800)


def open_page(page, url: str) -> None:
    page.page.goto(url)
    page.page.wait_for_selector("body[data-ready='1']", timeout=15_000)


def drawn(page) -> list[str]:
    return page.page.evaluate("Object.keys(OneBlueprint.state.tiles)")


def go_to(page, geom: shapely.Geometry, zoom: int) -> None:
    c = lonlat(geom).centroid
    page.page.evaluate(f"OneBlueprint.state.map.setView([{c.y}, {c.x}], {zoom}, {{animate: false}})")


def screen_point(page, lon: float, lat: float) -> tuple[float, float]:
    """Page coordinates of a lon/lat on the map."""
    point = page.page.evaluate(
        f"(() => {{ const m = OneBlueprint.state.map; const p = m.latLngToContainerPoint([{lat}, {lon}]);"
        " const r = m.getContainer().getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; })()")
    return point[0], point[1]


def painted_canvases(page, pane: str) -> int:
    return page.page.evaluate(f"""[...document.querySelectorAll('.leaflet-{pane}-pane canvas')].filter(c => {{
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true; return false; }}).length""")


def test_map_loads_with_no_console_errors(page, server, city):
    with page.page.expect_response(lambda r: "/tiles/3105/" in r.url and r.status == 200):
        open_page(page, server.url + "/")
    catalogue = load_catalogue()
    majors, middles, minors = catalogue.counts()
    assert page.page.locator("#bp-tree .bp-major").count() == majors == 4
    assert page.page.locator("#bp-tree .bp-major details").count() == middles == 11
    assert page.page.locator("#bp-tree input[data-code]").count() == minors
    tree = page.page.inner_text("#bp-tree")
    for code in city.frames:
        assert catalogue.minor(code).name_zh in tree and catalogue.minor(code).name_en in tree
    # The blueprint view: the consolidated layer and the admin divisions, no source plan.
    assert sorted(drawn(page)) == ["1101", "3105"]
    page.page.wait_for_function("[...document.querySelectorAll('.leaflet-bp-polygons-pane canvas')].length > 0")
    page.page.wait_for_timeout(500)
    assert painted_canvases(page, "bp-polygons") > 0
    legend = page.page.inner_text("#bp-legend")
    assert "一张蓝图 Consolidated blueprint" in legend and "生态 Ecological" in legend
    page.shot("map")
    assert page.errors == []


def test_switching_views_and_toggling_a_layer_fetch_tiles(page, server, city):
    open_page(page, server.url + "/")
    with page.page.expect_response(lambda r: "/tiles/2301/" in r.url and r.status == 200):
        page.page.check("input[name='bp-view'][value='sources']")
    assert "3105" not in drawn(page) and "2301" in drawn(page)
    assert page.page.is_disabled("input[data-code='3105']")
    with page.page.expect_response(lambda r: "/tiles/2201/" in r.url and r.status == 200):
        page.page.check("input[data-code='2201']")
    assert "2201" in drawn(page)
    page.page.uncheck("input[data-code='2201']")
    assert "2201" not in drawn(page)
    page.page.check("input[name='bp-view'][value='blueprint']")
    assert "3105" in drawn(page) and "2301" not in drawn(page) and page.page.is_disabled("input[data-code='2301']")
    assert page.errors == []


def test_click_shows_a_popup_with_attributes(page, server, city):
    open_page(page, server.url + "/")
    page.page.check("input[name='bp-view'][value='sources']")
    redline = city.frames["2301"].geometry.iloc[0]
    go_to(page, redline, 15)
    where = lonlat(redline.centroid)
    page.page.mouse.click(*screen_point(page, where.x, where.y))
    popup = page.page.locator(".bp-popup")
    popup.wait_for(timeout=10_000)
    text = popup.inner_text()
    assert "生态保护红线" in text and "泉城红线" in text and "biodiversity" in text
    page.shot("popup")
    assert page.errors == []


def wait_for_report(page) -> None:
    page.page.wait_for_function(
        "document.querySelector('#bp-site-report').children.length > 0"
        " || document.querySelector('#bp-site-message .bp-error')",
        timeout=20_000)
    errors = page.page.locator("#bp-site-message .bp-error")
    assert errors.count() == 0, errors.inner_text()


def hit_codes(page) -> list[str]:
    return page.page.eval_on_selector_all("#bp-constraints tr.bp-status-hit", "rows => rows.map(r => r.dataset.code)")


def test_drawing_a_planted_site_shows_its_constraint(page, server, city):
    open_page(page, server.url + "/site")
    assert page.page.is_visible("#bp-pane-site")
    go_to(page, city.site, 16)
    page.page.click("#bp-draw")
    ring = lonlat(city.site).exterior.coords[:-1]
    for lon, lat in ring:
        page.page.mouse.click(*screen_point(page, lon, lat))
    page.page.click("#bp-finish")
    wait_for_report(page)
    # Independently: the site lies inside red line 1, and 2301 is a prohibited layer.
    assert city.frames["2301"].geometry.iloc[0].contains(city.site)
    assert "2301" in hit_codes(page)
    assert page.page.locator("#bp-verdict").inner_text().strip()
    assert page.page.get_attribute("#bp-conditions-link", "href").endswith("/conditions.html")
    page.page.wait_for_function("OneBlueprint.state.hitLayer.getLayers().length > 0", timeout=10_000)
    settle(page)
    page.shot("site-drawn")
    assert page.errors == []


def test_uploading_a_geojson_site(page, server, city, tmp_path):
    open_page(page, server.url + "/site")
    site = lonlat(city.site)
    path = tmp_path / "site.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "planted"}, "geometry": shapely.geometry.mapping(site)}]}))
    with page.page.expect_response(lambda r: r.url.endswith("/api/v1/sites/check")):
        page.page.set_input_files("#bp-upload", str(path))
    wait_for_report(page)
    assert "2301" in hit_codes(page)
    settle(page)
    page.shot("site-uploaded")
    assert page.errors == []


def test_uploading_a_file_that_is_not_geojson_says_why(page, server, tmp_path):
    open_page(page, server.url + "/site")
    path = tmp_path / "notes.geojson"
    path.write_text("this is not json")
    page.page.set_input_files("#bp-upload", str(path))
    message = page.page.locator("#bp-site-message .bp-error")
    message.wait_for()
    assert "notes.geojson" in message.inner_text() and "JSON" in message.inner_text()


def test_conflict_page_lists_the_planted_conflict(page, server, city):
    planted = city.frames["2201"].geometry.iloc[0].intersection(city.frames["2301"].geometry.iloc[0])
    listed = httpx.get(f"{server.url}/api/v1/conflicts", params={"page_size": 50}).json()
    ct03 = [c for c in listed["items"] if c["rule"] == "CT03"]
    assert len(ct03) == 1 and ct03[0]["area_m2"] == pytest.approx(planted.area, rel=1e-6)
    open_page(page, server.url + "/conflicts")
    items = page.page.locator("#bp-conflict-list .bp-conflict")
    items.first.wait_for(timeout=10_000)
    assert items.count() == len(listed["items"])
    assert page.page.locator(f"#bp-conflict-list .bp-conflict[data-id='{ct03[0]['id']}']").count() == 1
    page.page.wait_for_function("OneBlueprint.state.conflictLayer.getLayers().length > 0")
    # Filter by type, open the conflict, assign it.
    page.page.select_option("#bp-conflict-filters select[name='type']", "CT03")
    page.page.click("#bp-conflict-filters button[type='submit']")
    page.page.wait_for_function("document.querySelectorAll('#bp-conflict-list .bp-conflict').length === 1")
    items.first.click()
    page.page.locator("#bp-status-form").wait_for()
    assert "CT03" in page.page.inner_text("#bp-conflict-detail")
    settle(page)
    page.shot("conflicts")
    page.page.select_option("#bp-status-form select[name='status']", "assigned")
    page.page.fill("#bp-status-form input[name='by']", "planner")
    page.page.click("#bp-status-form button[type='submit']")
    page.page.locator("#bp-conflict-detail .bp-note", has_text="Saved").wait_for(timeout=10_000)
    after = httpx.get(f"{server.url}/api/v1/conflicts/{ct03[0]['id']}").json()
    assert after["status"] == "assigned"
    assert page.errors == []


def test_the_map_works_when_the_basemap_is_unreachable(page, city, viewer_settings):
    # Nothing listens on port 9 of the loopback: every basemap image fails, the layers still draw.
    unreachable = "http://127.0.0.1:9/{z}/{x}/{y}.png"
    settings = viewer_settings.model_copy(update={"server": viewer_settings.server.model_copy(
        update={"basemap_url": unreachable})})
    for running in run_server(settings):
        with page.page.expect_response(lambda r: "/tiles/3105/" in r.url and r.status == 200):
            open_page(page, running.url + "/")
        page.page.wait_for_timeout(1000)
        assert sorted(drawn(page)) == ["1101", "3105"]
    others = [e for e in page.errors if "127.0.0.1:9/" not in e]
    assert others == []


def test_pages_and_static_files(server):
    for path in ("/", "/conflicts", "/site"):
        response = httpx.get(server.url + path)
        assert response.status_code == 200 and "OneBlueprint.start(" in response.text
        assert "cdn." not in response.text and "unpkg" not in response.text  # nothing from the internet
    assert httpx.get(server.url + "/viewer/static/vendor/leaflet/leaflet.js").status_code == 200
    assert httpx.get(server.url + "/viewer/static/../pages.py").status_code == 404
    assert httpx.get(server.url + "/viewer/static/nothing.js").status_code == 404

